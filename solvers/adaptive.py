r"""Adaptive embedded Runge-Kutta solvers with a PI step-size controller and dense output.

The error of a step is estimated by the embedded lower-order solution, measured per
sample in Hairer's weighted RMS norm

$$\mathrm{err}_b = \sqrt{\frac1D \sum_i \left(\frac{e_{b,i}}{\mathrm{atol} + \mathrm{rtol}\,\max(|x_{b,i}|, |x^{new}_{b,i}|)}\right)^2},$$

and a step is accepted when the norm is at most 1. Two modes:

* **batch-wide** (`per_sample=False`, the default): one step size for the whole batch,
  accepted when $\max_b \mathrm{err}_b \le 1$. The *maximum* over samples, not the mean,
  so one stiff sample can never hide behind an easy batch. Times stay Python floats;
  one host synchronisation per step attempt.
* **per-sample** (`per_sample=True`): every sample has its own time, step size and
  controller state; a sample's trajectory is the one it would have alone (batch-size
  invariance), and easy samples take large steps while hard ones take small steps.
  The whole batch is still evaluated each iteration (finished samples make zero-length
  steps), so the cost is (iterations of the slowest sample) x B evaluations, and the
  problem sees a different time per sample. One host synchronisation per iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import Tensor

from ._utils import MaxStepsError, NonFiniteError, as_real, batch_view, describe, type_name
from .base import Solution, StepEvent, _CheckedProblem, _progress_bar, _save_times
from .grids import Grid
from .ode import ButcherTableau, ExplicitRK, combine

__all__ = ["PIController", "AdaptiveRK", "BogackiShampine", "Dopri5"]

_DEFAULT_MAX_STEPS = 100_000


@dataclass(frozen=True)
class PIController:
    r"""A proportional-integral step-size controller.

    After a step with error norm $\mathrm{err}_n$ (and $\mathrm{err}_{n-1}$ from the last
    accepted step), the next step size is $h_{n+1} = h_n \cdot \mathrm{fac}$ with

    $$\mathrm{fac} = \mathrm{clip}\left(\mathrm{safety}\cdot \mathrm{err}_n^{-\alpha}\,
      \mathrm{err}_{n-1}^{\beta},\ \mathrm{factor\_min},\ \mathrm{factor\_max}\right),\qquad
      \alpha = \frac{1}{q + 1} - 0.75\,\beta,$$

    where $q$ is the order of the error estimate; after a rejection the factor is
    $\max(\mathrm{factor\_min}, \mathrm{safety}\cdot\mathrm{err}_n^{-\alpha})$ and the next
    accepted step may not grow. $\beta = 0$ is the classical integral (I) controller used
    by scipy and torchdiffeq.

    Arguments:
        safety: the safety factor (0.9).
        factor_min, factor_max: bounds on the change of step size per step (0.2, 10).
        beta: the PI coefficient; default `0.2 / (q + 1)`, i.e. Hairer's 0.04 for Dopri5.

    Reference: Hairer & Wanner, *Solving Ordinary Differential Equations II*, §IV.2
    (PI control after Gustafsson 1991); Hairer, Nørsett & Wanner, *Solving ODEs I*,
    §II.4 and the code DOPRI5.
    """

    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    beta: float | None = None

    def __post_init__(self):
        s = as_real("safety", self.safety, positive=True)
        if s >= 1:
            raise ValueError(f"safety: expected a number in (0, 1), got {s}")
        fmin = as_real("factor_min", self.factor_min, positive=True)
        fmax = as_real("factor_max", self.factor_max, positive=True)
        if not fmin < 1 < fmax:
            raise ValueError(f"factor_min, factor_max: expected factor_min < 1 < factor_max, got {fmin}, {fmax}")
        if self.beta is not None:
            as_real("beta", self.beta, nonnegative=True)

    def exponents(self, error_order: int) -> tuple[float, float]:
        """`(alpha, beta)` for an error estimate of order `error_order`."""
        beta = 0.2 / (error_order + 1) if self.beta is None else float(self.beta)
        alpha = 1.0 / (error_order + 1) - 0.75 * beta
        if alpha <= 0:
            raise ValueError(f"beta: {beta} is too large for an error estimate of order {error_order} "
                             f"(alpha = 1/(q+1) - 0.75 beta must stay > 0)")
        return alpha, beta

    def accept_factor(self, err: float, prev_err: float, alpha: float, beta: float) -> float:
        fac = self.safety * (err ** -alpha if err > 0 else math.inf) * prev_err ** beta
        return min(self.factor_max, max(self.factor_min, fac))

    def reject_factor(self, err: float, alpha: float) -> float:
        if not math.isfinite(err):
            return self.factor_min
        return max(self.factor_min, self.safety * err ** -alpha)


def _rms(v: Tensor) -> Tensor:
    """Per-sample root mean square: `(B, ...) -> (B,)`."""
    if v.ndim == 1:
        return v.abs()
    flat = v.flatten(1)
    return torch.linalg.vector_norm(flat, dim=1) / math.sqrt(flat.shape[1])


class AdaptiveRK(ExplicitRK):
    """Base class of embedded Runge-Kutta pairs with PI control and dense output.

    Arguments:
        rtol, atol: relative and absolute tolerances (> 0).
        per_sample: per-sample step sizes (see the module docstring for the trade-off).
        controller: a `PIController` (default settings if None).
        adaptive: with False, take fixed steps on `ts` with the propagating method
            (useful to measure its order or to compare at equal cost).
    """

    error_order: ClassVar[int]

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, *, per_sample: bool = False,
                 controller: PIController | None = None, adaptive: bool = True):
        self.rtol = as_real("rtol", rtol, positive=True)
        self.atol = as_real("atol", atol, positive=True)
        if not isinstance(per_sample, bool):
            raise TypeError(f"per_sample: expected True or False, got {describe(per_sample)}")
        if controller is None:
            controller = PIController()
        if not isinstance(controller, PIController):
            raise TypeError(f"controller: expected a solvers.PIController, got {describe(controller)}")
        self.per_sample = per_sample
        self.controller = controller
        self.adaptive = bool(adaptive)

    def __repr__(self):
        extra = "" if self.adaptive else ", adaptive=False"
        extra += ", per_sample=True" if self.per_sample else ""
        return f"{type(self).__name__}(rtol={self.rtol:g}, atol={self.atol:g}{extra})"

    # -- method-specific ------------------------------------------------------------------------

    def interpolate(self, x0: Tensor, x1: Tensor, ks: list[Tensor], h: float | Tensor,
                    theta: float | Tensor) -> Tensor:
        """Dense output at $t + \\theta h$ inside an accepted step from `x0` to `x1`."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------------

    def attempt(self, f: Callable, x: Tensor, k1: Tensor, h: float | Tensor,
                time_at: Callable[[float], Tensor]) -> tuple[list[Tensor], Tensor, Tensor]:
        """One step attempt: the stages, the new state and the per-sample error norms `(B,)`."""
        ks, x_new = self.stages(f, x, k1, h, time_at)
        tab = self.tableau
        err = None
        for e, k in zip(tab.e, ks):
            if e:
                err = k * e if err is None else torch.add(err, k, alpha=e)
        err = err * h
        scale = torch.maximum(x.abs(), x_new.abs()).mul_(self.rtol).add_(self.atol)
        return ks, x_new, _rms(err.div_(scale))

    def initial_step(self, f: Callable, x0: Tensor, t0: Tensor, k0: Tensor, direction: float,
                     span: float) -> Tensor:
        """Hairer's starting step size (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4), per sample `(B,)`.

        Uses one extra evaluation of the vector field.
        """
        f64 = torch.float64
        scale = x0.abs().mul(self.rtol).add_(self.atol)
        d0 = _rms(x0 / scale).to(f64)
        d1 = _rms(k0 / scale).to(f64)
        h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
        h0 = h0.clamp(max=span)
        x1 = torch.addcmul(x0, batch_view((direction * h0).to(x0.dtype), x0.ndim), k0)
        k1 = f(x1, (t0 + direction * h0).to(x0.dtype))
        d2 = _rms((k1 - k0) / scale).to(f64) / h0
        dm = torch.maximum(d1, d2)
        h1 = torch.where(dm <= 1e-15, (h0 * 1e-3).clamp(min=1e-6),
                         (0.01 / dm) ** (1.0 / (self.error_order + 1)))
        h = torch.minimum(100 * h0, h1)
        h = torch.where(torch.isfinite(h) & (h > 0), h, h0)
        return h.clamp(max=span)

    def solve(self, problem, x0, grid, *, noise, save_at, callback, progress, check_finite, dt0=None,
              max_steps=None, max_step=None) -> Solution:
        if not self.adaptive:
            return super().solve(problem, x0, grid, noise=noise, save_at=save_at, callback=callback,
                                 progress=progress, check_finite=check_finite, dt0=dt0, max_steps=max_steps,
                                 max_step=max_step)
        times = grid.times
        if save_at is None:
            save_times = [times[-1]]
        elif isinstance(save_at, str):
            if save_at != "grid":
                raise ValueError(f"save_at: expected None, 'grid' or a sequence of times, got {save_at!r}")
            save_times = list(times)
        else:
            save_times = _save_times(save_at, grid)
        opts = dict(max_steps=_DEFAULT_MAX_STEPS if max_steps is None else max_steps,
                    max_step=math.inf if max_step is None else max_step, dt0=dt0)
        checked = _CheckedProblem(problem, repr(self))
        pbar = _progress_bar(progress, abs(times[-1] - times[0]), self)
        try:
            run = self._solve_per_sample if self.per_sample else self._solve_batch
            return run(problem, checked, x0, grid, save_times, callback, pbar, check_finite, **opts)
        finally:
            if pbar is not None:
                pbar.close()

    def _setup(self, grid: Grid):
        """`(times, direction, t0, span, alpha, beta, new evaluations per attempt)` of a run."""
        times = grid.times
        alpha, beta = self.controller.exponents(self.error_order)
        return times, grid.direction, times[0], abs(times[-1] - times[0]), alpha, beta, self.tableau.stages - 1

    def _first_eval(self, checked, x0, t0: Tensor, check_finite: bool, problem) -> Tensor:
        k1 = checked.vector_field(x0, t0)
        if check_finite and not bool(torch.isfinite(k1).all()):
            raise NonFiniteError(f"the vector field of {type_name(problem)} returned non-finite values (NaN or inf) "
                                 f"at the initial time t={float(t0[0]):.6g}")
        return k1

    def _failure(self, problem, t: float, h: float, err: float) -> Exception:
        if not math.isfinite(err):
            return NonFiniteError(
                f"the vector field of {type_name(problem)} returned non-finite values (NaN or inf) at "
                f"t={t:.6g}: every step from there failed until the step size underflowed (h={h:.3g})")
        return ValueError(f"step size underflow at t={t:.6g} (h={h:.3g}, error ratio {err:.3g}): the problem "
                          f"{type_name(problem)} may be stiff or singular there")

    # -- batch-wide stepping ------------------------------------------------------------------

    def _solve_batch(self, problem, checked, x0, grid: Grid, save_times, callback, pbar, check_finite, *,
                     max_steps, max_step, dt0):
        f = problem.vector_field
        batch, dtype, device = x0.shape[0], x0.dtype, x0.device
        times, d, t0, span, alpha, beta, n_new = self._setup(grid)
        ctrl = self.controller

        def full(t: float) -> Tensor:
            return torch.full((batch,), t, dtype=dtype, device=device)

        x, t = x0, t0
        k1 = self._first_eval(checked, x0, full(t0), check_finite, problem)
        nfe = 1
        if dt0 is None:
            h = float(self.initial_step(f, x0, torch.full((batch,), t0, dtype=torch.float64, device=device),
                                        k1, d, span).min())
            nfe += 1
        else:
            h = abs(dt0)
        h = min(h, max_step, span)

        saved: list[Tensor] = []
        sp, n_save = 0, len(save_times)
        while sp < n_save and save_times[sp] == t0:
            saved.append(x0)
            sp += 1
        prev_err, after_reject = 1e-4, False
        stop, n_acc, n_rej = 1, 0, 0
        fe = f
        first = True
        while stop < len(times):
            if n_acc + n_rej >= max_steps:
                raise MaxStepsError(f"{self!r} reached max_steps={max_steps} step attempts at t={t:.6g} "
                                    f"(integrating to t={times[-1]:.6g}); raise max_steps or loosen rtol/atol")
            target = times[stop]
            remaining = target - t
            lands = h >= abs(remaining) * (1 - 1e-12)
            h_try = remaining if lands else d * h
            ks, x_new, err_vec = self.attempt(checked.vector_field if first else fe, x, k1, h_try,
                                              lambda c: full(t + c * h_try))
            first = False
            nfe += n_new
            err = float(err_vec.max())
            if err <= 1.0:
                t_new = target if lands else t + h_try
                while sp < n_save and d * (save_times[sp] - t_new) <= 0:
                    s = save_times[sp]
                    saved.append(x_new if s == t_new else self.interpolate(x, x_new, ks, h_try, (s - t) / h_try))
                    sp += 1
                if callback is not None:
                    callback(StepEvent(n_acc, t, t_new, x_new))
                if pbar is not None:
                    pbar.update(abs(t_new - t))
                n_acc += 1
                x, t, k1 = x_new, t_new, ks[-1]
                factor = ctrl.accept_factor(err, prev_err, alpha, beta)
                if after_reject:
                    factor = min(factor, 1.0)
                h_next = abs(h_try) * factor
                if lands:
                    stop += 1
                    if factor >= 1:
                        h_next = max(h_next, h)
                h = h_next
                prev_err, after_reject = max(err, 1e-4), False
            else:
                n_rej += 1
                after_reject = True
                h = abs(h_try) * ctrl.reject_factor(err, alpha)
                if h < 1e-14 * max(abs(t), span):
                    raise self._failure(problem, t, h, err)
            h = min(h, max_step)

        ys = torch.stack(saved) if len(saved) != 1 else saved[0].unsqueeze(0)
        return Solution(x=x, ts=torch.tensor(save_times, dtype=torch.float64, device=device), ys=ys, nfe=nfe,
                        n_steps=n_acc + n_rej, n_accepted=n_acc, n_rejected=n_rej, solver=self)

    # -- per-sample stepping ------------------------------------------------------------------

    def _solve_per_sample(self, problem, checked, x0, grid: Grid, save_times, callback, pbar, check_finite, *,
                          max_steps, max_step, dt0):
        f = problem.vector_field
        batch, dtype, device, ndim = x0.shape[0], x0.dtype, x0.device, x0.ndim
        f64 = torch.float64
        times, d, t0, span, alpha, beta, n_new = self._setup(grid)
        ctrl = self.controller

        t = torch.full((batch,), t0, dtype=f64, device=device)
        x = x0
        k1 = self._first_eval(checked, x0, t.to(dtype), check_finite, problem)
        nfe = 1
        if dt0 is None:
            h = self.initial_step(f, x0, t, k1, d, span)
            nfe += 1
        else:
            h = torch.full((batch,), abs(dt0), dtype=f64, device=device)
        h = h.clamp(max=min(max_step, span))

        stops = torch.tensor(times[1:], dtype=f64, device=device)
        n_stops = len(times) - 1
        stop_idx = torch.zeros(batch, dtype=torch.long, device=device)
        n_save = len(save_times)
        save_t = torch.tensor(save_times, dtype=f64, device=device)
        ys = x0.new_zeros((n_save, *x0.shape))
        k0 = 0
        while k0 < n_save and save_times[k0] == t0:
            ys[k0] = x0
            k0 += 1
        sp = torch.full((batch,), k0, dtype=torch.long, device=device)
        ar = torch.arange(batch, device=device)

        prev_err = torch.full((batch,), 1e-4, dtype=f64, device=device)
        after_reject = torch.zeros(batch, dtype=torch.bool, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        n_acc = torch.zeros(batch, dtype=torch.long, device=device)
        n_rej = torch.zeros(batch, dtype=torch.long, device=device)
        progressed = 0.0
        it = 0
        while True:
            if it >= max_steps:
                raise MaxStepsError(f"{self!r} reached max_steps={max_steps} iterations with "
                                    f"{int((~done).sum())} sample(s) unfinished; raise max_steps or loosen rtol/atol")
            target = stops[stop_idx.clamp(max=n_stops - 1)]
            remaining = target - t
            lands = h >= remaining.abs() * (1 - 1e-12)
            h_try = torch.where(done, torch.zeros_like(h), torch.where(lands, remaining, d * h))
            hx = batch_view(h_try.to(dtype), ndim)
            t_cur = t
            ks, x_new, err = self.attempt(checked.vector_field if it == 0 else f, x, k1, hx,
                                          lambda c: (t_cur + c * h_try).to(dtype))
            nfe += n_new
            err = err.to(f64)
            accept = (err <= 1.0) & ~done
            t_new = torch.where(lands, target, t + h_try)

            # controller, vectorised
            pow_err = err.pow(-alpha)
            acc_f = (ctrl.safety * pow_err * prev_err.pow(beta)).clamp(ctrl.factor_min, ctrl.factor_max)
            acc_f = torch.where(after_reject, acc_f.clamp(max=1.0), acc_f)
            rej_f = (ctrl.safety * pow_err).clamp(min=ctrl.factor_min)
            rej_f = torch.where(torch.isfinite(err), rej_f, torch.full_like(rej_f, ctrl.factor_min))
            factor = torch.where(accept, acc_f, rej_f)
            h_next = h_try.abs() * factor
            h_next = torch.where(accept & lands & (factor >= 1), torch.maximum(h_next, h), h_next)
            h_new = torch.where(done, h, h_next).clamp(max=max_step)

            if n_save:
                reached = (d * (save_t.unsqueeze(0) - t_new.unsqueeze(1)) <= 0).sum(1)
                n_cross = torch.where(accept, reached - sp, torch.zeros_like(sp))
            rejected = ~accept & ~done
            x_old = x
            am = batch_view(accept, ndim)
            x = torch.where(am, x_new, x)
            k1 = torch.where(am, ks[-1], k1)
            t = torch.where(accept, t_new, t)
            stop_idx = stop_idx + (accept & lands)
            prev_err = torch.where(accept, err.clamp(min=1e-4), prev_err)
            after_reject = rejected
            n_acc += accept
            n_rej += rejected
            done = stop_idx >= n_stops
            underflow = ~done & rejected & (h_new < 1e-14 * torch.clamp(t.abs(), min=span))
            h = h_new

            # the one host synchronisation of the iteration
            flags = torch.stack([done.all().to(f64), underflow.any().to(f64),
                                 (n_cross.max().to(f64) if n_save else torch.zeros((), dtype=f64, device=device)),
                                 (t - t0).abs().min()]).tolist()
            for j in range(int(flags[2])):
                cross = accept & (j < n_cross)
                idx = sp.clamp(max=n_save - 1)
                theta = batch_view(((save_t[idx] - t_cur) / torch.where(cross, h_try, torch.ones_like(h_try))
                                    ).to(dtype), ndim)
                y = self.interpolate(x_old, x_new, ks, hx, theta)
                y = torch.where(theta >= 1, x_new, y)
                ys[idx, ar] = torch.where(batch_view(cross, ndim), y, ys[idx, ar])
                sp = sp + cross
            if callback is not None:
                callback(StepEvent(it, t_cur, t, x))
            if pbar is not None:
                pbar.update(flags[3] - progressed)
                progressed = flags[3]
            if flags[1]:
                b = int(underflow.nonzero()[0, 0])
                raise self._failure(problem, float(t[b]), float(h[b]), float(err[b]))
            it += 1
            if flags[0]:
                break

        return Solution(x=x, ts=save_t, ys=ys, nfe=nfe, n_steps=it, n_accepted=int(n_acc.max()),
                        n_rejected=int(n_rej.max()), solver=self, accepted_per_sample=n_acc,
                        rejected_per_sample=n_rej)


class BogackiShampine(AdaptiveRK):
    r"""The Bogacki-Shampine 3(2) pair with PI control and cubic Hermite dense output.

    Third-order solution, second-order error estimate, FSAL (3 evaluations per step):
    $c = (0, \tfrac12, \tfrac34, 1)$, $b = (\tfrac29, \tfrac13, \tfrac49, 0)$,
    $\hat b = (\tfrac{7}{24}, \tfrac14, \tfrac13, \tfrac18)$. Efficient at loose tolerances
    (about 1e-3 to 1e-5). Dense output: the cubic Hermite interpolant through
    $(x_n, f_n)$ and $(x_{n+1}, f_{n+1})$, third order.

    Reference: P. Bogacki & L. F. Shampine, "A 3(2) pair of Runge-Kutta formulas",
    Appl. Math. Lett. 2(4), 321-325 (1989).
    """

    order = 3.0
    error_order = 2
    tableau = ButcherTableau(
        c=(0.0, 0.5, 0.75, 1.0),
        a=((), (0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
        b=(2 / 9, 1 / 3, 4 / 9, 0.0),
        e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
        fsal=True,
    )

    def interpolate(self, x0, x1, ks, h, theta):
        th2 = theta * theta
        h00 = (1 + 2 * theta) * (1 - theta) ** 2
        h10 = theta * (1 - theta) ** 2
        h01 = th2 * (3 - 2 * theta)
        h11 = th2 * (theta - 1)
        return h00 * x0 + h01 * x1 + (h * h10) * ks[0] + (h * h11) * ks[3]


class Dopri5(AdaptiveRK):
    r"""The Dormand-Prince 5(4) pair (DOPRI5, scipy's RK45) with PI control and dense output.

    Fifth-order solution (local extrapolation), fourth-order error estimate, 7 stages
    with FSAL (6 evaluations per step). Dense output: Hairer's continuous extension of
    order 4 (the code DOPRI5's `CONTD5`), from the stages of the accepted step, without
    extra evaluations. The workhorse for probability-flow ODEs at tolerances of about
    1e-4 to 1e-7.

    Reference: J. R. Dormand & P. J. Prince, "A family of embedded Runge-Kutta
    formulae", J. Comput. Appl. Math. 6(1), 19-26 (1980); dense output from
    Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.6.
    """

    order = 5.0
    error_order = 4
    tableau = ButcherTableau(
        c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        a=(
            (),
            (1 / 5,),
            (3 / 40, 9 / 40),
            (44 / 45, -56 / 15, 32 / 9),
            (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
            (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
            (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
        ),
        b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
        e=(35 / 384 - 5179 / 57600, 0.0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40),
        fsal=True,
    )
    # Hairer's dense-output coefficients (DOPRI5, CONTD5).
    _d = (-12715105075 / 11282082432, 0.0, 87487479700 / 32700410799, -10690763975 / 1880347072,
          701980252875 / 199316789632, -1453857185 / 822651844, 69997945 / 29380423)

    def interpolate(self, x0, x1, ks, h, theta):
        ydiff = x1 - x0
        bspl = h * ks[0] - ydiff
        r4 = ydiff - h * ks[6] - bspl
        r5 = combine(torch.zeros_like(x0), ks, self._d, h)
        th1 = 1 - theta
        return x0 + theta * (ydiff + th1 * (bspl + theta * (r4 + th1 * r5)))
