r"""Time grids fitted to a model and a sampler: the few-step grid closest to the exact probability flow.

With 10 or 20 evaluations the grid decides much of a deterministic sampler's error, and the
best grid depends on the data: uniform-$t$ grids resolve the high-noise part where the
modes are decided, log-SNR and Karras grids the low-noise end where the fine detail
forms. [`fit_grid`][scoresde.samplers.fit_grid] chooses the $N - 1$ interior times
of an $N$-step grid to minimise the mean squared distance between the sampler's output and
a tight adaptive solve of the same probability-flow ODE from the same pilot noise
(trajectory matching, as Pei et al. 2025 do by dynamic programming; Watson et al. 2021
choose discrete steps by dynamic programming on the ELBO, and Align Your Steps, Sabour et
al. 2024, minimises a bound on the KL divergence).

The grid is parametrised by its steps in the half-log-SNR $\lambda = \log(\alpha_t/\sigma_t)$:
$\lambda_i = \lambda_T + (\lambda_{t_{\text{end}}} - \lambda_T)\sum_{k \le i} w_k$ with
$w = \operatorname{softmax}(\theta)$, so every $\theta$ gives a strictly monotone grid with
the ends fixed, for any SDE. $\theta$ starts from the best of the built-in grids
([`UniformTime`][scoresde.time_grids.UniformTime], [`UniformLogSNR`][scoresde.time_grids.UniformLogSNR],
[`KarrasGrid`][scoresde.time_grids.KarrasGrid]) on the pilot and is refined by Powell's
derivative-free method (the samplers run without gradients). The cost is one tight solve
of the pilot batch plus about `max_evals` runs of the sampler on it; the fitted grid then
serves every later call with the same model, sampler and number of steps.

Example:
    ```python
    pilot = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    grid = fit_grid(sde, score, UniPC(order=3), steps=9, pilot=pilot)
    x = scoresde.sample(sde, score, (10_000, 2), UniPC(order=3), steps=9, grid=grid, denoise=True)
    ```

References: Watson, Ho, Norouzi, Chan, *Learning to Efficiently Sample from Diffusion
Probabilistic Models*, 2021 (arXiv:2106.03802); Sabour, Fidler, Kreis, *Align Your Steps:
Optimizing Sampling Schedules in Diffusion Models*, ICML 2024; Pei, Hu, Gu, *Optimal
Stepsize for Diffusion Sampling*, 2025 (arXiv:2503.21774).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import solvers
import torch
from torch import Tensor

from .._checks import check_float_tensor, check_int, check_positive_finite
from ..time_grids import KarrasGrid, TimeGrid, UniformLogSNR, UniformTime, _half_log_snr, _sde_time_range
from .base import Sampler
from .run import check_denoise, sample
from .solver import ProbabilityFlowSampler

__all__ = ["FittedGrid", "fit_grid"]


@dataclass(frozen=True, eq=False)
class FittedGrid(TimeGrid):
    r"""A fixed grid of times found by [`fit_grid`][scoresde.samplers.fit_grid], usable wherever a `TimeGrid` is.

    Attributes:
        times: the `(N + 1,)` float64 times, strictly decreasing from $T$ to $t_{\text{end}}$.
        rms: the root-mean-square distance of the sampler's output on the pilot batch to
            the tight solve, with the fitted grid.
        rms_start: the same with the best built-in grid, the fit's starting point.
        start: the name of that built-in grid.
        evaluations: how many times the sampler was run on the pilot batch.
    """

    times: Tensor
    rms: float = math.nan
    rms_start: float = math.nan
    start: str = ""
    evaluations: int = 0

    @property
    def steps(self) -> int:
        """The number of steps $N$ the grid was fitted for."""
        return self.times.numel() - 1

    @property
    def fixed_steps(self) -> int:
        """`sample` takes this many steps on the grid when `steps` is not given."""
        return self.steps

    @property
    def t_end(self) -> float:
        """The grid's last time."""
        return float(self.times[-1])

    def _times(self, sde, steps, T, t_end):
        return self.times.clone()

    def __call__(self, sde, steps: int, t_end: float | None = None, *, device=None, dtype=None) -> Tensor:
        steps = check_int("steps", steps)
        if steps != self.steps:
            raise ValueError(f"steps: this grid was fitted for {self.steps} steps, got steps={steps}")
        if t_end is not None and not math.isclose(float(t_end), self.t_end, rel_tol=1e-9, abs_tol=0.0):
            raise ValueError(f"t_end: this grid was fitted to end at t = {self.t_end!r}, got t_end={t_end!r}")
        if not math.isclose(float(sde.T), float(self.times[0]), rel_tol=1e-9):
            raise ValueError(f"sde: this grid starts at T = {float(self.times[0])!r}, the SDE at T = {sde.T!r}")
        return self.times.to(device=device, dtype=dtype or torch.float64)

    def __repr__(self) -> str:
        return (f"FittedGrid(steps={self.steps}, t_end={self.t_end:g}, rms={self.rms:.4g}, "
                f"rms_start={self.rms_start:.4g} ({self.start}))")


def fit_grid(
    sde,
    score,
    sampler: Sampler,
    steps: int,
    pilot: Tensor,
    *,
    t_end: float | None = None,
    denoise: bool | str = True,
    reference: Tensor | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_evals: int | None = None,
) -> FittedGrid:
    r"""Fit the $N$-step grid on which `sampler` comes closest to the exact probability flow.

    Arguments:
        sde: the [`SDE`][scoresde.SDE].
        score: the score callable `score(x, t)` the grid is fitted for (a trained model or
            an exact score); the grid is specific to it, to `sampler` and to `steps`.
        sampler: a deterministic fixed-step sampler, e.g. `DPMSolverPP(order=3)`, `UniPC()`,
            `DDIM()`.
        steps: the number of steps $N \ge 2$.
        pilot: draws from the prior at $T$, `(B, ...)` (a few hundred to a few thousand;
            independent of the noise the grid will later be used with).
        t_end: the grid's last time (default [`default_t_end`][scoresde.time_grids.default_t_end]);
            it needs a finite log-SNR.
        denoise: the final step the sampler will be used with, as in
            [`sample`][scoresde.samplers.run.sample] (True or `"tweedie"`, `"flow"`, False);
            the reference ends with the same step. Default True.
        reference: the exact solution from `pilot` (with the same final denoising), if
            already computed; default: a Dormand-Prince solve at `rtol`, `atol`.
        rtol, atol: tolerances of that solve (default $10^{-6}$).
        max_evals: the most runs of the sampler on the pilot batch (default $60N$).

    Returns:
        A [`FittedGrid`][scoresde.samplers.FittedGrid]: pass it as `grid=` to
        [`sample`][scoresde.samplers.run.sample] (which then takes its `steps`; another number is refused).
    """
    from scipy import optimize

    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler: expected a sampler instance such as UniPC(order=3), got {sampler!r}")
    if sampler.stochastic or sampler.adaptive:
        kind = "stochastic" if sampler.stochastic else "adaptive"
        raise ValueError(f"sampler: expected a deterministic fixed-step sampler, got the {kind} {sampler!r}")
    steps = check_int("steps", steps)
    if steps < 2:
        raise ValueError(f"steps: a fitted grid needs at least 2 steps (1 interior time), got {steps}")
    check_float_tensor("pilot", pilot)
    if pilot.ndim < 1 or pilot.shape[0] < 1:
        raise ValueError(f"pilot: expected a batch of prior draws (B, ...), got shape {tuple(pilot.shape)}")
    denoise = check_denoise(denoise) or False
    rtol, atol = check_positive_finite("rtol", rtol), check_positive_finite("atol", atol)
    max_evals = 60 * steps if max_evals is None else check_int("max_evals", max_evals)

    T, t_end = _sde_time_range(sde, t_end)
    lam_T, lam_end = _half_log_snr(sde, torch.tensor([T, t_end], dtype=torch.float64)).tolist()
    if not math.isfinite(lam_end):
        raise ValueError(f"t_end: a fitted grid needs a finite log-SNR at t_end, got t_end = {t_end!r} (use t_end > 0)")

    if reference is None:
        reference = sample(sde, score, sampler=ProbabilityFlowSampler(solvers.Dopri5(rtol=rtol, atol=atol)),
                           x_init=pilot, t_end=t_end, denoise=denoise)
    elif not isinstance(reference, Tensor) or reference.shape != pilot.shape:
        raise ValueError(
            f"reference: expected a tensor shaped like pilot, {tuple(pilot.shape)}, got "
            f"{tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__}"
        )
    reference = reference.to(torch.float64).flatten(1)

    errors: list[Exception] = []

    def rms_of(ts: Tensor) -> float:
        try:
            x = sample(sde, score, sampler=sampler, grid=ts.to(pilot.dtype), x_init=pilot, denoise=denoise)
        except solvers.NonFiniteError as e:  # a candidate grid on which the sampler diverges
            errors.append(e)
            return math.inf
        d2 = (x.to(torch.float64).flatten(1) - reference).pow(2).sum(1).mean().item()
        return math.sqrt(d2) if math.isfinite(d2) else math.inf

    def grid_of(theta: np.ndarray) -> Tensor | None:
        w = np.exp(theta - theta.max())
        lam = lam_T + (lam_end - lam_T) * np.concatenate([[0.0], np.cumsum(w / w.sum())])
        ts = sde.t_from_log_snr(torch.from_numpy(2.0 * lam)).clamp(t_end, T)
        ts[0], ts[-1] = T, t_end
        # strictly decreasing also in the pilot's dtype (a float32 cast may merge two close times)
        return ts if bool((ts.to(pilot.dtype).diff() < 0).all()) else None

    # start from the best built-in grid
    starts = {"UniformTime": UniformTime(), "UniformLogSNR": UniformLogSNR(), "KarrasGrid": KarrasGrid()}
    best_name, best_ts, best_rms = "", None, math.inf
    for name, g in starts.items():
        ts = g(sde, steps, t_end)
        r = rms_of(ts)
        if r < best_rms or best_ts is None:
            best_name, best_ts, best_rms = name, ts, r
    if not math.isfinite(best_rms):
        raise ValueError(
            f"sampler: {sampler!r} gave non-finite samples on every built-in grid with {steps} steps, so there is"
            " no grid to start the fit from (try more steps, or check the score)"
        ) from (errors[0] if errors else None)
    lam0 = _half_log_snr(sde, best_ts).numpy()
    theta0 = np.log(np.clip(np.diff(lam0) / (lam_end - lam_T), 1e-12, None))
    count = {"n": len(starts)}

    def objective(theta: np.ndarray) -> float:
        count["n"] += 1
        ts = grid_of(theta)
        r = math.inf if ts is None else rms_of(ts)
        return r * r if math.isfinite(r) else 1e300

    res = optimize.minimize(objective, theta0, method="Powell",
                            options={"maxfev": max_evals, "xtol": 1e-3, "ftol": 1e-4})
    ts = grid_of(res.x)
    rms = math.inf
    if ts is not None:
        count["n"] += 1
        rms = rms_of(ts)
    if not rms < best_rms:  # never worse than the start
        ts, rms = best_ts, best_rms
    return FittedGrid(times=ts.clone(), rms=rms, rms_start=best_rms, start=best_name, evaluations=count["n"])
