r"""Time grids for samplers: where, between $T$ and a small end time, the score is evaluated.

A grid is a decreasing sequence of times $T = t_0 > t_1 > \dots > t_N = t_{\text{end}}$ on
which a sampler takes its $N$ steps. Three families are provided, each a monotone map
$u \mapsto t(u)$ from $[0, 1]$ onto $[t_{\text{end}}, T]$ sampled at $u_i = i/N$:

| grid | evenly spaced in | reference |
|---|---|---|
| [`UniformTime`][scoresde.time_grids.UniformTime] | $t$ | Song et al. 2021 |
| [`KarrasGrid`][scoresde.time_grids.KarrasGrid] | $\hat\sigma^{1/\rho}$, with $\hat\sigma = \sigma_t/\alpha_t$ | Karras et al. 2022, eq. (5) |
| [`UniformLogSNR`][scoresde.time_grids.UniformLogSNR] | $\lambda_t = \log(\alpha_t/\sigma_t)$ | Lu et al. 2022 (DPM-Solver) |

The last two are defined through the SDE's log-SNR and its inverse, so they work for every
SDE (VP, sub-VP, VE, any schedule) with no case distinction: $\hat\sigma_t = e^{-\lambda_t}$
is the noise level of the scaled variable $x_t/\alpha_t$ (EDM's $\sigma$).

Grids are computed in float64 on the CPU (the endpoints exactly $T$ and $t_{\text{end}}$) and
returned on the requested device and dtype, once per sampling call.

Example:
    ```python
    ts = KarrasGrid(rho=7.0)(sde, steps=18, t_end=1e-3)   # 19 decreasing times
    ```
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Callable

import solvers
import torch
from torch import Tensor

from ._checks import check_int, check_positive_finite

__all__ = ["TimeGrid", "UniformTime", "KarrasGrid", "UniformLogSNR", "default_t_end", "t_at_noise_level", "check_grid"]


def default_t_end(sde, eps: float = 1e-3) -> float:
    r"""The default end time: $0$ where the log-SNR is finite there, else `eps` $\times\,T$.

    A VE SDE starts at $\sigma_{\min} > 0$, so $t = 0$ is a valid noise level; VP and sub-VP
    SDEs have $\sigma_0 = 0$ (infinite log-SNR), where score networks are undefined, and stop
    at $10^{-3} T$ for sampling and $10^{-5} T$ for likelihoods, as in Song et al. (2021).
    """
    eps = check_positive_finite("eps", eps)
    lam0 = sde.log_snr(torch.zeros((), dtype=torch.float64))
    return 0.0 if math.isfinite(lam0.item()) else eps * sde.T


def t_at_noise_level(sde, sigma_hat: float) -> float:
    r"""The time where $\hat\sigma_t = \sigma_t/\alpha_t$ equals `sigma_hat`, within $[0, T]$.

    $t = \lambda^{-1}(-2\log\hat\sigma)$, with the log-SNR first clamped into the SDE's range
    $[\lambda_T, \lambda_0]$: a level below the SDE's noise at $t = 0$ (a VE SDE's
    $\sigma_{\min}$) gives $t = 0$, one above its noise at $T$ gives $T$.
    """
    sigma_hat = check_positive_finite("sigma_hat", sigma_hat)
    lam_T, lam_0 = sde.log_snr(torch.tensor([float(sde.T), 0.0], dtype=torch.float64)).tolist()
    lam = min(max(-2.0 * math.log(sigma_hat), lam_T), lam_0)
    return float(sde.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)))


def _sde_time_range(sde, t_end: float | None) -> tuple[float, float]:
    T = float(sde.T)
    if t_end is None:
        return T, default_t_end(sde)
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)):
        raise TypeError(f"t_end: expected a real number, got {t_end!r}")
    t_end = float(t_end)
    if not (0.0 <= t_end < T):
        raise ValueError(f"t_end: expected a time in [0, T) = [0, {T}), got {t_end!r}")
    return T, t_end


def _half_log_snr(sde, t: Tensor) -> Tensor:
    return 0.5 * sde.log_snr(t)


def _from_unit(fn: Callable[[Tensor], Tensor], steps: int) -> Tensor:
    """Sample the monotone map `fn` from [0, 1] at u_i = i / steps, in float64 (through `solvers.grid_from_fn`)."""
    return solvers.grid_from_fn(fn, steps, dtype=torch.float64)


class TimeGrid(abc.ABC):
    r"""A rule that turns an SDE and a number of steps into decreasing times $t_0 = T, \dots, t_N = t_{\text{end}}$."""

    @abc.abstractmethod
    def _times(self, sde, steps: int, T: float, t_end: float) -> Tensor:
        """The grid in float64 on the CPU, shape (steps + 1,)."""

    @property
    def fixed_steps(self) -> int | None:
        """The only number of steps this grid has, if it is fixed (a fitted grid); None for a rule."""
        return None

    def __call__(
        self,
        sde,
        steps: int,
        t_end: float | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        r"""The grid for `sde` with `steps` steps.

        Arguments:
            sde: a [`SDE`][scoresde.SDE].
            steps: the number of steps $N \ge 1$ (the grid has $N + 1$ times).
            t_end: the last time; default [`default_t_end`][scoresde.time_grids.default_t_end].
            device, dtype: where and how the result is returned (default: CPU, float64).

        Returns:
            A `(steps + 1,)` tensor, strictly decreasing from `sde.T` to `t_end`.
        """
        steps = check_int("steps", steps)
        T, t_end = _sde_time_range(sde, t_end)
        ts = self._times(sde, steps, T, t_end)
        ts[0], ts[-1] = T, t_end
        return ts.to(device=device, dtype=dtype or torch.float64)


@dataclass(frozen=True)
class UniformTime(TimeGrid):
    r"""Evenly spaced times $t_i = T + \tfrac{i}{N}(t_{\text{end}} - T)$ (Song et al. 2021).

    For the VE SDE these are NCSN's geometric noise levels; for the VP SDE with
    $t_{\text{end}} = T/N$ they are DDPM's steps $t_i = (i+1)T/N$.
    """

    def _times(self, sde, steps, T, t_end):
        return _from_unit(lambda u: T + u * (t_end - T), steps)


@dataclass(frozen=True)
class KarrasGrid(TimeGrid):
    r"""EDM's grid: $\hat\sigma_i = \big(\hat\sigma_{\max}^{1/\rho} + \tfrac{i}{N}(\hat\sigma_{\min}^{1/\rho} - \hat\sigma_{\max}^{1/\rho})\big)^\rho$, $t_i = t(\hat\sigma_i)$.

    $\hat\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}$ is the noise level of the scaled
    variable (EDM's $\sigma$); the times come from the SDE's inverse log-SNR. $\rho = 7$
    concentrates steps at low noise (Karras et al. find it best for images); $\rho = 1$ is
    uniform in $\hat\sigma$ (for the VE SDE, uniform in $\sigma$), and $\rho \to \infty$
    uniform in $\log\hat\sigma$ (see [`UniformLogSNR`][scoresde.time_grids.UniformLogSNR]).

    Arguments:
        rho: the exponent $\rho > 0$, default 7.

    Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of
    Diffusion-Based Generative Models*, NeurIPS 2022, eq. (5).
    """

    rho: float = 7.0

    def __post_init__(self):
        check_positive_finite("rho", self.rho)

    def _times(self, sde, steps, T, t_end):
        ends = torch.tensor([T, t_end], dtype=torch.float64)
        s_max, s_min = torch.exp(-_half_log_snr(sde, ends)).tolist()
        if not (math.isfinite(s_max) and s_min > 0.0):
            raise ValueError(
                f"t_end: the Karras grid needs a positive noise level at t_end, got sigma/alpha = {s_min!r}"
                f" at t_end = {t_end!r} (use t_end > 0)"
            )
        inv = 1.0 / self.rho
        a, b = s_max**inv, s_min**inv

        def time_of(u: Tensor) -> Tensor:
            sigma_hat = (a + u * (b - a)) ** self.rho
            return sde.t_from_log_snr(-2.0 * torch.log(sigma_hat)).clamp(t_end, T)

        return _from_unit(time_of, steps)


@dataclass(frozen=True)
class UniformLogSNR(TimeGrid):
    r"""Evenly spaced half-log-SNR $\lambda_i = \lambda_T + \tfrac{i}{N}(\lambda_{t_{\text{end}}} - \lambda_T)$, $t_i = t(\lambda_i)$.

    $\lambda_t = \log(\alpha_t/\sigma_t)$; DPM-Solver's exponential integrators take steps of
    equal size $h = \lambda_{i+1} - \lambda_i$ on this grid (Lu et al. 2022 recommend it
    for low-dimensional data).

    Reference: Lu, Zhou, Bao, Chen, Li, Zhu, *DPM-Solver: A Fast ODE Solver for Diffusion
    Probabilistic Model Sampling in Around 10 Steps*, NeurIPS 2022, section 3.4.
    """

    def _times(self, sde, steps, T, t_end):
        lam_T, lam_end = _half_log_snr(sde, torch.tensor([T, t_end], dtype=torch.float64)).tolist()
        if not math.isfinite(lam_end):
            raise ValueError(
                f"t_end: the uniform log-SNR grid needs a finite log-SNR at t_end, got t_end = {t_end!r}"
                " (use t_end > 0)"
            )

        def time_of(u: Tensor) -> Tensor:
            return sde.t_from_log_snr(2.0 * (lam_T + u * (lam_end - lam_T))).clamp(t_end, T)

        return _from_unit(time_of, steps)


def check_grid(name: str, ts: object, T: float) -> Tensor:
    """Validate an explicit grid: a 1-D floating tensor of >= 2 strictly decreasing times in [0, T].

    Reads the values once on the host (call it before a sampling loop, not inside one).
    """
    if not isinstance(ts, Tensor):
        raise TypeError(f"{name}: expected a TimeGrid or a 1-D tensor of times, got {type(ts).__name__}")
    if not torch.is_floating_point(ts):
        raise TypeError(f"{name}: expected a floating-point tensor of times, got dtype {ts.dtype}")
    if ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"{name}: expected a 1-D tensor of at least 2 times, got shape {tuple(ts.shape)}")
    host = ts.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(host).all()):
        raise ValueError(f"{name}: expected finite times, got {host.tolist()[:8]}")
    if not bool((host.diff() < 0).all()):
        raise ValueError(f"{name}: expected strictly decreasing times (from T towards 0), got {host.tolist()[:8]}")
    if host[0].item() > T * (1 + 1e-6) or host[-1].item() < 0:
        raise ValueError(
            f"{name}: expected times in [0, T] = [0, {T}], got {host[0].item()!r} ... {host[-1].item()!r}"
        )
    return ts
