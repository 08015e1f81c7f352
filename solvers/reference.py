r"""Reference backends: the same problem through `torchsde.sdeint` and `scipy.integrate.solve_ivp`.

Used by the tests to check that our solvers agree with established implementations.
Two habits of torchsde are handled here:

* `sdeint` integrates forward only. A reverse-time problem (decreasing `ts`) is handed
  over in the variable $s = \sigma t$, $\sigma = \pm 1$ (`solvers.time_reversed`), driven
  by the reflected path $\tilde W_s = W_{\sigma s}$.
* its default Brownian motion ignores `torch.manual_seed`, so paths come from a
  `torchsde.BrownianInterval` built with `entropy=`; `torchsde_brownian` returns it
  together with a `NoiseSource` that feeds *the same path* to `solvers.integrate`.
  Times are float64, so the interval never sees a float32 time stepping past `t1`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor

from ._utils import as_real, check_state
from .grids import as_grid
from .noise import NoiseSource
from .problems import as_ode, check_sde, noise_type_of, sde_type_of

__all__ = ["torchsde_brownian", "torchsde_solve", "TorchsdeNoise", "scipy_solve", "ScipySolution"]


def _torchsde_noise_type(noise_type: str, method: str) -> str:
    if noise_type == "scalar":
        return "scalar"
    if noise_type == "additive" and method == "srk":
        return "additive"  # SRA1 in torchsde; our diagonal additive noise as a diagonal matrix
    return "diagonal"


class _TorchsdeSDE(torch.nn.Module):
    def __init__(self, problem, shape: torch.Size, sign: float, noise_type: str, sde_type: str):
        super().__init__()
        self.problem, self.shape, self.sign = problem, shape, sign
        self.noise_type, self.sde_type = noise_type, sde_type

    def _x_t(self, s, y):
        x = y.reshape(self.shape)
        t = torch.full((self.shape[0],), self.sign * float(s), dtype=y.dtype, device=y.device)
        return x, t

    def f(self, s, y):
        x, t = self._x_t(s, y)
        return (self.sign * self.problem.drift(x, t)).reshape(self.shape[0], -1)

    def g(self, s, y):
        x, t = self._x_t(s, y)
        g = self.problem.diffusion(x, t).expand(self.shape).reshape(self.shape[0], -1)
        if self.noise_type == "scalar":
            return g.unsqueeze(-1)
        if self.noise_type == "additive":
            return torch.diag_embed(g)
        return g


class TorchsdeNoise(NoiseSource):
    r"""Feeds a torchsde Brownian object to `solvers.integrate`, with the time change of `torchsde_solve`.

    `increment(t_cur, t_next)` returns `bm(sign * t_cur, sign * t_next)` reshaped to the
    noise shape; with Lévy area, also $\Delta Z = \mathrm{sign}\cdot U$ where torchsde's
    $U = \int (\tilde W_v - \tilde W_{s_a})\,dv$ over $[s_a, s_b]$.
    """

    def __init__(self, bm: Any, sign: float):
        self.bm, self.sign = bm, float(sign)

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        bm, sign = self.bm, self.sign
        shape = tuple(shape)

        def increment(t_cur: float, t_next: float):
            if levy_area:
                w, u = bm(sign * t_cur, sign * t_next, return_U=True)
                return w.reshape(shape).to(dtype), (sign * u).reshape(shape).to(dtype)
            return bm(sign * t_cur, sign * t_next).reshape(shape).to(dtype)
        return increment


def _span(ts) -> tuple[list[float], float]:
    grid = as_grid(ts, name="ts")
    return grid.times, grid.direction


def torchsde_brownian(x0: Tensor, ts: Tensor | Sequence[float], *, entropy: int, levy_area: bool = False,
                      noise_type: str = "diagonal") -> tuple[Any, TorchsdeNoise]:
    """A `torchsde.BrownianInterval` for `torchsde_solve` and a `NoiseSource` giving the same path.

    Arguments:
        x0: the initial state (its batch size, element count, dtype and device).
        ts: the integration grid (increasing or decreasing).
        entropy: the interval's seed (torchsde ignores `torch.manual_seed`).
        levy_area: carry the space-time Lévy area (for `SRA1` / torchsde's `srk`).
        noise_type: the problem's noise type (`"scalar"` means one Brownian motion per sample).

    Returns:
        `(bm, noise)`: pass `bm` to `torchsde_solve` and `noise` to `solvers.integrate`.
    """
    import torchsde

    check_state("x0", x0)
    times, sign = _span(ts)
    s0, s1 = sign * times[0], sign * times[-1]
    m = 1 if noise_type == "scalar" else x0[0].numel()
    bm = torchsde.BrownianInterval(t0=s0, t1=s1, size=(x0.shape[0], m), dtype=x0.dtype, device=x0.device,
                                   entropy=int(entropy),
                                   levy_area_approximation="space-time" if levy_area else "none")
    return bm, TorchsdeNoise(bm, sign)


def torchsde_solve(problem: Any, x0: Tensor, ts: Tensor | Sequence[float], *, bm: Any, method: str = "euler") -> Tensor:
    r"""Integrate an SDE problem with `torchsde.sdeint`, one step per interval of `ts`.

    Arguments:
        problem: an SDE (`drift`, `diffusion`, optional `noise_type`, `sde_type`).
        x0: the initial state `(B, ...)`.
        ts: the step grid, increasing or decreasing (reverse time goes through $s = -t$).
        bm: the Brownian object from `torchsde_brownian` (same grid direction).
        method: a torchsde method: `"euler"` (Itô), `"heun"` (Stratonovich), `"srk"`
            (Rößler's SRA1 for additive noise), `"milstein"`, ...

    Returns:
        The states at `ts`, shape `(len(ts), B, ...)`.
    """
    import torchsde

    check_sde(problem, "torchsde_solve")
    check_state("x0", x0)
    times, sign = _span(ts)
    nt = _torchsde_noise_type(noise_type_of(problem), method)
    st = sde_type_of(problem)
    if noise_type_of(problem) == "additive" and method in ("heun", "midpoint", "reversible_heun"):
        st = "stratonovich"
    elif noise_type_of(problem) == "additive":
        st = "ito"
    sde = _TorchsdeSDE(problem, x0.shape, sign, nt, st)
    y = x0.reshape(x0.shape[0], -1)
    out = [x0]
    for a, b in zip(times[:-1], times[1:]):
        s = torch.tensor([sign * a, sign * b], dtype=torch.float64, device=x0.device)
        h = abs(b - a)
        ys = torchsde.sdeint(sde, y, s, bm=bm, method=method, dt=h * (1 + 1e-9))
        y = ys[-1]
        out.append(y.reshape(x0.shape))
    return torch.stack(out)


class ScipySolution(NamedTuple):
    """`ys`: states at `ts`, `(len(ts), B, ...)`; `nfe`: right-hand-side evaluations."""

    ys: Tensor
    nfe: int


def scipy_solve(problem: Any, x0: Tensor, ts: Tensor | Sequence[float], *, method: str = "RK45",
                rtol: float = 1e-10, atol: float = 1e-12) -> ScipySolution:
    """Integrate an ODE problem with `scipy.integrate.solve_ivp`, in float64 on the CPU.

    The batch is flattened into one system; the problem is evaluated on x0's device with
    float64 states and `(B,)` times. Decreasing `ts` are supported natively by scipy.

    Arguments:
        problem: an ODE (`vector_field(x, t)` or a callable).
        x0: the initial state `(B, ...)`.
        ts: output times; scipy integrates from `ts[0]` to `ts[-1]`.
        method: a `solve_ivp` method (`"RK45"`, `"DOP853"`, `"Radau"`, ...).
        rtol, atol: scipy's tolerances (> 0).

    Returns:
        A `ScipySolution(ys, nfe)`.
    """
    from scipy.integrate import solve_ivp

    ode = as_ode(problem, "scipy_solve")
    check_state("x0", x0)
    rtol = as_real("rtol", rtol, positive=True)
    atol = as_real("atol", atol, positive=True)
    times, _ = _span(ts)
    shape, device = x0.shape, x0.device
    f64 = torch.float64

    def fun(t, y):
        x = torch.as_tensor(y, dtype=f64).reshape(shape).to(device)
        tt = torch.full((shape[0],), float(t), dtype=f64, device=device)
        with torch.no_grad():
            return ode.vector_field(x, tt).to("cpu", f64).reshape(-1).numpy()

    y0 = x0.detach().to("cpu", f64).reshape(-1).numpy()
    sol = solve_ivp(fun, (times[0], times[-1]), y0, method=method, t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"scipy.integrate.solve_ivp failed: {sol.message}")
    ys = torch.as_tensor(sol.y.T.copy()).reshape(len(times), *shape).to(device=device, dtype=x0.dtype)
    return ScipySolution(ys=ys, nfe=int(sol.nfev))
