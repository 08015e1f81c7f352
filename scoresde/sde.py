r"""Forward SDEs of score-based diffusion models, and their reverses.

Every SDE here is linear in $x$ with a time-only noise scale,

$$dx = f(t)\,x\,dt + g(t)\,dw, \qquad t \in [0, T],$$

so the transition from clean data is Gaussian, $x_t \mid x_0 \sim
\mathcal N(\alpha_t x_0, \sigma_t^2 I)$, with $\tfrac{d}{dt}\log\alpha_t = f(t)$ and
$\tfrac{d}{dt}\sigma_t^2 = 2 f(t)\sigma_t^2 + g(t)^2$. A subclass supplies $f$, $g$ and
$(\alpha_t, \sigma_t)$ in closed form, the log-SNR $\lambda_t = \log(\alpha_t^2/\sigma_t^2)$
and its inverse, and a prior; everything else (perturbation, prior sampling, the reverse
SDE and the probability-flow ODE) is shared, with no branch on the SDE's type. A process
given by its marginal alone, $(\alpha_t, \sigma_t)$, is [`LinearSDE`][scoresde.LinearSDE]
(rectified flow and EDM's process are two of them).

This module is purely continuous: it knows nothing of the discrete DDPM and NCSN chains.
`scoresde.chains` owns the conversions both ways
([`DDPMSchedule.from_sde`][scoresde.chains.DDPMSchedule.from_sde] and `to_sde()`, the same
for NCSN) and provides the conveniences `VPSDE.discretize(N)`, `SubVPSDE.discretize(N)` and
`VESDE.discretize(L)`, so the import graph has one direction only: chains -> sde.

Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ._checks import (
    values_on_host,
    append_dims,
    as_tensor,
    as_time,
    check_batched,
    check_float_tensor,
    check_output,
    check_positive_finite,
    check_shape,
)
from .vp_schedules import CosineSchedule, LinearSchedule, VPSchedule

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "ReverseSDE", "ProbabilityFlowODE", "check_sde"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


#: The coefficient methods of the SDE protocol: each takes times (a tensor, or a number) and
#: returns tensors shaped like them.
PROTOCOL = ("drift_coef", "diffusion", "marginal", "log_snr", "t_from_log_snr")


def _accepting_numbers(method: Callable) -> Callable:
    """`method(self, t)` that also takes a Python number (turned into a tensor, no checks)."""

    @functools.wraps(method)
    def wrapper(self, t):
        return method(self, t if isinstance(t, Tensor) else as_tensor(t))

    wrapper._accepts_numbers = True  # type: ignore[attr-defined]
    return wrapper


def _checked_inverse(method: Callable) -> Callable:
    """`t_from_log_snr(self, log_snr)` that also takes a number, refuses (where its values are on
    the host, so at no device synchronisation) a log-SNR outside the SDE's range or NaN, and
    returns times clamped into [0, T]."""

    @functools.wraps(method)
    def wrapper(self, log_snr, check: bool = True):
        log_snr = log_snr if isinstance(log_snr, Tensor) else as_tensor(log_snr)
        if not check:  # the inverse continued past [0, T] (EDM's churn above sigma_max)
            return method(self, log_snr)
        if values_on_host(log_snr):
            _check_log_snr_range(self, log_snr)
        return method(self, log_snr).clamp(0.0, float(self.T))

    wrapper._accepts_numbers = True  # type: ignore[attr-defined]
    return wrapper


def _check_log_snr_range(sde: "SDE", log_snr: Tensor) -> None:
    ends = sde.__dict__.get("_log_snr_ends")
    if ends is None:  # [lambda_T, lambda_0] (lambda_0 = inf where sigma_0 = 0), once per SDE
        ends = tuple(sde.log_snr(torch.tensor([float(sde.T), 0.0], dtype=torch.float64)).tolist())
        sde.__dict__["_log_snr_ends"] = ends
    lo, hi = ends
    # a few float32 roundings of slack: a log-SNR computed from float32 tables (a peer's sigma_max)
    # rounds past the float64 end; such a value maps to the end itself
    rel = 8 * torch.finfo(torch.float32).eps
    bad = ~((log_snr >= lo - rel * (1.0 + abs(lo))) & (log_snr <= hi + rel * (1.0 + abs(hi))))
    if bool(bad.any()):
        first = log_snr[bad].flatten()[0].item() if log_snr.ndim else log_snr.item()
        raise ValueError(
            f"log_snr: expected a log-SNR in [log_snr(T), log_snr(0)] = [{lo:.6g}, {hi:.6g}], the range of"
            f" {type(sde).__name__} on [0, T] = [0, {sde.T}], got {first!r}"
        )


class SDE(abc.ABC):
    r"""A forward diffusion SDE $dx = f(t)\,x\,dt + g(t)\,dw$ on $[0, T]$.

    The protocol: a subclass sets `T` and implements the public coefficient methods
    `drift_coef(t)` $= f(t)$, `diffusion(t)` $= g(t)$, `marginal(t)` $= (\alpha_t, \sigma_t)$,
    `log_snr(t)` $= \log(\alpha_t^2/\sigma_t^2)$ and its inverse `t_from_log_snr(log_snr)`, and
    the property `prior_std`. They are unchecked: they receive tensors (a Python number is
    turned into one by [`as_tensor`][scoresde._checks.as_tensor], without value checks) and
    return tensors shaped like them, so samplers call them inside their loops at no cost. The
    one exception is the inverse `t_from_log_snr`, which the base wraps: a log-SNR outside
    $[\lambda_T, \lambda_0]$, or NaN, is refused when its values are on the host (a number or a
    CPU tensor, so no device synchronisation), and the times are clamped into $[0, T]$;
    `t_from_log_snr(log_snr, check=False)` is the bare inverse, continued past $[0, T]$ where the
    subclass's formula is (EDM's churn raises the noise above $\sigma_{\max}$).
    Times are checked once, at the entry points (`sample`, `impute`, `log_likelihood`, the
    losses, [`perturb`][scoresde.sde.SDE.perturb]). The composite methods `drift(x, t)`,
    `perturb`, `prior_sample`, `prior_logp` and `reverse` are shared, and broadcast through
    one helper, so any data shape `(B, ...)` works.

    `params()` (equality, repr, checkpoints) defaults to the instance's public attributes;
    override it when those are not the constructor's arguments.
    """

    T: float
    #: The noise of the forward and reverse SDEs does not depend on x.
    noise_type = "additive"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in PROTOCOL:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "_accepts_numbers", False):
                wrap = _checked_inverse if name == "t_from_log_snr" else _accepting_numbers
                setattr(cls, name, wrap(method))

    # ------------------------------------------------------------------ the protocol
    @abc.abstractmethod
    def drift_coef(self, t: Tensor) -> Tensor:
        r"""The linear drift coefficient $f(t)$ (the drift is $f(t)\,x$), shaped like `t`."""

    @abc.abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        r"""The diffusion coefficient $g(t)$, shaped like `t`."""

    @abc.abstractmethod
    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""$(\alpha_t, \sigma_t)$ with $x_t \mid x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)$, shaped like `t`."""

    @abc.abstractmethod
    def log_snr(self, t: Tensor) -> Tensor:
        r"""The log-SNR $\log(\alpha_t^2 / \sigma_t^2)$ (twice the half-log-SNR $\log(\alpha_t/\sigma_t)$), decreasing in $t$."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        r"""The time $t$ whose log-SNR is `log_snr` (the inverse of [`log_snr`][scoresde.sde.SDE.log_snr])."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at t = T."""

    def params(self) -> dict:
        """Constructor arguments that identify the SDE (equality, repr, checkpoints); by default
        the instance's public attributes."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    # ------------------------------------------------------------------ composite methods
    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        r"""The forward drift $f(t)\,x$, shaped like `x`."""
        x = check_batched("x", x)
        t = as_time(t, like=x)
        return append_dims(self.drift_coef(t), x.ndim) * x

    def perturb(
        self,
        x0: Tensor,
        t: float | Tensor,
        noise: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Draw $x_t = \alpha_t x_0 + \sigma_t\,\varepsilon$ from the transition kernel.

        Arguments:
            x0: clean data `(B, ...)`.
            t: a number or a `(B,)` tensor of times in $[0, T]$.
            noise: $\varepsilon$, shaped like `x0`; drawn from `generator` when omitted.
            generator: source of $\varepsilon$ when `noise` is omitted.
        """
        x0 = check_batched("x0", x0)
        t = as_time(t, like=x0, T=self.T)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        else:
            check_float_tensor("noise", noise)
            if noise.shape != x0.shape:
                raise ValueError(
                    f"noise: expected the shape of x0, {tuple(x0.shape)}, got {tuple(noise.shape)}"
                )
        alpha, sigma = self.marginal(t)
        return append_dims(alpha, x0.ndim) * x0 + append_dims(sigma, x0.ndim) * noise

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        r"""Draw from the prior $\mathcal N(0, \sigma_{\text{prior}}^2 I)$ that stands in for $p_T$."""
        shape = check_shape("shape", shape)
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_logp(self, x: Tensor) -> Tensor:
        r"""Log-density of the prior at each sample of `x` `(B, ...)`, shape `(B,)`."""
        x = check_batched("x", x)
        d = x[0].numel()
        s2 = self.prior_std**2
        sq = x.reshape(x.shape[0], -1).pow(2).sum(-1)
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * sq / s2

    def reverse(self, score: ScoreFn, probability_flow: bool = False) -> "ReverseSDE | ProbabilityFlowODE":
        r"""The reverse-time SDE (or, with `probability_flow=True`, the probability-flow ODE).

        Reverse SDE: $dx = [f(t)x - g(t)^2\,\nabla_x\log p_t(x)]\,dt + g(t)\,d\bar w$,
        integrated from $t=T$ down to $0$ (a negative time step). Probability flow:
        $\frac{dx}{dt} = f(t)x - \tfrac12 g(t)^2\,\nabla_x\log p_t(x)$, which shares the
        marginals $p_t$ (Song et al. 2021, eqs. 6 and 13). The returned objects follow the
        `solvers` problem protocol (`drift(x, t)`/`diffusion(x, t)`, `vector_field(x, t)`).

        Arguments:
            score: any callable `score(x, t)` returning $\nabla_x\log p_t(x)$ shaped like `x`.
            probability_flow: return the ODE instead of the SDE.
        """
        if not callable(score):
            raise TypeError(f"score: expected a callable score(x, t), got {type(score).__name__}")
        if not isinstance(probability_flow, bool):
            raise TypeError(f"probability_flow: expected a bool, got {probability_flow!r}")
        if probability_flow:
            return ProbabilityFlowODE(self, score)
        return ReverseSDE(self, score)

    # ------------------------------------------------------------------ dunder
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.params())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


def check_sde(name: str, value: object, *, optional: bool = False) -> "SDE | None":
    """Raise a `TypeError` naming `name` unless `value` is a [`SDE`][scoresde.SDE] (or None with `optional`)."""
    if isinstance(value, SDE) or (optional and value is None):
        return value
    expected = "a scoresde.SDE (VPSDE, SubVPSDE, VESDE, ...)" + (" or None" if optional else "")
    raise TypeError(f"{name}: expected {expected}, got {type(value).__name__}")


class _VPFamily(SDE):
    """Shared machinery of VP and sub-VP: a VP noise schedule gives alpha_t and f(t)."""

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        T: float = 1.0,
        schedule: str | VPSchedule = "linear",
    ):
        if not (isinstance(schedule, str) and schedule == "linear") and (beta_min, beta_max) != (0.1, 20.0):
            raise ValueError(
                f"beta_min, beta_max: only the linear schedule uses them, got beta_min={beta_min!r},"
                f" beta_max={beta_max!r} with schedule={schedule!r} (leave them out, or use schedule='linear')"
            )
        if isinstance(schedule, VPSchedule):
            self.schedule = schedule
        elif schedule == "linear":
            self.schedule = LinearSchedule(beta_min, beta_max, T)
        elif schedule == "cosine":
            self.schedule = CosineSchedule(T=check_positive_finite("T", T))
        else:
            raise ValueError(
                f"schedule: expected 'linear', 'cosine' or a VPSchedule instance, got {schedule!r}"
            )
        self.T = self.schedule.T

    @property
    def beta_min(self) -> float:
        return getattr(self.schedule, "beta_min", float("nan"))

    @property
    def beta_max(self) -> float:
        return getattr(self.schedule, "beta_max", float("nan"))

    def params(self) -> dict:
        s = self.schedule
        if isinstance(s, LinearSchedule):
            return s.params()
        return {"schedule": s}

    def beta(self, t: float | Tensor) -> Tensor:
        r"""The noise rate $\beta(t) = -2 f(t)$."""
        return self.schedule.beta(as_tensor(t))

    def drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_VPFamily):
    r"""The variance-preserving SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)}\,dw$.

    The continuous limit of DDPM: $\alpha_t = \exp(-\tfrac12\int_0^t\beta)$ and
    $\sigma_t^2 = 1 - \alpha_t^2$, prior $\mathcal N(0, I)$. The default schedule is linear,
    $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$ for $T = 1$ (see
    [`LinearSchedule`][scoresde.vp_schedules.LinearSchedule] for other $T$); `schedule="cosine"`
    selects Nichol & Dhariwal's, and a [`VPSchedule`][scoresde.vp_schedules.VPSchedule] instance
    any other (for example the interpolated schedule of a discrete chain).
    `discretize(N)` gives its DDPM chain (see
    [`DDPMSchedule.from_sde`][scoresde.chains.DDPMSchedule.from_sde]).

    Arguments:
        beta_min: $\beta(0)$, default 0.1 (Song et al. 2021).
        beta_max: $\beta(T)$, default 20.
        T: time horizon, default 1.
        schedule: `"linear"`, `"cosine"` or a `VPSchedule`.

    Reference: Song et al., ICLR 2021, eq. (11); Ho, Jain, Abbeel, *Denoising Diffusion
    Probabilistic Models*, NeurIPS 2020.
    """

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t))

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        la = self.schedule.log_alpha(t)
        return torch.exp(la), torch.sqrt(-torch.expm1(2.0 * la))

    def log_snr(self, t: Tensor) -> Tensor:
        la = self.schedule.log_alpha(t)
        return 2.0 * la - torch.log(-torch.expm1(2.0 * la))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # alpha^2 = sigmoid(log_snr), so log(alpha) = -softplus(-log_snr) / 2.
        return self.schedule.t_from_log_alpha(-0.5 * torch.nn.functional.softplus(-log_snr))


class SubVPSDE(_VPFamily):
    r"""The sub-VP SDE $dx = -\tfrac12\beta(t)\,x\,dt + \sqrt{\beta(t)\,(1 - e^{-2\int_0^t\beta})}\,dw$.

    Same mean as the VP SDE, smaller variance: $\sigma_t = 1 - \alpha_t^2$ (a standard
    deviation, as in Song et al.), so $\sigma_t^2$ stays below the VP variance at every $t$.
    Prior $\mathcal N(0, I)$.

    Arguments: as [`VPSDE`][scoresde.VPSDE].

    Reference: Song et al., ICLR 2021, eq. (12).
    """

    def diffusion(self, t: Tensor) -> Tensor:
        la = self.schedule.log_alpha(t)
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(4.0 * la))

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        la = self.schedule.log_alpha(t)
        return torch.exp(la), -torch.expm1(2.0 * la)

    def log_snr(self, t: Tensor) -> Tensor:
        la = self.schedule.log_alpha(t)
        return 2.0 * la - 2.0 * torch.log(-torch.expm1(2.0 * la))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        # With a = alpha^2 and c = exp(-log_snr): a / (1 - a)^2 = 1 / c, the root in (0, 1) is
        # a = 2 / (2 + c + sqrt(c (4 + c))). Computed in float64 (c overflows float32 early).
        log_snr64 = log_snr.double()
        c = torch.exp(-log_snr64)
        a = 2.0 / (2.0 + c + torch.sqrt(c * (4.0 + c)))
        return self.schedule.t_from_log_alpha(0.5 * torch.log(a)).to(log_snr.dtype)


class VESDE(SDE):
    r"""The variance-exploding SDE $dx = \sqrt{\tfrac{d\sigma^2(t)}{dt}}\,dw$, $\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t/T}$.

    The continuous limit of NCSN: $\alpha_t = 1$, $\sigma_t = \sigma(t)$ and
    $g(t) = \sigma(t)\sqrt{2\log(\sigma_{\max}/\sigma_{\min})/T}$. As in NCSN, whose smallest
    noise level is $\sigma_{\min}$, time 0 is data perturbed with $\sigma_{\min}$: the
    marginal $x_t = x_0 + \sigma(t)\,\varepsilon$ is exact for the SDE started from
    $p_{\text{data}} * \mathcal N(0, \sigma_{\min}^2 I)$. Prior $\mathcal N(0, \sigma_{\max}^2 I)$.
    `discretize(L)` gives NCSN's $L$ levels (see
    [`NCSNSchedule.from_sde`][scoresde.chains.NCSNSchedule.from_sde]).

    Arguments:
        sigma_min: the smallest noise level, default 0.01.
        sigma_max: the largest noise level, default 50 (Song et al. 2021; choose it near the
            largest pairwise distance of the data, Song & Ermon 2020).
        T: time horizon, default 1.

    Reference: Song et al., ICLR 2021, eq. (9); Song & Ermon, *Generative Modeling by
    Estimating Gradients of the Data Distribution*, NeurIPS 2019.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min = check_positive_finite("sigma_min", sigma_min)
        self.sigma_max = check_positive_finite("sigma_max", sigma_max)
        self.T = check_positive_finite("T", T)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"sigma_max: expected a value > sigma_min = {self.sigma_min!r}, got {self.sigma_max!r}"
            )
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def params(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "T": self.T}

    def sigma(self, t: float | Tensor) -> Tensor:
        r"""The noise level $\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t/T}$."""
        return self._sigma(as_tensor(t))

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(self._log_ratio * t / self.T)

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return self._sigma(t) * math.sqrt(2.0 * self._log_ratio / self.T)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self._sigma(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(self._sigma(t))

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        return (-0.5 * log_snr - math.log(self.sigma_min)) / self._log_ratio * self.T

    @property
    def prior_std(self) -> float:
        return self.sigma_max


# ---------------------------------------------------------------------- problems
def _time_like(t: Tensor | float, x: Tensor) -> Tensor:
    """Times as a tensor on x's device and dtype, without value checks (solver hot path)."""
    if isinstance(t, Tensor):
        return t.to(device=x.device, dtype=x.dtype)
    return torch.tensor(float(t), device=x.device, dtype=x.dtype)


def _checked_score(score: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    return check_output("score", score(x, t), x)


def _score_drift(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, weight: float) -> Tensor:
    """f(t) x - weight g(t)^2 score(x, t): the reverse drift (weight 1) or the probability flow (1/2)."""
    t = _time_like(t, x)
    f = append_dims(sde.drift_coef(t), x.ndim)
    g2 = append_dims(sde.diffusion(t) ** 2, x.ndim)
    return f * x - weight * g2 * _checked_score(score, x, t)


class ReverseSDE:
    r"""The reverse-time SDE $dx = [f(t)x - g(t)^2 s(x, t)]\,dt + g(t)\,d\bar w$ for a score $s$.

    Integrate it with time decreasing from $T$ (the `solvers` layer does so natively).
    """

    noise_type = "additive"

    def __init__(self, sde: SDE, score: ScoreFn):
        self.sde, self.score = sde, score

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return _score_drift(self.sde, self.score, x, t, 1.0)

    def diffusion(self, x: Tensor, t: Tensor) -> Tensor:
        t = _time_like(t, x)
        return append_dims(self.sde.diffusion(t), x.ndim).expand_as(x)

    def __repr__(self) -> str:
        return f"ReverseSDE({self.sde!r})"


class ProbabilityFlowODE:
    r"""The probability-flow ODE $\dot x = f(t)x - \tfrac12 g(t)^2 s(x, t)$ for a score $s$.

    Same marginals as the forward SDE; deterministic, so it gives exact likelihoods
    and an encoder. Exposes `vector_field(x, t)` (the `solvers` ODE protocol), and
    `drift`/`diffusion` (zero) so SDE solvers accept it too.
    """

    noise_type = "additive"

    def __init__(self, sde: SDE, score: ScoreFn):
        self.sde, self.score = sde, score

    def vector_field(self, x: Tensor, t: Tensor) -> Tensor:
        return _score_drift(self.sde, self.score, x, t, 0.5)

    drift = vector_field

    def diffusion(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.vector_field(x, t)

    def __repr__(self) -> str:
        return f"ProbabilityFlowODE({self.sde!r})"
