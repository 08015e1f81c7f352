r"""iPNDM: DDIM's transfer with the noise prediction extrapolated by Adams-Bashforth (improved PNDM).

DDIM's step moves $\hat x = x/\alpha_t$ along $\rho_t = \sigma_t/\alpha_t$ with the noise prediction
held fixed: $\hat x_{i+1} = \hat x_i + (\rho_{i+1} - \rho_i)\,\hat\varepsilon$. PNDM (Liu et al.) keeps this
"transfer" and feeds it a linear-multistep combination of the last four noise predictions;
iPNDM (Zhang & Chen) warms it up with lower-order Adams-Bashforth combinations instead of PNDM's
Runge-Kutta start, so every step costs one evaluation:

$$\tilde\varepsilon_i = \begin{cases}
\hat\varepsilon_i & i = 0,\\
\tfrac12(3\hat\varepsilon_i - \hat\varepsilon_{i-1}) & i = 1,\\
\tfrac1{12}(23\hat\varepsilon_i - 16\hat\varepsilon_{i-1} + 5\hat\varepsilon_{i-2}) & i = 2,\\
\tfrac1{24}(55\hat\varepsilon_i - 59\hat\varepsilon_{i-1} + 37\hat\varepsilon_{i-2} - 9\hat\varepsilon_{i-3}) & i \ge 3,
\end{cases}\qquad
x_{i+1} = \alpha_{i+1}\Big(\frac{x_i}{\alpha_i} + (\rho_{i+1} - \rho_i)\,\tilde\varepsilon_i\Big).$$

The constant coefficients are those of equal steps (in the grid index). Written with
$(\alpha_t, \sigma_t)$ alone, so it runs the VP, sub-VP and VE SDEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from .._checks import option
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler, SamplingContext

__all__ = ["IPNDM", "ADAMS_BASHFORTH"]

#: Adams-Bashforth weights of orders 1-4 on equal steps, newest evaluation first
ADAMS_BASHFORTH = (
    (1.0,),
    (3.0 / 2.0, -1.0 / 2.0),
    (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
)


@dataclass(frozen=True)
class IPNDM(Sampler):
    r"""iPNDM: DDIM's transfer with an Adams-Bashforth combination of the last `order` noise predictions.

    See the module for the update; orders warm up $1, 2, \dots$ up to `order` (default 4, as in
    the paper and diffusers' `IPNDMScheduler`). One evaluation per step.

    Arguments:
        order: the Adams-Bashforth order, 1 (DDIM) to 4 (default).

    References: Zhang & Chen, *Fast Sampling of Diffusion Models with Exponential Integrator*,
    ICLR 2023 (arXiv:2204.13902), appendix (iPNDM); Liu, Ren, Lin, Zhao, *Pseudo Numerical Methods
    for Diffusion Models on Manifolds*, ICLR 2022, eqs. (9), (12); diffusers' `IPNDMScheduler`.
    """

    order: int = option(4, choices=(1, 2, 3, 4))
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()  # uniform t ends with a step long in lambda

    def init(self, ctx, x):
        return []  # the noise predictions of previous steps, newest last

    def step(self, ctx: SamplingContext, x: Tensor, i: int, history: list):
        alpha, sigma = ctx.alpha, ctx.sigma
        # eps_i = -sigma_i s(x_i, t_i)
        score = ctx.score(x, i)
        history.append(-sigma[i] * score)
        if len(history) > self.order:
            history.pop(0)
        # eps_tilde: Adams-Bashforth over the history (warm-up: as many points as there are)
        weights = ADAMS_BASHFORTH[len(history) - 1]
        eps = sum(w * e for w, e in zip(weights, reversed(history)))
        # x_{i+1} = alpha_{i+1} (x_i / alpha_i + (rho_{i+1} - rho_i) eps_tilde)
        d_rho = sigma[i + 1] / alpha[i + 1] - sigma[i] / alpha[i]
        x_next = alpha[i + 1] * (x / alpha[i] + d_rho * eps)
        return x_next, (x + sigma[i] ** 2 * score) / alpha[i]
