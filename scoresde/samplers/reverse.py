r"""Reverse-SDE samplers: the reverse-diffusion predictor, ancestral sampling, predictor-corrector.

Each works from the SDE's exact discretisation on the grid (see
[`SamplingContext.transition`][scoresde.samplers.base.SamplingContext.transition]): the forward
step $x_{t_i} = a_i x_{t_{i+1}} + \sqrt{v_i}\,z$ with $a_i = \alpha_{t_i}/\alpha_{t_{i+1}}$ and
$v_i = \sigma_{t_i}^2 - a_i^2\sigma_{t_{i+1}}^2$, which is DDPM's chain for the VP SDE
($a_i = \sqrt{1-\beta_i}$, $v_i = \beta_i$) and NCSN's for the VE SDE ($a_i = 1$,
$v_i = \sigma_i^2 - \sigma_{i-1}^2$). No sampler branches on the type of SDE.

Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021, section 4 and appendices E, F, G.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._checks import check_int, check_positive_finite
from .base import Sampler, SamplingContext

__all__ = ["ReverseDiffusion", "Ancestral", "LangevinCorrector", "PredictorCorrector"]


@dataclass(frozen=True)
class ReverseDiffusion(Sampler):
    r"""The reverse-diffusion predictor: the forward discretisation run backwards.

    With the forward step $x_{t_i} = x_{t_{i+1}} + f_i(x_{t_{i+1}}) + G_i z$, where
    $f_i(x) = (a_i - 1)x$ and $G_i^2 = v_i$ (see the module), one step is

    $$x_{t_{i+1}} = x_{t_i} - f_i(x_{t_i}) + G_i^2\,\nabla\log p_{t_i}(x_{t_i}) + G_i z.$$

    Reference: Song et al., ICLR 2021, eq. (46) (appendix E).
    """

    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: Any):
        a, v, _ = ctx.transition(i)
        score = ctx.score(x, i)
        # x_mean = x - f_i(x) + G_i^2 s(x, t_i)
        x_mean = x - (a - 1.0) * x + v * score
        # x_next = x_mean + G_i z
        x_next = x_mean + v.sqrt() * ctx.randn()
        return x_next, ctx.denoised(x, i, score)


@dataclass(frozen=True)
class Ancestral(Sampler):
    r"""Ancestral sampling: draw $x_{t_{i+1}}$ from the forward posterior with $x_0$ replaced by Tweedie's estimate.

    The posterior $q(x_{t_{i+1}} \mid x_{t_i}, x_0)$ of the Gaussian chain is
    $\mathcal N\big(\tfrac{a_i\sigma_{t_{i+1}}^2}{\sigma_{t_i}^2} x_{t_i} + \tfrac{\alpha_{t_{i+1}} v_i}{\sigma_{t_i}^2} x_0,\;
    \tfrac{\sigma_{t_{i+1}}^2 v_i}{\sigma_{t_i}^2} I\big)$; with
    $\hat x_0 = (x_{t_i} + \sigma_{t_i}^2 s)/\alpha_{t_i}$ its mean is

    $$\mu = \frac{1}{a_i}\big(x_{t_i} + v_i\,\nabla\log p_{t_i}(x_{t_i})\big),$$

    which for the VP SDE is DDPM's $\frac{1}{\sqrt{1-\beta_i}}(x_i + \beta_i s)$ (Ho et al. eq. 11)
    and for the VE SDE NCSN's $x_i + (\sigma_i^2 - \sigma_{i-1}^2)s$ (Song et al. 2021, eq. 47).

    Arguments:
        variance: `"posterior"` (default) draws with the posterior variance
            $\tilde\beta_i = \sigma_{t_{i+1}}^2 v_i/\sigma_{t_i}^2$ (DDPM's $\tilde\beta_i$, and the
            variance of Song et al.'s VE ancestral sampler); `"transition"` with $v_i$ (DDPM's
            $\sigma_i^2 = \beta_i$, used by Song et al.'s VP ancestral sampler).

    References: Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic Models*, NeurIPS 2020,
    Algorithm 2; Song et al., ICLR 2021, appendix F.
    """

    variance: str = "posterior"
    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        if self.variance not in ("posterior", "transition"):
            raise ValueError(f"variance: expected 'posterior' or 'transition', got {self.variance!r}")

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: Any):
        a, v, _ = ctx.transition(i)
        score = ctx.score(x, i)
        # mu = (x + v_i s(x, t_i)) / a_i
        mean = (x + v * score) / a
        # var = sigma_{i+1}^2 v_i / sigma_i^2 (posterior) or v_i (transition)
        var = v * (ctx.sigma[i + 1] / ctx.sigma[i]) ** 2 if self.variance == "posterior" else v
        # x_{i+1} = mu + sqrt(var) z
        x_next = mean + var.sqrt() * ctx.randn()
        return x_next, ctx.denoised(x, i, score)


@dataclass(frozen=True)
class LangevinCorrector:
    r"""Langevin MCMC steps at a fixed noise level, with step sizes from a target signal-to-noise ratio.

    For $j = 1..M$ at time $t$: $g = \nabla\log p_t(x)$, $z \sim \mathcal N(0, I)$,
    $\epsilon = 2\alpha\,(r\,\lVert z\rVert/\lVert g\rVert)^2$, $x \leftarrow x + \epsilon g + \sqrt{2\epsilon}\,z$,
    where $r$ is the SNR and $\alpha = a_i^2$ of the step just taken ($1 - \beta_i$ for the VP SDE,
    1 for the VE SDE). The norms are taken **per sample**, so each sample gets its own step
    size and does not depend on the rest of its batch (Song et al.'s code uses norms
    averaged over the batch).

    Per-sample norms need a guard the batch mean did not: near a mode $\lVert g\rVert$ can be
    arbitrarily small (in $D$ dimensions $\lVert x - \mu\rVert^2/v$ is $\chi^2_D$, and
    $1/\chi^2_D$ has no mean for $D \le 2$), which would give a huge step. Since
    $p_t = p_0 * \mathcal N(0, \sigma_t^2 I)$ (after scaling by $\alpha_t$), its log-density has
    curvature at most $1/\sigma_t^2$ ($-\nabla^2\log p_t \preceq I/\sigma_t^2$), so Langevin steps
    above $2\sigma_t^2$ are unstable on some data; $\epsilon$ is therefore capped at
    `max_step` $\times\,\sigma_t^2$. For image-sized data the SNR rule's steps are far below the
    cap ($\epsilon \approx 2r^2\sigma_t^2$), so it only acts on the rare degenerate sample.

    Arguments:
        snr: the signal-to-noise ratio $r > 0$ (0.16 for VE on CIFAR-10 in Song et al.).
        n_steps: Langevin steps per noise level $M \ge 1$.
        max_step: the cap on $\epsilon$ in units of $\sigma_t^2$ (default 1, the inverse
            curvature bound); None removes it.

    Reference: Song et al., ICLR 2021, Algorithms 4 and 5 (appendix G).
    """

    snr: float = 0.16
    n_steps: int = 1
    max_step: float | None = 1.0

    def __post_init__(self):
        check_positive_finite("snr", self.snr)
        check_int("n_steps", self.n_steps)
        if self.max_step is not None:
            check_positive_finite("max_step", self.max_step)

    def correct(self, ctx: SamplingContext, x: Tensor, i: int, alpha: Tensor) -> Tensor:
        """Run the `n_steps` Langevin steps at grid time $t_i$ with the factor $\\alpha$."""
        for _ in range(self.n_steps):
            # g = s(x, t_i); z ~ N(0, I)
            grad = ctx.score(x, i)
            z = ctx.randn()
            # eps = 2 alpha (r ||z|| / ||g||)^2, per sample
            g_norm = grad.flatten(1).norm(dim=1)
            z_norm = z.flatten(1).norm(dim=1)
            eps = 2.0 * alpha * (self.snr * z_norm / g_norm) ** 2
            eps = torch.where(g_norm > 0, eps, torch.zeros_like(eps))
            if self.max_step is not None:
                # eps <= max_step sigma_t^2, the stability bound of the curvature
                eps = torch.clamp(eps, max=self.max_step * ctx.sigma[i] ** 2)
            # x <- x + eps g + sqrt(2 eps) z
            x = x + ctx.b(eps) * grad + ctx.b((2.0 * eps).sqrt()) * z
        return x


@dataclass(frozen=True)
class PredictorCorrector(Sampler):
    r"""Predictor-corrector sampling: a predictor step to $t_{i+1}$, then corrector steps at $t_{i+1}$.

    Any one-step sampler predicts (`ReverseDiffusion`, `Ancestral`, `EulerMaruyama`, `DDIM`,
    ...); the [`LangevinCorrector`][scoresde.samplers.reverse.LangevinCorrector] corrects the
    marginal at the new time with score-based MCMC. `predictor=None` gives corrector-only
    sampling (Song et al.'s view of NCSN's annealed Langevin dynamics); `corrector=None`
    the predictor alone.

    Arguments:
        predictor: a sampler instance, or None.
        corrector: a `LangevinCorrector`, or None.

    Reference: Song et al., ICLR 2021, Algorithm 1 (PC sampling) and appendix G.
    """

    predictor: Sampler | None = ReverseDiffusion()
    corrector: LangevinCorrector | None = LangevinCorrector()
    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        if self.predictor is not None and not isinstance(self.predictor, Sampler):
            raise TypeError(f"predictor: expected a sampler instance or None, got {self.predictor!r}")
        if isinstance(self.predictor, PredictorCorrector):
            raise TypeError("predictor: a PredictorCorrector cannot be the predictor of another")
        if self.corrector is not None and not isinstance(self.corrector, LangevinCorrector):
            raise TypeError(f"corrector: expected a LangevinCorrector or None, got {self.corrector!r}")
        if self.predictor is None and self.corrector is None:
            raise ValueError("predictor, corrector: at least one of them must be given")

    def evaluations(self, steps: int) -> int:
        p = self.predictor.evaluations(steps) if self.predictor is not None else 0
        c = steps * self.corrector.n_steps if self.corrector is not None else 0
        return p + c

    def check(self, sde, ts):
        if self.predictor is not None:
            self.predictor.check(sde, ts)

    def init(self, ctx, x):
        return self.predictor.init(ctx, x) if self.predictor is not None else None

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: Any):
        denoised = None
        # predictor: x_{i+1} from x_i
        if self.predictor is not None:
            x, denoised = self.predictor.step(ctx, x, i, state)
        # corrector: Langevin steps targeting p_{t_{i+1}}
        if self.corrector is not None:
            a, _, _ = ctx.transition(i)
            x = self.corrector.correct(ctx, x, i + 1, a * a)
        return x, denoised
