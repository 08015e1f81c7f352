r"""Linear multistep (Adams-Bashforth) integration of the probability flow in the noise level.

In the scaled variables $\hat x = x/\alpha_t$, $\hat\sigma = \sigma_t/\alpha_t$ the probability-flow
ODE of any linear SDE is $\frac{d\hat x}{d\hat\sigma} = d(\hat x, \hat\sigma) = \frac{\hat x - D(\hat x; \hat\sigma)}{\hat\sigma}$
with $D$ Tweedie's denoiser (Karras et al. 2022, eq. 3 with $s = 1$); with the score,
$d = -\sigma_t\nabla\log p_t(x) = \hat\varepsilon$, the noise prediction. A linear multistep
method integrates, over each step, the polynomial through the last slopes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from torch import Tensor

from .._checks import option
from ..time_grids import KarrasGrid, TimeGrid
from .base import Sampler, SamplingContext

__all__ = ["LMS", "lms_coefficients"]


def lms_coefficients(sigmas: list[float], i: int, order: int, sigma_next: float | None = None) -> list[float]:
    r"""The weights $c_j = \int_{\hat\sigma_i}^{\hat\sigma_{i+1}} \ell_j(\tau)\,d\tau$ of the slopes $d_i, d_{i-1}, \dots$.

    $\ell_j(\tau) = \prod_{k \ne j} \frac{\tau - \hat\sigma_{i-k}}{\hat\sigma_{i-j} - \hat\sigma_{i-k}}$
    ($j, k < p$, the order) is the Lagrange basis polynomial of node $\hat\sigma_{i-j}$. The
    integrand has degree $p - 1$, so Gauss-Legendre quadrature with $p$ nodes is exact (to
    rounding, in float64); k-diffusion evaluates the same integrals with `scipy.integrate.quad`.

    Arguments:
        sigmas: the noise levels $\hat\sigma_0, \hat\sigma_1, \dots$ of the grid (floats).
        i: the step $\hat\sigma_i \to \hat\sigma_{i+1}$; needs $i \ge p - 1$.
        order: the order $p \ge 1$.
        sigma_next: the step's end, if not `sigmas[i + 1]`.

    Returns:
        `[c_0, ..., c_{p-1}]`, $c_j$ multiplying the slope at $\hat\sigma_{i-j}$.
    """
    a = sigmas[i]
    b = sigmas[i + 1] if sigma_next is None else sigma_next
    nodes = [sigmas[i - k] for k in range(order)]
    u, w = np.polynomial.legendre.leggauss(order)
    tau = 0.5 * (b - a) * u + 0.5 * (a + b)  # Gauss nodes on [a, b]
    coeffs = []
    for j in range(order):
        ell = np.ones_like(tau)
        for k in range(order):
            if k != j:
                ell *= (tau - nodes[k]) / (nodes[j] - nodes[k])
        coeffs.append(float(0.5 * (b - a) * np.dot(w, ell)))
    return coeffs


@dataclass(frozen=True)
class LMS(Sampler):
    r"""Linear multistep sampler (Adams-Bashforth in $\hat\sigma$), k-diffusion's `sample_lms`.

    With the slopes $d_k = (\hat x_k - D(\hat x_k; \hat\sigma_k))/\hat\sigma_k$ at the grid's noise
    levels $\hat\sigma_k = \sigma_{t_k}/\alpha_{t_k}$ and $p_i = \min(i + 1, p)$, one step is

    $$\hat x_{i+1} = \hat x_i + \sum_{j=0}^{p_i - 1} c_{ij}\,d_{i-j},\qquad
    c_{ij} = \int_{\hat\sigma_i}^{\hat\sigma_{i+1}}\prod_{k \ne j}\frac{\tau - \hat\sigma_{i-k}}{\hat\sigma_{i-j} - \hat\sigma_{i-k}}\,d\tau,$$

    and $x_{i+1} = \alpha_{t_{i+1}}\hat x_{i+1}$: the slope's interpolating polynomial through the last
    $p_i$ evaluations, integrated exactly over the step (order $p$ once warmed up; the first
    steps use orders 1, 2, 3). One evaluation per step. A grid that ends where the noise
    vanishes (the VP SDE at $t = 0$) ends with the same multistep step to $\hat\sigma = 0$.

    k-diffusion's grids end at $\sigma = 0$, which the VE SDE never reaches (its $\sigma_{t=0}$ is
    $\sigma_{\min}$): `to_zero=True` adds that last step, from the grid's end to
    $\hat\sigma = 0$, with one more evaluation, and returns the clean sample $\hat x$. It replaces
    `sample(..., denoise=...)` (Tweedie's first-order step to zero noise), so the two are
    not combined. `sample(VESDE(0.002, 80), score, shape, LMS(to_zero=True), steps=n - 1,
    grid=KarrasGrid(7), t_end=0.0)` is `sample_lms(model, x, get_sigmas_karras(n, 0.002, 80))`.
    diffusers' `LMSDiscreteScheduler` takes the same steps on its own sigmas (see the
    porting guide).

    Arguments:
        order: the multistep order $p$, 1 to 4 (default 4, k-diffusion's and diffusers').
        to_zero: finish with a multistep step from the grid's end to zero noise
            (k-diffusion's last step to $\sigma = 0$; default False).

    References: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of
    Diffusion-Based Generative Models*, NeurIPS 2022, eq. (3); Crowson, k-diffusion
    `sampling.py` (`sample_lms`, `linear_multistep_coeff`); Hairer, Nørsett, Wanner,
    *Solving Ordinary Differential Equations I*, section III.1 (explicit Adams methods on
    variable grids).
    """

    order: int = option(4, choices=(1, 2, 3, 4))
    to_zero: bool = option(False)
    default_steps: ClassVar[int] = 20
    default_grid: ClassVar[TimeGrid] = KarrasGrid(7.0)

    @property
    def steps_to_zero_noise(self) -> bool:  # type: ignore[override]
        return self.to_zero

    def evaluations(self, steps: int) -> int:
        return steps + int(self.to_zero)

    def run(self, ctx: SamplingContext, x: Tensor, report) -> Tensor:
        if self.to_zero and ctx.final_denoise:
            raise ValueError(
                "denoise: LMS(to_zero=True) ends at zero noise with its own multistep step;"
                " pass denoise=False (or LMS(to_zero=False) to end with sample()'s final step)"
            )
        if self.to_zero and ctx.ends_noise_free:
            raise ValueError("to_zero: the grid already ends at zero noise; use LMS(to_zero=False) on it")
        # sigma_hat_k = sigma_k / alpha_k on the grid (floats, read once; 0 where the noise vanishes)
        sigmas = (ctx.sigma / ctx.alpha).tolist()
        slopes: list[Tensor] = []  # d_i, d_{i-1}, ..., newest first
        x_hat = x / ctx.alpha[0]
        last = ctx.steps + int(self.to_zero)
        for i in range(last):
            on_grid = i < ctx.steps
            # D_i = Tweedie's denoiser at t_i; d_i = (x_hat_i - D_i) / sigma_hat_i
            denoised = ctx.denoised(ctx.alpha[i] * x_hat, i)
            slopes.insert(0, (x_hat - denoised) / sigmas[i])
            del slopes[self.order:]
            p = len(slopes)  # min(i + 1, order)
            # c_ij = integral of the Lagrange basis of sigma_hat_{i-j} from sigma_hat_i to sigma_hat_{i+1}
            coeffs = lms_coefficients(sigmas, i, p, None if on_grid else 0.0)
            # x_hat_{i+1} = x_hat_i + sum_j c_ij d_{i-j}
            x_hat = x_hat + sum(c * d for c, d in zip(coeffs, slopes))
            if on_grid:
                report(i, ctx.alpha[i + 1] * x_hat, denoised)
        return x_hat if self.to_zero else ctx.alpha[-1] * x_hat
