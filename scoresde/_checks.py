"""Input validation and broadcasting shared by the whole package.

Every public function validates its inputs through these helpers, so that error messages
name the argument, the value received and what was expected, in one consistent style.

Checks on tensor *values* (a time outside `[0, T]`, a NaN) need the value on the host,
which on a GPU is a synchronisation. They run unless switched off with
[`validation(False)`][scoresde._checks.validation]; samplers validate their time grid once and
then run their loop with value checks off, so nothing is copied to the host per step.
Checks on shapes and dtypes are free and always run.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator

import torch
from torch import Tensor

__all__ = ["validation", "validation_enabled", "append_dims"]

_state = threading.local()


def validation_enabled() -> bool:
    """Whether value checks (time ranges, NaN) are currently on (they are by default)."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def validation(enabled: bool) -> Iterator[None]:
    """Switch value checks on or off inside a `with` block (per thread).

    Shape and dtype checks always run; value checks (for example `0 <= t <= T`) read
    tensor values, which costs a device synchronisation on a GPU. Sampling loops run with
    `validation(False)` after checking their inputs once.

    Example:
        ```python
        with scoresde._checks.validation(False):
            alpha, sigma = sde.marginal(t)   # no host sync
        ```
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected a bool, got {enabled!r}")
    previous = validation_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = previous


def describe(value: object) -> str:
    """A short description of a value for error messages (tensors by shape and dtype)."""
    if isinstance(value, Tensor):
        if value.numel() == 1:
            return f"tensor({value.item()!r}, dtype={value.dtype})"
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def check_positive_finite(name: str, value: float) -> float:
    """Return `value` as a float, or raise if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return value


def check_int(name: str, n: int, minimum: int = 1) -> int:
    """Return `n`, or raise if it is not an int >= `minimum`."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name}: expected an int, got {n!r}")
    if n < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {n!r}")
    return n


def check_float_tensor(name: str, x: object) -> Tensor:
    """Raise unless `x` is a real floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name}: expected a real floating-point tensor, got dtype {x.dtype}"
            " (convert with .float() or .double())"
        )
    return x


def check_batched(name: str, x: object) -> Tensor:
    """Raise unless `x` is a floating-point tensor with a batch dimension `(B, ...)`."""
    x = check_float_tensor(name, x)
    if x.ndim < 1:
        raise ValueError(f"{name}: expected a tensor of shape (B, ...), got a 0-d tensor")
    return x


def as_time(
    t: float | Tensor,
    *,
    like: Tensor | None = None,
    T: float | None = None,
    name: str = "t",
) -> Tensor:
    """Convert `t` (a number, a 0-d tensor or a `(B,)` tensor) to a floating tensor.

    The result lives on `like`'s device with `like`'s dtype when `like` is given. With
    `like` a batch `(B, ...)`, a `(B,)` time must match its batch size. With `T` given and
    validation on, times outside `[0, T]` raise.
    """
    if isinstance(t, bool):
        raise TypeError(f"{name}: expected a real number or a floating tensor, got {t!r}")
    if isinstance(t, (int, float)):
        dtype = like.dtype if like is not None else torch.get_default_dtype()
        device = like.device if like is not None else None
        t = torch.tensor(float(t), dtype=dtype, device=device)
    elif isinstance(t, Tensor):
        if t.is_complex() or not (torch.is_floating_point(t)):
            raise TypeError(
                f"{name}: expected a real floating-point tensor, got dtype {t.dtype}"
                " (times are continuous; convert with .float())"
            )
        if like is not None and (t.device != like.device or t.dtype != like.dtype):
            t = t.to(device=like.device, dtype=like.dtype)
    else:
        raise TypeError(
            f"{name}: expected a real number or a floating tensor, got {type(t).__name__}"
        )
    if t.ndim > 1:
        raise ValueError(
            f"{name}: expected a scalar or a tensor of shape (B,), got shape {tuple(t.shape)}"
        )
    if like is not None and t.ndim == 1 and like.ndim >= 1 and t.shape[0] not in (1, like.shape[0]):
        raise ValueError(
            f"{name}: expected a scalar or shape ({like.shape[0]},) to match the batch of x,"
            f" got shape {tuple(t.shape)}"
        )
    if T is not None and validation_enabled():
        bad = ~((t >= 0) & (t <= T))
        if bool(bad.any()):
            first = t[bad].flatten()[0].item() if t.ndim else t.item()
            raise ValueError(f"{name}: expected times in [0, T] = [0, {T}], got {first!r}")
    return t


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions to `v` until it has `ndim` dimensions.

    A per-sample quantity of shape `(B,)` becomes `(B, 1, ..., 1)`, which broadcasts
    against a batch of shape `(B, ...)`; a 0-d tensor is returned as it is. This is the one
    place where per-sample coefficients meet data of any rank.
    """
    if v.ndim == 0:
        return v
    if v.ndim > ndim:
        raise ValueError(
            f"cannot broadcast a tensor of shape {tuple(v.shape)} against data of rank {ndim}"
        )
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))
