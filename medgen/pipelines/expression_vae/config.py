"""The method's config. Sources: paper = Way & Greene, PSB 2018; code = the reference (greenelab/tybalt);
ADAGE = Tan et al. 2016; ours = medgen's choice."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from medgen.config.sections import DataConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError


@dataclass
class ExpressionDataConfig(DataConfig):
    matrix_key: str = "expression"  # ours: dataset.json["tables"] key of the samples x features matrix
    labels_key: str = "labels"  # ours: dataset.json["tables"] key of the label table (optional)
    label_columns: list[str] = field(default_factory=list)  # ours: label columns to use ([] = all)
    orientation: Literal["samples_x_features", "features_x_samples"] = "samples_x_features"  # ours
    transform: Literal["none", "log2p1", "log2_cpm"] = "none"  # ours: Tybalt's input was already log-scale
    n_features: int = 5000  # paper: top 5,000 most variable genes (all when fewer)
    feature_selection: Literal["mad", "mean_ad"] = "mad"  # paper: median abs. deviation; code: "mean_ad"
    test_fraction: float = 0.1  # paper: random 10 % test split (when dataset.json lists no splits)
    val_fraction: float = 0.0  # ours: validation carved from training when dataset.json has none (0: none)
    split_seed: int = 0  # ours: a fixed seed, the split saved with the run (the reference's was not)
    # ours: a patient's samples in one split and one CV fold: "none", "tcga_patient" (a TCGA barcode's first three
    # fields, shared by a patient's tumour, normal and metastasis samples) or a column of the label table
    group_by: str = "none"
    sample_type_from_barcode: bool = False  # ours: add label "sample_type" from TCGA barcode characters 14-15

    def validate(self):
        if self.n_features < 1:
            raise ConfigError("data.n_features must be >= 1")
        if not 0.0 <= self.test_fraction < 1.0 or not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("data.test_fraction and data.val_fraction must be in [0, 1)")


@dataclass
class ExpressionModelConfig:
    method: Literal["tybalt", "adage"] = "tybalt"  # ours: "adage" trains the ADAGE denoising-AE baseline
    latent_dim: int = 100  # paper: 100 latent features
    hidden_sizes: list[int] = field(default_factory=list)  # paper: [] (5000-100); its variants [100], [300]
    head_relu: bool = False  # code: the ReLU on the mean / log-variance heads (off: linear heads, ours)
    kappa: float = 1.0  # paper: KL warm-up, beta += kappa per epoch (kappa 1: beta 0 in epoch 0, then 1)
    max_beta: float = 1.0  # paper: beta rises from 0 to 1
    lr: float = 5e-4  # paper: Adam, learning rate 0.0005
    reconstruction: Literal["bce", "mse"] = "bce"  # paper: n_features x mean binary cross-entropy
    corruption: float = 0.1  # ADAGE: masking-noise fraction of the baseline
    tied: bool = True  # ADAGE: decoder uses the transposed encoder weights
    in_features: int = 0  # ours: 0 = resolved from the data at training start (recorded in the run's config)
    top_genes: int = 50  # ours: high-weight genes written per latent feature (each sign)
    tsne_perplexity: float = 30.0  # ours: scikit-learn's default perplexity (lowered for tiny splits)
    latent_rotation: Literal["none", "varimax"] = "none"  # ours: "none" reads the features as trained (paper)

    def validate(self):
        if self.latent_dim < 1:
            raise ConfigError("model.latent_dim must be >= 1")
        if self.kappa < 0:
            raise ConfigError("model.kappa must be >= 0")


@dataclass
class ExpressionEvalConfig:
    cv_folds: int = 5  # ours: stratified folds of the label-recovery logistic regression
    label_samples: Literal["all", "test"] = "all"  # ours: samples for label recovery / association tests
    fdr: float = 0.05  # ours: Benjamini-Hochberg level for the per-feature association tests
    min_class_size: int = 5  # ours: classes smaller than this are dropped from a label's tests


@dataclass
class ExpressionTrainConfig(TrainConfig):
    epochs: float = 50.0  # paper: 50 epochs
    batch_size: int = 50  # paper: batch size 50


@dataclass
class ExpressionConfig(PipelineConfig):
    pipeline: str = "expression_vae"
    data: ExpressionDataConfig = field(default_factory=ExpressionDataConfig)
    train: ExpressionTrainConfig = field(default_factory=ExpressionTrainConfig)
    model: ExpressionModelConfig = field(default_factory=ExpressionModelConfig)
    evaluation: ExpressionEvalConfig = field(default_factory=ExpressionEvalConfig)
