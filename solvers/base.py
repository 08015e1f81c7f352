r"""The integration entry point, the solution object and the solver base classes.

A solver is a small object: class attributes say what it is (its order, the problems and
noise it supports) and `step` advances the state by one step. The base classes own
everything else: the time loop, noise, saving, callbacks, the progress bar and the
finiteness check, so each method is a few lines (as in diffrax and torchdiffeq).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

from ._utils import FiniteMonitor, NonFiniteError, as_int, as_real, check_state, describe, type_name
from .grids import Grid, as_grid
from .noise import NoiseSource, as_noise
from .problems import as_ode, check_sde, noise_type_of, sde_type_of

__all__ = ["integrate", "Solution", "StepEvent", "AbstractSolver", "AbstractODESolver", "AbstractSDESolver"]


class StepEvent(NamedTuple):
    """What a callback receives after each accepted step.

    Attributes:
        step: the index of the step (0-based; for adaptive solvers, the loop iteration).
        t_prev: the time before the step (a float, or a `(B,)` tensor in per-sample mode).
        t: the time after the step (same type).
        x: the state at `t`. Do not modify it in place.
    """

    step: int
    t_prev: float | Tensor
    t: float | Tensor
    x: Tensor


@dataclass
class Solution:
    """The result of `solvers.integrate`.

    Attributes:
        x: the final state, shape `(B, ...)`.
        ts: the times of the saved states, shape `(S,)` (float64, on x's device).
        ys: the saved states, shape `(S, B, ...)`; by default only the final state (S = 1).
        nfe: evaluations of the vector field (ODE) or of the drift (SDE), each on the whole batch.
        n_steps: steps attempted (accepted + rejected; per-sample mode: loop iterations).
        n_accepted: accepted steps (per-sample mode: the most any sample took).
        n_rejected: rejected steps (per-sample mode: the most any sample had).
        accepted_per_sample, rejected_per_sample: `(B,)` counts in per-sample mode, else None.
        solver: the solver used.
        stats: other counters (e.g. `"n_diffusion_evals"` for SDE solvers).
    """

    x: Tensor
    ts: Tensor
    ys: Tensor
    nfe: int
    n_steps: int
    n_accepted: int
    n_rejected: int
    solver: "AbstractSolver"
    accepted_per_sample: Tensor | None = None
    rejected_per_sample: Tensor | None = None
    stats: dict = field(default_factory=dict)

    @property
    def t(self) -> float:
        """The final time."""
        return float(self.ts[-1])

    def __repr__(self) -> str:
        return (f"Solution(x: {tuple(self.x.shape)}, saved {len(self.ts)} state(s), nfe={self.nfe}, "
                f"n_accepted={self.n_accepted}, n_rejected={self.n_rejected}, solver={self.solver!r})")


class _CheckedProblem:
    """Wraps the problem for the first step only: checks output types, shapes and devices."""

    def __init__(self, problem: Any, who: str):
        self._problem = problem
        self._who = who

    def __getattr__(self, name):
        return getattr(self._problem, name)

    def _check(self, name: str, out: Any, x: Tensor, exact: bool) -> Any:
        label = f"problem {type_name(self._problem)}: {name}(x, t)"
        if not isinstance(out, Tensor):
            raise TypeError(f"{label} must return a tensor, got {describe(out)}")
        if out.device != x.device:
            raise ValueError(f"{label} returned a tensor on {out.device}, but x is on {x.device}")
        if exact:
            if out.shape != x.shape:
                raise ValueError(f"{label} returned shape {tuple(out.shape)}; expected x's shape {tuple(x.shape)}")
        else:
            try:
                ok = torch.broadcast_shapes(out.shape, x.shape) == x.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"{label} returned shape {tuple(out.shape)}, which does not broadcast to x's "
                                 f"shape {tuple(x.shape)} (diagonal noise: g * dW elementwise)")
        return out

    def vector_field(self, x, t):
        return self._check("vector_field", self._problem.vector_field(x, t), x, True)

    def drift(self, x, t):
        return self._check("drift", self._problem.drift(x, t), x, True)

    def diffusion(self, x, t):
        return self._check("diffusion", self._problem.diffusion(x, t), x, False)


class AbstractSolver:
    """Base class of all solvers; owns the fixed-step loop.

    Subclasses set the class attributes and implement `step`. Solvers are passed to
    `integrate` as instances (`solvers.RK4()`), never as strings.

    Class attributes:
        kind: `"ode"` or `"sde"`.
        order: the (strong, for SDE solvers) order of convergence in the general case.
        evals_per_step: vector-field (or drift) evaluations per step.
        fsal: whether the last evaluation of a step is reused as the first of the next.
    """

    kind: ClassVar[str] = "ode"
    order: ClassVar[float] = 1.0
    evals_per_step: ClassVar[int] = 1
    diffusion_evals_per_step: ClassVar[int] = 0
    fsal: ClassVar[bool] = False
    #: adaptive solvers choose their own steps; fixed-step solvers step on `ts`
    adaptive: bool = False

    # -- the interface a method implements -------------------------------------------------

    def prepare(self, problem: Any) -> Any:
        """Validate `problem` for this solver and return the object the steps will call."""
        raise NotImplementedError

    def init(self, problem: Any, x0: Tensor, t0: Tensor) -> Any:
        """The solver state carried between steps (None by default)."""
        return None

    def step(self, problem: Any, x: Tensor, t_cur: Tensor, t_next: Tensor, dt: float, state: Any,
             dw: Any) -> tuple[Tensor, Any]:
        """Advance `x` from `t_cur` to `t_next`.

        Arguments:
            problem: the validated problem (see `prepare`).
            x: the state at `t_cur`, shape `(B, ...)`.
            t_cur, t_next: the times as `(B,)` tensors on x's device and dtype.
            dt: `t_next - t_cur` as a Python float (negative in reverse time).
            state: the solver state from `init` or the previous step.
            dw: the Brownian increment for SDE solvers (a pair `(dW, dZ)` for solvers
                with `levy_area = True`), None for ODE solvers.

        Returns:
            `(x_next, state)`.
        """
        raise NotImplementedError

    def nfe(self, n_steps: int) -> int:
        """Function evaluations of `n_steps` fixed steps."""
        if self.fsal:
            return (1 + n_steps * (self.evals_per_step - 1)) if n_steps else 0
        return n_steps * self.evals_per_step

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- the loop -----------------------------------------------------------------------------

    def noise_shape(self, problem: Any, x0: Tensor) -> torch.Size:
        return x0.shape

    def solve(self, problem: Any, x0: Tensor, grid: Grid, *, noise: NoiseSource | None, save_at: Any,
              callback: Callable[[StepEvent], Any] | None, progress: bool, check_finite: bool | str,
              **options: Any) -> Solution:
        """The fixed-step loop: one `step` per interval of `grid` (called by `integrate`).

        Finiteness (`check_finite`): `True` checks the final state once, after the loop; if it
        is NaN/inf, the run is replayed from the start with the same noise (sources are
        snapshotted before the loop) and an on-device record per step, which locates the first
        non-finite step: no per-step cost unless something went wrong. `"step"` records every
        step on the first run (for problems that cannot be replayed exactly).
        """
        for name, value in options.items():
            if value is not None:
                raise ValueError(f"{name}: only adaptive solvers use it, but {self!r} steps on the points of ts "
                                 f"(got {name}={value!r})")
        times = grid.times
        n = len(times) - 1
        save_idx = _fixed_save_indices(save_at, grid)
        save_mask = [False] * (n + 1)
        for i in save_idx:
            save_mask[i] = True
        batch = x0.shape[0]
        # Times as (B,) views of one expanded tensor: no per-step allocation or host sync.
        tt = grid.tensor.to(device=x0.device, dtype=x0.dtype).unsqueeze(1).expand(n + 1, batch).unbind(0)

        def bind():
            if self.kind != "sde":
                return None
            return noise.bind(self.noise_shape(problem, x0), x0.dtype, x0.device,
                              levy_area=getattr(self, "levy_area", False), span=(min(times), max(times)))

        snapshot = noise.snapshot(x0.device) if (self.kind == "sde" and check_finite is True) else None
        monitor = FiniteMonitor(check_finite == "step", x0.dtype)
        pbar = _progress_bar(progress, n, self)
        try:
            x, saved = self._loop(problem, x0, times, tt, bind(), save_mask, monitor, callback, pbar)
        finally:
            if pbar is not None:
                pbar.close()

        k = monitor.first_bad(x)
        if k is None and check_finite is True and not bool(torch.isfinite(x).all()):
            k = -1
            if self.kind == "ode" or snapshot is not None:  # replay to find the step
                if snapshot is not None:
                    noise.restore(snapshot)
                monitor = FiniteMonitor(True, x0.dtype)
                x_again, _ = self._loop(problem, x0, times, tt, bind(), [False] * (n + 1), monitor, None, None)
                k = monitor.first_bad(x_again)
                k = -1 if k is None else k
        if k is not None:
            what = "drift or diffusion" if self.kind == "sde" else "vector field"
            if k < 0:
                raise NonFiniteError(
                    f"the state at t={times[-1]:.6g} is non-finite (NaN or inf): the {what} of {type_name(problem)} "
                    f"returned non-finite values (a replay could not locate the step: pass check_finite='step' "
                    f"to record every step)")
            raise NonFiniteError(
                f"the state became non-finite (NaN or inf) in step {k}, from t={times[k]:.6g} to "
                f"t={times[k + 1]:.6g}: the {what} of {type_name(problem)} returned non-finite values at "
                f"t={times[k]:.6g} (or the step is too large for the problem's stability)")

        ys = torch.stack(saved) if len(saved) != 1 else saved[0].unsqueeze(0)
        ts = torch.tensor([times[i] for i in save_idx], dtype=torch.float64, device=x0.device)
        stats = {}
        if self.kind == "sde":
            stats["n_diffusion_evals"] = n * self.diffusion_evals_per_step + getattr(self, "diffusion_evals_init", 0)
        return Solution(x=x, ts=ts, ys=ys, nfe=self.nfe(n), n_steps=n, n_accepted=n, n_rejected=0,
                        solver=self, stats=stats)

    def _loop(self, problem, x0, times, tt, increment, save_mask, monitor, callback, pbar):
        """The hot loop: no host synchronisation, no allocation beyond the step's own."""
        saved = [x0] if save_mask[0] else []
        step = self.step
        x = x0
        checked = _CheckedProblem(problem, repr(self))
        state = self.init(checked, x0, tt[0])
        for i in range(len(times) - 1):
            t_cur, t_next = times[i], times[i + 1]
            dw = increment(t_cur, t_next) if increment is not None else None
            x, state = step(checked if i == 0 else problem, x, tt[i], tt[i + 1], t_next - t_cur, state, dw)
            monitor.record(x)
            if save_mask[i + 1]:
                saved.append(x)
            if callback is not None:
                callback(StepEvent(i, t_cur, t_next, x))
            if pbar is not None:
                pbar.update(1)
        return x, saved


class AbstractODESolver(AbstractSolver):
    """Base class of ODE solvers: the problem has `vector_field(x, t)` or is a callable."""

    kind: ClassVar[str] = "ode"

    def prepare(self, problem: Any) -> Any:
        return as_ode(problem, repr(self))


class AbstractSDESolver(AbstractSolver):
    r"""Base class of SDE solvers for $dx = f(x, t)\,dt + g(x, t) \odot dW$.

    Class attributes:
        noise_types: the `noise_type`s the method supports.
        sde_types: the calculi it integrates (`"ito"`, `"stratonovich"`); for additive
            noise the two coincide, so every solver accepts additive problems of both.
        levy_area: whether it needs the space-time Lévy area with each increment.
        strong_order, weak_order: orders by noise type.
    """

    kind: ClassVar[str] = "sde"
    noise_types: ClassVar[tuple[str, ...]] = ("diagonal", "scalar", "additive")
    sde_types: ClassVar[tuple[str, ...]] = ("ito",)
    levy_area: ClassVar[bool] = False
    strong_order: ClassVar[Mapping[str, float]] = {}
    weak_order: ClassVar[Mapping[str, float]] = {}
    diffusion_evals_per_step: ClassVar[int] = 1

    def prepare(self, problem: Any) -> Any:
        check_sde(problem, repr(self))
        nt, st = noise_type_of(problem), sde_type_of(problem)
        if nt not in self.noise_types:
            raise ValueError(f"solver {self!r} supports noise_type in {self.noise_types}, but problem "
                             f"{type_name(problem)} has noise_type={nt!r}")
        if st not in self.sde_types and nt != "additive":
            other = "StochasticHeun()" if st == "stratonovich" else "EulerMaruyama()"
            raise ValueError(f"solver {self!r} integrates {'/'.join(self.sde_types)} SDEs, but problem "
                             f"{type_name(problem)} has sde_type={st!r} with noise_type={nt!r} (the calculi "
                             f"coincide only for additive noise): use {other} or convert the drift")
        return problem

    def noise_shape(self, problem: Any, x0: Tensor) -> torch.Size:
        if noise_type_of(problem) == "scalar":
            return torch.Size((x0.shape[0],) + (1,) * (x0.ndim - 1))
        return x0.shape


def _progress_bar(progress: bool, total: float, solver: AbstractSolver):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=type(solver).__name__, leave=False, dynamic_ncols=True)


def _fixed_save_indices(save_at: Any, grid: Grid) -> list[int]:
    """Indices of grid points to save for a fixed-step solver."""
    times = grid.times
    n = len(times) - 1
    if save_at is None:
        return [n]
    if isinstance(save_at, str):
        if save_at == "grid":
            return list(range(n + 1))
        raise ValueError(f"save_at: expected None, 'grid' or a sequence of times, got {save_at!r}")
    save_times = _save_times(save_at, grid)
    asc = times if grid.direction > 0 else times[::-1]
    idx = []
    for s in save_times:
        j = bisect.bisect_left(asc, s)
        best = None
        for c in (j - 1, j):
            if 0 <= c <= n and (best is None or abs(asc[c] - s) < abs(asc[best] - s)):
                best = c
        k = best if grid.direction > 0 else n - best
        step = min(abs(times[k] - times[k - 1]) if k > 0 else math.inf,
                   abs(times[k + 1] - times[k]) if k < n else math.inf)
        if abs(times[k] - s) > 1e-6 * step:
            raise ValueError(f"save_at: fixed-step solvers save only at points of ts; t={s!r} is not one "
                             f"(nearest: {times[k]!r}); add it to ts or use an adaptive solver (dense output)")
        idx.append(k)
    return idx


def _save_times(save_at: Any, grid: Grid) -> list[float]:
    """Validate explicit save times: inside the span, monotone in the integration direction."""
    if isinstance(save_at, (int, float)) and not isinstance(save_at, bool):
        save_at = [float(save_at)]
    if isinstance(save_at, Tensor) and save_at.ndim == 0:
        save_at = save_at.reshape(1)
    sg = as_grid(save_at, name="save_at", min_points=1)
    s = sg.times
    lo, hi = min(grid.times[0], grid.times[-1]), max(grid.times[0], grid.times[-1])
    span = hi - lo
    for v in s:
        if not lo - 1e-9 * span <= v <= hi + 1e-9 * span:
            raise ValueError(f"save_at: times must lie in the integration span [{lo}, {hi}], got {v}")
    if len(s) > 1 and (s[1] - s[0]) * grid.direction < 0:
        raise ValueError(f"save_at: times must run in the integration direction "
                         f"({'increasing' if grid.direction > 0 else 'decreasing'}), got {s[0]} then {s[1]}")
    return [min(max(v, lo), hi) for v in s]


def integrate(problem: Any, x0: Tensor, ts: Tensor | Sequence[float], solver: AbstractSolver, *,
              noise: NoiseSource | torch.Generator | None = None, save_at: Any = None,
              callback: Callable[[StepEvent], Any] | None = None, progress: bool = False,
              check_finite: bool | str = True, dt0: float | None = None, max_steps: int | None = None,
              max_step: float | None = None) -> Solution:
    r"""Integrate an ODE or SDE problem from `x0` over the time grid `ts`.

    For an ODE $\dot x = f(x, t)$ or an SDE $dx = f(x, t)\,dt + g(x, t) \odot dW_t$ (see
    `solvers.problems`), with time increasing or decreasing along `ts`.

    Arguments:
        problem: an SDE (`drift(x, t)`, `diffusion(x, t)`) for SDE solvers; an ODE
            (`vector_field(x, t)` or a callable `f(x, t)`) for ODE solvers. Times reach it as
            `(B,)` tensors on x's device and dtype.
        x0: the initial state, shape `(B, ...)`, floating point; device and dtype of the
            whole computation follow it.
        ts: strictly monotone times (tensor or sequence), increasing or decreasing.
            Fixed-step solvers step from each point to the next; adaptive solvers integrate
            from `ts[0]` to `ts[-1]` choosing their own steps, never stepping across a point
            of `ts` (mark discontinuities there).
        solver: a solver instance, e.g. `solvers.EulerMaruyama()`, `solvers.RK4()`,
            `solvers.Dopri5(rtol=1e-5, atol=1e-5)`.
        noise: SDE solvers only: a `NoiseSource` (`GeneratorNoise`, `SeededNoise`,
            `BrownianTree`), a `torch.Generator`, or None (torch's global generator).
        save_at: None (save the final state only), `"grid"` (every point of `ts`), or a
            sequence of times in the span, in the integration direction. Fixed-step solvers
            save at points of `ts`; adaptive solvers interpolate (dense output).
        callback: called as `callback(StepEvent(step, t_prev, t, x))` after every accepted step.
        progress: show a tqdm progress bar.
        check_finite: raise `NonFiniteError` (a `ValueError`) naming the time at which the
            state became NaN/inf. Fixed-step solvers check the final state once after the loop
            (no per-step cost) and, if it is non-finite, replay the run with the same noise to
            locate the step; `"step"` instead records one on-device sum per step (for problems
            that do not replay exactly, e.g. with dropout); `False` checks nothing. Adaptive
            solvers reject non-finite steps and report where the step size underflows.
        dt0: adaptive solvers: the first step size (default: Hairer's starting-step heuristic).
        max_steps: adaptive solvers: the most step attempts (default 100000).
        max_step: adaptive solvers: the largest step size (default: unbounded).

    Returns:
        A `Solution` with the final state `.x`, the saved `.ts`/`.ys`, `.nfe`, `.n_accepted`,
        `.n_rejected` and per-sample counters where relevant.

    Example:
        ```python
        import torch, solvers
        x0 = torch.randn(8, 2)
        sol = solvers.integrate(lambda x, t: -x, x0, [0.0, 1.0], solver=solvers.Dopri5(rtol=1e-6, atol=1e-6))
        torch.testing.assert_close(sol.x, x0 * torch.exp(torch.tensor(-1.0)), rtol=1e-5, atol=1e-5)
        ```
    """
    check_state("x0", x0)
    if isinstance(solver, type) and issubclass(solver, AbstractSolver):
        raise TypeError(f"solver: pass an instance, e.g. solver={solver.__name__}(), got the class itself")
    if not isinstance(solver, AbstractSolver):
        raise TypeError(f"solver: expected a solver instance such as solvers.EulerMaruyama() or solvers.RK4(), "
                        f"got {describe(solver)}")
    prepared = solver.prepare(problem)
    grid = as_grid(ts, name="ts")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable taking a StepEvent, got {describe(callback)}")
    if solver.kind == "sde":
        noise_src = as_noise(noise)
    else:
        if noise is not None:
            raise ValueError(f"noise: {solver!r} is an ODE solver and uses no noise, got {describe(noise)}")
        noise_src = None
    if dt0 is not None:
        dt0 = as_real("dt0", dt0)
        if dt0 == 0:
            raise ValueError("dt0: expected a nonzero step size, got 0")
    if max_steps is not None:
        max_steps = as_int("max_steps", max_steps, minimum=1)
    if max_step is not None:
        max_step = as_real("max_step", max_step, positive=True, allow_inf=True)
    if check_finite not in (True, False, "step"):
        raise ValueError(f"check_finite: expected True, False or 'step', got {check_finite!r}")
    return solver.solve(prepared, x0, grid, noise=noise_src, save_at=save_at, callback=callback,
                        progress=bool(progress), check_finite=check_finite, dt0=dt0, max_steps=max_steps,
                        max_step=max_step)
