"""`expression_vae`: Tybalt, a variational autoencoder for gene expression (Way & Greene, PSB 2018).

A samples x features matrix (TSV / CSV / Parquet, listed in dataset.json["tables"]) is reduced to the top
`data.n_features` features by median (paper) or mean (reference code) absolute deviation, min-max scaled per
feature with parameters fitted on the training split only, and split by a seeded, saved train / test split.
The VAE (NETWORKS "tybalt_vae") is trained by the shared engine with loss = n_features x mean BCE + beta x KL,
beta = kl_warmup(epoch, kappa) scheduled explicitly per epoch (the reference read it once at graph-build time),
and reconstruction and KL logged separately. `model.method: adage` trains the ADAGE-style denoising autoencoder
baseline ("adage_autoencoder") through the same machinery.

A "case" here is one split of the matrix (id "training" / "validation" / "test"): `medgen infer` writes its
latent means (TSV), a t-SNE of them coloured by each label (PNG), and the decoder's per-feature gene weights
with the top genes of each latent feature (TSV). Metrics (held-out reconstruction, label recovery vs PCA,
per-feature association tests with FDR, phantom programme recovery) are in `expression_vae_eval`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from medgen.config.sections import DataConfig, PipelineConfig, TrainConfig
from medgen.errors import ConfigError, DataError, MedgenError
from medgen.files import atomic_write
from medgen.pipelines.base import Pipeline
from medgen.registry import NETWORKS, PIPELINES

SPLIT_NAMES = ("training", "validation", "test")


# ----- config ------------------------------------------------------------------------------------------
@dataclass
class ExpressionDataConfig(DataConfig):
    matrix_key: str = "expression"  # ours: dataset.json["tables"] key of the samples x features matrix
    labels_key: str = "labels"  # ours: dataset.json["tables"] key of the label table (optional)
    label_columns: list[str] = field(default_factory=list)  # ours: label columns to use ([] = all)
    orientation: Literal["samples_x_features", "features_x_samples"] = "samples_x_features"  # ours
    transform: Literal["none", "log2p1", "log2_cpm"] = "none"  # ours: Tybalt's input was already log-scale
    n_features: int = 5000  # paper: top 5,000 most variable genes (all when fewer)
    feature_selection: Literal["mad", "mean_ad"] = "mad"  # paper: median abs. deviation; code: "mean_ad"
    test_fraction: float = 0.1  # spec: random 10 % test split (when dataset.json lists no splits)
    val_fraction: float = 0.0  # ours: validation carved from training when dataset.json has none (0: none)
    split_seed: int = 0  # spec: fixed seed for the split
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
    hidden_sizes: list[int] = field(default_factory=list)  # paper: [] (5000-100); variants [100], [300] (spec)
    head_relu: bool = False  # spec: the reference's ReLU on the mean / log-variance heads (off: linear heads)
    kappa: float = 1.0  # paper: KL warm-up, beta += kappa per epoch (kappa 1: beta 0 in epoch 0, then 1)
    max_beta: float = 1.0  # spec: beta rises from 0 to 1
    lr: float = 5e-4  # paper: Adam, learning rate 0.0005
    reconstruction: Literal["bce", "mse"] = "bce"  # paper: n_features x mean binary cross-entropy
    corruption: float = 0.1  # ADAGE (Tan et al. 2016): masking-noise fraction of the baseline
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


# ----- data helpers ---------------------------------------------------------------------------------------
def tcga_sample_type(barcode: str) -> str:
    """Characters 14-15 (1-based) of a TCGA barcode: 01 primary tumour, 06 metastatic, 11 solid normal."""
    code = str(barcode)[13:15]
    if len(code) != 2 or not code.isdigit():
        raise DataError(None, f"sample id {barcode!r} is not a TCGA barcode (no sample-type code at 14-15)")
    return code


def label_strings(series) -> np.ndarray:
    """Label values as plain strings, missing values (NaN / None / NA) as "" (left out of the label's tests)."""
    import pandas as pd

    values = series.to_numpy(dtype=object)
    return np.array(["" if pd.isna(v) else str(v) for v in values], dtype=object)


def transform_matrix(df, how: str, path=None):
    """Optional count transform before feature selection: log2(1 + x) or log2(1 + counts per million)."""
    if how == "none":
        return df
    if (df.to_numpy() < 0).any():
        raise DataError(path, f"data.transform={how!r} needs non-negative counts, but the matrix has negative values")
    if how == "log2p1":
        return np.log2(1.0 + df)
    if how == "log2_cpm":
        lib = df.sum(axis=1).to_numpy()[:, None]
        if (lib <= 0).any():
            raise DataError(path, "a sample has zero total counts; cannot compute counts per million")
        return np.log2(1.0 + df * (1e6 / lib))
    raise ConfigError(f"data.transform must be none, log2p1 or log2_cpm, got {how!r}")


def write_atomic(path: Path, write, overwrite: bool) -> Path:
    """`medgen.files.atomic_write` with a writer function; refuse an existing file unless overwrite."""
    return atomic_write(path, write, overwrite=overwrite)


class MatrixRows(torch.utils.data.Dataset):
    """The training rows; item i is row i (finite: the engine reshuffles per epoch with a seeded permutation)."""

    def __init__(self, x: np.ndarray):
        self.x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return {"x": self.x[i]}


# ----- the pipeline ------------------------------------------------------------------------------------------
@PIPELINES.register("expression_vae")
class ExpressionVAE(Pipeline):
    name = "expression_vae"
    description = "Tybalt VAE for expression matrices: latent features, gene weights, label separability vs PCA"
    config_class = ExpressionConfig
    spatial_dims = 0
    input_keys = ("expression",)
    target_keys = ()
    key_metric, key_metric_mode = "loss", "min"
    phantom_kind = "expression"

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        self._table = None  # full matrix (samples x features, transformed, before selection)
        self._labels = None
        self._programs = None
        self._info = None  # dataset.json contents and paths
        self.features: list[str] | None = None  # selected features (saved)
        self.scaler = None  # MinMaxScaler fitted on the training rows (saved)
        self.splits: dict[str, list[str]] | None = None  # sample ids per split (saved)
        self._rotation = (None, None)  # (hash of the decoder weights, their varimax rotation)

    # ----- dataset resolution ----------------------------------------------------------------------------
    def dataset_path(self) -> Path:
        if self.config.data.dataset:
            return Path(self.config.data.dataset)
        from medgen.pipelines.volume import phantom_dataset

        return phantom_dataset(self.phantom_kind, self.config.data, seed=0)

    def _dataset(self) -> dict:
        """dataset.json (or a bare matrix file) -> {json, root, tables: {key: Path}, splits: {split: [ids]}}."""
        if self._info is not None:
            return self._info
        from medgen.data.datalist import normalise_cases, read_dataset_json
        from medgen.data.tabular import TABLE_SUFFIXES

        p = self.dataset_path()
        d = self.config.data
        if p.is_file() and p.name.lower().endswith(TABLE_SUFFIXES):
            info = {"json": None, "source": p, "tables": {d.matrix_key: p}, "splits": {}}
        else:
            data, root, json_path = read_dataset_json(p)
            tables = data.get("tables")
            if not isinstance(tables, dict) or d.matrix_key not in tables:
                raise DataError(json_path, f"no tables.{d.matrix_key} (the samples x features matrix); expected e.g. "
                                           f'"tables": {{"{d.matrix_key}": "expression.tsv", "{d.labels_key}": "labels.tsv"}}')
            resolved = {}
            for key, rel in tables.items():
                rp = Path(rel) if Path(str(rel)).is_absolute() else root / str(rel)
                if not rp.exists():
                    raise DataError(json_path, f"tables.{key} points at {rp}, which does not exist")
                resolved[key] = rp
            cases = normalise_cases(data, json_path, SPLIT_NAMES)
            splits = {s: [str(c["id"]) for c in cases[s]] for s in SPLIT_NAMES if cases.get(s)}
            info = {"json": json_path, "source": json_path, "tables": resolved, "splits": splits}
        self._info = info
        return info

    def _load_tables(self):
        """The matrix (transformed), labels and (phantom) true programmes, all indexed by sample id."""
        if self._table is not None:
            return
        import pandas as pd

        from medgen.data.tabular import load_labels, load_matrix

        d, info = self.config.data, self._dataset()
        mpath = info["tables"][d.matrix_key]
        df = transform_matrix(load_matrix(mpath, orientation=d.orientation), d.transform, mpath)
        labels = pd.DataFrame(index=df.index)
        if d.labels_key in info["tables"]:
            lpath = info["tables"][d.labels_key]
            from medgen.data.tabular import read_table

            columns = list(d.label_columns) or [str(c) for c in read_table(lpath).columns]
            for col in columns:
                labels[col] = label_strings(load_labels(lpath, index=df.index, column=col))
        elif d.label_columns:
            raise DataError(info["source"], f"data.label_columns={d.label_columns} but the dataset has no "
                                            f"tables.{d.labels_key}")
        if d.sample_type_from_barcode:
            try:
                labels["sample_type"] = [tcga_sample_type(s) for s in df.index]
            except DataError as err:
                raise DataError(mpath, err.problem) from None
        self._table, self._labels = df, labels
        if "programs" in info["tables"]:
            from medgen.data.tabular import load_matrix as lm

            self._programs = lm(info["tables"]["programs"]).reindex(df.index)

    def _split_ids(self) -> dict[str, list[str]]:
        """Sample ids per split: dataset.json's lists, else a seeded split (test_fraction, val_fraction)."""
        from medgen.data.tabular import train_test_split_ids

        d, info = self.config.data, self._dataset()
        ids = list(self._table.index)
        if info["splits"]:
            known = set(ids)
            for s, members in info["splits"].items():
                missing = [i for i in members if i not in known]
                if missing:
                    raise DataError(info["source"], f"{len(missing)} '{s}' sample id(s) are not rows of the matrix, "
                                                    f"e.g. {', '.join(missing[:3])}")
            splits = {s: list(info["splits"].get(s, [])) for s in SPLIT_NAMES}
        else:
            train, test = train_test_split_ids(ids, d.test_fraction, d.split_seed)
            splits = {"training": train, "validation": [], "test": test}
        if not splits["validation"] and d.val_fraction > 0:
            train, val = train_test_split_ids(splits["training"], d.val_fraction, d.split_seed + 1)
            splits["training"], splits["validation"] = train, val
        if len(splits["training"]) < 2:
            raise DataError(info["source"], f"the training split has {len(splits['training'])} sample(s); need >= 2")
        return splits

    def prepare(self) -> None:
        """Load the data; unless restored from a checkpoint, select features and fit the scaler on training rows."""
        self._load_tables()
        if self.features is not None:
            return
        from medgen.data.tabular import MinMaxScaler, select_features

        d = self.config.data
        self.splits = self._split_ids()
        train = self._table.loc[self.splits["training"]]
        selected = select_features(train, d.n_features, by=d.feature_selection)
        spread = (selected.max(axis=0) - selected.min(axis=0)).to_numpy()
        if not (spread > 0).any():
            raise DataError(self._dataset()["tables"][d.matrix_key],
                            f"no feature varies across the {len(train)} training samples (a constant matrix): "
                            "there is nothing to learn")
        self.features = list(selected.columns)
        self.scaler = MinMaxScaler().fit(selected)

    def matrix(self, ids) -> np.ndarray:
        """Scaled rows for sample ids, on the saved features (DataError naming missing features)."""
        self._load_tables()
        missing = [f for f in self.features if f not in self._table.columns]
        if missing:
            raise DataError(self._dataset()["tables"][self.config.data.matrix_key],
                            f"{len(missing)} feature(s) the model was trained on are missing, e.g. {', '.join(missing[:5])}")
        return np.array(self.scaler.transform(self._table.loc[list(ids), self.features]), dtype=np.float32)

    @property
    def n_features(self) -> int:
        m = self.config.model
        if m.in_features <= 0:
            self.prepare()
            m.in_features = len(self.features)  # recorded in config.yaml and the checkpoints
        return m.in_features

    # ----- state saved with checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self.features is None:
            return {}
        return {"features": list(self.features), "scaler": self.scaler.to_dict(), "splits": self.splits,
                "feature_selection": self.config.data.feature_selection, "transform": self.config.data.transform}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        from medgen.data.tabular import MinMaxScaler

        self.features = list(state["features"])
        self.scaler = MinMaxScaler.from_dict(state["scaler"])
        self.splits = state.get("splits")

    def preprocessing_record(self) -> dict:
        return dict(self.state_dict(), dataset=str(self._dataset()["source"]), n_features=len(self.features),
                    split_seed=self.config.data.split_seed, sizes={k: len(v) for k, v in self.splits.items()})

    # ----- networks and training ----------------------------------------------------------------------------
    def build_networks(self):
        m = self.config.model
        if m.method == "adage":
            return {"AE": NETWORKS.build("adage_autoencoder", self.n_features, m.latent_dim, corruption=m.corruption, tied=m.tied)}
        if m.method != "tybalt":
            raise ConfigError(f"model.method must be 'tybalt' or 'adage', got {m.method!r}")
        return {"VAE": NETWORKS.build("tybalt_vae", self.n_features, m.latent_dim, hidden_sizes=tuple(m.hidden_sizes),
                                      head_relu=m.head_relu)}

    @property
    def net_name(self) -> str:
        return "AE" if self.config.model.method == "adage" else "VAE"

    def build_optimizers(self, networks):
        return {k: torch.optim.Adam(v.parameters(), lr=self.config.model.lr) for k, v in networks.items()}

    def train_dataset(self):
        self.prepare()
        engine = self._engine
        if engine is not None and engine.dist.is_main and not engine.resume:
            rec = self.preprocessing_record()
            write_atomic(Path(engine.run_dir) / "preprocessing.json",
                         lambda p: p.write_text(json.dumps(rec, indent=1)), overwrite=True)
        return MatrixRows(self.matrix(self.splits["training"]))

    def beta(self) -> float:
        """KL weight for the current epoch: 0 in epoch 0, + kappa per completed epoch, capped (kl_warmup)."""
        from medgen.losses import kl_warmup

        return kl_warmup(math.floor(self.epoch + 1e-9), self.config.model.kappa, self.config.model.max_beta)

    def losses(self, x: torch.Tensor, out, beta: float) -> dict[str, torch.Tensor]:
        from medgen.losses import vae_loss

        m = self.config.model
        if m.method == "adage":  # reconstruction only: no latent distribution, so the KL term is zero
            recon, _ = out
            zero = torch.zeros(x.shape[0], 1, device=x.device)
            terms = vae_loss(recon, x, zero, zero, beta=0.0, reconstruction=m.reconstruction)
            return {"loss": terms["reconstruction"], "reconstruction": terms["reconstruction"]}
        recon, mu, logvar, _ = out
        return vae_loss(recon, x, mu, logvar, beta=beta, reconstruction=m.reconstruction)

    def train_step(self, batch):
        x = batch["x"]
        beta = self.beta()
        terms = self.losses(x, self.networks[self.net_name](x), beta)
        self.update(self.net_name, terms["loss"])
        logs = {k: v.detach() for k, v in terms.items()}
        if self.config.model.method == "tybalt":
            logs["beta"] = torch.tensor(beta)
        return logs

    # ----- cases, prediction, outputs ---------------------------------------------------------------------------
    def load_cases(self, split: str, dataset: str | None = None) -> list[dict]:
        """One case per split: the whole scaled matrix of its samples (empty list for an empty split)."""
        if dataset:
            self.config.data.dataset = str(dataset)
            self._info = self._table = None
        if self.features is None:
            self.prepare()
        self._load_tables()
        ids = self.splits.get(split) if self.splits and self._dataset_unchanged() else None
        if ids is None:
            ids = self._split_ids().get(split, [])
        if not ids:
            return []
        return [{"id": split, "split": split, "samples": list(ids), "x": torch.from_numpy(self.matrix(ids)),
                 "labels": self._labels.loc[list(ids)], "features": list(self.features)}]

    def input_files(self, split: str) -> dict[str, object]:
        """The split's one case is made from the tables and the split's sample ids."""
        info = self._dataset()
        ids = self.splits.get(split) if self.splits else info["splits"].get(split)
        return {split: {"tables": {k: str(v) for k, v in info["tables"].items()}, "samples": list(ids or [])}}

    def _dataset_unchanged(self) -> bool:
        known = set(self._table.index)
        return all(i in known for ids in self.splits.values() for i in ids)

    def validation_cases(self):
        return self.load_cases("validation")

    @torch.no_grad()
    def infer_step(self, batch):
        net = self.inference_network(self.net_name)
        out = net(batch["x"])
        if self.config.model.method == "adage":
            return {"latent": out[1], "reconstruction": out[0]}
        recon, mu, logvar, _ = out
        return {"latent": mu, "logvar": logvar, "reconstruction": recon}

    @torch.no_grad()
    def predict_case(self, case, chunk: int = 4096):
        x = case["x"]
        parts = [self.infer_step({"x": x[i:i + chunk].to(self.device)}) for i in range(0, x.shape[0], chunk)]
        return {k: torch.cat([p[k].float().cpu() for p in parts]) for k in parts[0]}

    def evaluate_case(self, prediction, case):
        """Validation: reconstruction (n_features x mean BCE, and MSE) and KL with z = mu; loss = rec + KL."""
        from medgen.losses import vae_loss
        from medgen.metrics.image import mse

        x, recon = case["x"], prediction["reconstruction"]
        x_in = x.clamp(0, 1)  # held-out rows may leave the training range; BCE needs targets in [0, 1]
        if "logvar" in prediction:
            mu, logvar = prediction["latent"], prediction["logvar"]
        else:
            mu = logvar = torch.zeros(x.shape[0], 1)
        terms = vae_loss(recon, x_in, mu, logvar, beta=1.0)
        rec = float(terms["reconstruction"])
        out = {"bce": rec / x.shape[1], "mse": mse(recon.numpy(), x.numpy()), "reconstruction": rec}
        if "logvar" in prediction:
            out["kl"] = float(terms["kl"])
        out["loss"] = rec + out.get("kl", 0.0)
        return out

    def decoder_weights(self) -> np.ndarray:
        """features x latent: the decoder weight of each feature for each latent feature as trained (ADAGE: the
        tied encoder weights). With hidden decoder layers, the product of the decoder's linear maps (ignoring
        the ReLU) is used, as an approximation."""
        net = self.inference_network(self.net_name)
        if self.config.model.method == "adage":
            return net.encoder.weight.detach().float().cpu().numpy().T
        dec = net.decoder
        w = dec.out.weight.detach().float().cpu()
        for layer in reversed([m for m in dec.body if isinstance(m, torch.nn.Linear)]):
            w = w @ layer.weight.detach().float().cpu()
        return w.numpy()

    def latent_rotation(self, weights: np.ndarray | None = None) -> np.ndarray | None:
        """The orthogonal rotation of `model.latent_rotation` (None for "none"), fitted on the decoder weights.
        Kept for the weights it was fitted on: `medgen infer` writes each split with the same rotation, and
        varimax takes about a second at 5,000 genes."""
        if self.config.model.latent_rotation == "none":
            return None
        import hashlib

        from medgen.pipelines.expression_vae_rotation import varimax

        w = self.decoder_weights() if weights is None else weights
        key = hashlib.sha1(np.ascontiguousarray(w).tobytes()).hexdigest()
        if self._rotation[0] != key:
            self._rotation = (key, varimax(w))
        return self._rotation[1]

    @property
    def latent_prefix(self) -> str:
        """Column prefix of exported latent features: "z" as trained, "vz" after a varimax rotation."""
        return "z" if self.config.model.latent_rotation == "none" else "vz"

    def readout(self):
        """(rotation or None, features x latent gene-weight DataFrame in the same readout)."""
        import pandas as pd

        w = self.decoder_weights()
        rot = self.latent_rotation(w)
        if rot is not None:
            w = w @ rot
        cols = [f"{self.latent_prefix}{i}" for i in range(w.shape[1])]
        return rot, pd.DataFrame(w, index=pd.Index(self.features, name="feature"), columns=cols)

    def gene_weights(self):
        """features x latent DataFrame of gene weights, in the readout of `model.latent_rotation`."""
        return self.readout()[1]

    def write_outputs(self, case, prediction, out, suffix: str = "") -> list[dict]:
        """`<split>_latent.tsv` (latent means), `<split>_tsne.png`, `gene_weights.tsv`, `top_genes.tsv`, all in
        the readout of `model.latent_rotation`."""
        from medgen.pipelines.expression_vae_eval import plot_tsne, top_genes_table

        import pandas as pd

        tag = f"_{suffix}" if suffix else ""
        rot, weights = self.readout()
        z = prediction["latent"].numpy()
        if rot is not None:
            z = z @ rot
        latent = pd.DataFrame(z, index=pd.Index(case["samples"], name="sample"), columns=list(weights.columns))
        entries = []

        def entry(path, output):
            return {"path": str(path), "output": output, "reference_key": None, "kind": "table",
                    "data_range": None, "mask_key": None}

        p = out.write_with(f"{case['id']}_latent{tag}.tsv", lambda t: latent.to_csv(t, sep="\t", float_format="%.6g"))
        entries.append(entry(p, "latent"))
        if len(latent) >= 5:
            p = out.write_with(f"{case['id']}_tsne{tag}.png",
                               lambda t: plot_tsne(latent.to_numpy(), case["labels"], t, seed=self.config.train.seed,
                                                   perplexity=self.config.model.tsne_perplexity,
                                                   title=f"{self.config.model.method} latent, {case['id']} split"))
            entries.append(entry(p, "tsne"))
        p = out.write_with(f"gene_weights{tag}.tsv", lambda t: weights.to_csv(t, sep="\t", float_format="%.6g"))
        entries.append(entry(p, "gene_weights"))
        top = top_genes_table(weights, self.config.model.top_genes)
        p = out.write_with(f"top_genes{tag}.tsv", lambda t: top.to_csv(t, sep="\t", index=False, float_format="%.6g"))
        entries.append(entry(p, "top_genes"))
        return entries

    def preview(self, case, prediction):
        return {}

    @classmethod
    def evaluate_predictions(cls, predictions, references=None, out=None, split: str = "test") -> dict:
        """Matrix evaluation of `<run>/predictions` (a hook for `medgen evaluate`, whose shared report compares
        image files): runs `expression_vae_eval.evaluate_run` on the run that wrote them."""
        from medgen.pipelines.expression_vae_eval import evaluate_run, summary_table

        result = evaluate_run(Path(predictions).parent, split=split, out=out, overwrite=True,
                              dataset=str(references) if references else None)
        return {"summary": result, "table": summary_table(result), "report": result["report"]}

    # ----- the quick demo ---------------------------------------------------------------------------------------
    @classmethod
    def demo(cls, data_root, runs_root, seed: int = 0) -> dict:
        """Tybalt (50 epochs) on the expression phantom, evaluated on its held-out split against PCA-100 and
        the per-gene training mean; about 30-60 s on 2 CPU cores."""
        from medgen.engine.commands import build_config, train_config
        from medgen.pipelines.expression_vae_eval import evaluate_run, summary_table

        data = Path(data_root) / "expression"
        if not (data / "dataset.json").exists():
            from medgen.data.phantoms import write_phantom_dataset

            write_phantom_dataset("expression", data, seed=seed)
        _, cfg = build_config("expression_vae", None, [
            f"data.dataset={data}", f"output.root={runs_root}", "output.name=expression_vae", "output.overwrite=true",
            f"train.seed={seed}", "train.progress=off"])
        summary = train_config(cls, cfg, overwrite=True)
        result = evaluate_run(summary["run_dir"], overwrite=True)
        return {"table": summary_table(result), "run_dir": summary["run_dir"], "result": result}
