r"""What [`sample`][scoresde.samplers.run.sample] does when an option is left out, in one place.

Each default is set here with the measurement that chose it, so that changing one is a
one-line edit next to its reasoning. The measurements are `benchmarks/bench_defaults.py`
(`--candidates` for the recipes compared below; the samplers guide, section "Defaults",
has the tables): four exact Gaussian-mixture problems of different character (narrow and
wide modes side by side, 49 modes, 32 dimensions, an anisotropic Gaussian whose variances
span five orders of magnitude) under the VP, sub-VP and VE SDEs, at 5 to 50 evaluations,
against the default recipes of k-diffusion and diffusers on the same exact scores.

The default recipe, when `sampler` is left out:

* **sampler** [`DEFAULT_SAMPLER`][scoresde.samplers.defaults.DEFAULT_SAMPLER];
* **grid** [`DEFAULT_GRID`][scoresde.samplers.defaults.DEFAULT_GRID];
* **end time** [`default_t_end`][scoresde.samplers.defaults.default_t_end]: where
  $\hat\sigma = \sigma_t/\alpha_t = 0.01$ (VP: $10^{-3}T$; sub-VP: $t = 0.027$; VE: 0);
* **final step** [`DEFAULT_DENOISE`][scoresde.samplers.defaults.DEFAULT_DENOISE]: the run ends
  at zero noise, and that step counts among `steps`: `steps=N` takes $N - 1$ steps of the
  sampler to the end time and the final step, $N$ evaluations in all, as the peers' $N$-step
  runs that end at $\sigma = 0$;
* **steps** [`DEFAULT_STEPS`][scoresde.samplers.defaults.DEFAULT_STEPS].

Why each part (`python benchmarks/bench_defaults.py --candidates --samples 3000 --nfes 10,20`:
each recipe's measures divided by the best peer default's, at every problem, SDE, budget and
measure, 96 ratios; their geometric mean, and how many exceed 1.1):

| recipe | geometric mean | ratios > 1.1 |
|---|---|---|
| **UniPC-2, log-SNR grid to $\hat\sigma = 0.01$, the flow's last step** (the default) | 0.962 | 21 |
| DPM-Solver++(2M), the same | 0.969 | 30 |
| UniPC-3, the same | 1.189 | 31 |
| UniPC-2, log-SNR grid to $t = 10^{-3}$, the flow's last step | 1.145 | 29 |
| DPM-Solver++(2M), log-SNR grid to $t = 10^{-3}$, the flow's / Tweedie's last step | 1.199 / 1.207 | 42 / 42 |
| DPM-Solver++(2M), Karras grid ($\rho = 7$) to $t = 10^{-3}$, the flow's last step | 2.029 | 59 |
| UniPC-2 / UniPC-3, uniform-$t$ grid to $t = 10^{-3}$, the flow's last step | 1.437 / 1.708 | 38 / 48 |
| UniPC-3, uniform-$t$ grid into $t = 0$ (the peers' structure) | 1.592 | 46 |

* The **end time by noise level**: a VP grid to $t = 10^{-3}$ ends at $\hat\sigma = 0.0105$, a
  sub-VP one at $\hat\sigma = 10^{-4}$, where nothing is decided any more; ending every SDE at
  $\hat\sigma = 0.01$ (sub-VP: $t = 0.027$; VE: its $\sigma_{\min}$) moves the 2M and UniPC-2 rows
  from 1.20 and 1.15 to 0.97 and 0.96, and the worst sub-VP ratio (32-D, off-mode share at NFE 10)
  from 38 to about 1. The flow's last step from $\hat\sigma = 0.01$ leaves $O(\hat\sigma^4/s^4)$ in
  a component of standard deviation $s$: 0.15% at the narrowest $s = 0.03$ of the benchmark.
* The **final step**: the flow's, which keeps the within-mode spread that Tweedie's posterior
  mean removes (same sampler and grid: 1.199 against 1.207; see
  [`final_step`][scoresde.samplers.run.final_step] for data thinner than the remaining noise,
  where Tweedie's is right).
* The **grid**: uniform in log-SNR. Karras's $\rho = 7$ spends the budget at low noise and
  loses the mode decisions (off-mode shares up to 300 times the best peer's at NFE 10); uniform
  $t$ decides the modes well on VP but is poor on the many-mode and sub-VP problems.
* The **sampler**: UniPC-2 (its corrector is free), slightly ahead of DPM-Solver++(2M) and
  clearly of the third-order UniPC-3 at these budgets.

A sampler passed explicitly keeps its own defaults (its grid, no final step unless
`denoise` is given), so that a chosen method runs as its paper writes it.
"""

from __future__ import annotations

from torch import Tensor

from .. import time_grids
from .._checks import check_int
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler
from .exponential import UniPC

__all__ = ["default_sampler", "default_recipe", "default_t_end", "DEFAULT_SAMPLER", "DEFAULT_GRID",
           "DEFAULT_DENOISE", "DEFAULT_STEPS", "DEFAULT_SIGMA_END"]

DEFAULT_SAMPLER: Sampler = UniPC(order=2)
"""The default sampler: UniPC with its second-order predictor and the corrector (see the module's table)."""

DEFAULT_GRID: TimeGrid = UniformLogSNR()
"""The default grid: uniform in the log-SNR."""

DEFAULT_DENOISE: str = "flow"
"""The default final step into zero noise: the probability flow's (see [`final_step`][scoresde.samplers.run.final_step])."""

DEFAULT_STEPS: int = 20
"""The default recipe's number of steps (and evaluations), its final step included."""

DEFAULT_SIGMA_END: float = 0.01
r"""The default recipe's grid ends where $\hat\sigma = \sigma_t/\alpha_t$ is this (or at the SDE's
[`default_t_end`][scoresde.time_grids.default_t_end] if that is later)."""


def default_t_end(sde) -> float:
    r"""The default recipe's end time: where $\sigma_t/\alpha_t$ =
    [`DEFAULT_SIGMA_END`][scoresde.samplers.defaults.DEFAULT_SIGMA_END], but not before the SDE's
    [`default_t_end`][scoresde.time_grids.default_t_end] (VP: $10^{-3}T$, where $\hat\sigma = 0.0105$;
    sub-VP: $t = 0.027$, where its $\hat\sigma$ falls to 0.01, against $10^{-4}$ at $10^{-3}$; VE: 0,
    whose $\hat\sigma = \sigma_{\min}$)."""
    return max(time_grids.t_at_noise_level(sde, DEFAULT_SIGMA_END), time_grids.default_t_end(sde))


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
        t_end: the end time, or None (the grid's default).
        denoise: the final step asked for, or None.

    Returns:
        The sampler, the sampler's number of steps, the grid, the end time and the final step.
    """
    sampler = default_sampler(sde)
    if grid is None:
        grid = DEFAULT_GRID
    if t_end is None and not isinstance(grid, Tensor):
        t_end = default_t_end(sde)
    if denoise is None:
        denoise = DEFAULT_DENOISE
        if not isinstance(grid, Tensor):
            steps = DEFAULT_STEPS if steps is None else check_int("steps", steps)
            if steps < 2:
                raise ValueError(
                    f"steps: the default recipe ends with a step into zero noise that counts among its steps,"
                    f" so it needs steps >= 2, got {steps}"
                )
            steps -= 1
    elif steps is None and not isinstance(grid, Tensor):
        steps = DEFAULT_STEPS
    return sampler, steps, grid, t_end, denoise
