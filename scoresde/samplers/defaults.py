r"""What [`sample`][scoresde.sample] does when an option is left out, in one place.

Each default is set here with the measurement that chose it, so that changing one is a
one-line edit next to its reasoning.
"""

from __future__ import annotations

from .base import Sampler
from .exponential import DPMSolverPP

__all__ = ["default_sampler"]


def default_sampler(sde) -> Sampler:
    """The sampler `sample(sde, score, shape)` runs when `sampler` is left out: DPM-Solver++(2M)."""
    return DPMSolverPP()
