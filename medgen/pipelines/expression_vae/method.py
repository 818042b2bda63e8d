"""`expression_vae`: Tybalt, a variational autoencoder for gene expression (Way & Greene, PSB 2018).

The data (`medgen.data.table_source.TableSource`): a samples x features matrix reduced to the top
`data.n_features` features by median (paper) or mean (reference code) absolute deviation, min-max scaled per
feature, both fitted on the training split only and saved with the model (`state_dict`), and split by a seeded,
saved split. A "case" is one split of the matrix (id "training" / "validation" / "test").

The method (this file): the VAE (NETWORKS "tybalt_vae") trained with loss = n_features x mean BCE + beta x KL,
beta = kl_warmup(epoch, kappa) scheduled explicitly per epoch (the reference read it once at graph-build time),
reconstruction and KL logged separately; `model.method: adage` trains the ADAGE-style denoising autoencoder
baseline ("adage_autoencoder") the same way. `medgen infer` writes each split's latent means (TSV), a t-SNE of
them coloured by each label (PNG), and the decoder's gene weights with the top genes of each latent feature
(TSV), optionally in a varimax-rotated readout. Metrics and the whole-run evaluation are in
`medgen.metrics.latent_space` and `medgen.metrics.latent_evaluation`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from medgen.errors import ConfigError
from medgen.pipelines.base import Pipeline
from medgen.pipelines.expression_vae.config import ExpressionConfig
from medgen.registry import NETWORKS, PIPELINES


@PIPELINES.register()
class ExpressionVAE(Pipeline):
    name = "expression_vae"
    description = "Tybalt VAE for expression matrices: latent features, gene weights, label separability vs PCA"
    config_class = ExpressionConfig
    baselines = ("pca",)
    spatial_dims = 0
    phantom = "expression"
    output_name = "latent"

    def __init__(self, config, device="cpu", stage: int = 1, previous: tuple = ()):
        super().__init__(config, device, stage, previous)
        self.preprocessing = None  # MatrixPreprocessing fitted on the training rows (saved in state_dict)
        self._rotation = (None, None)  # (hash of the decoder weights, their varimax rotation)

    # ----- data: the matrix, and what is fitted on its training rows --------------------------------------
    def data_source(self):
        from medgen.data.cases import resolve_dataset
        from medgen.data.table_source import TableSource

        ref = resolve_dataset(self.config.data, self.phantom, seed=0)
        if not self.config.data.dataset:  # record the resolved phantom in the run's config.yaml
            self.config.data.dataset = str(ref.path)
        return TableSource(ref, self.config.data, self.preprocessing, skip_bad_cases=self.config.data.skip_bad_cases)

    def prepare(self):
        """The fitted preprocessing (split, features, scaler): restored with the weights, else fitted now."""
        if self.preprocessing is None:
            self.preprocessing = self.data.fit_preprocessing()
            self.data.use(self.preprocessing)
        return self.preprocessing

    def state_dict(self) -> dict:
        if self.preprocessing is None:
            return {}
        d = self.config.data
        return dict(self.preprocessing.as_dict(), feature_selection=d.feature_selection, transform=d.transform)

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        from medgen.data.table_source import MatrixPreprocessing

        self.preprocessing = MatrixPreprocessing.from_dict(state)
        if self._data is not None:
            self._data.use(self.preprocessing)

    def preprocessing_record(self) -> dict:
        fitted = self.prepare()
        groups = self.data.groups
        record = dict(self.state_dict(), dataset=str(self.data.tables.source), n_features=len(fitted.features),
                      split_seed=self.config.data.split_seed, sizes={k: len(v) for k, v in fitted.splits.items()},
                      group_by=self.config.data.group_by)
        if groups is not None:
            record["groups"] = {k: len({groups[i] for i in v}) for k, v in fitted.splits.items()}
        return record

    @property
    def n_features(self) -> int:
        m = self.config.model
        if m.in_features <= 0:
            m.in_features = len(self.prepare().features)  # recorded in config.yaml and the checkpoints
        return m.in_features

    # ----- networks and training ----------------------------------------------------------------------------
    def build_networks(self):
        m = self.config.model
        if m.method == "adage":
            return {"AE": NETWORKS.build("adage_autoencoder", self.n_features, m.latent_dim, corruption=m.corruption,
                                         tied=m.tied)}
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
        from medgen.data.table_source import MatrixRows
        from medgen.files import atomic_write

        fitted = self.prepare()
        engine = self._engine
        if engine is not None and engine.dist.is_main and not engine.resume:
            record = json.dumps(self.preprocessing_record(), indent=1)
            atomic_write(Path(engine.run_dir) / "preprocessing.json", record, overwrite=True)
        return MatrixRows(self.data.matrix(fitted.splits["training"]))

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

    # ----- prediction and validation ------------------------------------------------------------------------
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

    def reconstruction_scores(self, prediction: dict, case) -> dict[str, float]:
        """Reconstruction (n_features x mean BCE, and MSE) and KL with z = mu; loss = rec + KL. Computed from the
        prediction when it is made and kept as the split's output values, so validation and `medgen evaluate`
        read the same numbers."""
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

    def evaluate_case(self, outputs: dict, case) -> dict:
        """The split's reconstruction scores, and how well its latent features separate each label (the
        cross-validated logistic-regression AUROC within the split, `medgen.metrics.latent_space`)."""
        from medgen.metrics.latent_space import label_auroc_cv

        scores = {k: float(outputs[k]) for k in ("bce", "mse", "reconstruction", "kl", "loss") if k in outputs}
        latent = outputs.get("latent")
        labels = case.get("labels")
        if latent is not None and labels is not None and len(labels.columns):
            ev = self.config.evaluation
            z = np.asarray(latent, dtype=np.float64)
            for column in labels.columns:
                auc = label_auroc_cv(z, labels[column].to_numpy(), folds=ev.cv_folds, seed=self.config.train.seed,
                                     min_class_size=ev.min_class_size, groups=case.get("groups"))
                if np.isfinite(auc):
                    scores[f"auroc_{column}"] = float(auc)
        return scores

    def floors(self, case) -> dict:
        """The per-feature training mean as every sample's reconstruction (no latent space: its label AUROC is
        that of a random latent of the same size, chance)."""
        from medgen.baselines.expression import TrainingMean

        mean = TrainingMean().fit(self.data.load("training"))
        values = self.reconstruction_scores(mean.predict_case(case), case)
        values.pop("kl", None)
        rng = np.random.default_rng(self.config.train.seed)
        values["latent"] = rng.standard_normal((case["x"].shape[0], self.config.model.latent_dim))
        return {"training_mean": values}

    def describe_evaluation(self) -> dict:
        return {"region": "all features of the split's samples (min-max scaled as in training)",
                "label_auroc": f"{self.config.evaluation.cv_folds}-fold cross-validated logistic regression on the "
                               "split's latent means"}

    # ----- the readout: gene weights per latent feature, optionally varimax-rotated -------------------------------
    def decoder_weights(self) -> np.ndarray:
        """features x latent gene weights as trained (`readout.decoder_weights`)."""
        from medgen.pipelines.expression_vae.readout import decoder_weights

        return decoder_weights(self.inference_network(self.net_name), self.config.model.method)

    def latent_rotation(self, weights: np.ndarray | None = None) -> np.ndarray | None:
        """The orthogonal rotation of `model.latent_rotation` (None for "none"), fitted on the decoder weights.
        Kept for the weights it was fitted on: `medgen infer` writes each split with the same rotation, and
        varimax takes about a second at 5,000 genes."""
        if self.config.model.latent_rotation == "none":
            return None
        import hashlib

        from medgen.metrics.varimax import varimax

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
        return rot, pd.DataFrame(w, index=pd.Index(self.prepare().features, name="feature"), columns=cols)

    def export_examples(self) -> dict:
        """The encoder: min-max scaled rows of the selected features -> latent features as `medgen infer` writes
        them (Tybalt: the means; ADAGE: the hidden code; rotated when `model.latent_rotation` asks for it)."""
        from medgen.engine.export import Exportable

        fitted = self.prepare()
        net = self.networks[self.net_name]
        rot = self.latent_rotation()
        gen = torch.Generator().manual_seed(0)
        n = self.n_features
        scaler = fitted.scaler.to_dict()
        d = self.config.data
        return {"encoder": Exportable(
            example=torch.rand(2, n, generator=gen), module=LatentEncoder(net, self.config.model.method, rot),
            input_names=("features",), output_names=("latent",), other_examples=(torch.rand(7, n, generator=gen),),
            description=f"{self.config.model.method} encoder: scaled expression of {n} features -> "
                        f"{self.config.model.latent_dim} latent features ({self.latent_prefix}0..)",
            metadata={"preprocessing": {"transform": d.transform, "feature_selection": d.feature_selection,
                                        "features": list(fitted.features),
                                        "scaling": "x' = (x - min) / (max - min) per feature (max = min: range 1), "
                                                   "fitted on the training split",
                                        "min": scaler["min"], "max": scaler["max"], "clip": scaler["clip"]},
                      "latent_rotation": self.config.model.latent_rotation})}

    def outputs(self, case, prediction: dict) -> dict:
        """`latent` (the split's latent means), `tsne` (PNG), `gene_weights` and `top_genes` (one file for the
        run), all in the readout of `model.latent_rotation`, and the split's reconstruction scores as values."""
        import pandas as pd

        from medgen.engine.outputs import Output
        from medgen.metrics.tsne import plot_tsne
        from medgen.pipelines.expression_vae.readout import top_genes_table

        rot, weights = self.readout()
        z = prediction["latent"].numpy()
        if rot is not None:
            z = z @ rot
        latent = pd.DataFrame(z, index=pd.Index(case["samples"], name="sample"), columns=list(weights.columns))
        out = {"latent": Output(latent, "table", "latent means")}
        if len(latent) >= 5:
            out["tsne"] = Output(lambda path: plot_tsne(latent.to_numpy(), case["labels"], path,
                                                        seed=self.config.train.seed,
                                                        perplexity=self.config.model.tsne_perplexity,
                                                        title=f"{self.config.model.method} latent, {case.id} split"),
                                 "figure")
        out["gene_weights"] = Output(weights, "table", "decoder weight", shared=True)
        out["top_genes"] = Output(top_genes_table(weights, self.config.model.top_genes), "table", "", shared=True)
        for name, value in self.reconstruction_scores(prediction, case).items():
            out[name] = Output(value, "value", "BCE x features" if name in ("reconstruction", "loss") else name)
        return out


class LatentEncoder(torch.nn.Module):
    """Scaled expression rows -> the latent features `medgen infer` writes: the VAE's means (Tybalt) or the
    hidden code (ADAGE), times the varimax rotation when one is used. What `medgen export` writes."""

    def __init__(self, net: torch.nn.Module, method: str, rotation: np.ndarray | None = None):
        super().__init__()
        self.net, self.method = net, method
        eye = torch.eye(int(net.latent_dim if method == "tybalt" else net.encoder.out_features))
        self.register_buffer("rotation", eye if rotation is None else torch.as_tensor(rotation, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net.encoder(x)[0] if self.method == "tybalt" else self.net.encode(x)
        return z @ self.rotation
