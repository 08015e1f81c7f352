r"""SA-Solver: stochastic Adams predictor-corrector for the SDEs of the $\tau$-family (data prediction).

Xue et al. write a family of reverse SDEs with the same marginals, indexed by $\tau(t) \ge 0$
($\tau = 0$ the probability flow, $\tau = 1$ the reverse SDE), and solve it in the half-log-SNR
$\lambda$ by variation of constants: from $\lambda_s$ to $\lambda_t$, $h = \lambda_t - \lambda_s$,
$a = 1 + \tau^2$,

$$x_t = e^{-\tau^2 h}\frac{\sigma_t}{\sigma_s}x_s + a\,\alpha_t\int_{-h}^{0} e^{a u}\,\hat x_0(\lambda_t + u)\,du
+ \sigma_t\sqrt{1 - e^{-2\tau^2 h}}\,z.$$

The data prediction is replaced by the Lagrange polynomial through the last evaluations
(nodes $u_k = \lambda_k - \lambda_t$) and integrated exactly, which gives weights
$c_k = \int_{-h}^0 e^{au}\ell_k(u)\,du$ (computed in float64 from the grid, once per step, on the
host):

* SA-Predictor (order $p$): nodes $\lambda_i, \lambda_{i-1}, \dots, \lambda_{i-p+1}$, from $x_i$ to $x_{i+1}$ with noise $z_i$;
* SA-Corrector (order $c$): once $\hat x_0^{(i+1)}$ is evaluated at the predicted point, the same
  step from $x_i$ again, with nodes $\lambda_{i+1}, \lambda_i, \dots$ and the same noise $z_i$ (an
  implicit Adams-Moulton step made explicit; it costs no evaluation).

As in the authors' code, a second-order step adds the $O(h^3)$ term of UniPC's B(h) choice:
$\pm\big(\tfrac{h^2}{2} - \tfrac{ah - 1 + e^{-ah}}{a^2}\big)/(\lambda_i - \lambda_{i-1})$ to the predictor's two
weights and $\pm\big(\tfrac h2 - \tfrac{ah - 1 + e^{-ah}}{a^2h}\big)$ to the corrector's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler, SamplingContext

__all__ = ["SASolver", "exponential_lagrange_weights"]


def _poly_mul(p: list[float], q: list[float]) -> list[float]:
    """Product of two polynomials given by their coefficients, lowest degree first."""
    out = [0.0] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _exp_moment(k: int, a: float, h: float) -> float:
    r"""$\int_{-h}^0 e^{au}u^k\,du$, from $\int e^{au}u^k du = e^{au}\sum_j (-1)^j \frac{k!}{(k-j)!}\frac{u^{k-j}}{a^{j+1}}$."""
    def antiderivative(u: float) -> float:
        return math.exp(a * u) * sum((-1) ** j * math.factorial(k) / math.factorial(k - j) * u ** (k - j) / a ** (j + 1)
                                     for j in range(k + 1))
    return antiderivative(0.0) - antiderivative(-h)


def exponential_lagrange_weights(nodes: list[float], h: float, a: float) -> list[float]:
    r"""$c_k = \int_{-h}^0 e^{au}\ell_k(u)\,du$ for the Lagrange basis $\ell_k$ of `nodes` (in float64)."""
    weights = []
    for k, uk in enumerate(nodes):
        poly = [1.0]  # l_k(u) = prod_{m != k} (u - u_m) / (u_k - u_m), lowest degree first
        for m, um in enumerate(nodes):
            if m != k:
                poly = _poly_mul(poly, [-um / (uk - um), 1.0 / (uk - um)])
        weights.append(sum(c * _exp_moment(j, a, h) for j, c in enumerate(poly)))
    return weights


@dataclass(frozen=True)
class SASolver(Sampler):
    r"""SA-Solver (data prediction): stochastic Adams predictor of order `predictor_order` with the corrector of order `corrector_order`.

    See the module for the steps. $\tau$ is `tau` while $t/T$ lies in `tau_interval` and 0
    elsewhere (diffusers' default: $\tau = 1$ on its timesteps 200-800 of 1000); `tau=0` is a
    deterministic multistep predictor-corrector of the probability flow. Orders warm up from 1
    (predictor) and 2 (corrector); with `lower_order_final` the last steps lower them (the
    predictor to the number of steps left, the corrector to one more), as diffusers'
    `SASolverScheduler`. One evaluation per step. A step into zero noise takes its limit,
    $x_{i+1} = \alpha_{i+1}\hat x_0^{(i)}$.

    Arguments:
        predictor_order: 1 to 4 (default 2).
        corrector_order: 1 to 4 (default 2).
        tau: $\tau \ge 0$ inside `tau_interval` (default 1).
        tau_interval: `(lo, hi)` with $0 \le$ lo $\le$ hi $\le 1$, the range of $t/T$ where $\tau$ applies
            (default `(0.2, 0.8)`); None applies it everywhere.
        lower_order_final: lower the orders of the last steps (default True).

    References: Xue, Yi, Liu, Zhang, Guo, Li, Zheng, Wang, Zhao, Liu, Ma, *SA-Solver: Stochastic Adams
    Solver for Fast Sampling of Diffusion Models*, NeurIPS 2023 (arXiv:2309.05019), Algorithm 1 and
    Proposition 4.2 (data-prediction form); diffusers' `SASolverScheduler`.
    """

    predictor_order: int = option(2, choices=(1, 2, 3, 4))
    corrector_order: int = option(2, choices=(1, 2, 3, 4))
    tau: float = option(1.0, ge=0.0)
    tau_interval: tuple[float, float] | None = (0.2, 0.8)
    lower_order_final: bool = option(True)
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()  # uniform t ends with a step long in lambda

    def __post_init__(self):
        super().__post_init__()
        if self.tau_interval is not None:
            ok = isinstance(self.tau_interval, tuple) and len(self.tau_interval) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.tau_interval)
            if not ok or not 0 <= self.tau_interval[0] <= self.tau_interval[1] <= 1:
                raise ValueError(f"tau_interval: expected None or a pair (lo, hi) with 0 <= lo <= hi <= 1, got {self.tau_interval!r}")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.tau > 0 and (self.tau_interval is None or self.tau_interval[1] >= self.tau_interval[0])

    def check(self, sde, ts):
        lam = sde.log_snr(ts.detach().to("cpu", torch.float64))
        if not bool(torch.isfinite(lam[:-1]).all()):
            raise ValueError("grid: SASolver needs a finite log-SNR at every time but the last; use a grid with t > 0 before its end")

    def _tau(self, t: float, T: float) -> float:
        inside = self.tau_interval is None or self.tau_interval[0] <= t / T <= self.tau_interval[1]
        return float(self.tau) if inside else 0.0

    def init(self, ctx: SamplingContext, x: Tensor):
        return {"models": [], "x_prev": None, "z_prev": None, "c_order": 0,
                "alpha": ctx.alpha.tolist(), "sigma": ctx.sigma.tolist(), "taus": [self._tau(t, ctx.sde.T) for t in ctx.times]}

    def _update(self, st: dict, lams: list[float], x_s: Tensor, s: int, t: int, nodes: list[int], models: list[Tensor],
                order: int, tau: float, z: Tensor | None, corrector: bool) -> Tensor:
        """One SA step from index s to index t with the data predictions `models` at the indices `nodes` (newest first)."""
        alpha_t, sigma_t, sigma_s = st["alpha"][t], st["sigma"][t], st["sigma"][s]
        if not math.isfinite(lams[t]):  # into zero noise: the limit x_t = alpha_t x0_hat
            return alpha_t * models[0]
        h, a = lams[t] - lams[s], 1.0 + tau**2
        # c_k = int_{-h}^0 e^{a u} l_k(u) du over the nodes u_k = lambda_k - lambda_t
        c = exponential_lagrange_weights([lams[k] - lams[t] for k in nodes[:order]], h, a)
        if order == 2:  # the O(h^3) B(h) term of the authors' code
            if corrector:
                extra = h / 2 - (a * h - 1 + math.exp(-a * h)) / (a**2 * h)
            else:
                extra = (h**2 / 2 - (a * h - 1 + math.exp(-a * h)) / a**2) / (lams[s] - lams[s - 1])
            c[0], c[1] = c[0] + extra, c[1] - extra
        # x_t = e^{-tau^2 h} (sigma_t / sigma_s) x_s + a alpha_t sum_k c_k x0^(k) + sigma_t sqrt(1 - e^{-2 tau^2 h}) z
        x_t = (math.exp(-(tau**2) * h) * sigma_t / sigma_s) * x_s
        for ck, m in zip(c, models[:order]):
            x_t = x_t + (a * alpha_t * ck) * m
        if z is not None and tau > 0:
            x_t = x_t + (sigma_t * math.sqrt(-math.expm1(-2.0 * tau**2 * h))) * z
        return x_t

    def step(self, ctx: SamplingContext, x: Tensor, i: int, st: dict):
        lams, models = ctx.half_log_snrs, st["models"]
        # the data prediction at the current (predicted) point
        m_cur = ctx.denoised(x, i)
        if i > 0:
            # SA-Corrector: redo the last step from x_{i-1} with m_cur included and the same noise
            models_c = [m_cur] + models[::-1]
            nodes = [i - k for k in range(st["c_order"])]
            x = self._update(st, lams, st["x_prev"], i - 1, i, nodes, models_c, st["c_order"], st["taus"][i - 1],
                             st["z_prev"], corrector=True)
        models.append(m_cur)
        if len(models) > max(self.predictor_order, self.corrector_order - 1):
            models.pop(0)
        # orders: lower at the end, warm up at the start
        total = ctx.steps + int(ctx.final_denoise)
        p, c = self.predictor_order, self.corrector_order
        if self.lower_order_final:
            p, c = min(p, total - i), min(c, total - i + 1)
        done = min(i, max(self.predictor_order, self.corrector_order - 1))  # previous evaluations kept
        p, c = min(p, done + 1), min(c, done + 2)
        # the step's noise z_i (shared by this predictor and the next corrector)
        z = ctx.randn() if self.stochastic else None
        st["x_prev"], st["z_prev"], st["c_order"] = x, z, c
        # SA-Predictor: x_{i+1} from x_i
        nodes = [i - k for k in range(p)]
        x_next = self._update(st, lams, x, i, i + 1, nodes, models[::-1], p, st["taus"][i], z, corrector=False)
        return x_next, m_cur
