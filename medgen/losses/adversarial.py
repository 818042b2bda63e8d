"""Adversarial losses (vanilla / LSGAN / hinge / WGAN) with per-call label smoothing, and the WGAN-GP penalty.

MONAI has `PatchAdversarialLoss` (bce / least squares / hinge); medgen keeps its own because the methods need
what MONAI lacks: the WGAN critic form (f-AnoGAN), label smoothing drawn from a range on every call (Ea-GANs
scripts; their reference code drew the label once and cached it for the whole run - a known bug fixed here),
and a gradient penalty that works with 2D and 3D critics returning ``(logits, features)``.

All reductions are computed in float32, whatever autocast chose for the discriminator's output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medgen.errors import ConfigError, MedgenError

__all__ = ["AdversarialLoss", "gradient_penalty", "real_fake_logits", "ADVERSARIAL_MODES"]

ADVERSARIAL_MODES = ("vanilla", "lsgan", "hinge", "wgan")

Logits = torch.Tensor | Sequence[torch.Tensor] | Sequence[Sequence[torch.Tensor]]


def _as_scales(logits: Logits) -> list[torch.Tensor]:
    """Normalise a discriminator output into one logits tensor per scale.

    - a Tensor: one scale;
    - a list/tuple of Tensors: one logits tensor per scale (multi-scale discriminator);
    - a list/tuple of lists/tuples: one *feature list* per scale, whose LAST element is that scale's logits
      (MONAI ``PatchDiscriminator`` / pix2pixHD convention). A single-scale feature list is therefore passed
      as ``[features]`` (or pass ``features[-1]`` directly).
    """
    if isinstance(logits, torch.Tensor):
        return [logits]
    if isinstance(logits, (list, tuple)) and len(logits) > 0:
        scales = []
        for item in logits:
            if isinstance(item, torch.Tensor):
                scales.append(item)
            elif isinstance(item, (list, tuple)) and len(item) > 0 and isinstance(item[-1], torch.Tensor):
                scales.append(item[-1])
            else:
                raise MedgenError(
                    "adversarial loss: each scale must be a logits tensor or a non-empty list of feature "
                    f"tensors ending with the logits, got {type(item).__name__}"
                )
        return scales
    raise MedgenError(
        f"adversarial loss: expected a logits tensor or a non-empty list of them, got {type(logits).__name__}"
    )


def _check_range(name: str, value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {value!r}") from None
    if low > high:
        raise ConfigError(f"{name} must have low <= high, got {value!r}")
    return (low, high)


class AdversarialLoss(nn.Module):
    """GAN loss for the discriminator and the generator.

    Modes:
      - ``"vanilla"``: binary cross-entropy on logits (``BCEWithLogits``; the discriminator has no sigmoid).
      - ``"lsgan"``: mean squared error between raw outputs and the target label (Mao et al.; Ea-GANs).
      - ``"hinge"``: discriminator ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` (each call gives one
        term); generator ``-mean(D(fake))``.
      - ``"wgan"``: critic ``-mean(D(real))`` / ``+mean(D(fake))``; generator ``-mean(D(fake))``.
        Add :func:`gradient_penalty` for WGAN-GP.

    Labels (vanilla / lsgan only): fixed ``real_label`` / ``fake_label``, or smoothed targets drawn uniformly
    from ``real_label_range`` / ``fake_label_range`` (Ea-GANs scripts: (0.7, 1.2) and (0.0, 0.3)). The draw is
    made AFRESH ON EVERY CALL with torch's RNG (the global one, or ``generator`` if given), so it is
    reproducible under ``torch.manual_seed``. By default one value is drawn per call and fills the target (as
    the reference scripts did); ``per_element=True`` draws one value per logit instead.
    ``smooth_generator`` (default True, as in the Ea-GANs scripts, where G and D share one criterion) says
    whether the generator's "real" targets are smoothed too; when False the generator uses ``real_label``.

    Multi-scale discriminators: ``logits`` may be a list of logits tensors (one per scale) or a list of feature
    lists (the last element of each is the logits). The loss is computed per scale and averaged over scales.
    A discriminator returning ``(logits, features)`` must be unpacked by the caller (pass ``logits``).
    """

    def __init__(
        self,
        mode: str = "lsgan",
        real_label: float = 1.0,
        fake_label: float = 0.0,
        real_label_range: tuple[float, float] | None = None,
        fake_label_range: tuple[float, float] | None = None,
        smooth_generator: bool = True,
        per_element: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if mode not in ADVERSARIAL_MODES:
            raise ConfigError(f"adversarial loss mode must be one of {ADVERSARIAL_MODES}, got {mode!r}")
        self.mode = mode
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)
        self.real_label_range = _check_range("real_label_range", real_label_range)
        self.fake_label_range = _check_range("fake_label_range", fake_label_range)
        uses_labels = mode in ("vanilla", "lsgan")
        if not uses_labels and (self.real_label_range or self.fake_label_range):
            raise ConfigError(f"label smoothing applies to 'vanilla' and 'lsgan' only, not to {mode!r}")
        self.smooth_generator = bool(smooth_generator)
        self.per_element = bool(per_element)
        self.generator = generator

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, real={self.real_label_range or self.real_label}, "
            f"fake={self.fake_label_range or self.fake_label}"
        )

    def draw_target(
        self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = True
    ) -> torch.Tensor:
        """The float32 target tensor (shape of ``logits``) for vanilla / lsgan; a fresh draw on every call."""
        rng = self.real_label_range if target_is_real else self.fake_label_range
        if rng is not None and not for_discriminator and not self.smooth_generator:
            rng = None
        fixed = self.real_label if target_is_real else self.fake_label
        shape, device = logits.shape, logits.device
        if rng is None:
            return torch.full(shape, fixed, dtype=torch.float32, device=device)
        low, high = rng
        if self.per_element:
            gen_device = self.generator.device if self.generator is not None else device
            u = torch.rand(shape, generator=self.generator, device=gen_device, dtype=torch.float32)
            return (low + (high - low) * u).to(device)
        # one value per call, drawn on the CPU (no device sync), from torch's RNG
        u = float(torch.rand((), generator=self.generator))
        return torch.full(shape, low + (high - low) * u, dtype=torch.float32, device=device)

    def _one_scale(self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool) -> torch.Tensor:
        x = logits.float()
        if self.mode == "vanilla":
            target = self.draw_target(x, target_is_real, for_discriminator)
            return F.binary_cross_entropy_with_logits(x, target)
        if self.mode == "lsgan":
            target = self.draw_target(x, target_is_real, for_discriminator)
            return F.mse_loss(x, target)
        sign = -1.0 if target_is_real else 1.0
        if self.mode == "hinge" and for_discriminator:
            return F.relu(1.0 + sign * x).mean()
        # wgan (both roles) and the hinge generator: -mean(D) for "real", +mean(D) for "fake"
        return sign * x.mean()

    def forward(self, logits: Logits, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """Scalar float32 loss averaged over scales.

        Discriminator: call once with real logits (``target_is_real=True``) and once with fake ones.
        Generator: ``loss(D(G(z)), target_is_real=True, for_discriminator=False)``.
        """
        scales = _as_scales(logits)
        losses = [self._one_scale(s, bool(target_is_real), bool(for_discriminator)) for s in scales]
        return torch.stack(losses).mean() if len(losses) > 1 else losses[0]


def _critic_logits(out) -> torch.Tensor:
    """Critic output -> logits: a Tensor; a tuple ``(logits, features)`` (first element); or a list of
    feature tensors ending with the logits (MONAI ``PatchDiscriminator``, last element)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple) and len(out) > 0 and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, list) and len(out) > 0 and isinstance(out[-1], torch.Tensor):
        return out[-1]
    raise MedgenError(
        "gradient_penalty: the critic must return logits, (logits, features) or a feature list ending with "
        f"the logits; got {type(out).__name__}"
    )


def gradient_penalty(
    critic: Callable[[torch.Tensor], object],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017): ``weight * mean_b (||grad_x D(x_hat_b)||_2 - 1)^2``.

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per sample (torch's RNG). The gradient
    is taken of the sum of the critic's outputs (a patch critic gives one logit per patch), over all of
    ``x_hat`` (C and every spatial axis, 2D or 3D), with ``create_graph=True`` so the penalty trains the critic.
    ``real`` is detached and ``fake`` too (the penalty is a critic term). Extra conditioning channels, if
    any, belong in ``real``/``fake`` already (e.g. ``cat([source, target])``).

    precision "fp32" (default): the critic pass of the penalty and its double backward run with autocast
    switched off, in float32 (TF32 convolutions on CUDA, torch's default), whatever autocast the caller is
    under; "amp": under the caller's autocast. Why: under bf16 autocast the penalty's value stays within 0.1 %
    of float32, but its gradient with respect to the critic's weights does not (about 50 % relative error on
    f-AnoGAN's critic; tests/losses/test_gradient_penalty_precision.py), and that gradient is what trains
    the critic.
    """
    if precision not in ("fp32", "amp"):
        raise MedgenError(f"gradient_penalty: precision must be 'fp32' or 'amp', not {precision!r}")
    if real.shape != fake.shape:
        raise MedgenError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ")
    real = real.detach()
    fake = fake.detach()
    if precision == "fp32":
        real, fake = real.float(), fake.float()
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    gen_device = generator.device if generator is not None else real.device
    eps = torch.rand(eps_shape, generator=generator, device=gen_device, dtype=real.dtype).to(real.device)
    x_hat = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    off = torch.autocast(real.device.type, enabled=False) if precision == "fp32" else contextlib.nullcontext()
    with off:
        logits = _critic_logits(critic(x_hat))
        (grad,) = torch.autograd.grad(
            outputs=logits.float().sum(), inputs=x_hat, create_graph=True, retain_graph=True
        )
        norms = grad.float().flatten(1).norm(2, dim=1)
        return weight * ((norms - 1.0) ** 2).mean()


def _split_batch(output, n: int):
    """Split a discriminator output (tensor, or nested lists / tuples of tensors) at batch index n."""
    if isinstance(output, torch.Tensor):
        return output[:n], output[n:]
    if isinstance(output, (list, tuple)):
        parts = [_split_batch(o, n) for o in output]
        return type(output)(p[0] for p in parts), type(output)(p[1] for p in parts)
    raise MedgenError(f"discriminator output must be tensors or lists of tensors, got {type(output).__name__}")


def real_fake_logits(discriminator: Callable, real: torch.Tensor, fake: torch.Tensor, shared_batch: bool = True):
    """``(D(real), D(fake))``; with ``shared_batch`` both go through D as ONE batch.

    Why: a discriminator with batch norm (in training mode) normalises each call by that call's own statistics,
    so with separate calls any shift shared by the whole fake batch (e.g. every soft-tissue voxel 40 HU too
    bright) is subtracted out before D can compare it with the real batch, and nothing in the adversarial
    signal holds the generator's intensity level. One shared batch lets batch norm see both. Without batch norm
    the two forms give the same logits.
    """
    if not shared_batch:
        return discriminator(real), discriminator(fake)
    if real.shape[1:] != fake.shape[1:]:
        raise MedgenError("real and fake discriminator inputs differ in shape: "
                          f"{tuple(real.shape)} vs {tuple(fake.shape)}")
    return _split_batch(discriminator(torch.cat([real, fake.to(real.dtype)])), real.shape[0])
