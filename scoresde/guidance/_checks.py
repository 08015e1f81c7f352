"""Argument checks shared by the guidance modules (each written once here)."""

from __future__ import annotations

import math
from typing import Callable

from torch import Tensor

from .._checks import check_output
from ..sde import check_sde

#: A score function `score(x, t) -> Tensor` shaped like `x`.
ScoreFn = Callable[[Tensor, Tensor], Tensor]


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


_check_sde = check_sde  # the one "expected a scoresde.SDE" check, in scoresde.sde


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable {name}(x, t), got {type(fn).__name__}")


def _check_output(name: str, out, x: Tensor) -> Tensor:
    check_output(name, out, x)
    return out
