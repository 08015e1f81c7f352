r"""Samplers that integrate the reverse SDE or the probability-flow ODE with a `solvers` method.

Once the score is plugged in, the reverse-time SDE
$dx = [f(t)x - g(t)^2\nabla\log p_t(x)]\,dt + g(t)\,d\bar w$ and the probability-flow ODE
$\dot x = f(t)x - \tfrac12 g(t)^2\nabla\log p_t(x)$ (Song et al. 2021, eqs. 6 and 13) are
ordinary problems for the diffusion-agnostic integrators of `solvers`: any SDE method
(Euler-Maruyama, stochastic Heun, SRA1) and any ODE method (Euler, Heun, RK4, or the
adaptive Bogacki-Shampine and Dormand-Prince pairs) runs them, integrating backwards in time
natively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import solvers
from torch import Tensor

from .base import Sampler, SamplingContext

__all__ = ["ReverseSDESampler", "ProbabilityFlowSampler"]


class _SolverStepping(Sampler):
    """Steps of a `solvers` method on the grid (fixed-step), so the sampler also serves as a predictor."""

    solver: Any
    probability_flow: ClassVar[bool] = False

    def _check_solver(self, kind: str, example: str) -> None:
        if isinstance(self.solver, type):
            raise TypeError(f"solver: pass an instance, e.g. solver={self.solver.__name__}(), got the class itself")
        if not isinstance(self.solver, solvers.AbstractSolver) or self.solver.kind != kind:
            raise TypeError(f"solver: {type(self).__name__} needs a solvers {kind.upper()} solver such as {example},"
                            f" got {self.solver!r}")

    def evaluations(self, steps: int) -> int:
        return self.solver.nfe(steps)

    def init(self, ctx: SamplingContext, x: Tensor):
        problem = self.solver.prepare(ctx.sde.reverse(ctx.score_fn, probability_flow=self.probability_flow))
        increment = None
        if self.solver.kind == "sde":
            times = ctx.times
            increment = ctx.noise.bind(self.solver.noise_shape(problem, x), x.dtype, x.device,
                                       levy_area=self.solver.levy_area, span=(min(times), max(times)))
        return {"problem": problem, "increment": increment, "state": self.solver.init(problem, x, ctx.t_grid[0])}

    def step(self, ctx: SamplingContext, x: Tensor, i: int, st: dict):
        t_cur, t_next = ctx.times[i], ctx.times[i + 1]
        dw = st["increment"](t_cur, t_next) if st["increment"] is not None else None
        x_next, st["state"] = self.solver.step(
            st["problem"], x, ctx.t_grid[i], ctx.t_grid[i + 1], t_next - t_cur, st["state"], dw
        )
        return x_next, None


@dataclass(frozen=True)
class ReverseSDESampler(_SolverStepping):
    r"""The reverse-time SDE integrated on the grid by a `solvers` SDE method (Euler-Maruyama by default).

    With Euler-Maruyama one step is ($\Delta t = t_{i+1} - t_i < 0$)

    $$x_{i+1} = x_i + [f(t_i)x_i - g(t_i)^2\nabla\log p_{t_i}(x_i)]\,\Delta t + g(t_i)\sqrt{|\Delta t|}\,z_i.$$

    The reverse SDE has additive noise, so `solvers.StochasticHeun()` (weak order 2) and
    `solvers.SRA1()` (strong order 1.5) apply too.

    Arguments:
        solver: a `solvers` SDE solver instance, default `solvers.EulerMaruyama()`.

    Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
    Equations*, ICLR 2021, eq. (6) and appendix E (the Euler-Maruyama predictor).
    """

    solver: Any = field(default_factory=solvers.EulerMaruyama)
    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        self._check_solver("sde", "solvers.EulerMaruyama()")


@dataclass(frozen=True)
class ProbabilityFlowSampler(_SolverStepping):
    r"""The probability-flow ODE $\dot x = f(t)x - \tfrac12 g(t)^2\nabla\log p_t(x)$ integrated by a `solvers` ODE method.

    A fixed-step solver (`Euler`, `Midpoint`, `Heun`, `RK4`) steps on the grid; an adaptive
    one (`solvers.Dopri5(rtol, atol)`, `solvers.BogackiShampine(...)`) integrates from the
    grid's first time to its last choosing its own steps (leave `steps` unset), on the
    state's own device. Deterministic: the same $x_T$ always gives the same sample, and
    `x_init` may be a latent obtained by integrating the ODE forwards.

    Arguments:
        solver: a `solvers` ODE solver instance, default `solvers.Heun()`.

    Reference: Song et al., ICLR 2021, eq. (13) and section 4.3.
    """

    solver: Any = field(default_factory=solvers.Heun)
    default_steps: ClassVar[int] = 100
    probability_flow: ClassVar[bool] = True

    def __post_init__(self):
        self._check_solver("ode", "solvers.Heun() or solvers.Dopri5(rtol=1e-5, atol=1e-5)")

    @property
    def adaptive(self) -> bool:
        return bool(self.solver.adaptive)

    def run(self, ctx, x, report):
        if not self.adaptive:
            return super().run(ctx, x, report)
        problem = ctx.sde.reverse(ctx.score_fn, probability_flow=True)

        def callback(event) -> None:
            report(event.step, event.x, None, event.t_prev, event.t)

        sol = solvers.integrate(problem, x.to(ctx.work_dtype), [ctx.times[0], ctx.times[-1]], solver=self.solver,
                                callback=callback, check_finite=False)
        return sol.x
