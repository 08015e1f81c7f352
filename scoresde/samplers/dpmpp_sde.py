r"""DPM-Solver++ SDE: k-diffusion's stochastic second-order singlestep sampler (`sample_dpmpp_sde`).

Each step from $t_i$ to $t_{i+1}$ is an ancestral DPM-Solver++(2S) step with an intermediate
stage at $\lambda_s = \lambda_i + r h$ ($h = \lambda_{i+1} - \lambda_i$). It works on $\hat x = x/\alpha_t$ and
$\hat\sigma_t = \sigma_t/\alpha_t = e^{-\lambda_t}$ (k-diffusion's $x$ and $\sigma$), with $D$ Tweedie's denoiser and
the ancestral split of a move from $\hat\sigma_a$ to $\hat\sigma_b$ into a deterministic part down to
$\hat\sigma_\downarrow$ and fresh noise $\hat\sigma_\uparrow$:
$\hat\sigma_\uparrow = \min\big(\hat\sigma_b, \eta\,\hat\sigma_b\sqrt{1 - \hat\sigma_b^2/\hat\sigma_a^2}\big)$,
$\hat\sigma_\downarrow = \sqrt{\hat\sigma_b^2 - \hat\sigma_\uparrow^2}$, $\lambda_\downarrow = -\log\hat\sigma_\downarrow$.

1. $D_i = D(\hat x_i; \hat\sigma_i)$;
2. to the stage, with the split $(\hat\sigma_i \to \hat\sigma_s)$:
   $\hat x_s = \frac{\hat\sigma_\downarrow}{\hat\sigma_i}\hat x_i - (e^{\lambda_i - \lambda_\downarrow} - 1)D_i + S_{\text{noise}}\hat\sigma_\uparrow\,\xi_1$;
3. $D_s = D(\hat x_s; \hat\sigma_s)$ and $D' = (1 - \tfrac1{2r})D_i + \tfrac1{2r}D_s$;
4. to $t_{i+1}$, with the split $(\hat\sigma_i \to \hat\sigma_{i+1})$:
   $\hat x_{i+1} = \frac{\hat\sigma_\downarrow}{\hat\sigma_i}\hat x_i - (e^{\lambda_i - \lambda_\downarrow} - 1)D' + S_{\text{noise}}\hat\sigma_\uparrow\,\xi_2$;
5. into zero noise ($\hat\sigma_{i+1} = 0$) the step is Euler's, $\hat x_{i+1} = D_i$ (one evaluation).

k-diffusion draws $\xi_1, \xi_2$ from a Brownian motion $W$ indexed by $\hat\sigma$ (a `torchsde`
Brownian tree): $\xi_1 = (W(\hat\sigma_s) - W(\hat\sigma_i))/\sqrt{\hat\sigma_i - \hat\sigma_s}$ and
$\xi_2 = (W(\hat\sigma_{i+1}) - W(\hat\sigma_i))/\sqrt{\hat\sigma_i - \hat\sigma_{i+1}}$, so the two overlap: their
correlation is $\sqrt{(\hat\sigma_i - \hat\sigma_s)/(\hat\sigma_i - \hat\sigma_{i+1})}$. Here the same Brownian
increments come from the call's noise source (independent increments over
$[\hat\sigma_s, \hat\sigma_i]$ and $[\hat\sigma_{i+1}, \hat\sigma_s]$, which is the tree's law exactly; a
`solvers.BrownianTree` passed as `generator` gives a path that is the same at any step size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import KarrasGrid, TimeGrid
from .base import Sampler, SamplingContext

__all__ = ["DPMSolverPPSDE"]


def ancestral_split(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    r"""$(\hat\sigma_\downarrow, \hat\sigma_\uparrow)$ of a move from $\hat\sigma_a$ to $\hat\sigma_b$ (k-diffusion's `get_ancestral_step`)."""
    # sigma_up = min(sigma_b, eta sigma_b sqrt(1 - sigma_b^2 / sigma_a^2))
    up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2).sqrt())
    # sigma_down = sqrt(sigma_b^2 - sigma_up^2)
    return (sigma_to**2 - up**2).sqrt(), up


@dataclass(frozen=True)
class DPMSolverPPSDE(Sampler):
    r"""DPM-Solver++ SDE (k-diffusion's `sample_dpmpp_sde`): stochastic 2S steps, two evaluations per step.

    See the module for the step. $\eta = 0$ gives the deterministic DPM-Solver++(2S) with its
    stage at $r$. k-diffusion's grids end at $\sigma = 0$; here a grid ending at $t_{\text{end}} > 0$
    followed by `sample(..., denoise=True)` is the same last (Euler, i.e. Tweedie) step.

    Arguments:
        eta: $\eta \ge 0$, the share of ancestral noise (default 1, k-diffusion's).
        s_noise: $S_{\text{noise}} \ge 0$, the scale of the added noise (default 1).
        r: the stage's position $r \in (0, 1]$ in $\lambda$ (default 1/2).
        noise: `"brownian"` (default: $\xi_1, \xi_2$ from one Brownian path, as k-diffusion's
            default Brownian tree) or `"independent"` (two independent normals, as k-diffusion
            with `noise_sampler=default_noise_sampler(x)`).

    References: Lu, Zhou, Bao, Chen, Li, Zhu, *DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models*, 2022 (arXiv:2211.01095), Algorithm 1 (2S) and appendix
    (SDE-DPM-Solver++); Crowson, k-diffusion, `sampling.py`, `sample_dpmpp_sde`.
    """

    eta: float = option(1.0, ge=0.0)
    s_noise: float = option(1.0, ge=0.0)
    r: float = option(0.5, gt=0.0, le=1.0)
    noise: str = option("brownian", choices=("brownian", "independent"))
    default_steps: ClassVar[int] = 10
    default_grid: ClassVar[TimeGrid] = KarrasGrid(7.0)

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0 and self.s_noise > 0

    def evaluations(self, steps: int) -> int:
        return 2 * steps

    def check(self, sde, ts):
        lam = sde.log_snr(ts.detach().to("cpu", torch.float64))
        if not bool(torch.isfinite(lam[:-1]).all()):
            raise ValueError(
                "grid: DPMSolverPPSDE needs a finite log-SNR at every time but the last; use a grid with t > 0 before its end"
            )

    def init(self, ctx: SamplingContext, x: Tensor):
        if not self.stochastic:
            return None
        # sigma_hat = e^{-lambda} at each step's start, stage and end, on the host (read once)
        lams = ctx.half_log_snrs
        levels = [(math.exp(-a), math.exp(-(a + self.r * (b - a))), math.exp(-b)) for a, b in zip(lams[:-1], lams[1:])]
        # Brownian increments in sigma_hat over the grid's span (a tree source needs it)
        span = (min(lv[2] for lv in levels), levels[0][0])
        increment = ctx.noise.bind(ctx.shape, ctx.work_dtype, ctx.device, span=span)
        return increment, levels

    def _noises(self, increment, s_cur: float, s_mid: float, s_next: float) -> tuple[Tensor, Tensor]:
        """xi_1 over [s_mid, s_cur] and xi_2 over [s_next, s_cur] of one Brownian path in sigma_hat."""
        # dW_1 = W(sigma_s) - W(sigma_i), dW_2 = W(sigma_{i+1}) - W(sigma_s)
        dw_1 = increment(s_cur, s_mid)
        dw_2 = increment(s_mid, s_next)
        xi_1 = dw_1 / math.sqrt(s_cur - s_mid)
        if self.noise == "independent":
            return xi_1, dw_2 / math.sqrt(s_mid - s_next)
        # xi_2 = (W(sigma_{i+1}) - W(sigma_i)) / sqrt(sigma_i - sigma_{i+1})
        return xi_1, (dw_1 + dw_2) / math.sqrt(s_cur - s_next)

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state):
        alpha, sigma, lam = ctx.alpha, ctx.sigma, ctx.half_log_snr
        x_hat = x / alpha[i]
        # D_i = D(x_hat_i; sigma_hat_i)
        denoised = ctx.denoised(x, i)
        if i == ctx.steps - 1 and ctx.ends_noise_free:
            # into zero noise: Euler's step x_hat_{i+1} = D_i
            return alpha[i + 1] * denoised, denoised
        sig_cur, sig_next = sigma[i] / alpha[i], sigma[i + 1] / alpha[i + 1]
        # the stage: lambda_s = lambda_i + r h, sigma_hat_s = e^{-lambda_s}
        lam_s = lam[i] + self.r * (lam[i + 1] - lam[i])
        sig_s = torch.exp(-lam_s)
        increment = None if state is None else state[0]
        if increment is not None:
            xi_1, xi_2 = self._noises(increment, *state[1][i])
        # step 2: x_hat_s = (sigma_down / sigma_i) x_hat_i - (e^{lambda_i - lambda_down} - 1) D_i + S_noise sigma_up xi_1
        down, up = ancestral_split(sig_cur, sig_s, self.eta)
        x_s = (down / sig_cur) * x_hat - torch.expm1(lam[i] + torch.log(down)) * denoised
        if increment is not None:
            x_s = x_s + (self.s_noise * up) * xi_1
        # step 3: D_s = D(x_hat_s; sigma_hat_s) at the time t_s of that noise level
        t_s = ctx.sde.t_from_log_snr(2.0 * lam_s)
        alpha_s = ctx.sde.marginal(t_s)[0]
        denoised_s = ctx.denoised_at(alpha_s * x_s, t_s)
        # D' = (1 - 1/(2r)) D_i + 1/(2r) D_s
        fac = 1.0 / (2.0 * self.r)
        d_prime = (1.0 - fac) * denoised + fac * denoised_s
        # step 4: x_hat_{i+1} = (sigma_down / sigma_i) x_hat_i - (e^{lambda_i - lambda_down} - 1) D' + S_noise sigma_up xi_2
        down, up = ancestral_split(sig_cur, sig_next, self.eta)
        x_next = (down / sig_cur) * x_hat - torch.expm1(lam[i] + torch.log(down)) * d_prime
        if increment is not None:
            x_next = x_next + (self.s_noise * up) * xi_2
        return alpha[i + 1] * x_next, denoised
