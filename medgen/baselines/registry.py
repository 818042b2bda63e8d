"""Baselines by name: what `medgen baselines`, `medgen evaluate` and `medgen demo` fit and score beside a model.

A pipeline lists the baselines that answer its paper's comparisons in `Pipeline.baselines`. Each one is fitted
on the pipeline's training split (a free parameter chosen on the validation split by the pipeline's own key
metric, never on test cases) and then predicts a case in the pipeline's prediction format (what `predict_case`
returns), so `Pipeline.outputs` maps it to source units and `Pipeline.evaluate_case` scores it exactly as it
scores the model: same region, same data range, same reference.

| name | pipelines | what it is |
|---|---|---|
| gaussian | pet_lowdose | Gaussian smoothing of the low dose, sigma chosen on validation (Wang et al. 2018 compare with it) |
| nlm | pet_lowdose | scikit-image non-local means, strength chosen on validation |
| histogram_matching | mr_synthesis | the source's foreground histogram matched to the training targets' (a monotonic map) |
| linear_regression | mr_synthesis | target = least-squares linear map of the source channels |
| intensity_regression | mr_to_ct | mean HU per MR-intensity bin of the training voxels |
| bulk_density | mr_to_ct | one HU (the training mean inside the head) for every head voxel, air elsewhere |
| pca | expression_vae | PCA with as many components as the latent space (Way & Greene 2018 compare with it) |
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import torch

from medgen.errors import ConfigError, DataError


class Baseline:
    """A predictor with no network: `fit(pipeline)` on its data, then `predict_case(case)` in its format."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def fit(self, pipeline) -> "Baseline":
        self.pipeline = pipeline
        self._fit(pipeline.data.load("training"))
        return self

    def _fit(self, training) -> None:
        pass

    def predict_case(self, case) -> dict:
        raise NotImplementedError

    def outputs(self, case) -> dict:
        """{name: Output} as the pipeline writes the model's (source units, geometry)."""
        return self.pipeline.outputs(case, self.predict_case(case))

    def values(self, case) -> dict:
        """The output values `evaluate_case` scores (what the model's written outputs give back)."""
        return {k: o.value for k, o in self.outputs(case).items() if o.kind != "figure"}

    def describe(self) -> str:
        return self.description


BASELINES: dict[str, type[Baseline]] = {}


def register(cls: type[Baseline]) -> type[Baseline]:
    BASELINES[cls.name] = cls
    return cls


def get_baseline(name: str) -> type[Baseline]:
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(sorted(BASELINES))}")
    return BASELINES[name]


def fit_baselines(pipeline, names=None) -> dict[str, Baseline]:
    """The pipeline's baselines (or those of `names` it declares), fitted on its training split."""
    declared = list(getattr(pipeline, "baselines", ()))
    chosen = declared if names is None else list(names)
    unknown = [n for n in chosen if n not in declared]
    if unknown:
        raise ConfigError(f"pipeline '{pipeline.name}' has no baseline {', '.join(map(repr, unknown))}; "
                          f"its baselines: {', '.join(declared) or 'none'}")
    return {n: get_baseline(n)().fit(pipeline) for n in chosen}


# ----- tuning on the validation split ----------------------------------------------------------------------------
def choose_on_validation(pipeline, candidates, predict: Callable) -> tuple[object, dict]:
    """The candidate with the best mean key metric on the validation cases (`predict(case, candidate)` gives a
    prediction). Returns (best, {candidate: mean}). The validation split must have references."""
    cases = [c for c in pipeline.data.load("validation") if pipeline.evaluate_case(
        pipeline.output_values(c, predict(c, candidates[0])), c)]
    if not cases:
        raise DataError(pipeline.data.datalist.source,
                        "choosing a baseline's parameter needs validation cases with references; the split has none")
    metric, sign = pipeline.key_metric, (1.0 if pipeline.key_metric_mode == "max" else -1.0)
    means = {}
    for cand in candidates:
        scores = [pipeline.evaluate_case(pipeline.output_values(c, predict(c, cand)), c)[metric] for c in cases]
        means[cand] = float(np.mean(scores))
    return max(means, key=lambda k: sign * means[k]), means


# ----- low-dose PET ------------------------------------------------------------------------------------------------
class _Denoiser(Baseline):
    """Denoises the normalised low dose (input and target share one scale in pet_lowdose, and both filters
    commute with a scale factor), so `outputs` maps the result back to the input's units."""

    candidates: ClassVar[tuple] = ()
    parameter: ClassVar[str] = ""

    def _filter(self, image: np.ndarray, value) -> np.ndarray:
        raise NotImplementedError

    def _predict(self, case, value) -> dict:
        key = self.pipeline.source_keys()[0]
        out = self._filter(case[key][0].numpy(), value)
        return {self.pipeline.output_name: torch.from_numpy(np.asarray(out, np.float32)[None])}

    def fit(self, pipeline) -> "Baseline":
        self.pipeline = pipeline
        self.value, self.validation_scores = choose_on_validation(pipeline, list(self.candidates), self._predict)
        return self

    def predict_case(self, case) -> dict:
        return self._predict(case, self.value)

    def describe(self) -> str:
        return f"{self.description}; {self.parameter} {self.value:g} (best validation {self.pipeline.key_metric})"


@register
class Gaussian(_Denoiser):
    name = "gaussian"
    description = "Gaussian smoothing of the low dose"
    parameter = "sigma (voxels)"
    candidates = (0.25, 0.35, 0.45, 0.55, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)  # barely any to a strong blur

    def _filter(self, image, value):
        from medgen.baselines.denoise import gaussian_smooth

        return gaussian_smooth(image, value)


@register
class NonLocalMeans(_Denoiser):
    name = "nlm"
    description = "non-local means of the low dose (scikit-image)"
    parameter = "strength h / noise sigma"
    candidates = (0.4, 0.6, 0.8, 1.0)  # scikit-image's docs suggest about 0.8

    def _filter(self, image, value):
        from medgen.baselines.denoise import nlm_denoise

        return nlm_denoise(image, value)


# ----- MR contrast synthesis ---------------------------------------------------------------------------------------
class _IntensityMap(Baseline):
    def _make(self, pipeline):
        raise NotImplementedError

    def _fit(self, training) -> None:
        p = self.pipeline
        mask_key = p.config.data.mask_key or None
        self.model = self._make(p.source_keys(), p.target_key(), mask_key).fit(training)

    def predict_case(self, case) -> dict:
        return {self.pipeline.output_name: self.model.predict_case(case)["output"]}


@register
class HistogramMatching(_IntensityMap):
    name = "histogram_matching"
    description = "source foreground histogram matched to the training targets'"

    def _make(self, *args):
        from medgen.baselines.intensity import HistogramMatching as Impl

        return Impl(*args)


@register
class LinearRegression(_IntensityMap):
    name = "linear_regression"
    description = "least-squares linear map of the source channels"

    def _make(self, *args):
        from medgen.baselines.intensity import PolynomialRegression

        return PolynomialRegression(*args, degree=1)


# ----- MR to CT ----------------------------------------------------------------------------------------------------
@register
class IntensityRegression(Baseline):
    name = "intensity_regression"
    description = "mean HU per MR-intensity bin of the training voxels"

    def _fit(self, training) -> None:
        from medgen.baselines.ct import IntensityRegression as Impl

        self.model = Impl(window=self.pipeline.config.data.hu_window).fit(training)

    def predict_case(self, case) -> dict:
        return {self.pipeline.output_name: self.model.predict_normalised(case, self.pipeline)}


@register
class BulkDensity(Baseline):
    name = "bulk_density"
    description = "one HU (the training mean in the head) for every head voxel, air elsewhere"

    def _fit(self, training) -> None:
        from medgen.baselines.ct import BulkDensity as Impl

        self.mask_key = self.pipeline.config.data.mask_key
        if not self.mask_key:
            raise ConfigError("the bulk_density baseline needs a head mask (data.mask_key)")
        self.model = Impl(window=self.pipeline.config.data.hu_window).fit(training, mask_key=self.mask_key)

    def predict_case(self, case) -> dict:
        return {self.pipeline.output_name: self.model.predict_normalised(case, mask_key=self.mask_key)}


# ----- expression latent spaces -----------------------------------------------------------------------------------
@register
class PCA(Baseline):
    name = "pca"
    description = "PCA with as many components as the latent space"

    def fit(self, pipeline) -> "Baseline":
        pipeline.prepare()  # expression_vae's split, features and scaler, fitted on its training rows
        return super().fit(pipeline)

    def _fit(self, training) -> None:
        from medgen.baselines.expression import PCABaseline

        p = self.pipeline
        self.model = PCABaseline(p.config.model.latent_dim, seed=p.config.train.seed).fit(training)

    def predict_case(self, case) -> dict:
        return self.model.predict_case(case)

    def outputs(self, case) -> dict:
        """The PCA scores as the latent table, and the reconstruction scores of the PCA reconstruction (clipped
        to [0, 1]: BCE needs a probability). The VAE's own `outputs` also reads its decoder's gene weights,
        which PCA does not have."""
        import pandas as pd

        from medgen.engine.outputs import Output

        pred = self.predict_case(case)
        scores = self.pipeline.reconstruction_scores({"reconstruction": pred["reconstruction"].float().clamp(0, 1)},
                                                     case)
        scores.pop("kl", None)
        z = pred["latent"].numpy()
        latent = pd.DataFrame(z, index=pd.Index(case["samples"], name="sample"),
                              columns=[f"pc{i + 1}" for i in range(z.shape[1])])
        return {"latent": Output(latent, "table", "PCA scores"),
                **{k: Output(v, "value", k) for k, v in scores.items()}}

    def describe(self) -> str:
        return f"{self.description} ({self.model.name})"
