r"""Time grids: uniform, and from any monotone map of $[0, 1]$.

A grid is a 1-D tensor of strictly monotone times, increasing or decreasing. Fixed-step
solvers step from each point to the next; adaptive solvers never step across a point of
the grid (so a grid point can mark a discontinuity of the problem).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from ._utils import as_int, as_real, describe

__all__ = ["uniform_grid", "grid_from_fn", "as_grid", "Grid"]


def uniform_grid(t0: float, t1: float, n: int, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
    r"""A uniform grid of `n` steps from `t0` to `t1`: $t_i = t_0 + (t_1 - t_0)\,i/n$.

    Arguments:
        t0: the first time.
        t1: the last time; `t1 < t0` gives a decreasing (reverse-time) grid.
        n: the number of steps; the grid has `n + 1` points and ends exactly at `t1`.
        dtype, device: of the returned tensor (float64 by default: solvers cast times to
            the state's dtype when they call the problem).

    Returns:
        A tensor of shape `(n + 1,)`.
    """
    t0 = as_real("t0", t0)
    t1 = as_real("t1", t1)
    n = as_int("n", n, minimum=1)
    if t0 == t1:
        raise ValueError(f"t1: expected a time different from t0={t0}, got t1={t1}")
    i = torch.arange(n + 1, dtype=torch.float64)
    ts = t0 + (t1 - t0) * (i / n)
    ts[-1] = t1
    return ts.to(dtype=dtype, device=device)


def grid_from_fn(fn: Callable[[Tensor], Any], n: int, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
    r"""A grid $t_i = \phi(i/n)$, $i = 0..n$, from a strictly monotone map $\phi$ of $[0, 1]$.

    Any schedule of step locations is such a map: e.g. EDM's Karras grid
    $\phi(u) = (\sigma_{max}^{1/\rho} + u(\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho$
    (Karras et al. 2022, eq. 5), or a grid uniform in log-SNR,
    $\phi(u) = \lambda^{-1}(\lambda_0 + u(\lambda_1 - \lambda_0))$.

    Arguments:
        fn: called once with a float64 tensor `u` of shape `(n + 1,)`; returns the times
            (a tensor or a sequence of numbers of that length). If it does not accept a
            tensor, it is called once per point with a Python float.
        n: the number of steps (the grid has `n + 1` points).
        dtype, device: of the returned tensor.

    Returns:
        A tensor of shape `(n + 1,)`, validated to be finite and strictly monotone.
    """
    if not callable(fn):
        raise TypeError(f"fn: expected a callable mapping u in [0, 1] to times, got {describe(fn)}")
    n = as_int("n", n, minimum=1)
    u = torch.arange(n + 1, dtype=torch.float64) / n
    try:
        out = fn(u)
        ts = torch.as_tensor(out, dtype=torch.float64).detach().cpu() if not isinstance(out, Tensor) \
            else out.detach().to("cpu", torch.float64)
        if ts.shape != (n + 1,):
            raise ValueError
    except Exception:
        ts = torch.tensor([float(fn(float(v))) for v in u.tolist()], dtype=torch.float64)
    grid = as_grid(ts, name="grid_from_fn(fn, n)")
    return grid.tensor.to(dtype=dtype, device=device)


class Grid(NamedTuple):
    """A validated time grid: the tensor as given (any device) and its times as Python floats."""

    tensor: Tensor
    times: list[float]

    @property
    def direction(self) -> float:
        """+1.0 for increasing time, -1.0 for decreasing."""
        return 1.0 if self.times[-1] > self.times[0] else -1.0


def as_grid(ts: Tensor | Sequence[float], *, name: str = "ts", min_points: int = 2) -> Grid:
    """Validate a time grid: 1-D, finite, at least `min_points` points, strictly monotone.

    Arguments:
        ts: a 1-D tensor or a sequence of numbers.
        name: the argument name used in error messages.
        min_points: the fewest points accepted.

    Returns:
        A `Grid` (the tensor and its values as Python floats; reading them is the one host
        synchronisation of a fixed-step integration, made before the loop).
    """
    if isinstance(ts, Tensor):
        tensor = ts
    else:
        try:
            tensor = torch.as_tensor(ts, dtype=torch.float64)
        except Exception:
            raise TypeError(f"{name}: expected a 1-D tensor or sequence of times, got {describe(ts)}") from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name}: expected real times, got dtype {tensor.dtype}")
    if tensor.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D tensor of times, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] < min_points:
        raise ValueError(f"{name}: expected at least {min_points} times, got {tensor.shape[0]}")
    times = tensor.detach().to("cpu", torch.float64).tolist()
    for i, t in enumerate(times):
        if not math.isfinite(t):
            raise ValueError(f"{name}: expected finite times, got {t} at index {i}")
    sign = 1.0 if len(times) < 2 or times[1] > times[0] else -1.0
    for i in range(len(times) - 1):
        if not sign * (times[i + 1] - times[i]) > 0:
            direction = "increasing" if sign > 0 else "decreasing"
            raise ValueError(
                f"{name}: expected strictly monotone times ({direction}, as the first step), got "
                f"{name}[{i}]={times[i]!r} followed by {name}[{i + 1}]={times[i + 1]!r}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    return Grid(tensor, times)
