r"""Explicit Runge-Kutta methods for ODEs $\dot x = f(x, t)$, defined by Butcher tableaus.

| solver | order | evaluations per step |
|---|---|---|
| `Euler` | 1 | 1 |
| `Midpoint` | 2 | 2 |
| `Heun` | 2 | 2 |
| `RK4` | 4 | 4 |
| `BogackiShampine` (adaptive, `solvers.adaptive`) | 3 (error estimate 2) | 3 (FSAL) |
| `Dopri5` (adaptive, `solvers.adaptive`) | 5 (error estimate 4) | 6 (FSAL) |

A new explicit method is a tableau and a class attribute: `ExplicitRK` owns the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
from torch import Tensor

from .base import AbstractODESolver

__all__ = ["ButcherTableau", "ExplicitRK", "Euler", "Midpoint", "Heun", "RK4"]


@dataclass(frozen=True)
class ButcherTableau:
    r"""An explicit Runge-Kutta tableau.

    $k_i = f(x + h \sum_{j<i} a_{ij} k_j,\ t + c_i h)$, $x_{next} = x + h \sum_i b_i k_i$, and for
    embedded pairs the error estimate $h \sum_i e_i k_i$ with $e = b - \hat b$.

    Attributes:
        c: the nodes, `c[0] = 0`.
        a: the strictly lower-triangular rows, `a[i]` has `i` entries.
        b: the weights of the propagated solution.
        e: the error weights `b - b_hat` of an embedded pair, or None.
        fsal: first-same-as-last (the last stage is evaluated at the new state).
    """

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...] | None = None
    fsal: bool = False

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s or (self.e is not None and len(self.e) != s):
            raise ValueError(f"ButcherTableau: c, a, b (and e) need {s} entries each")
        if self.c[0] != 0:
            raise ValueError(f"ButcherTableau: explicit methods need c[0] = 0, got {self.c[0]}")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"ButcherTableau: row a[{i}] needs {i} entries, got {len(row)}")
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(f"ButcherTableau: row a[{i}] sums to {sum(row)}, but c[{i}] = {self.c[i]}")
        if abs(sum(self.b) - 1.0) > 1e-12:
            raise ValueError(f"ButcherTableau: the weights b sum to {sum(self.b)}, expected 1")
        if self.fsal and (self.c[-1] != 1 or tuple(self.a[-1]) != tuple(self.b[:-1]) or self.b[-1] != 0):
            raise ValueError("ButcherTableau: fsal=True needs c[-1] = 1, a[-1] = b[:-1] and b[-1] = 0")

    @property
    def stages(self) -> int:
        return len(self.c)


def combine(x: Tensor, ks: Sequence[Tensor], coefs: Sequence[float], h: float | Tensor) -> Tensor:
    r"""$x + h \sum_j \mathrm{coefs}_j\, k_j$ with fused kernels; `h` a float or a tensor broadcastable to x."""
    out = x
    if isinstance(h, Tensor):
        for c, k in zip(coefs, ks):
            if c:
                out = torch.addcmul(out, k, h, value=c)
    else:
        for c, k in zip(coefs, ks):
            if c:
                out = torch.add(out, k, alpha=c * h)
    return out


class ExplicitRK(AbstractODESolver):
    """Base class of explicit Runge-Kutta methods: set `tableau` and `order`.

    A fixed step is the tableau's stages; with an FSAL tableau the last evaluation is
    carried to the next step, so a step costs `stages - 1` evaluations.
    """

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is not None:
            cls.evals_per_step = tab.stages
            cls.fsal = tab.fsal

    def stages(self, f: Callable, x: Tensor, k1: Tensor, h: float | Tensor,
               time_at: Callable[[float], Tensor]) -> tuple[list[Tensor], Tensor]:
        """Evaluate the stages after the first; returns all `k` and the last stage's input."""
        tab = self.tableau
        ks = [k1]
        xi = x
        for i in range(1, tab.stages):
            xi = combine(x, ks, tab.a[i], h)
            ks.append(f(xi, time_at(tab.c[i])))
        return ks, xi

    def step(self, problem, x, t_cur, t_next, dt, state, dw=None):
        f = problem.vector_field
        k1 = f(x, t_cur) if state is None else state

        def time_at(c: float) -> Tensor:
            return t_next if c == 1 else t_cur + c * dt

        ks, x_last = self.stages(f, x, k1, dt, time_at)
        if self.tableau.fsal:
            return x_last, ks[-1]
        return combine(x, ks, self.tableau.b, dt), None


class Euler(ExplicitRK):
    r"""The explicit Euler method, $x_{n+1} = x_n + h f(x_n, t_n)$. Order 1.

    Reference: Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I*, §I.7.
    """

    order = 1.0
    tableau = ButcherTableau(c=(0.0,), a=((),), b=(1.0,))


class Midpoint(ExplicitRK):
    r"""The explicit midpoint method, $x_{n+1} = x_n + h f(x_n + \tfrac h2 f(x_n, t_n), t_n + \tfrac h2)$. Order 2.

    Reference: Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I*, §II.1.
    """

    order = 2.0
    tableau = ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0))


class Heun(ExplicitRK):
    r"""Heun's method (explicit trapezoidal rule). Order 2.

    $k_1 = f(x_n, t_n)$, $k_2 = f(x_n + h k_1, t_n + h)$, $x_{n+1} = x_n + \tfrac h2 (k_1 + k_2)$.
    (EDM's deterministic sampler is this method on the probability-flow ODE.)

    Reference: Hairer, Nørsett & Wanner, *Solving Ordinary Differential Equations I*, §II.1.
    """

    order = 2.0
    tableau = ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5))


class RK4(ExplicitRK):
    r"""The classical fourth-order Runge-Kutta method. Order 4.

    $k_1 = f(x, t)$, $k_2 = f(x + \tfrac h2 k_1, t + \tfrac h2)$, $k_3 = f(x + \tfrac h2 k_2, t + \tfrac h2)$,
    $k_4 = f(x + h k_3, t + h)$, $x_{n+1} = x + \tfrac h6 (k_1 + 2k_2 + 2k_3 + k_4)$.

    Reference: Kutta (1901); Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1.
    """

    order = 4.0
    tableau = ButcherTableau(c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                             b=(1 / 6, 1 / 3, 1 / 3, 1 / 6))
