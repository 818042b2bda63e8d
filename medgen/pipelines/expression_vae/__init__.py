"""expression_vae: Tybalt, a VAE for gene expression matrices (Way & Greene, PSB 2018).

config.py: the config (paper defaults); method.py: the pipeline; readout.py: gene weights per latent feature;
demo.yaml: the quick demo's settings. Data: `medgen.data.table_source`; metrics and the whole-run evaluation:
`medgen.metrics.latent_space`, `medgen.metrics.latent_evaluation`; baselines: `medgen.baselines.expression`.
"""

from medgen.pipelines.expression_vae.method import ExpressionVAE

__all__ = ["ExpressionVAE"]
