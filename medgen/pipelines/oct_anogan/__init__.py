"""oct_anogan: AnoGAN / f-AnoGAN / autoencoder anomaly detection on OCT B-scans (docs/pipelines/oct_anogan.md)."""

from medgen.pipelines.oct_anogan.config import OCTAnoGANConfig
from medgen.pipelines.oct_anogan.method import OCTAnoGAN

__all__ = ["OCTAnoGAN", "OCTAnoGANConfig"]
