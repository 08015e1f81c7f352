"""Argument checks of the guidance modules: aliases of the package's one copy of each check
(`scoresde._checks`, `scoresde.sde.check_sde`), plus the callable check they share."""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from .._checks import check_finite_number, check_output
from ..sde import check_sde

#: A score function `score(x, t) -> Tensor` shaped like `x`.
ScoreFn = Callable[[Tensor, Tensor], Tensor]

_finite_number = check_finite_number
_check_sde = check_sde
_check_output = check_output


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable {name}(x, t), got {type(fn).__name__}")
