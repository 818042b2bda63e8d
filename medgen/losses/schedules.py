"""Weight and learning-rate schedules the methods use.

- ``LinearRamp``: Ea-GANs' lambda_edge (0 -> 100 over the first 20 epochs, then held), the lesion_uda alpha.
- ``kl_warmup``: Tybalt's beta (+kappa per epoch, capped at 1).
- ``constant_then_linear_decay``: pix2pix / Ea-GANs learning rate (constant, then linear decay to 0),
  a multiplier for ``torch.optim.lr_scheduler.LambdaLR``.
- ``sigmoid_rampup``: the exp(-5 (1 - t)^2) ramp of Laine & Aila, a smooth alternative for adversarial weights.
All accept fractional epochs (or steps), so they can be evaluated per iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from medgen.errors import ConfigError

__all__ = ["LinearRamp", "kl_warmup", "constant_then_linear_decay", "sigmoid_rampup"]


class LinearRamp:
    """``start_value`` until ``start``, linear to ``end_value`` at ``start + duration``, then held.

    ``LinearRamp(0.0, 100.0, start=0, duration=20)(epoch)`` is Ea-GANs' lambda_edge = 100 * epoch / 20, held at
    100 from epoch 20 on. ``duration=0`` gives a step at ``start``.
    """

    def __init__(self, start_value: float, end_value: float, start: float = 0.0, duration: float = 1.0) -> None:
        if duration < 0:
            raise ConfigError(f"LinearRamp duration must be >= 0, got {duration}")
        self.start_value = float(start_value)
        self.end_value = float(end_value)
        self.start = float(start)
        self.duration = float(duration)

    def __repr__(self) -> str:
        return (
            f"LinearRamp({self.start_value}, {self.end_value}, start={self.start}, duration={self.duration})"
        )

    def __call__(self, t: float) -> float:
        if t < self.start:
            return self.start_value
        if self.duration == 0 or t >= self.start + self.duration:
            return self.end_value
        frac = (t - self.start) / self.duration
        return self.start_value + frac * (self.end_value - self.start_value)


def kl_warmup(epoch: float, kappa: float, max_beta: float = 1.0) -> float:
    """Tybalt's KL weight: ``beta = min(max_beta, kappa * epoch)``, 0 in the first epoch (epoch 0).

    The reference adds kappa at each epoch end while beta <= 1, which can overshoot 1 (e.g. kappa 0.3 gives
    1.2); medgen caps at ``max_beta``. ``kappa=1`` switches KL fully on from epoch 1.
    """
    if kappa < 0:
        raise ConfigError(f"kl_warmup kappa must be >= 0, got {kappa}")
    return min(float(max_beta), float(kappa) * max(0.0, float(epoch)))


def constant_then_linear_decay(total_constant: int, total_decay: int) -> Callable[[float], float]:
    """LambdaLR multiplier: 1 for epochs ``< total_constant``, then ``1 - (e - total_constant) / total_decay``.

    With ``scheduler.step()`` once per epoch (0-based epochs), epoch ``total_constant`` still trains at the full
    rate, the last one (``total_constant + total_decay - 1``) at ``1 / total_decay``, and the rate reaches 0 at
    ``total_constant + total_decay`` - as Ea-GANs (lr -= lr0 / niter_decay after each decay epoch). pix2pix's
    own rule divides by ``total_decay + 1`` and never reaches 0; this follows the spec ("decay to 0").
    """
    if total_constant < 0 or total_decay < 0:
        raise ConfigError(f"epochs must be >= 0, got constant={total_constant}, decay={total_decay}")

    def multiplier(epoch: float) -> float:
        if epoch < total_constant:
            return 1.0
        if total_decay == 0:
            return 0.0
        return max(0.0, 1.0 - (epoch - total_constant) / total_decay)

    return multiplier


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / rampup_length, 0, 1)``; 1 when ``rampup_length`` is 0."""
    if rampup_length <= 0:
        return 1.0
    t = min(max(float(current) / float(rampup_length), 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))
