r"""What [`sample`][scoresde.sample] does when an option is left out, in one place.

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
* **end time** [`default_t_end`][scoresde.time_grids.default_t_end] ($10^{-3}T$ for VP and sub-VP,
  0 for VE);
* **final step** [`DEFAULT_DENOISE`][scoresde.samplers.defaults.DEFAULT_DENOISE]: the run ends
  at zero noise, and that step counts among `steps`: `steps=N` takes $N - 1$ steps of the
  sampler to the end time and the final step, $N$ evaluations in all, as the peers' $N$-step
  runs that end at $\sigma = 0$;
* **steps** [`DEFAULT_STEPS`][scoresde.samplers.defaults.DEFAULT_STEPS].

A sampler passed explicitly keeps its own defaults (its grid, no final step unless
`denoise` is given), so that a chosen method runs as its paper writes it.
"""

from __future__ import annotations

from torch import Tensor

from .._checks import check_int
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler
from .exponential import DPMSolverPP, UniPC

__all__ = ["default_sampler", "default_recipe", "DEFAULT_SAMPLER", "DEFAULT_GRID", "DEFAULT_DENOISE",
           "DEFAULT_STEPS"]

#: The default sampler (see the module docstring for the measurements).
DEFAULT_SAMPLER: Sampler = UniPC(order=2)
#: The default grid.
DEFAULT_GRID: TimeGrid = UniformLogSNR()
#: The default final step into zero noise.
DEFAULT_DENOISE: str = "flow"
#: The default number of steps (evaluations) of the default recipe.
DEFAULT_STEPS: int = 20


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
