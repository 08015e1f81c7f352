r"""The adaptive DPM-Solver (DPM-Solver-12 and -23): embedded pairs with step-size control in $\lambda$.

On $\hat x = x/\alpha_t$ and $\lambda_t = -\log\hat\sigma_t$, $\hat\sigma = \sigma_t/\alpha_t$, with the noise prediction
$\hat\varepsilon(\hat x, \lambda) = (\hat x - D(\hat x))/\hat\sigma$, the DPM-Solver steps from $\lambda_s$ to
$\lambda_t = \lambda_s + h$ are (Lu et al. 2022, Algorithms 1 and 2; $\hat\sigma_u = e^{-u}$):

* DPM-Solver-1: $\hat x_t = \hat x_s - \hat\sigma_t(e^h - 1)\hat\varepsilon_s$;
* DPM-Solver-2 (stage $s_1 = \lambda_s + r_1h$): $u_1 = \hat x_s - \hat\sigma_{s_1}(e^{r_1h} - 1)\hat\varepsilon_s$ and
  $\hat x_t = \hat x_s - \hat\sigma_t(e^h - 1)\hat\varepsilon_s - \frac{\hat\sigma_t}{2r_1}(e^h - 1)(\hat\varepsilon(u_1, s_1) - \hat\varepsilon_s)$;
* DPM-Solver-3 ($r_1 = \tfrac13$, $r_2 = \tfrac23$): $u_2 = \hat x_s - \hat\sigma_{s_2}(e^{r_2h} - 1)\hat\varepsilon_s
  - \hat\sigma_{s_2}\frac{r_2}{r_1}\big(\frac{e^{r_2h} - 1}{r_2h} - 1\big)(\hat\varepsilon(u_1, s_1) - \hat\varepsilon_s)$ and
  $\hat x_t = \hat x_s - \hat\sigma_t(e^h - 1)\hat\varepsilon_s - \frac{\hat\sigma_t}{r_2}\big(\frac{e^h - 1}{h} - 1\big)(\hat\varepsilon(u_2, s_2) - \hat\varepsilon_s)$.

DPM-Solver-23 takes the 2-step with $r_1 = \tfrac13$ (which shares its stage with the 3-step) as the
lower-order solution and the 3-step as the higher; -12 the 1- and 2-steps. The error
$E = \lVert(\hat x_{\text{low}} - \hat x_{\text{high}})/\delta\rVert_2/\sqrt{n}$ with
$\delta = \max(\text{atol}, \text{rtol}\cdot\max(|\hat x_{\text{low}}|, |\hat x_{\text{prev}}|))$ feeds a PID step-size
controller (k-diffusion's: factor $1 + \arctan(f - 1)$, $f = \prod_k E_k^{-b_k}$; accepted when the factor is at
least `accept_safety`), and the higher-order solution is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler, SamplingContext
from .dpmpp_sde import ancestral_split

__all__ = ["DPMSolverAdaptive", "PIDStepSize"]


class PIDStepSize:
    r"""The PID step-size controller of k-diffusion's adaptive DPM-Solver (Söderlind 2003 with an arctan limiter).

    With inverse errors $e_0$ (this step), $e_1$, $e_2$ (the last accepted ones), the step is multiplied by
    $1 + \arctan(e_0^{b_1}e_1^{b_2}e_2^{b_3} - 1)$, $b_1 = (k_P + k_I + k_D)/p$, $b_2 = -(k_P + 2k_D)/p$, $b_3 = k_D/p$.
    """

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float,
                 eps: float = 1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety, self.eps = accept_safety, eps
        self.errs: list[float] = []

    def propose(self, error: float) -> bool:
        """Update the step from the error of the attempt; return whether the attempt is accepted."""
        inv = 1.0 / (error + self.eps)
        if not self.errs:
            self.errs = [inv, inv, inv]
        self.errs[0] = inv
        # factor = 1 + atan(e_0^b1 e_1^b2 e_2^b3 - 1)
        factor = 1.0 + math.atan(self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3 - 1.0)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@dataclass(frozen=True)
class DPMSolverAdaptive(Sampler):
    r"""Adaptive DPM-Solver-23 (`order=3`) or -12 (`order=2`) from the grid's first time to its last.

    The steps are chosen by the error control (see the module); only the grid's ends are used, so
    leave `steps` unset. k-diffusion's `sample_dpm_adaptive(model, x, sigma_min, sigma_max)` is this
    sampler on a grid from the time of $\hat\sigma$ = `sigma_max` to that of `sigma_min` (here: the
    SDE's $T$ and $t_{\text{end}}$), to rounding. A rejected attempt reuses the noise prediction at its start
    (k-diffusion evaluates it again), so each attempt costs `order - 1` new evaluations after the first.

    With `eta` $> 0$ each accepted step ends with ancestral noise (k-diffusion's `eta`): the step is
    taken to $\hat\sigma_\downarrow$ of the split $\hat\sigma_s \to \hat\sigma_t$ and $\sqrt{\hat\sigma_t^2 - \hat\sigma_\downarrow^2}\,S_{\text{noise}}z$ is
    added.

    Arguments:
        order: 3 (default, DPM-Solver-23) or 2 (DPM-Solver-12).
        rtol, atol: the error tolerances (default 0.05 and 0.0078, k-diffusion's: atol is about
            one 8-bit level of data in [-1, 1]).
        h_init: the first step in $\lambda$ (default 0.05).
        pcoeff, icoeff, dcoeff: the PID coefficients (default 0, 1, 0: an integral controller).
        accept_safety: the smallest step factor that accepts an attempt (default 0.81).
        eta, s_noise: ancestral noise (default 0: the probability flow) and its scale.
        max_steps: the most attempts before giving up with a `RuntimeError` (default 10,000).

    References: Lu, Zhou, Bao, Chen, Li, Zhu, *DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic
    Model Sampling in Around 10 Steps*, NeurIPS 2022, section 3.3 and appendix (adaptive step size);
    Crowson, k-diffusion, `sampling.py`, `DPMSolver.dpm_solver_adaptive`.
    """

    order: int = option(3, choices=(2, 3))
    rtol: float = option(0.05, ge=0.0)
    atol: float = option(0.0078, ge=0.0)
    h_init: float = option(0.05, gt=0.0)
    pcoeff: float = option(0.0)
    icoeff: float = option(1.0)
    dcoeff: float = option(0.0)
    accept_safety: float = option(0.81, ge=0.0, le=2.0)
    eta: float = option(0.0, ge=0.0)
    s_noise: float = option(1.0, ge=0.0)
    max_steps: int = option(10_000, ge=1)
    adaptive: ClassVar[bool] = True
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()

    def __post_init__(self):
        super().__post_init__()
        if self.rtol == 0 and self.atol == 0:
            raise ValueError("rtol, atol: at least one of them must be positive, got rtol=0 and atol=0")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0 and self.s_noise > 0

    def check(self, sde, ts):
        lam = sde.log_snr(ts.detach().to("cpu", torch.float64))
        if not bool(torch.isfinite(lam).all()):
            raise ValueError(
                "grid: DPMSolverAdaptive needs a finite log-SNR at both ends (sigma > 0, as k-diffusion's sigma_min);"
                " end the grid at t > 0 and use sample(..., denoise=True) for the last step into zero noise"
            )

    def _eps(self, ctx: SamplingContext, x_hat: Tensor, lam: float) -> Tensor:
        r"""$\hat\varepsilon = (\hat x - D(\hat x; \hat\sigma))/\hat\sigma$ at the time of half-log-SNR `lam`."""
        t = ctx.sde.t_from_log_snr(x_hat.new_tensor(2.0 * lam, dtype=ctx.work_dtype))
        alpha = ctx.sde.marginal(t)[0]
        return (x_hat - ctx.denoised_at(alpha * x_hat, t)) / math.exp(-lam)

    def _steps(self, ctx, x, s, t, eps_s):
        """(x_low, x_high) of the embedded pair from lambda s to lambda t."""
        h = t - s
        sig = lambda u: math.exp(-u)  # noqa: E731
        # DPM-Solver-1: x - sigma_t (e^h - 1) eps_s
        x_1 = x - (sig(t) * math.expm1(h)) * eps_s
        r1 = 0.5 if self.order == 2 else 1.0 / 3.0
        # stage u_1 = x - sigma_{s1} (e^{r1 h} - 1) eps_s
        s1 = s + r1 * h
        u1 = x - (sig(s1) * math.expm1(r1 * h)) * eps_s
        d1 = self._eps(ctx, u1, s1) - eps_s
        # DPM-Solver-2: x_1 - sigma_t / (2 r1) (e^h - 1) (eps(u_1) - eps_s)
        x_2 = x_1 - (sig(t) / (2.0 * r1) * math.expm1(h)) * d1
        if self.order == 2:
            return x_1, x_2
        # stage u_2 = x - sigma_{s2} (e^{r2 h} - 1) eps_s - sigma_{s2} (r2/r1) ((e^{r2 h} - 1)/(r2 h) - 1) (eps(u_1) - eps_s)
        r2 = 2.0 / 3.0
        s2 = s + r2 * h
        u2 = x - (sig(s2) * math.expm1(r2 * h)) * eps_s - (sig(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0)) * d1
        d2 = self._eps(ctx, u2, s2) - eps_s
        # DPM-Solver-3: x_1 - sigma_t / r2 ((e^h - 1)/h - 1) (eps(u_2) - eps_s)
        x_3 = x_1 - (sig(t) / r2 * (math.expm1(h) / h - 1.0)) * d2
        return x_2, x_3

    def run(self, ctx: SamplingContext, x: Tensor, report) -> Tensor:
        lam_start, lam_end = ctx.half_log_snrs[0], ctx.half_log_snrs[-1]
        # work on x_hat = x / alpha, in the coefficients' precision
        x = x.to(ctx.work_dtype) / ctx.alpha[0]
        x_prev, s, eps_s = x, lam_start, None
        pid = PIDStepSize(abs(self.h_init), self.pcoeff, self.icoeff, self.dcoeff, 1.5 if self.stochastic else self.order,
                          self.accept_safety)
        accepted = attempts = 0
        while s < lam_end - 1e-5:
            attempts += 1
            if attempts > self.max_steps:
                raise RuntimeError(f"max_steps: DPMSolverAdaptive took {self.max_steps} attempts and reached lambda = {s:.4g}"
                                   f" of {lam_end:.4g}; raise rtol/atol or max_steps")
            t = min(lam_end, s + pid.h)
            if self.stochastic:
                # the ancestral split of sigma_s -> sigma_t: step to sigma_down, then add the rest as noise
                down, _ = ancestral_split(torch.tensor(math.exp(-s)), torch.tensor(math.exp(-t)), self.eta)
                t_ = min(lam_end, -math.log(down.item()))
                up = math.sqrt(max(math.exp(-2 * t) - math.exp(-2 * t_), 0.0))
            else:
                t_, up = t, 0.0
            if eps_s is None:
                # eps_s at the step's start (kept across rejected attempts)
                eps_s = self._eps(ctx, x, s)
            x_low, x_high = self._steps(ctx, x, s, t_, eps_s)
            # E = ||(x_low - x_high) / delta|| / sqrt(n), delta = max(atol, rtol max(|x_low|, |x_prev|))
            delta = torch.maximum(torch.full_like(x_low, self.atol), self.rtol * torch.maximum(x_low.abs(), x_prev.abs()))
            error = (torch.linalg.vector_norm((x_low - x_high) / delta) / math.sqrt(x.numel())).item()
            if pid.propose(error):
                x_prev = x_low
                x = x_high
                if up > 0:
                    x = x + (up * self.s_noise) * ctx.randn()
                t_cur, t_next = ctx.sde.t_from_log_snr(torch.tensor(2.0 * s, dtype=torch.float64)).item(), \
                    ctx.sde.t_from_log_snr(torch.tensor(2.0 * t, dtype=torch.float64)).item()
                s, eps_s = t, None
                alpha_t = ctx.sde.marginal(torch.tensor(t_next, dtype=ctx.work_dtype, device=x.device))[0]
                report(accepted, (alpha_t * x).to(ctx.dtype), None, t_cur, t_next)
                accepted += 1
        # back to x = alpha x_hat at the grid's end
        return ctx.alpha[-1] * x
