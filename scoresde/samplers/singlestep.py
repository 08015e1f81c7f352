r"""DPM-Solver++ singlestep (2S, 3S): each macro step of order $k$ spans $k$ grid intervals.

Where the multistep solvers reuse evaluations of earlier steps, a singlestep solver of order
$k$ starts a macro step at a grid point $s$, takes the intermediate grid points as its
stages, and advances from $x_s$ to the macro step's end $t$ with all its stages' data
predictions. With $\hat x_0^{(j)}$ the data prediction at the $j$-th point of the macro step
($j = 0$ at $s$), $h = \lambda_t - \lambda_s$, $r_j = (\lambda_{s_j} - \lambda_s)/h$ and
$\varphi_1 = e^{-h} - 1$, $\varphi_2 = \varphi_1/h + 1$, $\varphi_3 = (\varphi_1 + h)/h^2 - \tfrac12$:

* order 1 (DDIM): $x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\varphi_1\hat x_0^{(0)}$, also the
  first stage of every macro step;
* order 2 (2S) from $x_s$ through the stage at $r_1$:
  `"midpoint"` $x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\varphi_1\hat x_0^{(0)} - \tfrac12\alpha_t\varphi_1 D_1$,
  `"heun"` $x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\varphi_1\hat x_0^{(0)} + \alpha_t\varphi_2 D_1$,
  with $D_1 = (\hat x_0^{(1)} - \hat x_0^{(0)})/r_1$;
* order 3 (3S) through the stages at $r_1 < r_2$: with $D_1^{(j)} = (\hat x_0^{(j)} - \hat x_0^{(0)})/r_j$,
  `"midpoint"` $x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\varphi_1\hat x_0^{(0)} + \alpha_t\varphi_2 D_1^{(2)}$,
  `"heun"` adds the second difference: $D_1 = (r_2 D_1^{(1)} - r_1 D_1^{(2)})/(r_2 - r_1)$,
  $D_2 = 2(D_1^{(2)} - D_1^{(1)})/(r_2 - r_1)$ and
  $x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\varphi_1\hat x_0^{(0)} + \alpha_t\varphi_2 D_1 - \alpha_t\varphi_3 D_2$.

Every coefficient is written with $(\alpha_t, \sigma_t)$ and $\lambda_t$ of the SDE's marginal, so it
serves the VP, sub-VP and VE SDEs alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler, SamplingContext

__all__ = ["DPMSolverSinglestep", "singlestep_orders"]


def singlestep_orders(order: int, steps: int, lower_order_final: bool = True) -> list[int]:
    """The order of each grid interval: macro steps `[1, 2, ..., order]` repeated (diffusers' rule).

    With `lower_order_final` the last macro step is shortened to fit the grid exactly
    (for order 3: `[1, 2, 3] * (n//3 - 1) + [1, 2] + [1]` when 3 divides `steps`, else the
    remainder `[1]` or `[1, 2]`; for order 2: `[1, 2] * (n//2 - 1) + [1, 1]` or `+ [1]`).
    Without it `steps` must be a multiple of `order`.
    """
    if lower_order_final:
        if order == 3:
            if steps % 3 == 0:
                return ([1, 2, 3] * (steps // 3 - 1) + [1, 2] + [1])[:steps]
            return [1, 2, 3] * (steps // 3) + [1, 2][: steps % 3]
        if order == 2:
            if steps % 2 == 0:
                return ([1, 2] * (steps // 2 - 1) + [1, 1])[:steps]
            return [1, 2] * (steps // 2) + [1]
        return [1] * steps
    if steps % order:
        raise ValueError(
            f"steps: with lower_order_final=False the number of steps must be a multiple of order={order}, got {steps}"
        )
    return list(range(1, order + 1)) * (steps // order)


@dataclass(frozen=True)
class DPMSolverSinglestep(Sampler):
    r"""DPM-Solver++ singlestep of order 1, 2 (2S) or 3 (3S), data prediction, on the sampler's grid.

    The grid's points are the stages: a macro step of order $k$ covers $k$ grid intervals and
    costs one evaluation per interval (see the module for the updates). The orders of the
    intervals follow `singlestep_orders` (diffusers' `DPMSolverSinglestepScheduler` with its
    default `lower_order_final`): `[1, 2, 3, 1, 2, 3, ...]` with a shortened last macro step, and
    a first-order last interval into zero noise (where $h$ is infinite). A final denoising
    (`sample(..., denoise=True)`) is that first-order last interval, and counts as one: with it,
    the grid's $N$ intervals and the denoising step are ordered as diffusers orders $N + 1$.

    Arguments:
        order: 1, 2 (default) or 3.
        solver_type: `"midpoint"` (default, diffusers' default) or `"heun"`: the second-order
            update's form; for order 3, whether the second difference $D_2$ is used.
        lower_order_final: shorten the last macro step to fit the grid (default True); False
            needs a number of intervals (with the denoising step) divisible by `order`.

    References: Lu, Zhou, Bao, Chen, Li, Zhu, *DPM-Solver: A Fast ODE Solver for Diffusion
    Probabilistic Model Sampling in Around 10 Steps*, NeurIPS 2022 (Algorithms 1, 2: DPM-Solver-2,
    -3); Lu et al., *DPM-Solver++*, 2022 (arXiv:2211.01095), Algorithm 1 (DPM-Solver++(2S), data
    prediction); diffusers' `DPMSolverSinglestepScheduler`.
    """

    order: int = option(2, choices=(1, 2, 3))
    solver_type: str = option("midpoint", choices=("midpoint", "heun"))
    lower_order_final: bool = option(True)
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()

    def check(self, sde, ts):
        lam = sde.log_snr(ts.detach().to("cpu", torch.float64))
        if not bool(torch.isfinite(lam[:-1]).all()):
            raise ValueError(
                "grid: DPMSolverSinglestep needs a finite log-SNR at every time but the last;"
                " use a grid with t > 0 before its end"
            )

    def init(self, ctx: SamplingContext, x: Tensor):
        orders = singlestep_orders(self.order, ctx.steps + int(ctx.final_denoise), self.lower_order_final)
        orders = orders[: ctx.steps]
        if ctx.ends_noise_free:
            orders[-1] = 1  # the last interval into zero noise: first order
        # the orders, the macro step's start (x_s, its index) and its stages' data predictions
        return {"orders": orders, "x_s": None, "s": 0, "models": []}

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: dict):
        lam, alpha, sigma = ctx.half_log_snr, ctx.alpha, ctx.sigma
        p = state["orders"][i]
        # the data prediction at the current grid point
        m = ctx.denoised(x, i)
        if p == 1:  # a macro step starts here: keep x_s
            state["x_s"], state["s"], state["models"] = x, i, []
        state["models"].append(m)
        x_s, s, models = state["x_s"], state["s"], state["models"]
        t = i + 1
        # h = lambda_t - lambda_s; phi_1 = e^{-h} - 1
        h = lam[t] - lam[s]
        phi_1 = torch.expm1(-h)
        # first-order part: (sigma_t / sigma_s) x_s - alpha_t phi_1 x0^(0)
        x_t = (sigma[t] / sigma[s]) * x_s - (alpha[t] * phi_1) * models[0]
        if p == 2:
            # D_1 = (x0^(1) - x0^(0)) / r_1
            r1 = (lam[s + 1] - lam[s]) / h
            d1 = (models[1] - models[0]) / r1
            if self.solver_type == "midpoint":
                # - alpha_t phi_1 D_1 / 2
                x_t = x_t - (0.5 * alpha[t] * phi_1) * d1
            else:
                # + alpha_t phi_2 D_1, phi_2 = phi_1 / h + 1
                x_t = x_t + (alpha[t] * (phi_1 / h + 1.0)) * d1
        elif p == 3:
            r1, r2 = (lam[s + 1] - lam[s]) / h, (lam[s + 2] - lam[s]) / h
            # D_1^(j) = (x0^(j) - x0^(0)) / r_j
            d1_1, d1_2 = (models[1] - models[0]) / r1, (models[2] - models[0]) / r2
            phi_2 = phi_1 / h + 1.0
            if self.solver_type == "midpoint":
                # + alpha_t phi_2 D_1^(2)
                x_t = x_t + (alpha[t] * phi_2) * d1_2
            else:
                # D_1 = (r_2 D_1^(1) - r_1 D_1^(2)) / (r_2 - r_1), D_2 = 2 (D_1^(2) - D_1^(1)) / (r_2 - r_1)
                d1 = (r2 * d1_1 - r1 * d1_2) / (r2 - r1)
                d2 = 2.0 * (d1_2 - d1_1) / (r2 - r1)
                # + alpha_t phi_2 D_1 - alpha_t phi_3 D_2, phi_3 = (phi_1 + h) / h^2 - 1/2
                phi_3 = (phi_1 + h) / h**2 - 0.5
                x_t = x_t + (alpha[t] * phi_2) * d1 - (alpha[t] * phi_3) * d2
        return x_t, m
