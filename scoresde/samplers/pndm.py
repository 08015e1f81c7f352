r"""PNDM: pseudo numerical methods on DDIM's transfer, a pseudo Runge-Kutta start then pseudo linear multistep.

PNDM's transfer $\phi(x_i, \varepsilon, t_i, t_{i+1})$ is DDIM's step with the noise prediction
$\varepsilon$ held fixed, $\phi = \alpha_{i+1}\big(x_i/\alpha_i + (\rho_{i+1} - \rho_i)\varepsilon\big)$ with
$\rho = \sigma_t/\alpha_t$ (Liu et al., eq. 11, written with $(\alpha_t, \sigma_t)$). The first three steps are
pseudo Runge-Kutta (PRK, eq. 13) with the midpoint $t_m = (t_i + t_{i+1})/2$:

$$\begin{aligned}
e_1 &= \hat\varepsilon(x_i, t_i), & x^{(1)} &= \phi(x_i, e_1, t_i, t_m),\\
e_2 &= \hat\varepsilon(x^{(1)}, t_m), & x^{(2)} &= \phi(x_i, e_2, t_i, t_m),\\
e_3 &= \hat\varepsilon(x^{(2)}, t_m), & x^{(3)} &= \phi(x_i, e_3, t_i, t_{i+1}),\\
e_4 &= \hat\varepsilon(x^{(3)}, t_{i+1}), & x_{i+1} &= \phi\big(x_i, \tfrac16(e_1 + 2e_2 + 2e_3 + e_4), t_i, t_{i+1}\big),
\end{aligned}$$

four evaluations each; later steps are pseudo linear multistep (PLMS, eq. 12), one evaluation
each: $x_{i+1} = \phi\big(x_i, \tfrac1{24}(55e_i - 59e_{i-1} + 37e_{i-2} - 9e_{i-3}), t_i, t_{i+1}\big)$ with $e_k$ the
noise prediction at the start of step $k$ (for the PRK steps, their $e_1$).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ..time_grids import TimeGrid, UniformTime
from .base import Sampler, SamplingContext
from .ipndm import ADAMS_BASHFORTH

__all__ = ["PNDM"]

#: PNDM starts with this many pseudo Runge-Kutta steps
_PRK_STEPS = 3


@dataclass(frozen=True)
class PNDM(Sampler):
    r"""PNDM (Liu et al. 2022): three pseudo Runge-Kutta steps (4 evaluations each), then pseudo linear multistep.

    See the module for the steps. diffusers' `PNDMScheduler` (with `skip_prk_steps=False`) is this
    sampler on its grid: with `timestep_spacing="leading"` its steps of $\lfloor N/n\rfloor$ timesteps and
    half-steps for the midpoints, ending at $\bar\alpha = 1$ (zero noise) with `set_alpha_to_one`.
    A step into zero noise ($\rho = 0$) is DDIM's transfer too. Its evaluations:
    $4\min(N, 3) + \max(N - 3, 0)$ for $N$ steps.

    Reference: Liu, Ren, Lin, Zhao, *Pseudo Numerical Methods for Diffusion Models on Manifolds*,
    ICLR 2022, eqs. (11)-(13) and Algorithm 1; diffusers' `PNDMScheduler`.
    """

    default_steps: ClassVar[int] = 50
    default_grid: ClassVar[TimeGrid] = UniformTime()

    def evaluations(self, steps: int) -> int:
        return 4 * min(steps, _PRK_STEPS) + max(steps - _PRK_STEPS, 0)

    def init(self, ctx, x):
        return []  # the noise predictions at the starts of previous steps, newest last

    @staticmethod
    def _eps(ctx: SamplingContext, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(eps_hat, sigma_t / alpha_t) at a 0-d time t: eps_hat = -sigma_t s(x, t)."""
        alpha, sigma = ctx.sde.marginal(t)
        return -sigma * ctx.score_at(x, t), sigma / alpha

    def step(self, ctx: SamplingContext, x: Tensor, i: int, history: list):
        alpha, sigma = ctx.alpha, ctx.sigma
        rho_i, rho_n = sigma[i] / alpha[i], sigma[i + 1] / alpha[i + 1]

        def transfer(eps: Tensor, rho_to: Tensor, alpha_to: Tensor) -> Tensor:
            # phi(x_i, eps, t_i, t) = alpha_t (x_i / alpha_i + (rho_t - rho_i) eps)
            return alpha_to * (x / alpha[i] + (rho_to - rho_i) * eps)

        # e_1 (PRK) or e_i (PLMS): the noise prediction at the step's start
        score = ctx.score(x, i)
        e_1 = -sigma[i] * score
        history.append(e_1)
        if len(history) > 4:
            history.pop(0)
        denoised = (x + sigma[i] ** 2 * score) / alpha[i]
        if i >= _PRK_STEPS:
            # PLMS: eps' = (55 e_i - 59 e_{i-1} + 37 e_{i-2} - 9 e_{i-3}) / 24
            eps = sum(w * e for w, e in zip(ADAMS_BASHFORTH[3], reversed(history)))
            return transfer(eps, rho_n, alpha[i + 1]), denoised
        # PRK: the midpoint t_m = (t_i + t_{i+1}) / 2
        t_m = 0.5 * (ctx.ts[i] + ctx.ts[i + 1])
        alpha_m, sigma_m = ctx.sde.marginal(t_m)
        rho_m = sigma_m / alpha_m
        # x1 = phi(x_i, e_1, t_i, t_m); e_2 = eps(x1, t_m)
        e_2, _ = self._eps(ctx, transfer(e_1, rho_m, alpha_m), t_m)
        # x2 = phi(x_i, e_2, t_i, t_m); e_3 = eps(x2, t_m)
        e_3, _ = self._eps(ctx, transfer(e_2, rho_m, alpha_m), t_m)
        # x3 = phi(x_i, e_3, t_i, t_{i+1}); e_4 = eps(x3, t_{i+1})
        e_4 = -sigma[i + 1] * ctx.score(transfer(e_3, rho_n, alpha[i + 1]), i + 1)
        # x_{i+1} = phi(x_i, (e_1 + 2 e_2 + 2 e_3 + e_4) / 6, t_i, t_{i+1})
        eps = (e_1 + 2.0 * e_2 + 2.0 * e_3 + e_4) / 6.0
        return transfer(eps, rho_n, alpha[i + 1]), denoised
