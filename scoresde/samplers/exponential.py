r"""Multistep exponential integrators of the probability flow: DPM-Solver++ (2M, 3M) and UniPC.

In the half-log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$ the probability-flow ODE of any
linear SDE has the exact solution (Lu et al. 2022b, eq. 9)

$$x_t = \frac{\sigma_t}{\sigma_s}x_s + \sigma_t\int_{\lambda_s}^{\lambda_t} e^{\lambda}\,\hat x_0(x_\lambda, \lambda)\,d\lambda,$$

so the linear part is integrated exactly and only the data prediction
$\hat x_0 = (x + \sigma_t^2\nabla\log p_t(x))/\alpha_t$ is approximated, by a polynomial in
$\lambda$ through previous evaluations. Everything is written with $\alpha_t$, $\sigma_t$ of the
SDE's marginal, so the same code serves the VP, sub-VP and VE SDEs (the reference
implementations support VP only). Write $h_i = \lambda_{t_{i+1}} - \lambda_{t_i}$.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._checks import option
from ..time_grids import TimeGrid, UniformLogSNR
from .base import Sampler, SamplingContext

__all__ = ["DPMSolverPP", "UniPC"]

#: DPM-Solver and diffusers lower the order of the last steps below this many steps.
_LOWER_ORDER_FINAL_BELOW = 15
#: a step more than this many times as long in lambda as the one before is taken with first order
_MAX_STEP_RATIO = 2.0


def _step_order(order: int, i: int, ctx: SamplingContext, lower_order_final: bool) -> int:
    """Multistep order at step i: warm up from 1, lower the last steps on short grids, and
    take a first-order (denoising) step into zero noise, where h is infinite.

    A final step into zero noise (`denoise=True`, Tweedie's, or `denoise="flow"`) is a
    first-order step of one evaluation, so it counts as the last step: the grid's own last
    step may then be of order 2, as the second-to-last step of a grid that ends at sigma = 0
    (DPM-Solver's and diffusers' rule).

    A step more than twice as long in lambda as the previous one is first order: the
    multistep corrections extrapolate the data prediction over the new step from the
    differences of the old ones, with weights that grow with the ratio (2M: h_i / (2 h_{i-1})),
    so beyond 2 they amplify the history's errors more than they remove the step's (uniform-t
    grids end with such a step: from t = 0.05 to 1e-3 the log-SNR jumps 5 times the step
    before)."""
    steps = ctx.steps
    final = steps + int(ctx.final_denoise)  # steps, the denoising one included
    p = min(order, i + 1)
    if lower_order_final == "always" or (lower_order_final is True and final < _LOWER_ORDER_FINAL_BELOW):
        p = min(p, final - i)
    if p > 1:
        lams = ctx.half_log_snrs
        if lams[i + 1] - lams[i] > _MAX_STEP_RATIO * (lams[i] - lams[i - 1]):
            p = 1
    if i == steps - 1 and ctx.ends_noise_free:
        p = 1
    return p


#: the values of `lower_order_final`: True (below 15 steps), False (never), "always" (diffusers' UniPC)
LOWER_ORDER_FINAL = (True, False, "always")


def _check_finite_log_snr(sampler: Sampler, sde, ts: Tensor) -> None:
    """The exponential integrators divide by step sizes in lambda: only the last time may have sigma = 0."""
    lam = sde.log_snr(ts.detach().to("cpu", torch.float64))
    if not bool(torch.isfinite(lam[:-1]).all()):
        raise ValueError(
            f"grid: {type(sampler).__name__} needs a finite log-SNR at every time but the last;"
            " use a grid with t > 0 before its end"
        )


@dataclass(frozen=True)
class DPMSolverPP(Sampler):
    r"""DPM-Solver++ multistep (2M, 3M): data-prediction exponential integrator of order 2 or 3.

    With $\hat x_0^{(k)}$ the denoised estimate at $t_k$, one step $t_i \to t_{i+1}$ is
    ($\varphi_1 = e^{-h_i} - 1$):

    * order 1 (DDIM): $x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}\varphi_1\,\hat x_0^{(i)}$;
    * 2M (Lu et al. 2022b, Algorithm 2): with $r = h_{i-1}/h_i$,
      $D = (1 + \tfrac{1}{2r})\hat x_0^{(i)} - \tfrac{1}{2r}\hat x_0^{(i-1)}$ and
      $x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}\varphi_1 D$;
    * 3M: with $r_0 = h_{i-1}/h_i$, $r_1 = h_{i-2}/h_i$,
      $D_1^{(0)} = (\hat x_0^{(i)} - \hat x_0^{(i-1)})/r_0$, $D_1^{(1)} = (\hat x_0^{(i-1)} - \hat x_0^{(i-2)})/r_1$,
      $D_1 = D_1^{(0)} + \tfrac{r_0}{r_0 + r_1}(D_1^{(0)} - D_1^{(1)})$, $D_2 = \tfrac{2}{r_0 + r_1}(D_1^{(0)} - D_1^{(1)})$,
      $\varphi_2 = \varphi_1/h + 1$, $\varphi_3 = \varphi_2/h - \tfrac12$ and
      $x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}\varphi_1\hat x_0^{(i)} + \alpha_{i+1}\varphi_2 D_1 - \alpha_{i+1}\varphi_3 D_2$.

    $D_1 \approx h\hat x_0'$ and $D_2 \approx h^2\hat x_0''$, which the $\varphi_3$ term needs for third
    order; the published code (and diffusers, k-diffusion) takes half of this $D_2$, which
    leaves the update second order (see the samplers guide). Third order pays once the steps
    are short: with about 10 evaluations ($h \approx 1$) 2M is the better choice.

    The first steps warm up with lower orders; with `lower_order_final` grids of fewer than
    15 steps also end with lower orders (the last step first order, the one before at most
    second order), which stabilises few-step sampling (as in DPM-Solver and diffusers). A
    final denoising (`sample(..., denoise=True)`) is itself that first-order last step into
    zero noise, and counts as one. A step more than twice as long in $\lambda$ as the one before
    is first order: the corrections extrapolate the previous steps' differences with a weight
    that grows with the ratio ($h_i/2h_{i-1}$ in 2M), and beyond 2 they amplify the history's
    errors (uniform-$t$ grids end with such a step). One evaluation per step.

    With `eta` $= \eta > 0$ it integrates the reverse SDE instead (SDE-DPM-Solver++): the same
    formulas with $h$ replaced by $(1 + \eta)h$ in $\varphi_1, \varphi_2, \varphi_3$, the linear
    coefficient $\frac{\sigma_{i+1}}{\sigma_i}e^{-\eta h}$, and the noise
    $\sigma_{i+1}\sqrt{1 - e^{-2\eta h}}\,z$ added. $\eta = 1$ is the reverse SDE itself; its first-order
    step is ancestral sampling (DDIM with $\eta = 1$).

    Arguments:
        order: 1, 2 (default) or 3.
        lower_order_final: lower the order of the last steps on short grids (default True);
            `"always"` on grids of any length (diffusers' `UniPCMultistepScheduler` rule);
            False never.
        eta: $\eta \in [0, 1]$: 0 (default) the probability flow, 1 the reverse SDE.
        d2: the 3M update's second difference: `"taylor"` (default, the estimate of
            $h^2\hat x_0''$ above: third order) or `"half"` (half of it, as the published code,
            diffusers and k-diffusion: second order, the reference implementations' numbers;
            the published 3M update of `dpm_solver_pytorch.py`'s `multistep_dpm_solver_third_update`,
            diffusers' `DPMSolverMultistepScheduler(solver_order=3)` and k-diffusion's
            `sample_dpmpp_3m_sde`).

    References: Lu, Zhou, Bao, Chen, Li, Zhu, *DPM-Solver++: Fast Solver for Guided Sampling
    of Diffusion Probabilistic Models*, 2022 (arXiv:2211.01095), Algorithm 2 and appendix
    (SDE-DPM-Solver++); the third-order multistep update of the authors'
    `dpm_solver_pytorch.py`; the $\eta$ interpolation of k-diffusion's `sample_dpmpp_2m_sde`
    and `sample_dpmpp_3m_sde`.
    """

    order: int = option(2, choices=(1, 2, 3))
    lower_order_final: bool | str = option(True, choices=LOWER_ORDER_FINAL)
    eta: float = option(0.0, ge=0.0, le=1.0)
    d2: str = option("taylor", choices=("taylor", "half"))
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.eta > 0

    def check(self, sde, ts):
        _check_finite_log_snr(self, sde, ts)

    def init(self, ctx, x):
        return []  # (denoised, lambda) of previous steps, newest last

    def step(self, ctx: SamplingContext, x: Tensor, i: int, history: list):
        lam, alpha, sigma = ctx.half_log_snr, ctx.alpha, ctx.sigma
        # m0 = x0_hat(x_i, t_i), kept for the next steps
        m0 = ctx.denoised(x, i)
        history.append(m0)
        if len(history) > self.order:
            history.pop(0)
        p = _step_order(self.order, i, ctx, self.lower_order_final)
        h = lam[i + 1] - lam[i]
        h_eta = (1.0 + self.eta) * h
        phi_1 = torch.expm1(-h_eta)
        # x_{i+1} = (sigma_{i+1}/sigma_i) e^{-eta h} x_i - alpha_{i+1} phi_1 m0 (+ higher-order terms)
        ratio = sigma[i + 1] / sigma[i]
        if self.eta > 0:
            ratio = ratio * torch.exp(-self.eta * h)
        x_next = ratio * x - (alpha[i + 1] * phi_1) * m0
        if p == 2:
            m1 = history[-2]
            r = (lam[i] - lam[i - 1]) / h
            # D = (1 + 1/(2r)) m0 - 1/(2r) m1, i.e. a correction -alpha phi_1 (m0 - m1)/(2r)
            x_next = x_next - (alpha[i + 1] * phi_1 / (2.0 * r)) * (m0 - m1)
        elif p == 3:
            m1, m2 = history[-2], history[-3]
            r0 = (lam[i] - lam[i - 1]) / h
            r1 = (lam[i - 1] - lam[i - 2]) / h
            d1_0 = (m0 - m1) / r0
            d1_1 = (m1 - m2) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            # ~ h^2 x0'' (the published code has half)
            d2 = (2.0 if self.d2 == "taylor" else 1.0) * (d1_0 - d1_1) / (r0 + r1)
            phi_2 = phi_1 / h_eta + 1.0
            phi_3 = phi_2 / h_eta - 0.5
            x_next = x_next + (alpha[i + 1] * phi_2) * d1 - (alpha[i + 1] * phi_3) * d2
        if self.eta > 0:
            # + sigma_{i+1} sqrt(1 - e^{-2 eta h}) z
            x_next = x_next + (sigma[i + 1] * (-torch.expm1(-2.0 * self.eta * h)).sqrt()) * ctx.randn()
        return x_next, m0


@dataclass(frozen=True)
class UniPC(Sampler):
    r"""UniPC: the unified predictor (UniP-$p$) with the corrector UniC, data prediction, B(h) variants.

    The predictor extrapolates the data prediction through the last $p$ evaluations; after
    the model is evaluated at the predicted point (which the next step needs anyway), the
    corrector refines that point with the new evaluation included, raising the order by
    one at no extra cost. With $\hat x_0^{(k)}$ at $\lambda_k$, $h = h_i$, $r_k = (\lambda_{i-k} - \lambda_i)/h$,
    $D_k = (\hat x_0^{(i-k)} - \hat x_0^{(i)})/r_k$ and $B(h) = e^{h} - 1$ (`"bh2"`) or $h$ (`"bh1"`):

    $$x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}(e^{-h} - 1)\hat x_0^{(i)} - \alpha_{i+1}B(-h)\sum_k \rho_k D_k,$$

    the $\rho$ solving $\sum_k \rho_k r_k^{j-1} = j!\,\varphi_{j+1}(-h)\,h/B(-h)$ for the predictor's
    orders ($\rho = \tfrac12$ for order 2), and the corrector adding the new point ($r = 1$).
    One evaluation per step; the last state is not corrected.

    Arguments:
        order: the predictor order, 1, 2 (default) or 3.
        variant: `"bh2"` (default) or `"bh1"`.
        lower_order_final: lower the order of the last steps on grids of fewer than 15 steps
            (as `DPMSolverPP`, whose other order rules UniPC shares: a final denoising counts
            as the last step, and a step more than twice as long in $\lambda$ as the one before
            is first order); `"always"` on grids of any length, as diffusers'
            `UniPCMultistepScheduler(lower_order_final=True)`, whose last steps have orders
            $\min(p, \text{steps left})$ whatever the number of steps; False never.
        corrector: apply UniC (default True); False leaves UniP alone.

    Reference: Zhao, Bai, Rao, Zhou, Lu, *UniPC: A Unified Predictor-Corrector Framework for
    Fast Sampling of Diffusion Models*, NeurIPS 2023, Algorithms 1-3 and appendix.
    """

    order: int = option(2, choices=(1, 2, 3))
    variant: str = option("bh2", choices=("bh1", "bh2"))
    lower_order_final: bool | str = option(True, choices=LOWER_ORDER_FINAL)
    corrector: bool = option(True)
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = UniformLogSNR()

    def check(self, sde, ts):
        _check_finite_log_snr(self, sde, ts)

    def init(self, ctx, x):
        # previous (x0_hat, index) pairs, the last state and the order of the last predictor
        return {"models": [], "indices": [], "x_prev": None, "order_prev": 0}

    def _coefficients(self, h: Tensor, rks: list[Tensor], order: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """phi_1 = e^{-h} - 1, B(-h), the matrix R (rows r_k^{j-1}) and the right side b."""
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        r = torch.stack(rks)
        rows, rhs = [], []
        factorial = 1.0
        for j in range(1, order + 1):
            rows.append(r ** (j - 1))
            rhs.append(h_phi_k * factorial / b_h)
            factorial *= j + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        return h_phi_1, b_h, torch.stack(rows), torch.stack(rhs)

    def _solve(self, R: Tensor, b: Tensor) -> Tensor:
        # the small system in at least float32 (LU has no float16/bfloat16 kernels), cast back
        dtype = torch.promote_types(R.dtype, torch.float32)
        solution, _ = torch.linalg.solve_ex(R.to(dtype), b.to(dtype))
        return solution.to(R.dtype)

    def _update(self, ctx, x_s: Tensor, s: int, t: int, models: list, indices: list, order: int,
                model_t: Tensor | None) -> Tensor:
        """UniP (model_t None) or UniC (model_t the new evaluation) from index s to index t."""
        lam, alpha, sigma = ctx.half_log_snr, ctx.alpha, ctx.sigma
        m0 = models[-1]
        h = lam[t] - lam[s]
        rks, d1s = [], []
        for k in range(1, order):
            rk = (lam[indices[-(k + 1)]] - lam[s]) / h
            rks.append(rk)
            d1s.append((models[-(k + 1)] - m0) / rk)
        rks.append(torch.ones_like(h))
        h_phi_1, b_h, R, b = self._coefficients(h, rks, order)
        # the exponential-integrator (first-order) part
        x_t = (sigma[t] / sigma[s]) * x_s - (alpha[t] * h_phi_1) * m0
        if model_t is None:  # UniP: rho from the order - 1 previous points
            if not d1s:
                return x_t
            rhos = torch.full_like(h, 0.5).reshape(1) if order == 2 else self._solve(R[:-1, :-1], b[:-1])
            res = sum(rho * d for rho, d in zip(rhos, d1s))
        else:  # UniC: rho from the previous points and the new one (r = 1)
            rhos = torch.full_like(h, 0.5).reshape(1) if order == 1 else self._solve(R, b)
            res = sum(rho * d for rho, d in zip(rhos[:-1], d1s)) + rhos[-1] * (model_t - m0)
        return x_t - (alpha[t] * b_h) * res

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: dict):
        models, indices = state["models"], state["indices"]
        # evaluate the data prediction at the current point
        m_cur = ctx.denoised(x, i)
        if self.corrector and i > 0:
            # UniC: correct x_i with the evaluation just made (x_{i-1}, history up to i-1)
            x = self._update(ctx, state["x_prev"], i - 1, i, models, indices, state["order_prev"], m_cur)
        models.append(m_cur)
        indices.append(i)
        if len(models) > self.order:
            models.pop(0)
            indices.pop(0)
        p = _step_order(self.order, i, ctx, self.lower_order_final)
        state["x_prev"], state["order_prev"] = x, p
        # UniP: predict x_{i+1}
        x_next = self._update(ctx, x, i, i + 1, models, indices, p, None)
        return x_next, m_cur
