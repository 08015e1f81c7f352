r"""What [`sample`][scoresde.samplers.run.sample] does when an option is left out, in one place.

Each default is set here with the measurement that chose it, so that changing one is a
one-line edit next to its reasoning. The measurements are `benchmarks/bench_defaults.py`
(`--candidates` for the recipes compared below; the samplers guide, section "Defaults",
has the tables): four exact Gaussian-mixture problems of different character (narrow and
wide modes side by side, 49 modes, 32 dimensions, an anisotropic Gaussian whose variances
span five orders of magnitude) under the VP, sub-VP and VE SDEs, at 5 to 50 evaluations,
against the default recipes of k-diffusion and diffusers on the same exact scores.

The default recipe, when `sampler` is left out, with $N$ = `steps` evaluations:

* **sampler** [`DEFAULT_SAMPLER`][scoresde.samplers.defaults.DEFAULT_SAMPLER]: DPM-Solver++(2M);
* **grid** [`DEFAULT_GRID`][scoresde.samplers.defaults.DEFAULT_GRID]: uniform in the log-SNR;
* **end** [`default_sigma_end`][scoresde.samplers.defaults.default_sigma_end]: where
  $\hat\sigma = \sigma_t/\alpha_t = 0.3/N$, kept within $[0.01, 0.1]$ (5 evaluations: 0.06;
  10: 0.03; 20: 0.015; 30 or more: 0.01), and not before the SDE's
  [`default_t_end`][scoresde.time_grids.default_t_end]
  ([`default_t_end`][scoresde.samplers.defaults.default_t_end] gives the time);
* **final step** [`DEFAULT_DENOISE`][scoresde.samplers.defaults.DEFAULT_DENOISE]: the run ends
  at zero noise, and that step counts among `steps`: `steps=N` takes $N - 1$ steps of the
  sampler to the end time and the final step, $N$ evaluations in all, as the peers' $N$-step
  runs that end at $\sigma = 0$;
* **steps** [`DEFAULT_STEPS`][scoresde.samplers.defaults.DEFAULT_STEPS].

Why each part. Each recipe's verdicts against the best peer default at each problem, SDE and
measure (48 comparisons per budget; a loss is a 95% paired-bootstrap interval of the
difference above 0), from `python benchmarks/bench_defaults.py --candidates` (6,000 samples;
the row marked * from the same comparisons, with the same draws, peers and bootstrap, run
outside the script):

| recipe | losses at NFE 5 / 10 / 20 / 50 |
|---|---|
| **2M, log-SNR grid to $\hat\sigma = 0.3/N$ in $[0.01, 0.1]$, the flow's last step** (the default) | 32 / 8 / 1 / 0 |
| UniPC-2, log-SNR grid to $\hat\sigma = 0.01$, the flow's last step (the previous default) | 36 / 18 / 4 / 1 |
| 2M, the same grid to $\hat\sigma = 0.05$ at every budget | 32 / 6 / 1 / 6 |
| 2M, to $\hat\sigma = 0.02$ at every budget | 30 / 14 / 1 / 0 |
| 2M, to $\hat\sigma = 0.5/N$ in $[0.01, 0.1]$ * | 32 / 6 / 2 / 0 |
| DEIS (order 3, noise prediction), the same grid and end | 30 / 3 / 2 / 2 |
| UniPC-2, to $\hat\sigma = 0.05$ at every budget | 28 / 10 / 5 / 7 |
| UniPC-3, to $\hat\sigma = 0.03$ at every budget | 38 / 13 / 0 / 2 |
| 2M, Karras grid ($\rho = 7$) to $\hat\sigma = 0.05$ | 34 / 30 / 8 / 6 |
| 2M, uniform-$t$ grid to $\hat\sigma = 0.05$ | 38 / 18 / 12 / 10 |
| 2M, log-SNR grid to $t = 10^{-3}$, Tweedie's last step | 36 / 27 / 5 / 2 |
| the exact probability flow from the same draws (a reference: 300 steps) | 0 / 0 / 0 / 1 |

* The **end moves with the budget**. A grid uniform in the log-SNR from $\hat\sigma_T$ (152 for
  the VP SDE) to $\hat\sigma_{\text{end}}$ takes steps of $h = \log(\hat\sigma_T/\hat\sigma_{\text{end}})/(N-1)$;
  ending at 0.01 spends a step or two of a 10-evaluation budget below the noise levels where
  anything is decided, and the steps where the modes are decided ($\hat\sigma$ from about 0.3
  to 30) become too long. Ending higher shortens every step, and costs the flow's last step
  $O(\hat\sigma_{\text{end}}^4/s^4)$ in a component of standard deviation $s$: at a fixed 0.05
  the 50-evaluation run loses the spread of the narrowest components (6 losses). The measured
  best end fell from about 0.05 at 10 evaluations to 0.02-0.03 at 20 and 0.01-0.02 at 50.
  $0.3/N$ rather than $0.5/N$ (which loses 2 comparisons fewer at 10 evaluations): at the
  default 20 evaluations it ends at 0.015 instead of 0.025, so that data narrower than the
  benchmark's (a component of standard deviation 0.02: +2.5% instead of +11% of spread) and
  data on thin sets (where the flow's step leaves $\hat\sigma_{\text{end}}/2$ of noise, see
  [`final_step`][scoresde.samplers.run.final_step]) keep what the end at 0.01 gave them.
* The **final step**: the flow's, which keeps the within-mode spread that Tweedie's posterior
  mean removes (the Tweedie row: 27 losses at 10 evaluations).
* The **grid**: uniform in log-SNR. Karras's $\rho = 7$ spends the budget at low noise and
  loses the mode decisions; uniform $t$ decides the modes well on VP but is poor on the
  many-mode and sub-VP problems. (A log-SNR grid 1.5 times as dense around $\hat\sigma = 1$
  measured 30 / 8 / 2 / 0 with 2M: no gain worth a data-scale assumption.)
* The **sampler**: DPM-Solver++(2M). With the end above $\hat\sigma = 0.01$ it loses less
  than UniPC-2 (6 against 10 at NFE 10, with the end at 0.05), whose corrector extrapolates
  over the same long steps. Third order (UniPC-3, DPM-Solver++(3M)) in its place comes 2 to 4
  times closer to the exact flow from 20 evaluations on (RMS distance over the data's RMS
  norm, geometric mean of the 12 problems, at NFE 20: 0.0079 and 0.018 against 0.034;
  `python benchmarks/bench_defaults.py --pathwise`) but loses about as many comparisons (the
  UniPC-3 row, ending at 0.03: 0 / 2 at NFE 20 / 50 against 1 / 0) and strays from a guided
  score (1.37 and 0.24 against 0.065 at NFE 20, VP). DEIS of order 3, which extrapolates the noise prediction,
  loses fewer comparisons at NFE 10 (3 against 8) but follows a guided score worse: with
  classifier-free guidance at scale 3 on the labelled ring, its samples' RMS distance to the
  guided flow from the same draws is 3.6 against 2M's 0.90 at 10 evaluations and 0.17 against
  0.065 at 20 (VP; VE: 1.5 against 0.56, 0.16 against 0.024;
  `python benchmarks/bench_defaults.py --guided`, which also prints UniPC-2, UniPC-3 and 3M in
  the same place). Guidance is composed on the score in this package, and the data-prediction
  form is what keeps it stable (Lu et al., DPM-Solver++, 2022), so the default stays with 2M.
* The **losses that remain** at 10 evaluations: the mode-weight TV of the 32-D problem (VP,
  sub-VP, VE) and its SW2 under VE, the SW2 of the anisotropic Gaussian under VP and sub-VP
  (its standard deviation of 10 is decided at $\hat\sigma$ of 10 to 50), and the within-mode
  spread of the narrow+wide problem under VP and VE; at 5 evaluations most measures. The
  exact probability flow wins or ties every one of them: they are the discretisation error of
  4 to 9 steps, not a limit of the recipe's family. Its one loss, at 50 evaluations, is below
  the bootstrap's resolution of the best of eight peers (SW2 0.0993 against 0.0984).

A sampler passed explicitly keeps its own defaults, so that a chosen method runs as its paper
writes it: its grid and `steps` (each step on the grid). Where that grid ends with noise left,
the run ends with this recipe's final step into zero noise too
([`DEFAULT_DENOISE`][scoresde.samplers.defaults.DEFAULT_DENOISE]), as one more evaluation, unless
the sampler steps there itself
([`steps_to_zero_noise`][scoresde.samplers.base.Sampler.steps_to_zero_noise]); `denoise=False` ends
at $t_{\text{end}}$ with its noise left.
"""

from __future__ import annotations

from torch import Tensor

from .. import time_grids
from .._checks import check_int
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler
from .exponential import DPMSolverPP

__all__ = ["default_sampler", "default_recipe", "default_t_end", "default_sigma_end", "DEFAULT_SAMPLER", "DEFAULT_GRID",
           "DEFAULT_DENOISE", "DEFAULT_STEPS", "SIGMA_END_RANGE"]

DEFAULT_SAMPLER: Sampler = DPMSolverPP(order=2)
"""The default sampler: DPM-Solver++(2M), the second-order multistep exponential integrator (see the module's table)."""

DEFAULT_GRID: TimeGrid = UniformLogSNR()
"""The default grid: uniform in the log-SNR."""

DEFAULT_DENOISE: str = "flow"
"""The default final step into zero noise: the probability flow's (see [`final_step`][scoresde.samplers.run.final_step])."""

DEFAULT_STEPS: int = 20
"""The default recipe's number of steps (and evaluations), its final step included."""

SIGMA_END_RANGE: tuple[float, float] = (0.01, 0.1)
r"""The range within which [`default_sigma_end`][scoresde.samplers.defaults.default_sigma_end] keeps
$0.3/N$: 0.01 is the noise left at the VP SDE's $t = 10^{-3}$ and at the VE SDE's $\sigma_{\min}$
(below it nothing is decided any more); above 0.1 the flow's last step would blur components
of standard deviation 0.1."""


def default_sigma_end(evaluations: int) -> float:
    r"""The noise level $\hat\sigma = \sigma_t/\alpha_t$ where the default recipe's grid ends, for a
    budget of `evaluations` $= N$ (the final step included): $0.3/N$, kept within
    [`SIGMA_END_RANGE`][scoresde.samplers.defaults.SIGMA_END_RANGE] (5 evaluations: 0.06;
    10: 0.03; 20: 0.015; 30 or more: 0.01). Measured in the module's table."""
    evaluations = check_int("evaluations", evaluations)
    if evaluations < 1:
        raise ValueError(f"evaluations: expected a number of evaluations >= 1, got {evaluations}")
    lo, hi = SIGMA_END_RANGE
    return min(max(0.3 / evaluations, lo), hi)


def default_t_end(sde, steps: int = DEFAULT_STEPS) -> float:
    r"""The default recipe's end time for `steps` evaluations: where $\sigma_t/\alpha_t$ =
    [`default_sigma_end(steps)`][scoresde.samplers.defaults.default_sigma_end], but not before the
    SDE's [`default_t_end`][scoresde.time_grids.default_t_end] (VP: $10^{-3}T$, where
    $\hat\sigma = 0.0105$; VE: 0, whose $\hat\sigma = \sigma_{\min}$); the level is clamped into the
    SDE's range (a VE SDE with $\sigma_{\min}$ above it ends at $t = 0$)."""
    return max(time_grids.t_at_noise_level(sde, default_sigma_end(steps)), time_grids.default_t_end(sde))


def default_sampler(sde) -> Sampler:
    """The sampler `sample(sde, score, shape)` runs when `sampler` is left out."""
    return DEFAULT_SAMPLER


def default_recipe(sde, steps: int | None, grid, t_end: float | None, denoise):
    r"""The default recipe with the options the caller gave: `(sampler, steps, grid, t_end, denoise)`.

    Options given are kept. With `denoise` left out (None) the run ends with
    [`DEFAULT_DENOISE`][scoresde.samplers.defaults.DEFAULT_DENOISE], which then counts among
    `steps` (the sampler takes `steps - 1` steps; with `steps=1` the only step is the final one
    from $T$, whose result is the flow's step from the prior); on an explicit grid tensor it
    follows the grid's own steps.

    Arguments:
        sde: the SDE sampled.
        steps: the number of steps asked for, or None
            ([`DEFAULT_STEPS`][scoresde.samplers.defaults.DEFAULT_STEPS]).
        grid: a [`TimeGrid`][scoresde.time_grids.TimeGrid], a tensor of times, or None
            ([`DEFAULT_GRID`][scoresde.samplers.defaults.DEFAULT_GRID]).
        t_end: the end time, or None ([`default_t_end(sde, steps)`][scoresde.samplers.defaults.default_t_end]).
        denoise: the final step asked for, or None.

    Returns:
        The sampler, the sampler's number of steps, the grid, the end time and the final step.
    """
    sampler = default_sampler(sde)
    if grid is None:
        grid = DEFAULT_GRID
    if isinstance(grid, Tensor):  # an explicit grid fixes its steps and its end
        return sampler, steps, grid, t_end, DEFAULT_DENOISE if denoise is None else denoise
    steps = DEFAULT_STEPS if steps is None else check_int("steps", steps)
    if t_end is None:
        t_end = default_t_end(sde, max(steps, 1))
    if denoise is None:
        denoise = DEFAULT_DENOISE
        if steps < 2:
            raise ValueError(
                f"steps: the default recipe ends with a step into zero noise that counts among its steps,"
                f" so it needs steps >= 2, got {steps}"
            )
        steps -= 1
    return sampler, steps, grid, t_end, denoise
