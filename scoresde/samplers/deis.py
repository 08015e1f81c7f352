r"""DEIS: the diffusion exponential integrator sampler, multistep in the noise prediction ($\rho$AB-DEIS).

In the scaled variables $\hat x = x/\alpha_t$ and $\rho_t = \sigma_t/\alpha_t = e^{-\lambda_t}$ the
probability-flow ODE of any linear SDE is $d\hat x/d\rho = \hat\varepsilon(x_t, t)$, with
$\hat\varepsilon = -\sigma_t\nabla\log p_t$ the noise prediction, so that exactly

$$\hat x_{t} = \hat x_{s} + \int_{\rho_s}^{\rho_t}\hat\varepsilon\,d\rho.$$

DEIS replaces $\hat\varepsilon$ by the Lagrange polynomial through the last $p$ evaluations,
interpolated in $u = \log\rho = -\lambda$ (the "log-rho" variant of Zhang & Chen), and integrates
it exactly: with nodes $u_0 > u_1 > \dots$ (the newest first) and
$\ell_j(u) = \prod_{k\ne j}(u - u_k)/(u_j - u_k)$,

$$x_{t_{i+1}} = \alpha_{t_{i+1}}\Big(\frac{x_{t_i}}{\alpha_{t_i}} + \sum_{j<p} c_j\,\hat\varepsilon^{(i-j)}\Big),\qquad
c_j = \int_{u_{t_i}}^{u_{t_{i+1}}} e^{u}\,\ell_j(u)\,du,$$

in closed form: $\int e^u du = e^u$, $\int e^u(u - c)\,du = e^u(u - c - 1)$ and
$\int e^u(u - c)(u - d)\,du = e^u[(u - c)(u - d) - (2u - c - d) + 2]$. Order 1 is DDIM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler, SamplingContext

__all__ = ["DEIS"]

#: like diffusers' DEIS, the last steps are of lower order on grids shorter than this
_LOWER_ORDER_FINAL_BELOW = 15


def _antiderivative(u: Tensor, nodes: list[Tensor], j: int) -> Tensor:
    r"""$F_j(u)$ with $F_j' = e^u\ell_j(u)$, $\ell_j$ the Lagrange basis polynomial of node $j$."""
    others = [n for k, n in enumerate(nodes) if k != j]
    uj = nodes[j]
    if not others:  # l_j = 1
        return torch.exp(u)
    if len(others) == 1:  # l_j = (u - c) / (u_j - c)
        (c,) = others
        return torch.exp(u) * (u - c - 1.0) / (uj - c)
    c, d = others  # l_j = (u - c)(u - d) / ((u_j - c)(u_j - d))
    return torch.exp(u) * ((u - c) * (u - d) - (2.0 * u - c - d) + 2.0) / ((uj - c) * (uj - d))


@dataclass(frozen=True)
class DEIS(Sampler):
    r"""DEIS ($\rho$AB-DEIS, log-$\rho$ interpolation) of order 1, 2 or 3: one evaluation per step.

    See the module for the update. The first steps warm up with lower orders; with
    `lower_order_final` grids of fewer than 15 steps (a final denoising counted as one) end with
    lower orders (the last step first order, the one before at most second order), and a step
    into zero noise ($\rho = 0$) is always first order: the rules of diffusers'
    `DEISMultistepScheduler`, which this reproduces on its grid.

    Arguments:
        order: 1, 2 or 3 (default 3, the order the DEIS paper recommends; diffusers defaults to 2).
        lower_order_final: lower the order of the last steps on short grids (default True).

    References: Zhang & Chen, *Fast Sampling of Diffusion Models with Exponential Integrator*,
    ICLR 2023 (arXiv:2204.13902), eq. (15) and section 4 ($\rho$AB-DEIS); diffusers'
    `DEISMultistepScheduler` (`solver_type="logrho"`).
    """

    order: int = option(3, choices=(1, 2, 3))
    lower_order_final: bool = option(True)
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()

    def check(self, sde, ts):
        lam = sde.log_snr(ts.detach().to("cpu", torch.float64))
        if not bool(torch.isfinite(lam[:-1]).all()):
            raise ValueError("grid: DEIS needs a finite log-SNR at every time but the last; use a grid with t > 0 before its end")

    def _order(self, ctx: SamplingContext, i: int) -> int:
        final = ctx.steps + int(ctx.final_denoise)  # the denoising step counts as the last one
        p = min(self.order, i + 1)  # warm-up: as many previous evaluations as there are
        if self.lower_order_final and final < _LOWER_ORDER_FINAL_BELOW:
            p = min(p, final - i)
        if i == ctx.steps - 1 and ctx.ends_noise_free:
            p = 1  # into rho = 0: the exact first-order step
        return p

    def init(self, ctx, x):
        return []  # noise predictions of the previous steps, newest last

    def step(self, ctx: SamplingContext, x: Tensor, i: int, history: list):
        alpha, sigma, lam = ctx.alpha, ctx.sigma, ctx.half_log_snr
        # eps_hat = -sigma_i s(x_i, t_i)
        score = ctx.score(x, i)
        eps = -sigma[i] * score
        history.append(eps)
        if len(history) > self.order:
            history.pop(0)
        p = self._order(ctx, i)
        if p == 1:
            # x_{i+1} = alpha_{i+1} (x_i / alpha_i + (rho_{i+1} - rho_i) eps_i)  (DDIM)
            rho_c, rho_n = sigma[i] / alpha[i], sigma[i + 1] / alpha[i + 1]
            x_next = alpha[i + 1] * (x / alpha[i] + (rho_n - rho_c) * eps)
        else:
            # nodes u_k = log rho_{i-k} = -lambda_{i-k}, newest first
            nodes = [-lam[i - k] for k in range(p)]
            u_c, u_n = -lam[i], -lam[i + 1]
            # c_j = F_j(u_{i+1}) - F_j(u_i), the integral of e^u l_j(u)
            coefs = [_antiderivative(u_n, nodes, j) - _antiderivative(u_c, nodes, j) for j in range(p)]
            # x_{i+1} = alpha_{i+1} (x_i / alpha_i + sum_j c_j eps_{i-j})
            x_next = x / alpha[i]
            for j in range(p):
                x_next = x_next + coefs[j] * history[-1 - j]
            x_next = alpha[i + 1] * x_next
        return x_next, (x + sigma[i] ** 2 * score) / alpha[i]
