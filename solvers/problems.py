r"""Problem protocols: what `solvers.integrate` accepts, and small adapters.

`solvers` works on plain objects; it never asks for a base class.

* An **SDE** is any object with `drift(x, t)` and `diffusion(x, t)`: it stands for
  $dx = f(x, t)\,dt + g(x, t) \odot dW_t$ with elementwise ("diagonal") noise: `diffusion`
  returns a tensor broadcastable to `x`. Optional attributes:
  - `noise_type` in `{"diagonal", "scalar", "additive"}` (default `"diagonal"`):
    `"scalar"` means one Brownian motion per sample, shared by all of its elements;
    `"additive"` means diagonal noise whose diffusion does not depend on `x`
    (diffusion-model reverse SDEs are additive), which some solvers require.
  - `sde_type` in `{"ito", "stratonovich"}` (default `"ito"`).
* An **ODE** is any object with `vector_field(x, t)`, or a plain callable `f(x, t)`.

Times reach the problem as a tensor of shape `(B,)` on x's device and dtype, one time
per sample (per-sample adaptive stepping gives each sample its own `t`). `x` has any
shape `(B, ...)`. Time may increase or decrease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor

from ._utils import describe, type_name

__all__ = ["SDE", "ODE", "NOISE_TYPES", "SDE_TYPES", "noise_type_of", "sde_type_of", "time_reversed"]

NOISE_TYPES = ("diagonal", "scalar", "additive")
SDE_TYPES = ("ito", "stratonovich")

Field = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SDE:
    r"""An SDE $dx = f(x, t)\,dt + g(x, t) \odot dW_t$ from two callables.

    Arguments:
        drift: `f(x, t) -> Tensor` shaped like `x`.
        diffusion: `g(x, t) -> Tensor` broadcastable to `x` (elementwise noise).
        noise_type: `"diagonal"` (default), `"scalar"` or `"additive"` (g independent of x).
        sde_type: `"ito"` (default) or `"stratonovich"`.
    """

    drift: Field
    diffusion: Field
    noise_type: str = "diagonal"
    sde_type: str = "ito"

    def __post_init__(self):
        for name in ("drift", "diffusion"):
            if not callable(getattr(self, name)):
                raise TypeError(f"SDE: {name} must be callable as {name}(x, t), got {describe(getattr(self, name))}")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"SDE: noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}")
        if self.sde_type not in SDE_TYPES:
            raise ValueError(f"SDE: sde_type must be one of {SDE_TYPES}, got {self.sde_type!r}")

    def __repr__(self) -> str:
        return (f"SDE({type_name(self.drift)}, {type_name(self.diffusion)}, noise_type={self.noise_type!r}, "
                f"sde_type={self.sde_type!r})")


@dataclass(frozen=True)
class ODE:
    r"""An ODE $\dot x = f(x, t)$ from a callable `vector_field(x, t)`."""

    vector_field: Field

    def __post_init__(self):
        if not callable(self.vector_field):
            raise TypeError(f"ODE: vector_field must be callable as f(x, t), got {describe(self.vector_field)}")

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.vector_field(x, t)

    def __repr__(self) -> str:
        return f"ODE({type_name(self.vector_field)})"


def is_sde(problem: Any) -> bool:
    """Whether `problem` follows the SDE protocol (callable `drift` and `diffusion`)."""
    return callable(getattr(problem, "drift", None)) and callable(getattr(problem, "diffusion", None))


def as_ode(problem: Any, who: str) -> Any:
    """`problem` as an object with `vector_field`, or a TypeError that names `who` (the solver)."""
    if callable(getattr(problem, "vector_field", None)):
        return problem
    if is_sde(problem) or hasattr(problem, "drift"):
        raise TypeError(
            f"{who} is an ODE solver, but problem {type_name(problem)} is an SDE (it has drift/diffusion and no "
            f"vector_field(x, t)): use an SDE solver (EulerMaruyama, StochasticHeun, SRA1), or pass "
            f"solvers.ODE(problem.drift) to integrate the drift alone")
    if callable(problem):
        return ODE(problem)
    raise TypeError(f"{who}: problem must have a vector_field(x, t) method or be a callable f(x, t), "
                    f"got {describe(problem)}")


def check_sde(problem: Any, who: str) -> Any:
    """Validate that `problem` follows the SDE protocol; the TypeError names `who` (the solver)."""
    if not is_sde(problem):
        if callable(getattr(problem, "vector_field", None)) or callable(problem):
            raise TypeError(f"{who} is an SDE solver, but problem {type_name(problem)} is an ODE (no drift(x, t) "
                            f"and diffusion(x, t)): use an ODE solver (Euler, Heun, Midpoint, RK4, Dopri5, ...)")
        raise TypeError(f"{who}: problem must have drift(x, t) and diffusion(x, t) methods, got {describe(problem)}")
    noise_type_of(problem)
    sde_type_of(problem)
    return problem


def noise_type_of(problem: Any) -> str:
    """The problem's `noise_type` attribute (default `"diagonal"`), validated."""
    nt = getattr(problem, "noise_type", "diagonal")
    if nt not in NOISE_TYPES:
        raise ValueError(f"problem {type_name(problem)}: noise_type must be one of {NOISE_TYPES}, got {nt!r}")
    return nt


def sde_type_of(problem: Any) -> str:
    """The problem's `sde_type` attribute (default `"ito"`), validated."""
    st = getattr(problem, "sde_type", "ito")
    if st not in SDE_TYPES:
        raise ValueError(f"problem {type_name(problem)}: sde_type must be one of {SDE_TYPES}, got {st!r}")
    return st


class _ReversedSDE:
    def __init__(self, problem):
        self.problem = problem
        self.noise_type = noise_type_of(problem)
        self.sde_type = sde_type_of(problem)

    def drift(self, x, s):
        return -self.problem.drift(x, -s)

    def diffusion(self, x, s):
        return self.problem.diffusion(x, -s)

    def __repr__(self):
        return f"time_reversed({type_name(self.problem)})"


class _ReversedODE:
    def __init__(self, problem):
        self.problem = as_ode(problem, "time_reversed")

    def vector_field(self, x, s):
        return -self.problem.vector_field(x, -s)

    def __repr__(self):
        return f"time_reversed({type_name(self.problem)})"


def time_reversed(problem: Any) -> Any:
    r"""The same problem in the time variable $s = -t$.

    For an ODE $\dot x = f(x, t)$ this is $dx/ds = -f(x, -s)$; for an SDE
    $dx = f\,dt + g\,dW_t$ it is $dx = -f(x, -s)\,ds + g(x, -s)\,d\tilde W_s$ with the
    reflected Brownian motion $\tilde W_s = W_{-s}$. Integrating the original problem
    over decreasing `ts` equals integrating this one over `-ts` (increasing), driven by
    the reflected path; the reference backends use it to hand reverse-time problems to
    `torchsde`, which only integrates forward.

    Arguments:
        problem: an SDE (drift/diffusion) or an ODE (vector_field or callable).

    Returns:
        A problem object of the same kind, evaluated at `-s`.
    """
    if is_sde(problem):
        return _ReversedSDE(problem)
    return _ReversedODE(problem)
