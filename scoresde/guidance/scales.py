r"""Guidance scales: numbers, per-sample tensors and schedules of the noise level, such as guidance intervals.

A scale (or weight) is a number, a per-sample `(B,)` tensor, or a schedule: a callable of
the noise level $\sigma = \sigma_t/\alpha_t$ (see [`noise_level`][scoresde.guidance.noise_level])
such as [`GuidanceInterval`][scoresde.guidance.GuidanceInterval]; a schedule needs the `sde`
that maps $t$ to $\sigma$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor

from .._checks import values_on_host, append_dims, as_time, check_float_tensor, describe
from ..sde import SDE
from ._checks import _check_sde, _finite_number

#: A guidance scale: a number, a per-sample `(B,)` tensor, or a schedule `sigma -> scale`.
Scale = Union[float, Tensor, Callable[[Tensor], Tensor]]


def noise_level(sde: SDE, t: float | Tensor) -> Tensor:
    r"""The noise level $\sigma = \sigma_t/\alpha_t = e^{-\lambda_t/2}$ of `sde` at time `t`.

    This is the $\sigma$ of Karras et al. (EDM) for every SDE: $x_t/\alpha_t = x_0 + \sigma\,\varepsilon$.
    For the VE SDE it is $\sigma_t$ itself, for the VP SDE $\sqrt{(1-\bar\alpha)/\bar\alpha}$.
    Guidance intervals are set in this $\sigma$, so published intervals (given in EDM's
    $\sigma$) carry over to every SDE.

    Arguments:
        sde: a [`SDE`][scoresde.SDE].
        t: a number or a `(B,)` tensor of times in $[0, T]$.

    Returns:
        $\sigma$, shaped like `t`.
    """
    _check_sde("sde", sde)
    alpha, sigma = sde.marginal(as_time(t, T=sde.T))
    return sigma / alpha


def _level(sde, x: Tensor, t) -> Tensor:
    alpha, sigma = sde.marginal(as_time(t, like=x))
    return sigma / alpha




@dataclass(frozen=True)
class GuidanceInterval:
    r"""A guidance scale applied only in a band of noise levels (Kynkäänniemi et al. 2024).

    As a schedule of the noise level $\sigma = \sigma_t/\alpha_t$ it returns `scale` when
    $\sigma_{lo} < \sigma \le \sigma_{hi}$ (the paper's half-open interval) and `outside`
    elsewhere. With the default `outside=1`, classifier-free guidance outside the band is
    the plain conditional score (no guidance), as in the paper; classifier guidance of an
    unconditional score likewise reduces to the exact conditional score there. Use
    `outside=0` to switch a classifier or a composed condition off.

    Kynkäänniemi et al. report, for EDM2-S on ImageNet-512, $w = 2.1$ on
    $\sigma \in (0.28, 2.9]$ (their $w$ is our `scale`).

    Arguments:
        scale: the guidance scale inside the interval, a finite number.
        sigma_lo: lower end, $\ge 0$ (excluded).
        sigma_hi: upper end, $> \sigma_{lo}$ (included; may be `math.inf`).
        outside: the scale outside the interval, default 1.

    Example:
        ```python
        guided = guided_score(uncond, cond, GuidanceInterval(2.1, 0.28, 2.9), sde=sde)
        ```
    """

    scale: float
    sigma_lo: float
    sigma_hi: float
    outside: float = 1.0

    def __post_init__(self):
        for name in ("scale", "outside"):
            object.__setattr__(self, name, _finite_number(name, getattr(self, name)))
        for name in ("sigma_lo", "sigma_hi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name}: expected a real number, got {v!r}")
            if math.isnan(v) or v < 0:
                raise ValueError(f"{name}: expected a noise level >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not self.sigma_lo < self.sigma_hi:
            raise ValueError(
                f"sigma_hi: expected a value > sigma_lo = {self.sigma_lo!r}, got {self.sigma_hi!r}"
            )

    def contains(self, sigma: Tensor) -> Tensor:
        r"""Whether each noise level lies in $(\sigma_{lo}, \sigma_{hi}]$ (a bool tensor)."""
        return (sigma > self.sigma_lo) & (sigma <= self.sigma_hi)

    def __call__(self, sigma: Tensor) -> Tensor:
        inside = torch.full_like(sigma, self.scale)
        return torch.where(self.contains(sigma), inside, torch.full_like(sigma, self.outside))



def _check_scale(name: str, scale) -> Scale:
    """A number (finite), a 0-d or (B,) floating tensor (finite) or a schedule callable."""
    if isinstance(scale, Tensor):
        check_float_tensor(name, scale)
        if scale.ndim > 1:
            raise ValueError(f"{name}: expected a number or a (B,) tensor, got shape {tuple(scale.shape)}")
        if not bool(torch.isfinite(scale).all()):  # once, at construction
            raise ValueError(f"{name}: expected finite scales, got {describe(scale)} with NaN or inf")
        return scale
    if callable(scale) and not isinstance(scale, (int, float)):
        return scale
    return _finite_number(name, scale)


def _needs_sde(scale) -> bool:
    return callable(scale) and not isinstance(scale, (Tensor, int, float))


def _resolve_scale(name: str, scale, x: Tensor, level: Callable[[], Tensor]) -> float | Tensor:
    """The scale at (x, t), shaped to multiply x: a float, or a (B, 1, ..., 1) / 0-d tensor."""
    if isinstance(scale, float):
        return scale
    if not isinstance(scale, Tensor):
        sigma = level()
        scale = scale(sigma)
        if not isinstance(scale, Tensor):
            scale = torch.as_tensor(scale, device=x.device, dtype=x.dtype)
        if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] not in (1, x.shape[0])):
            raise ValueError(
                f"{name}: the schedule returned shape {tuple(scale.shape)}, expected a scalar or ({x.shape[0]},)"
            )
        if values_on_host(scale) and not bool(torch.isfinite(scale).all()):
            raise ValueError(f"{name}: the schedule returned a NaN or infinite scale")
    elif scale.ndim == 1 and scale.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}: expected a number or a ({x.shape[0]},) tensor to match the batch of x, got shape {tuple(scale.shape)}"
        )
    return append_dims(scale.to(device=x.device, dtype=x.dtype), x.ndim)


