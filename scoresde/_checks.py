"""Input validation and broadcasting shared by the whole `scoresde` package: each check once.

Error messages name the argument, the value received and what was expected, in one style.
The helpers that `solvers` already has (real numbers, the non-finite error) are reused from
`solvers._utils`, not copied.

Where checks run: an SDE's coefficient methods are its unchecked protocol (they turn a
number into a tensor with [`as_tensor`][scoresde._checks.as_tensor] and nothing more), and
values are checked once at the entry points: `sample`, `impute`, `log_likelihood`, the
losses and `SDE.perturb` (times in $[0, T]$ through [`as_time`][scoresde._checks.as_time]
with `T`, finite data, batch shapes). A function that sampling loops call on every step (a
network's labels, a guidance schedule's output, a conversion's divisor) checks shapes and
dtypes, which is free, and reads tensor values only where that costs no device
synchronisation ([`values_on_host`][scoresde._checks.values_on_host]); on an accelerator a
NaN that follows is reported once by `sample`.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Sequence

import torch
from torch import Tensor

from solvers._utils import as_int, check_finite_number, describe, range_text

__all__ = [
    "append_dims", "as_tensor", "as_time", "check_shape", "check_output", "check_finite_number", "describe",
    "option", "Options", "check_options",
]


def check_positive_finite(name: str, value: float) -> float:
    """Return `value` as a float, or raise if it is not a finite number > 0."""
    return check_finite_number(name, value, gt=0)


def check_int(name: str, n: Any, minimum: int = 1) -> int:
    """`n` as a Python int (numpy ints accepted), or raise unless it is an int >= `minimum`."""
    return as_int(name, n, minimum=minimum)


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
    `T` given (the entry points), times outside `[0, T]` raise: a device synchronisation, once.
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
    if T is not None:
        bad = ~((t >= 0) & (t <= T))
        if bool(bad.any()):
            first = t[bad].flatten()[0].item() if t.ndim else t.item()
            raise ValueError(f"{name}: expected times in [0, T] = [0, {T}], got {first!r}")
    return t


def as_tensor(t: float | Tensor) -> Tensor:
    """`t` as a tensor: a tensor as it is, a Python number as a 0-d tensor of torch's default
    dtype. No value checks and no host synchronisation (the SDE protocol's one conversion)."""
    return t if isinstance(t, Tensor) else torch.tensor(float(t))


def values_on_host(v: Tensor | float) -> bool:
    """Whether reading `v`'s values costs no device synchronisation (a number or a CPU tensor).

    Per-call value checks in functions that sampling loops call run only then; see the module
    docstring."""
    return not isinstance(v, Tensor) or v.device.type == "cpu"


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """`shape` (an int, a `torch.Size` or a sequence of positive ints, numpy ints accepted) as a tuple."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"{name}: expected a sequence of ints (B, ...), got {shape!r}")
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"{name}: expected a non-empty sequence of positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def check_output(name: str, out: Any, x: Tensor, like: str = "x") -> Tensor:
    """Raise unless the callable `name` returned a tensor shaped like its input `x` (a score, a
    network's prediction); the message names `like`, the expected and the received shape."""
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name}: expected an output shaped like {like}, {tuple(x.shape)}, got {got}")
    return out


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



# ---------------------------------------------------------------------- declarative options
def option(default: Any, *, choices: Sequence | None = None, ge: float | str | None = None,
           gt: float | str | None = None, le: float | str | None = None, lt: float | str | None = None,
           finite: bool = True) -> Any:
    """A dataclass field with its check declared next to it, run by [`Options`][scoresde._checks.Options].

    The field's annotation gives the kind (`int`, `float`, `bool`, `str`; `X | None` also allows
    None); `choices` the allowed values (compared with their type: `1` is not `True`); `ge`,
    `gt`, `le`, `lt` the bounds of a number, either numbers or the name of another field (e.g.
    `s_tmax: float = option(inf, ge="s_tmin", finite=False)`); `finite=False` lets a float be
    infinite within its bounds.

    Example:
        ```python
        @dataclass(frozen=True)
        class MySampler(Sampler):
            order: int = option(2, choices=(1, 2, 3))
            eta: float = option(0.0, ge=0.0, le=1.0)
        ```
    """
    spec = {"choices": None if choices is None else tuple(choices), "ge": ge, "gt": gt, "le": le, "lt": lt,
            "finite": finite}
    return dataclasses.field(default=default, metadata={"option": spec})


def _kind(annotation: Any) -> tuple[str, bool]:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in text.replace("Optional[", "").rstrip("]").split("|")]
    optional = "None" in parts
    kinds = [p for p in parts if p != "None"]
    return (kinds[0] if len(kinds) == 1 else "any"), optional


def _is_choice(value: Any, choices: tuple) -> bool:
    return any(type(value) is type(c) and value == c for c in choices)


def check_options(obj: Any) -> None:
    """Check every field of the dataclass `obj` declared with [`option`][scoresde._checks.option];
    the message names the argument, the value received and the expected kind, range or choices."""
    for f in dataclasses.fields(obj):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        name, value = f.name, getattr(obj, f.name)
        kind, optional = _kind(f.type)
        if optional and value is None:
            continue
        bounds = {k: getattr(obj, spec[k]) if isinstance(spec[k], str) else spec[k] for k in ("ge", "gt", "le", "lt")}
        choices = spec["choices"]
        if kind == "int":
            value = as_int(name, value)
        if choices is not None:
            if not (kind == "int" and value in choices) and not _is_choice(value, choices):
                raise ValueError(f"{name}: expected one of {choices!r}{' or None' if optional else ''}, got {value!r}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{name}: expected a bool{' or None' if optional else ''}, got {value!r}")
        elif kind == "int":
            ok = all(b is None or test for b, test in (
                (bounds["ge"], bounds["ge"] is not None and value >= bounds["ge"]),
                (bounds["gt"], bounds["gt"] is not None and value > bounds["gt"]),
                (bounds["le"], bounds["le"] is not None and value <= bounds["le"]),
                (bounds["lt"], bounds["lt"] is not None and value < bounds["lt"])))
            if not ok:
                raise ValueError(f"{name}: expected an int {range_text(**bounds)}, got {value!r}")
        elif kind == "float":
            try:
                check_finite_number(name, value, **bounds, allow_inf=not spec["finite"])
            except ValueError as err:
                refs = [f"{spec[k]} = {bounds[k]!r}" for k in bounds if isinstance(spec[k], str)]
                raise ValueError(f"{err} ({', '.join(refs)})" if refs else str(err)) from None


class Options:
    """Mixin of option dataclasses (samplers, correctors): `__post_init__` runs
    [`check_options`][scoresde._checks.check_options]. A subclass with checks that are not
    declarative (types of nested objects) extends `__post_init__` and calls `super().__post_init__()`."""

    def __post_init__(self) -> None:
        check_options(self)
