r"""Fixed-step SDE solvers for $dx = f(x, t)\,dt + g(x, t) \odot dW_t$.

| solver | calculus | noise types | strong order | weak order | drift evals/step |
|---|---|---|---|---|---|
| `EulerMaruyama` | Itô | diagonal, scalar, additive | 0.5 (1.0 additive) | 1.0 | 1 |
| `StochasticHeun` | Stratonovich | diagonal, scalar, additive | 1.0 | 1.0 (2.0 additive) | 2 |
| `SRA1` | either (additive) | additive | 1.5 | 2.0 | 2 |

Itô and Stratonovich coincide for additive noise, so all three accept additive problems
of either `sde_type`. Every solver steps forward or backward in time: with `dt < 0` the
increments $\Delta W = W(t_{next}) - W(t_{cur})$ have variance $|dt|$.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import AbstractSDESolver
from .problems import noise_type_of

__all__ = ["EulerMaruyama", "StochasticHeun", "SRA1"]


class EulerMaruyama(AbstractSDESolver):
    r"""The Euler-Maruyama method for Itô SDEs.

    $$x_{n+1} = x_n + f(x_n, t_n)\,\Delta t + g(x_n, t_n) \odot \Delta W_n.$$

    Strong order 0.5 (1.0 for additive noise), weak order 1.0.

    Reference: Kloeden & Platen, *Numerical Solution of Stochastic Differential
    Equations*, Springer 1992, §10.2 and §14.1.
    """

    order: ClassVar[float] = 0.5
    strong_order = {"diagonal": 0.5, "scalar": 0.5, "additive": 1.0}
    weak_order = {"diagonal": 1.0, "scalar": 1.0, "additive": 1.0}
    evals_per_step: ClassVar[int] = 1
    diffusion_evals_per_step: ClassVar[int] = 1

    def step(self, problem, x, t_cur, t_next, dt, state, dw):
        f = problem.drift(x, t_cur)
        g = problem.diffusion(x, t_cur)
        return torch.addcmul(torch.add(x, f, alpha=dt), g, dw), state


class StochasticHeun(AbstractSDESolver):
    r"""The stochastic Heun method (Euler-Heun), a predictor-corrector for Stratonovich SDEs.

    $$\bar x = x_n + f(x_n, t_n)\,\Delta t + g(x_n, t_n) \odot \Delta W_n,$$
    $$x_{n+1} = x_n + \tfrac12\big(f(x_n, t_n) + f(\bar x, t_{n+1})\big)\Delta t
               + \tfrac12\big(g(x_n, t_n) + g(\bar x, t_{n+1})\big) \odot \Delta W_n.$$

    Converges to the Stratonovich solution: strong order 1.0 for diagonal (commutative)
    and scalar noise. For additive noise (where Itô = Stratonovich) it is the explicit
    weak-order-2 scheme of Kloeden & Platen (1992, §15.1) and has strong order 1.0; the
    diffusion at $t_{n+1}$ is then reused by the next step.

    Reference: Kloeden & Platen 1992, §11.1 and §15.1; Rümelin, "Numerical treatment of
    stochastic differential equations", SIAM J. Numer. Anal. 19 (1982).
    """

    order: ClassVar[float] = 1.0
    sde_types: ClassVar[tuple[str, ...]] = ("stratonovich",)
    strong_order = {"diagonal": 1.0, "scalar": 1.0, "additive": 1.0}
    weak_order = {"diagonal": 1.0, "scalar": 1.0, "additive": 2.0}
    evals_per_step: ClassVar[int] = 2
    diffusion_evals_per_step: ClassVar[int] = 2

    def init(self, problem, x0, t0):
        return {"additive": noise_type_of(problem) == "additive", "g": None}

    def step(self, problem, x, t_cur, t_next, dt, state, dw):
        f0 = problem.drift(x, t_cur)
        g0 = state["g"] if state["g"] is not None else problem.diffusion(x, t_cur)
        x_pred = torch.addcmul(torch.add(x, f0, alpha=dt), g0, dw)
        f1 = problem.drift(x_pred, t_next)
        g1 = problem.diffusion(x_pred, t_next)
        x_next = torch.add(torch.add(x, f0, alpha=0.5 * dt), f1, alpha=0.5 * dt)
        x_next = torch.addcmul(x_next, g0 + g1, dw, value=0.5)
        if state["additive"]:
            state = {"additive": True, "g": g1}
        return x_next, state


class SRA1(AbstractSDESolver):
    r"""Rößler's SRA1: a stochastic Runge-Kutta method of strong order 1.5 for additive noise.

    With $I = \Delta W_n$ and $I_{(1,0)} = \int_{t_n}^{t_{n+1}} (W_s - W_{t_n})\,ds$
    (the space-time Lévy area term, supplied by the noise source), $h = \Delta t$:

    $$H = x_n + \tfrac34 f(x_n, t_n)\,h + \tfrac32\, g(t_{n+1}) \odot I_{(1,0)}/h,$$
    $$x_{n+1} = x_n + \big(\tfrac13 f(x_n, t_n) + \tfrac23 f(H, t_n + \tfrac34 h)\big) h
               + g(t_{n+1}) \odot (I - I_{(1,0)}/h) + g(t_n) \odot I_{(1,0)}/h.$$

    Strong order 1.5, weak order 2.0, deterministic order 2 (the tableau $c_0 = (0, 3/4)$,
    $c_1 = (1, 0)$, $A_0 = B_0/2 = [[0, 0], [3/4, 0]]$, $\alpha = (1/3, 2/3)$,
    $\beta^{(1)} = (1, 0)$, $\beta^{(2)} = (-1, 1)$). Needs `noise_type = "additive"`
    (diffusion independent of x) and a noise source with Lévy area
    (`GeneratorNoise`, `SeededNoise`, or `BrownianTree(..., levy_area=True)`).
    The diffusion at $t_{n+1}$ is reused by the next step (one diffusion evaluation per step).

    Reference: A. Rößler, "Runge-Kutta methods for the strong approximation of solutions
    of stochastic differential equations", SIAM J. Numer. Anal. 48(3), 922-952 (2010).
    """

    order: ClassVar[float] = 1.5
    noise_types: ClassVar[tuple[str, ...]] = ("additive",)
    sde_types: ClassVar[tuple[str, ...]] = ("ito", "stratonovich")
    levy_area: ClassVar[bool] = True
    strong_order = {"additive": 1.5}
    weak_order = {"additive": 2.0}
    evals_per_step: ClassVar[int] = 2
    diffusion_evals_per_step: ClassVar[int] = 1
    diffusion_evals_init: ClassVar[int] = 1

    def init(self, problem: Any, x0: Tensor, t0: Tensor):
        return problem.diffusion(x0, t0)

    def step(self, problem, x, t_cur, t_next, dt, state, dw):
        dw, dz = dw
        g_cur = state
        g_next = problem.diffusion(x, t_next)
        dz_h = dz / dt
        f0 = problem.drift(x, t_cur)
        h1 = torch.addcmul(torch.add(x, f0, alpha=0.75 * dt), g_next, dz_h, value=1.5)
        f1 = problem.drift(h1, t_cur + 0.75 * dt)
        x_next = torch.add(torch.add(x, f0, alpha=dt / 3), f1, alpha=2 * dt / 3)
        x_next = torch.addcmul(torch.addcmul(x_next, g_next, dw - dz_h), g_cur, dz_h)
        return x_next, g_next
