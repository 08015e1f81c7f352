"""Small shared helpers: input validation with informative messages, broadcasting."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = ["NonFiniteError", "MaxStepsError"]


class NonFiniteError(FloatingPointError, ValueError):
    """The problem produced NaN or inf during integration.

    Raised by `solvers.integrate` and the Langevin samplers; the message says at which
    time (or step) the state first became non-finite. It is a `ValueError` too, so
    `except ValueError` catches it with the other input errors.
    """


class MaxStepsError(RuntimeError):
    """An adaptive solver needed more than `max_steps` attempts; the message says where it stopped."""


class FiniteMonitor:
    """Records one on-device sum of the state per step and finds, after the loop, the first
    step whose state was NaN/inf: no host synchronisation inside the loop.

    A sum is non-finite iff an element is (up to overflow of the sum itself, which is why a
    step is reported only when the final state is non-finite too).
    """

    def __init__(self, enabled: bool, dtype: torch.dtype):
        self.sums: list[Tensor] | None = [] if enabled else None
        self.dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else None

    def record(self, x: Tensor) -> None:
        if self.sums is not None:
            self.sums.append(torch.sum(x.detach(), dtype=self.dtype))

    def first_bad(self, x_final: Tensor) -> int | None:
        """The index of the first recorded non-finite state, or None."""
        if not self.sums:
            return None
        bad = ~torch.isfinite(torch.stack(self.sums))
        if bool(bad.any()) and not bool(torch.isfinite(x_final).all()):
            return int(bad.nonzero()[0, 0])
        return None


def describe(value: Any) -> str:
    """A short description of `value` for error messages."""
    if isinstance(value, Tensor):
        if value.numel() <= 6:
            vals = [round(v, 6) if isinstance(v, float) else v for v in value.detach().cpu().flatten().tolist()]
            return f"tensor({vals}, shape={tuple(value.shape)}, dtype={value.dtype})"
        return f"tensor of shape {tuple(value.shape)} (dtype={value.dtype}, device={value.device})"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def range_text(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
               lt: float | None = None) -> str:
    """The range the bounds give, for messages: "in [0, 1]", "in (0, 1]", ">= 0", "" for none."""
    lo = f"[{ge:g}" if ge is not None else f"({gt:g}" if gt is not None else None
    hi = f"{le:g}]" if le is not None else f"{lt:g})" if lt is not None else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return (">= " if ge is not None else "> ") + lo[1:]
    if hi:
        return ("<= " if le is not None else "< ") + hi[:-1]
    return ""


def check_finite_number(name: str, value: Any, *, ge: float | None = None, gt: float | None = None,
                        le: float | None = None, lt: float | None = None, allow_inf: bool = False) -> float:
    """`value` as a Python float, or raise unless it is a real, finite number (not a bool) within
    the bounds given; the message names `name`, the value and the range. The one finite-number
    check of both packages (`allow_inf`: an infinite value within the bounds passes too)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {describe(value)}")
    value = float(value)
    ok = (math.isfinite(value) or (allow_inf and not math.isnan(value))) and (ge is None or value >= ge) and (gt is None or value > gt) \
        and (le is None or value <= le) and (lt is None or value < lt)
    if not ok:
        rng = range_text(ge=ge, gt=gt, le=le, lt=lt)
        what = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name}: expected {what}{' ' + rng if rng else ''}, got {value!r}")
    return value


def as_real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False,
            allow_inf: bool = False) -> float:
    """`value` (a number or a one-element tensor) as a Python float, with a message naming `name`
    when it is not a valid real number (see `check_finite_number`)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a real number, got {describe(value)}")
        value = value.item()
    if allow_inf and isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isinf(value):
        if (positive or nonnegative) and value < 0:
            raise ValueError(f"{name}: expected a number {'>' if positive else '>='} 0, got {value}")
        return float(value)
    return check_finite_number(name, value, gt=0.0 if positive else None, ge=0.0 if nonnegative else None)


def as_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """`value` as a Python int, with a message naming `name` when it is not one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def check_state(name: str, x: Any) -> Tensor:
    """Validate a batched state tensor `(B, ...)` of a floating dtype."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (B, ...), got {describe(x)}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected a tensor of shape (B, ...) with B >= 1, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def batch_view(v: Tensor, ndim: int) -> Tensor:
    """View a per-sample tensor of shape `(B,)` as `(B, 1, ..., 1)` with `ndim` dimensions."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def per_sample(name: str, value: Any, x: Tensor, *, positive: bool = False) -> float | Tensor:
    """A scalar or a per-sample `(B,)` tensor, validated against the batch of `x`.

    Returns a Python float, or a tensor of shape `(B, 1, ..., 1)` on x's device and dtype.
    """
    if isinstance(value, Tensor) and value.numel() != 1:
        if value.ndim != 1 or value.shape[0] != x.shape[0]:
            raise ValueError(f"{name}: expected a number or a tensor of shape ({x.shape[0]},) "
                             f"(one value per sample), got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            value = value.to(x.dtype)
        if positive and not bool((value > 0).all()):
            raise ValueError(f"{name}: expected every value > 0, got {describe(value)}")
        return batch_view(value.to(device=x.device, dtype=x.dtype), x.ndim)
    return as_real(name, value, positive=positive)


def type_name(obj: Any) -> str:
    """The name used for `obj` in messages: its repr when short and informative, else its
    (qualified) name or class name."""
    text = repr(obj)
    if len(text) <= 60 and " at 0x" not in text:
        return text
    name = getattr(obj, "__qualname__", None)
    return name if isinstance(name, str) else type(obj).__name__
