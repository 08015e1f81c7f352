r"""Probability-flow samplers with a closed-form step: DDIM and EDM's Heun sampler.

Both follow the probability-flow ODE $\dot x = f(t)x - \tfrac12 g(t)^2\nabla\log p_t(x)$,
which in the scaled variables $\hat x = x/\alpha_t$, $\hat\sigma = \sigma_t/\alpha_t = e^{-\lambda_t}$ is
$\frac{d\hat x}{d\hat\sigma} = \frac{\hat x - D(\hat x; \hat\sigma)}{\hat\sigma}$ with $D$ Tweedie's
denoiser (Karras et al. 2022, eq. 3 with $s = 1$). DDIM is its first-order exponential
integrator; EDM's sampler its Heun (trapezoidal) step, with optional stochastic churn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import KarrasGrid, TimeGrid
from .base import Sampler, SamplingContext

__all__ = ["DDIM", "EDMHeun"]

#: how `EDMHeun(churn_per=...)` counts $N$ in $\gamma = \min(S_{churn}/N, \sqrt2 - 1)$
CHURN_PER = ("step", "level")


@dataclass(frozen=True)
class DDIM(Sampler):
    r"""DDIM: $x_{t_{i+1}} = \alpha_{t_{i+1}}\hat x_0 + \sqrt{\sigma_{t_{i+1}}^2 - \tilde\sigma_i^2}\,\hat\varepsilon + \tilde\sigma_i z$.

    $\hat\varepsilon = -\sigma_{t_i}\nabla\log p_{t_i}(x_{t_i})$, $\hat x_0 = (x_{t_i} - \sigma_{t_i}\hat\varepsilon)/\alpha_{t_i}$ and
    $\tilde\sigma_i = \eta\,\sigma_{t_{i+1}}\sqrt{1 - e^{-2h_i}}$ ($h_i = \lambda_{t_{i+1}} - \lambda_{t_i}$; for the VP SDE
    this is DDIM's $\eta\sqrt{(1-\bar\alpha_{i-1})/(1-\bar\alpha_i)}\sqrt{1-\bar\alpha_i/\bar\alpha_{i-1}}$).
    $\eta = 0$ is deterministic and equals the first-order exponential integrator of the
    probability-flow ODE (DPM-Solver-1): $x_{t_{i+1}} = \frac{\alpha_{t_{i+1}}}{\alpha_{t_i}}x_{t_i} - \sigma_{t_{i+1}}(e^{h_i} - 1)\hat\varepsilon$;
    $\eta = 1$ is ancestral sampling with the posterior variance. Written with $(\alpha_t, \sigma_t)$,
    it runs the sub-VP and VE SDEs too (for VE, $\eta = 0$ is the Euler step in $\sigma$).

    Arguments:
        eta: $\eta \in [0, 1]$, default 0.

    References: Song, Meng, Ermon, *Denoising Diffusion Implicit Models*, ICLR 2021, eq. (12);
    Lu et al., *DPM-Solver*, NeurIPS 2022, section 4.1 (the equivalence).
    """

    eta: float = option(0.0, ge=0.0, le=1.0)
    default_steps: ClassVar[int] = 50

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: Any):
        alpha_c, sigma_c = ctx.alpha[i], ctx.sigma[i]
        alpha_n, sigma_n = ctx.alpha[i + 1], ctx.sigma[i + 1]
        _, _, h = ctx.transition(i)
        # eps_hat = -sigma_i s(x, t_i); x0_hat = (x - sigma_i eps_hat) / alpha_i
        eps = -sigma_c * ctx.score(x, i)
        denoised = (x - sigma_c * eps) / alpha_c
        if self.eta == 0:
            # x_{i+1} = alpha_{i+1} x0_hat + sigma_{i+1} eps_hat
            return alpha_n * denoised + sigma_n * eps, denoised
        # sigma_tilde = eta sigma_{i+1} sqrt(1 - e^{-2h})
        var = -(sigma_n**2) * torch.expm1(-2.0 * h)
        sigma_tilde = self.eta * var.sqrt()
        # x_{i+1} = alpha_{i+1} x0_hat + sqrt(sigma_{i+1}^2 - sigma_tilde^2) eps_hat + sigma_tilde z
        direction = (sigma_n**2 - sigma_tilde**2).clamp(min=0).sqrt()
        return alpha_n * denoised + direction * eps + sigma_tilde * ctx.randn(), denoised


@dataclass(frozen=True)
class EDMHeun(Sampler):
    r"""EDM's second-order sampler (Heun) with optional stochastic churn, for any SDE.

    Works on $\hat x = x/\alpha_t$ and $\hat\sigma_t = \sigma_t/\alpha_t$ (Karras et al.'s $s(t) = 1$,
    $\sigma(t) = \hat\sigma$), with $D(\hat x; \hat\sigma)$ Tweedie's denoiser at the time of
    noise level $\hat\sigma$. For each step (Karras et al., Algorithm 2):

    1. $\gamma_i = \min(S_{\text{churn}}/N, \sqrt2 - 1)$ if $\hat\sigma_i \in [S_{t\min}, S_{t\max}]$ else 0;
    2. $\hat\sigma^+ = (1 + \gamma_i)\hat\sigma_i$ (at most $\hat\sigma_T$),
       $\hat x^+ = \hat x_i + \sqrt{(\hat\sigma^+)^2 - \hat\sigma_i^2}\,S_{\text{noise}}\,z$;
    3. $d_i = (\hat x^+ - D(\hat x^+; \hat\sigma^+))/\hat\sigma^+$, $\hat x_{i+1} = \hat x^+ + (\hat\sigma_{i+1} - \hat\sigma^+)\,d_i$;
    4. if $\hat\sigma_{i+1} > 0$: $d_i' = (\hat x_{i+1} - D(\hat x_{i+1}; \hat\sigma_{i+1}))/\hat\sigma_{i+1}$,
       $\hat x_{i+1} = \hat x^+ + (\hat\sigma_{i+1} - \hat\sigma^+)\tfrac12(d_i + d_i')$.

    With `churn=0` (default) it is deterministic: Heun's method on the probability-flow
    ODE, $2N$ evaluations ($2N - 1$ when the grid ends at zero noise). EDM's own
    configuration is `EDMHeun()` with `KarrasGrid(rho=7)` and `sample(..., denoise=True)`
    (its last step to $\sigma = 0$ is Tweedie's denoiser).

    `churn_per="level"` with `to_zero=True` is EDM's `edm_sampler` exactly: there $N$ counts
    the noise levels, the last step (from $\hat\sigma_{\min}$ to 0, an Euler step, which is
    Tweedie's denoiser at $\hat\sigma^+$) is churned like the others, and $\hat\sigma^+$ is not
    capped (with $S_{t\max} \ge \hat\sigma_T$ the score is then called above $\hat\sigma_T$, at a
    time past $T$; EDM's own configurations set $S_{t\max}$ below $\hat\sigma_T$). With
    `churn_per="step"` (default) $N$ is the number of grid steps, $\hat\sigma^+$ is capped at
    $\hat\sigma_T$, and a final step to zero noise (`sample(..., denoise=True)`) is not churned:
    `edm_sampler(S_churn=c)` with $n$ levels is then `EDMHeun(churn=c * (n - 1) / n)` only
    when no level is churned past $\hat\sigma_T$ and the last level is outside
    $[S_{t\min}, S_{t\max}]$.

    Arguments:
        churn: $S_{\text{churn}} \ge 0$, total added noise (0: deterministic).
        s_tmin, s_tmax: the range of $\hat\sigma$ where noise is added.
        s_noise: $S_{\text{noise}}$, the scale of the added noise (slightly above 1 in EDM).
        churn_per: `"step"` (default) or `"level"` (EDM's `edm_sampler`), see above.
        to_zero: finish with EDM's last step, from the grid's end to $\hat\sigma = 0$ (one
            more evaluation; it replaces `sample(..., denoise=...)` and returns the clean
            sample). The VE SDE never reaches $\sigma = 0$, so EDM's grid ending at 0 is the
            grid to $\sigma_{\min}$ plus this step.

    Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of Diffusion-Based
    Generative Models*, NeurIPS 2022, Algorithms 1 and 2.
    """

    churn: float = option(0.0, ge=0.0, finite=False)  # inf: the largest churn, gamma = sqrt(2) - 1
    s_tmin: float = option(0.0, ge=0.0)
    s_tmax: float = option(math.inf, ge="s_tmin", finite=False)
    s_noise: float = option(1.0, ge=0.0)
    churn_per: str = option("step", choices=CHURN_PER)
    to_zero: bool = option(False)
    default_steps: ClassVar[int] = 18
    default_grid: ClassVar[TimeGrid] = KarrasGrid(7.0)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.churn > 0

    @property
    def steps_to_zero_noise(self) -> bool:  # type: ignore[override]
        return self.to_zero

    def evaluations(self, steps: int) -> int:
        return 2 * steps + int(self.to_zero)

    def init(self, ctx: SamplingContext, x: Tensor):
        # sigma_hat = sigma / alpha on the grid, and gamma_i for every step (on the device).
        sigma_hat = ctx.sigma / ctx.alpha
        # N: grid steps ("step"), or noise levels with EDM's last step to zero among them ("level")
        n = ctx.steps + int(self.to_zero) if self.churn_per == "level" else ctx.steps
        gamma = min(self.churn / n, math.sqrt(2.0) - 1.0)
        inside = (sigma_hat >= self.s_tmin) & (sigma_hat <= self.s_tmax)
        gammas = torch.where(inside, torch.full_like(sigma_hat, gamma), torch.zeros_like(sigma_hat))
        # sigma^+ capped at sigma_T ("step"); EDM does not cap it ("level")
        cap = sigma_hat[0] if self.churn_per == "step" else torch.full_like(sigma_hat[0], math.inf)
        return sigma_hat, gammas, cap

    def run(self, ctx: SamplingContext, x: Tensor, report) -> Tensor:
        if self.to_zero and ctx.final_denoise:
            raise ValueError(
                "denoise: EDMHeun(to_zero=True) ends at zero noise with EDM's own last step;"
                " pass denoise=False (or EDMHeun(to_zero=False) to end with sample()'s final step)"
            )
        if self.to_zero and ctx.ends_noise_free:
            raise ValueError("to_zero: the grid already ends at zero noise; use EDMHeun(to_zero=False) on it")
        # as the base loop: each step computes in ctx.work_dtype, the state is stored in ctx.dtype
        state = self.init(ctx, x.to(ctx.work_dtype))
        for i in range(ctx.steps):
            x, denoised = self.step(ctx, x.to(ctx.work_dtype), i, state)
            x = x.to(ctx.dtype)
            report(i, x, denoised)
        if not self.to_zero:
            return x
        # EDM's last step from sigma_N to 0: churn, then Euler, x_0 = x^+ - sigma^+ d = D(x^+; sigma^+)
        x_up, s_up, denoised = self._churn(ctx, x.to(ctx.work_dtype), ctx.steps, state)
        return (x_up + (0.0 - s_up) * ((x_up - denoised) / s_up)).to(ctx.dtype)

    def _churn(self, ctx: SamplingContext, x: Tensor, i: int, state):
        """x^+, sigma^+ and D(x^+; sigma^+) at grid level i (x^+ = x_i, sigma^+ = sigma_i without churn)."""
        sigma_hat, gammas, sigma_hat_max = state
        s_cur, x_cur = sigma_hat[i], x / ctx.alpha[i]
        if self.churn == 0:
            return x_cur, s_cur, ctx.denoised(x, i)
        # sigma^+ = (1 + gamma_i) sigma_i (capped at sigma_T unless churn_per="level")
        s_up = torch.minimum((1.0 + gammas[i]) * s_cur, sigma_hat_max)
        # x^+ = x_i + sqrt(sigma^+^2 - sigma_i^2) S_noise z
        x_up = x_cur + (s_up**2 - s_cur**2).clamp(min=0).sqrt() * self.s_noise * ctx.randn()
        t_up = torch.where(s_up > s_cur, ctx.sde.t_from_log_snr(-2.0 * torch.log(s_up), check=False), ctx.ts[i])
        # D(x^+; sigma^+): Tweedie at the time t^+ of that noise level, on x = alpha(t^+) x^+
        return x_up, s_up, ctx.denoised_at(ctx.sde.marginal(t_up)[0] * x_up, t_up)

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state):
        sigma_hat, gammas, sigma_hat_max = state
        s_cur, s_next = sigma_hat[i], sigma_hat[i + 1]
        x_cur = x / ctx.alpha[i]
        if self.churn > 0:
            # sigma^+ = (1 + gamma_i) sigma_i, capped at sigma_T
            s_up = torch.minimum((1.0 + gammas[i]) * s_cur, sigma_hat_max)
            # x^+ = x_i + sqrt(sigma^+^2 - sigma_i^2) S_noise z
            x_up = x_cur + (s_up**2 - s_cur**2).clamp(min=0).sqrt() * self.s_noise * ctx.randn()
            t_up = torch.where(s_up > s_cur, ctx.sde.t_from_log_snr(-2.0 * torch.log(s_up), check=False), ctx.ts[i])
            # D(x^+; sigma^+): Tweedie at the time t^+ of that noise level, on x = alpha(t^+) x^+
            denoised = ctx.denoised_at(ctx.sde.marginal(t_up)[0] * x_up, t_up)
        else:
            s_up, x_up = s_cur, x_cur
            denoised = ctx.denoised(x, i)
        # Euler step: d_i = (x^+ - D(x^+))/sigma^+; x_{i+1} = x^+ + (sigma_{i+1} - sigma^+) d_i
        d_cur = (x_up - denoised) / s_up
        x_next = x_up + (s_next - s_up) * d_cur
        if not (i == ctx.steps - 1 and ctx.ends_noise_free):
            # 2nd-order correction: d_i' = (x_{i+1} - D(x_{i+1}))/sigma_{i+1}; average the slopes
            d_prime = (x_next - ctx.denoised(ctx.alpha[i + 1] * x_next, i + 1)) / s_next
            x_next = x_up + (s_next - s_up) * 0.5 * (d_cur + d_prime)
        return ctx.alpha[i + 1] * x_next, denoised
