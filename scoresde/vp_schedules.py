r"""Noise schedules of variance-preserving SDEs, as functions of continuous time.

A VP-type SDE (VP, sub-VP) is fixed by the log of its mean coefficient
$\log\alpha_t$ on $t \in [0, T]$: the drift is $f(t) = \tfrac{d}{dt}\log\alpha_t$ and the
instantaneous noise rate $\beta(t) = -2 f(t)$. A schedule object supplies exactly
that: `log_alpha(t)`, `beta(t)` and the inverse `t_from_log_alpha(log_alpha)`, all
closed-form (or exactly piecewise linear), on the input's device and dtype.

Three schedules are provided:

* [`LinearSchedule`][scoresde.vp_schedules.LinearSchedule]: $\beta$ linear in time (Ho et al. 2020,
  Song et al. 2021), the default of [`VPSDE`][scoresde.VPSDE];
* [`CosineSchedule`][scoresde.vp_schedules.CosineSchedule]: $\bar\alpha$ a squared cosine
  (Nichol & Dhariwal 2021);
* [`InterpolatedSchedule`][scoresde.vp_schedules.InterpolatedSchedule]: $\log\alpha$ piecewise
  linear through given knots, the exact continuous-time form of any discrete DDPM chain
  (for example a pretrained model's `alphas_cumprod`).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from ._checks import check_positive_finite

__all__ = ["VPSchedule", "LinearSchedule", "CosineSchedule", "InterpolatedSchedule"]


class VPSchedule(abc.ABC):
    r"""A variance-preserving noise schedule: $\log\alpha_t$ on $[0, T]$, decreasing from 0.

    Subclasses implement `log_alpha`, `beta` and `t_from_log_alpha`; times are tensors
    and results keep their shape, device and dtype. No input checking happens here: the
    SDE classes check their inputs before they call a schedule.
    """

    T: float

    @abc.abstractmethod
    def log_alpha(self, t: Tensor) -> Tensor:
        r"""$\log\alpha_t = -\tfrac12\int_0^t \beta(s)\,ds$."""

    @abc.abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        r"""$\beta(t) = -2\,\tfrac{d}{dt}\log\alpha_t$."""

    @abc.abstractmethod
    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        r"""The time $t$ with $\log\alpha_t$ equal to `log_alpha` (the inverse map)."""

    def params(self) -> dict:
        """Parameters that identify the schedule (used for equality and checkpoints)."""
        return {}

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class LinearSchedule(VPSchedule):
    r"""$\beta$ linear in time: $\beta(t) = \frac{1}{T}\big(\beta_{\min} + \frac{t}{T}(\beta_{\max} - \beta_{\min})\big)$.

    With $u = t/T$, $\int_0^t\beta = \beta_{\min}u + \tfrac12(\beta_{\max}-\beta_{\min})u^2$,
    so the process at time $T$ does not depend on $T$ (a larger $T$ only slows the clock).
    $T = 1$ gives the VP SDE of Song et al. (2021), whose discretisation with $N$ steps is
    DDPM's chain with $\beta_i$ evenly spaced from $\beta_{\min}/N$ to $\beta_{\max}/N$.

    Arguments:
        beta_min: $\beta$ at $t = 0$ (on the $T=1$ clock), $> 0$.
        beta_max: $\beta$ at $t = T$ (on the $T=1$ clock), $\ge$ `beta_min`.
        T: the time horizon, $> 0$.

    Reference: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, *Score-Based Generative
    Modeling through Stochastic Differential Equations*, ICLR 2021, eq. (11).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = check_positive_finite("beta_min", beta_min)
        self.beta_max = check_positive_finite("beta_max", beta_max)
        self.T = check_positive_finite("T", T)
        if self.beta_max < self.beta_min:
            raise ValueError(
                f"beta_max: expected a value >= beta_min = {self.beta_min!r}, got {self.beta_max!r}"
            )

    def params(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "T": self.T}

    def integral(self, t: Tensor) -> Tensor:
        r"""$\int_0^t \beta(s)\,ds$."""
        u = t / self.T
        return self.beta_min * u + 0.5 * (self.beta_max - self.beta_min) * u * u

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * self.integral(t)

    def beta(self, t: Tensor) -> Tensor:
        u = t / self.T
        return (self.beta_min + u * (self.beta_max - self.beta_min)) / self.T

    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        # Solve b0 u + (b1 - b0) u^2 / 2 = B for u >= 0, in the cancellation-free form
        # u = 2 B / (b0 + sqrt(b0^2 + 2 (b1 - b0) B)).
        B = -2.0 * log_alpha
        b0, db = self.beta_min, self.beta_max - self.beta_min
        u = 2.0 * B / (b0 + torch.sqrt(b0 * b0 + 2.0 * db * B))
        return u * self.T


class CosineSchedule(VPSchedule):
    r"""The cosine schedule: $\bar\alpha(u) = \cos^2\!\big(\frac{u+s}{1+s}\frac{\pi}{2}\big) / \cos^2\!\big(\frac{s}{1+s}\frac{\pi}{2}\big)$.

    $\bar\alpha = \alpha^2$ is Nichol & Dhariwal's cumulative product, on the clock
    $u = u_{\text{end}}\,t/T$. At $u = 1$ the schedule reaches $\bar\alpha = 0$ and
    $\beta = \infty$; the continuous SDE therefore stops at $u_{\text{end}} < 1$ (default
    0.9946, the truncation DPM-Solver uses), where $\beta$ is finite and the log-SNR is
    about $-10$. The published discrete chain (betas clipped at 0.999) is
    [`DDPMSchedule.cosine`][scoresde.chains.DDPMSchedule.cosine].

    Arguments:
        s: the offset $s > 0$ (0.008 in the paper).
        T: the time horizon, $> 0$.
        u_end: the end of the cosine clock, in $(0, 1)$.

    Reference: Nichol & Dhariwal, *Improved Denoising Diffusion Probabilistic Models*,
    ICML 2021, eq. (17); Lu et al., *DPM-Solver*, NeurIPS 2022, appendix.
    """

    def __init__(self, s: float = 0.008, T: float = 1.0, u_end: float = 0.9946):
        self.s = check_positive_finite("s", s)
        self.T = check_positive_finite("T", T)
        u_end = check_positive_finite("u_end", u_end)
        if u_end >= 1.0:
            raise ValueError(
                f"u_end: expected a value in (0, 1) (beta is infinite at u = 1), got {u_end!r}"
            )
        self.u_end = u_end
        self._log_cos0 = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))

    def params(self) -> dict:
        return {"s": self.s, "T": self.T, "u_end": self.u_end}

    def _phase(self, t: Tensor) -> Tensor:
        u = t * (self.u_end / self.T)
        return (u + self.s) / (1.0 + self.s) * (math.pi / 2.0)

    def log_alpha(self, t: Tensor) -> Tensor:
        # Clamped at 0: rounding would otherwise give alpha_0 a hair above 1.
        return torch.clamp(torch.log(torch.cos(self._phase(t))) - self._log_cos0, max=0.0)

    def beta(self, t: Tensor) -> Tensor:
        rate = (math.pi / 2.0) / (1.0 + self.s) * (self.u_end / self.T)
        return 2.0 * rate * torch.tan(self._phase(t))

    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        phase = torch.arccos(torch.exp(log_alpha + self._log_cos0))
        u = phase * (2.0 / math.pi) * (1.0 + self.s) - self.s
        return torch.clamp(u * (self.T / self.u_end), min=0.0)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing), extrapolating linearly."""
    idx = torch.searchsorted(xp, x.contiguous(), right=False).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)


class InterpolatedSchedule(VPSchedule):
    r"""$\log\alpha_t$ piecewise linear through knots $(t_k, \log\alpha_k)$.

    The exact continuous-time form of a discrete DDPM chain: with knots
    $t_0 = 0, \log\alpha_0 = 0$ and $t_{i+1} = (i+1)T/N$,
    $\log\alpha_{i+1} = \tfrac12\log\bar\alpha_i$, the SDE's marginals at the knots are
    exactly those of the chain, and $\beta$ is constant between knots. This is the
    discrete-time schedule of DPM-Solver (Lu et al. 2022), used to drive continuous-time
    solvers with networks trained on discrete steps.

    Arguments:
        t_knots: increasing times, the first 0, the last the horizon $T$.
        log_alpha_knots: $\log\alpha$ at the knots, 0 first, strictly decreasing.
    """

    def __init__(self, t_knots: Tensor, log_alpha_knots: Tensor):
        t_knots = torch.as_tensor(t_knots, dtype=torch.float64).flatten().cpu()
        la = torch.as_tensor(log_alpha_knots, dtype=torch.float64).flatten().cpu()
        if t_knots.numel() < 2 or t_knots.shape != la.shape:
            raise ValueError(
                "t_knots, log_alpha_knots: expected two 1-D tensors of the same length >= 2,"
                f" got shapes {tuple(t_knots.shape)} and {tuple(la.shape)}"
            )
        if t_knots[0] != 0 or not bool((t_knots.diff() > 0).all()):
            raise ValueError(f"t_knots: expected strictly increasing times from 0, got {t_knots.tolist()[:6]}...")
        if not bool(torch.isfinite(la).all()) or la[0] != 0 or not bool((la.diff() < 0).all()):
            raise ValueError(
                "log_alpha_knots: expected finite values, 0 first, strictly decreasing"
                f" (alphas_cumprod strictly decreasing and > 0), got {la.tolist()[:6]}..."
            )
        self.t_knots, self.log_alpha_knots = t_knots, la
        self.T = float(t_knots[-1])
        self._cache: dict = {}

    def params(self) -> dict:
        return {"t_knots": tuple(self.t_knots.tolist()), "log_alpha_knots": tuple(self.log_alpha_knots.tolist())}

    def __repr__(self) -> str:
        return f"InterpolatedSchedule({self.t_knots.numel()} knots, T={self.T})"

    def _knots(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            t = self.t_knots.to(device=like.device, dtype=like.dtype)
            la = self.log_alpha_knots.to(device=like.device, dtype=like.dtype)
            slopes = (self.log_alpha_knots.diff() / self.t_knots.diff()).to(device=like.device, dtype=like.dtype)
            self._cache[key] = (t, la, slopes)
        return self._cache[key]

    def log_alpha(self, t: Tensor) -> Tensor:
        tk, la, _ = self._knots(t)
        return _interp(t, tk, la)

    def beta(self, t: Tensor) -> Tensor:
        tk, _, slopes = self._knots(t)
        # Segment i covers (t_i, t_{i+1}]; beta is -2 times its slope.
        idx = torch.searchsorted(tk, t.contiguous(), right=False).clamp(1, tk.numel() - 1)
        return -2.0 * slopes[idx - 1]

    def t_from_log_alpha(self, log_alpha: Tensor) -> Tensor:
        tk, la, _ = self._knots(log_alpha)
        # -log_alpha increases with t: interpolate t as a function of it.
        return _interp(-log_alpha, -la, tk)
