r"""Any linear forward process, from its marginal; rectified flow and EDM's process on top.

A forward process whose transition from clean data is Gaussian,
$x_t \mid x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)$, is the linear SDE
$dx = f(t)\,x\,dt + g(t)\,dw$ with

$$f(t) = \frac{d\log\alpha_t}{dt}, \qquad
g(t)^2 = \frac{d\sigma_t^2}{dt} - 2 f(t)\,\sigma_t^2 = -\sigma_t^2\,\frac{d\lambda_t}{dt},
\qquad \lambda_t = \log\frac{\alpha_t^2}{\sigma_t^2}$$

(Kingma et al. 2021; Song et al. 2021), so
$g^2 > 0$ exactly where the signal-to-noise ratio decreases.
[`LinearSDE`][scoresde.LinearSDE] takes $\alpha(t)$ and $\sigma(t)$ as tensor
callables and derives everything else: derivatives by forward-mode autograd unless given,
the log-SNR's inverse by bisection unless given. Every sampler, the likelihood, guidance
and the losses read an SDE only through $(\alpha_t, \sigma_t)$, $f$, $g$, $\lambda_t$ and its
inverse, so a new process is one line:

```python
sde = LinearSDE(lambda t: torch.cos(t * math.pi / 2), lambda t: torch.sin(t * math.pi / 2), T=0.999)
```

References: Kingma, Salimans, Poole, Ho, *Variational Diffusion Models*, NeurIPS 2021;
Song et al., *Score-Based Generative Modeling through Stochastic Differential Equations*,
ICLR 2021.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ._checks import check_positive_finite
from .sde import SDE

__all__ = ["LinearSDE", "RectifiedFlow", "EDM"]

TimeFn = Callable[[Tensor], Tensor]

#: Bisection steps of the numerical log-SNR inverse: the bracket [0, T] halves each step,
#: so after 64 it is T / 2^64, below float64's resolution of any t >= 1e-4 T.
BISECTION_STEPS = 64
#: Points of the grid on which the constructor checks alpha > 0, sigma > 0 and a decreasing SNR.
PROBE_POINTS = 1025


def _derivative(fn: TimeFn, t: Tensor) -> tuple[Tensor, Tensor]:
    """(fn(t), dfn/dt) for an elementwise fn, by one forward-mode pass (works under no_grad)."""
    t = t.contiguous()  # an expanded time (one t for the batch) cannot carry a tangent
    return torch.func.jvp(fn, (t,), (torch.ones_like(t),))


class LinearSDE(SDE):
    r"""The linear SDE of a given marginal $x_t \mid x_0 \sim \mathcal N(\alpha(t)\,x_0, \sigma(t)^2 I)$ on $[0, T]$.

    Drift $f(t)\,x$ and diffusion $g(t)$ follow from the marginal:

    $$f = \frac{\alpha'}{\alpha}, \qquad g^2 = \frac{d\sigma^2}{dt} - 2 f\sigma^2 = 2\sigma\,(\sigma' - f\sigma),$$

    with $\alpha'$, $\sigma'$ by forward-mode autograd (`torch.func.jvp`) unless
    `dalpha_dt`/`dsigma_dt` are given. The log-SNR is $\lambda_t = 2\log\alpha_t - 2\log\sigma_t$
    unless `log_snr` is given; its inverse is found by a vectorised bisection on $[0, T]$ in
    float64 on the input's device (`BISECTION_STEPS` steps, no host synchronisation) unless
    `t_from_log_snr` is given; values of $\lambda$ beyond $[\lambda_T, \lambda_0]$ map to the
    nearest end.

    The constructor evaluates the callables on `PROBE_POINTS` evenly spaced times of
    $[0, T]$ and refuses, naming the argument and the time, any that does not give a tensor
    shaped like `t`, finite values, $\alpha > 0$ on $[0, T]$, $\sigma \ge 0$ at 0 and
    $\sigma > 0$ on $(0, T]$, a strictly decreasing SNR $\alpha^2/\sigma^2$, and (from the
    derivatives) $g^2 \ge 0$; closed forms given for `log_snr` and `t_from_log_snr` are
    checked against $\alpha$ and $\sigma$ there too.

    Arguments:
        alpha: $t \mapsto \alpha_t$, an elementwise tensor callable (a constant as
            `lambda t: torch.ones_like(t)`).
        sigma: $t \mapsto \sigma_t$, an elementwise tensor callable.
        T: the time horizon, $> 0$.
        dalpha_dt, dsigma_dt: the derivatives in closed form (default: autograd).
        log_snr: $t \mapsto \log(\alpha_t^2/\sigma_t^2)$ in closed form (default: from `alpha`, `sigma`).
        t_from_log_snr: its inverse in closed form (default: bisection).
        prior_std: the standard deviation of the Gaussian prior that stands in for $p_T$
            (default $\sigma_T$, the prior that neglects the signal $\alpha_T x_0$ left at $T$,
            as VE and EDM do; pass 1 for a variance-preserving process with standardised data).

    The SDE pickles (for checkpoints and data-parallel workers) when its callables do:
    prefer module-level functions to lambdas for a process you save.

    References: Kingma et al., *Variational Diffusion Models*, NeurIPS 2021 (the process
    given by its marginal and its SNR); Song et al., ICLR 2021.
    """

    def __init__(
        self,
        alpha: TimeFn,
        sigma: TimeFn,
        T: float = 1.0,
        *,
        dalpha_dt: TimeFn | None = None,
        dsigma_dt: TimeFn | None = None,
        log_snr: TimeFn | None = None,
        t_from_log_snr: TimeFn | None = None,
        prior_std: float | None = None,
    ):
        fns = {"alpha": alpha, "sigma": sigma, "dalpha_dt": dalpha_dt, "dsigma_dt": dsigma_dt,
               "log_snr": log_snr, "t_from_log_snr": t_from_log_snr}
        for name, fn in fns.items():
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a tensor callable of t, got {type(fn).__name__}")
            if fn is None and name in ("alpha", "sigma"):
                raise TypeError(f"{name}: expected a tensor callable of t, got None")
        self.T = check_positive_finite("T", T)
        self.alpha_fn, self.sigma_fn = alpha, sigma
        self.dalpha_fn, self.dsigma_fn = dalpha_dt, dsigma_dt
        self.log_snr_fn, self.inverse_log_snr_fn = log_snr, t_from_log_snr
        self._check_on_grid()
        if prior_std is None:
            prior_std = float(self._call("sigma", sigma, torch.tensor([self.T], dtype=torch.float64))[0])
        self._prior_std = check_positive_finite("prior_std", prior_std)

    # ------------------------------------------------------------------ checks, once
    def _call(self, name: str, fn: TimeFn, t: Tensor) -> Tensor:
        out = fn(t)
        if not isinstance(out, Tensor) or out.shape != t.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(
                f"{name}: expected a tensor shaped like t {tuple(t.shape)} (an elementwise function;"
                f" write a constant as torch.ones_like(t)), got {got}"
            )
        return out

    def _check_on_grid(self) -> None:
        T = self.T
        t = torch.linspace(0.0, T, PROBE_POINTS, dtype=torch.float64)

        def first(name: str, bad: Tensor, what: str, values: Tensor) -> None:
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ValueError(f"{name}: expected {what} on [0, T] = [0, {T}], got {values[i].item()!r} at t = {t[i].item()!r}")

        a = self._call("alpha", self.alpha_fn, t)
        s = self._call("sigma", self.sigma_fn, t)
        first("alpha", ~torch.isfinite(a), "finite values", a)
        first("sigma", ~torch.isfinite(s), "finite values", s)
        first("alpha", a <= 0, "alpha(t) > 0", a)
        first("sigma", s < 0, "sigma(t) >= 0", s)
        first("sigma", (s <= 0) & (t > 0), "sigma(t) > 0 for t > 0", s)
        lam = 2.0 * torch.log(a) - 2.0 * torch.log(s)
        rising = lam.diff() >= 0
        if bool(rising.any()):
            i = int(rising.nonzero()[0])
            raise ValueError(
                "alpha, sigma: expected a strictly decreasing signal-to-noise ratio alpha(t)^2 / sigma(t)^2"
                f" on [0, T] = [0, {T}], but it does not decrease from t = {t[i].item()!r}"
                f" (log-SNR {lam[i].item()!r}) to t = {t[i + 1].item()!r} (log-SNR {lam[i + 1].item()!r})"
            )
        inner = t[1:]
        try:
            _, da, _, ds = self._coefficients(inner)
        except RuntimeError as err:
            raise TypeError(
                f"alpha, sigma: could not differentiate them by autograd ({err}); pass dalpha_dt and dsigma_dt"
            ) from None
        named = "dalpha_dt, dsigma_dt" if self.dalpha_fn or self.dsigma_fn else "alpha, sigma"
        g2 = self._g2(inner)
        bad = ~torch.isfinite(g2) | (g2 < -1e-9 * (1.0 + g2.abs().max()))
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(
                f"{named}: expected derivatives that give g(t)^2 = d sigma^2/dt - 2 f sigma^2 >= 0,"
                f" got {g2[i].item()!r} at t = {inner[i].item()!r}"
            )
        if self.log_snr_fn is not None:
            given = self._call("log_snr", self.log_snr_fn, inner)
            ref = lam[1:]
            off = ~torch.isclose(given, ref, rtol=1e-6, atol=1e-6)
            first_bad = off.nonzero()
            if first_bad.numel():
                i = int(first_bad[0])
                raise ValueError(
                    f"log_snr: expected log(alpha^2 / sigma^2) = {ref[i].item()!r} at t = {inner[i].item()!r},"
                    f" got {given[i].item()!r}"
                )
        if self.inverse_log_snr_fn is not None:
            back = self._call("t_from_log_snr", self.inverse_log_snr_fn, lam[1:])
            off = ~torch.isclose(back, inner, rtol=1e-6, atol=1e-9 * T)
            if bool(off.any()):
                i = int(off.nonzero()[0])
                raise ValueError(
                    f"t_from_log_snr: expected the inverse of the log-SNR, t = {inner[i].item()!r},"
                    f" at log-SNR {lam[i + 1].item()!r}, got {back[i].item()!r}"
                )

    # ------------------------------------------------------------------ the protocol
    def params(self) -> dict:
        p = {"alpha": self.alpha_fn, "sigma": self.sigma_fn, "T": self.T}
        for k, v in (("dalpha_dt", self.dalpha_fn), ("dsigma_dt", self.dsigma_fn),
                     ("log_snr", self.log_snr_fn), ("t_from_log_snr", self.inverse_log_snr_fn)):
            if v is not None:
                p[k] = v
        p["prior_std"] = self._prior_std
        return p

    @property
    def prior_std(self) -> float:
        return self._prior_std

    def _coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha, alpha', sigma, sigma') at t."""
        if self.dalpha_fn is None:
            a, da = _derivative(self.alpha_fn, t)
        else:
            a, da = self.alpha_fn(t), self.dalpha_fn(t)
        if self.dsigma_fn is None:
            s, ds = _derivative(self.sigma_fn, t)
        else:
            s, ds = self.sigma_fn(t), self.dsigma_fn(t)
        return a, da, s, ds

    def _g2(self, t: Tensor) -> Tensor:
        a, da, s, ds = self._coefficients(t)
        # g^2 = d sigma^2/dt - 2 f sigma^2 = 2 sigma (sigma' - f sigma), f = alpha' / alpha
        return 2.0 * s * (ds - da / a * s)

    def drift_coef(self, t: Tensor) -> Tensor:
        a, da, _, _ = self._coefficients(t)
        return da / a  # f = d log alpha / dt

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(self._g2(t), min=0.0))  # rounding can give -1e-17

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return self.alpha_fn(t), self.sigma_fn(t)

    def log_snr(self, t: Tensor) -> Tensor:
        if self.log_snr_fn is not None:
            return self.log_snr_fn(t)
        a, s = self.marginal(t)
        return 2.0 * torch.log(a) - 2.0 * torch.log(s)

    def t_from_log_snr(self, log_snr: Tensor) -> Tensor:
        if self.inverse_log_snr_fn is not None:
            return self.inverse_log_snr_fn(log_snr)
        return self._bisect_log_snr(log_snr)

    def _bisect_log_snr(self, log_snr: Tensor) -> Tensor:
        """The t in [0, T] with log-SNR `log_snr`, by bisection on the decreasing log-SNR (vectorised, float64)."""
        work = torch.float32 if log_snr.device.type == "mps" else torch.float64  # MPS has no float64
        target = log_snr.to(work)
        lo = torch.zeros_like(target)
        hi = torch.full_like(target, self.T)
        for _ in range(BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            right = self.log_snr(mid) > target  # lambda decreases: the root lies right of mid
            lo = torch.where(right, mid, lo)
            hi = torch.where(right, hi, mid)
        t = 0.5 * (lo + hi)
        ends = self.log_snr(torch.tensor([0.0, self.T], dtype=work, device=log_snr.device))
        t = torch.where(target >= ends[0], torch.zeros_like(t), t)  # at or above lambda_0: t = 0
        t = torch.where(target <= ends[1], torch.full_like(t, self.T), t)  # at or below lambda_T: t = T
        t = torch.where(torch.isnan(target), target, t)
        return t.to(log_snr.dtype)


# Module-level closed forms (not lambdas), so that the named processes pickle.
def _one_minus(t: Tensor) -> Tensor:
    return 1.0 - t


def _identity(t: Tensor) -> Tensor:
    return t.clone()


def _minus_one(t: Tensor) -> Tensor:
    return -torch.ones_like(t)


def _rf_log_snr(t: Tensor) -> Tensor:
    return 2.0 * (torch.log1p(-t) - torch.log(t))  # log((1 - t)^2 / t^2)


def _rf_t_from_log_snr(lam: Tensor) -> Tensor:
    return torch.sigmoid(-0.5 * lam)  # (1 - t) / t = e^{lam / 2}


def _edm_log_snr(t: Tensor) -> Tensor:
    return -2.0 * torch.log(t)


def _edm_t_from_log_snr(lam: Tensor) -> Tensor:
    return torch.exp(-0.5 * lam)


class RectifiedFlow(LinearSDE):
    r"""Rectified flow's linear interpolant $x_t = (1 - t)\,x_0 + t\,\varepsilon$: $\alpha_t = 1 - t$, $\sigma_t = t$.

    The straight path between data and noise of rectified flow (Liu et al. 2023) and of flow
    matching with the optimal-transport conditional path (Lipman et al. 2023, with
    $\sigma_{\min} = 0$), in this package's convention of time running from data ($t = 0$)
    to noise. Closed forms: $f = -1/(1-t)$, $g^2 = 2t/(1-t)$,
    $\lambda_t = 2\log\frac{1-t}{t}$, $t = 1/(1 + e^{\lambda/2})$. Its probability-flow
    velocity is $\dot x = E[\varepsilon - x_0 \mid x_t]$, the flow-matching target.

    The end $t = 1$ is singular ($\alpha_1 = 0$: $f$, $g^2$ and the log-SNR diverge, and
    a score-based step cannot start there). As in Liu et al.'s code, which trains and
    samples on $[\epsilon, 1]$ with $\epsilon = 10^{-3}$ in their reversed time, the process
    here stops at $T = 1 - 10^{-3}$ and the samplers start there from the papers' prior
    $\mathcal N(0, I)$ (the exact $p_T$ has $x_T = 10^{-3}x_0 + 0.999\,\varepsilon$; the
    mismatch is below the VP SDE's, whose $\alpha_1 = e^{-5.03} = 6.5\times10^{-3}$).
    At $t = 0$, $\sigma_0 = 0$, as for the VP SDE, so sampling stops at a small $t_{\text{end}}$.

    Arguments:
        T: the horizon, in $(0, 1)$ (default 0.999).

    References: Liu, Gong, Liu, *Flow Straight and Fast: Learning to Generate and Transfer
    Data with Rectified Flow*, ICLR 2023; Lipman, Chen, Ben-Hamu, Nickel, Le, *Flow Matching
    for Generative Modeling*, ICLR 2023.
    """

    def __init__(self, T: float = 0.999):
        T = check_positive_finite("T", T)
        if T >= 1.0:
            raise ValueError(
                f"T: expected a horizon below 1 (alpha_t = 1 - t vanishes at t = 1, where the drift"
                f" and the log-SNR diverge; Liu et al. stop at 1 - 1e-3), got {T!r}"
            )
        super().__init__(
            _one_minus,
            _identity,
            T=T,
            dalpha_dt=_minus_one,
            dsigma_dt=torch.ones_like,
            log_snr=_rf_log_snr,
            t_from_log_snr=_rf_t_from_log_snr,
            prior_std=1.0,
        )

    def params(self) -> dict:
        return {"T": self.T}

    def drift_coef(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - t)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(2.0 * t / (1.0 - t))


class EDM(LinearSDE):
    r"""EDM's process $x_t = x_0 + t\,\varepsilon$: $\alpha_t = 1$, $\sigma_t = t$, $dx = \sqrt{2t}\,dw$.

    Karras et al.'s choice $\sigma(t) = t$, $s(t) = 1$ (their eq. 4 and table 1), a VE process
    whose time is its noise level. Closed forms: $f = 0$, $g = \sqrt{2t}$,
    $\lambda_t = -2\log t$, $t = e^{-\lambda/2}$. Prior $\mathcal N(0, \sigma_{\max}^2 I)$ at
    $T = \sigma_{\max}$ (Karras et al. sample $x_0 \sim \mathcal N(0, t_0^2 I)$). At $t = 0$
    there is no noise, so sampling stops at a small noise level: pass
    `t_end=sde.sigma_min` (0.002 in the paper) to `sample`; with `KarrasGrid(rho=7)` and 18
    steps this is EDM's own time grid.

    Arguments:
        sigma_max: the largest noise level and horizon $T$, default 80.
        sigma_min: the smallest noise level sampling stops at, default 0.002 (kept as an
            attribute; the SDE itself lives on $[0, \sigma_{\max}]$).

    Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of
    Diffusion-Based Generative Models*, NeurIPS 2022, eq. (4), table 1, section 3.
    """

    def __init__(self, sigma_max: float = 80.0, sigma_min: float = 0.002):
        sigma_max = check_positive_finite("sigma_max", sigma_max)
        sigma_min = check_positive_finite("sigma_min", sigma_min)
        if sigma_min >= sigma_max:
            raise ValueError(f"sigma_min: expected a value below sigma_max = {sigma_max!r}, got {sigma_min!r}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        super().__init__(
            torch.ones_like,
            _identity,
            T=sigma_max,
            dalpha_dt=torch.zeros_like,
            dsigma_dt=torch.ones_like,
            log_snr=_edm_log_snr,
            t_from_log_snr=_edm_t_from_log_snr,
            prior_std=sigma_max,
        )

    def params(self) -> dict:
        return {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min}

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(2.0 * t)
