"""`lesion_uda`: adversarial unsupervised domain adaptation for lesion segmentation (Kamnitsas et al., IPMI 2017).

The method is `method.py` (keys, domains, networks, steps, prediction, evaluation); its config is `config.py`;
the quick demo's settings are `demo.yaml`. Its parts live where they belong: the U-Net with feature taps in
`medgen.networks.unet_segmenter`, the mixed-domain training items in `medgen.data.mixed_domain`, the per-domain
BatchNorm statistics in `medgen.networks.batchnorm`, the constructed protocol shift in
`medgen.data.protocol_shift`, and `gap_closed` in `medgen.metrics.domain_adaptation`.
"""

from medgen.pipelines.lesion_uda.config import SMALL_DEEPMEDIC, LesionUDAConfig
from medgen.pipelines.lesion_uda.method import LesionUDA

__all__ = ["LesionUDA", "LesionUDAConfig", "SMALL_DEEPMEDIC"]
