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

from ..grids import KarrasGrid, TimeGrid
from .base import Sampler, SamplingContext

__all__ = ["DDIM", "EDMHeun"]


def _check_real(name: str, value: float, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if not (low <= value <= high) or math.isnan(value):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")
    return float(value)


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

    eta: float = 0.0
    default_steps: ClassVar[int] = 50

    def __post_init__(self):
        _check_real("eta", self.eta, 0.0, 1.0)

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

    Arguments:
        churn: $S_{\text{churn}} \ge 0$, total added noise (0: deterministic).
        s_tmin, s_tmax: the range of $\hat\sigma$ where noise is added.
        s_noise: $S_{\text{noise}}$, the scale of the added noise (slightly above 1 in EDM).

    Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of Diffusion-Based
    Generative Models*, NeurIPS 2022, Algorithms 1 and 2.
    """

    churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    default_steps: ClassVar[int] = 18
    default_grid: ClassVar[TimeGrid] = KarrasGrid(7.0)

    def __post_init__(self):
        _check_real("churn", self.churn, 0.0)
        _check_real("s_tmin", self.s_tmin, 0.0)
        _check_real("s_tmax", self.s_tmax, self.s_tmin)
        _check_real("s_noise", self.s_noise, 0.0)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.churn > 0

    def evaluations(self, steps: int) -> int:
        return 2 * steps

    def init(self, ctx: SamplingContext, x: Tensor):
        # sigma_hat = sigma / alpha on the grid, and gamma_i for every step (on the device).
        sigma_hat = ctx.sigma / ctx.alpha
        gamma = min(self.churn / ctx.steps, math.sqrt(2.0) - 1.0)
        inside = (sigma_hat >= self.s_tmin) & (sigma_hat <= self.s_tmax)
        gammas = torch.where(inside, torch.full_like(sigma_hat, gamma), torch.zeros_like(sigma_hat))
        return sigma_hat, gammas, sigma_hat[0]

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state):
        sigma_hat, gammas, sigma_hat_max = state
        s_cur, s_next = sigma_hat[i], sigma_hat[i + 1]
        x_cur = x / ctx.alpha[i]
        if self.churn > 0:
            # sigma^+ = (1 + gamma_i) sigma_i, capped at sigma_T
            s_up = torch.minimum((1.0 + gammas[i]) * s_cur, sigma_hat_max)
            # x^+ = x_i + sqrt(sigma^+^2 - sigma_i^2) S_noise z
            x_up = x_cur + (s_up**2 - s_cur**2).clamp(min=0).sqrt() * self.s_noise * ctx.randn()
            t_up = torch.where(s_up > s_cur, ctx.sde._t_from_log_snr(-2.0 * torch.log(s_up)), ctx.ts[i])
            # D(x^+; sigma^+): Tweedie at the time t^+ of that noise level, on x = alpha(t^+) x^+
            denoised = ctx.denoised_at(ctx.sde._marginal(t_up)[0] * x_up, t_up)
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
