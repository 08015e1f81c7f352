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

from .._checks import Options, option
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

    variance: str = option("posterior", choices=("posterior", "transition"))
    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

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


#: the step-size rules of `LangevinCorrector(norms=...)`
CORRECTOR_NORMS = ("sample", "noise", "batch")


@dataclass(frozen=True)
class LangevinCorrector(Options):
    r"""Langevin MCMC steps at a fixed noise level, with step sizes from a target signal-to-noise ratio.

    For $j = 1..M$ at time $t$: $g = \nabla\log p_t(x)$, $z \sim \mathcal N(0, I)$,
    $\epsilon = 2\alpha\,(r\,\lVert z\rVert/\lVert g\rVert)^2$, $x \leftarrow x + \epsilon g + \sqrt{2\epsilon}\,z$,
    where $r$ is the SNR and $\alpha = a_i^2$ of the step just taken ($1 - \beta_i$ for the VP SDE,
    1 for the VE SDE). Song et al.'s code averages both norms over the batch, so a sample
    depends on its batch; here, unless `norms="batch"` asks for that rule, no sample does:

    * `norms="sample"` (default): the norms of each sample, so each sample has its own
      step size. In high dimensions this is the batch rule ($\lVert z\rVert^2 \approx D$,
      $\lVert g\rVert^2 \approx E\lVert g\rVert^2$). In low dimensions it is biased: the step then
      depends on the state, $\epsilon(x) \propto 1/\lVert g(x)\rVert^2$, and Langevin dynamics with a
      state-dependent step leaves $p_t/\epsilon \propto p_t\lVert g\rVert^2$ invariant rather than $p_t$
      (for a Gaussian in $D$ dimensions the variance grows by $(D+2)/D$: 3% at $D = 64$,
      negligible for images, a factor 2 in 2-D).
    * `norms="noise"`: the norms the rule has when noise dominates, $\lVert z\rVert^2 = D$ and
      $\lVert g\rVert^2 = D/\sigma_t^2$ (the largest Fisher information any $p_t$ can have, Stam's
      inequality), i.e. $\epsilon = 2\alpha r^2\sigma_t^2$: the same for every sample and state, so
      unbiased (up to Langevin's own $O(\epsilon)$ error) in any dimension, and no larger than
      the batch rule's step.
    * `norms="batch"`: score_sde_pytorch's `LangevinCorrector` (and `impute`'s `"batch"`):
      $\epsilon = 2\alpha\,(r\,\overline{\lVert z\rVert}/\overline{\lVert g\rVert})^2$ with both norms averaged
      over the batch, one step for all samples, so a sample depends on the rest of its batch.
      With `max_step=None` (score_sde has no cap) it is that code's update.

    Near a mode $\lVert g\rVert$ can come arbitrarily close to 0, which would make a per-sample
    step huge. The log-density of $p_t$ has curvature at most $1/\sigma_t^2$
    ($-\nabla^2\log p_t \preceq I/\sigma_t^2$, as $p_t$ is a Gaussian smoothing of width $\sigma_t$),
    and Langevin steps above $2\sigma_t^2$ are unstable on some data, so $\epsilon$ is capped at
    `max_step` $\times\,\sigma_t^2$.

    Arguments:
        snr: the signal-to-noise ratio $r > 0$ (0.16 for VE on CIFAR-10 in Song et al.).
        n_steps: Langevin steps per noise level $M \ge 1$.
        norms: `"sample"` (default), `"noise"` or `"batch"` (score_sde_pytorch's rule), see above.
        max_step: the cap on $\epsilon$ in units of $\sigma_t^2$ (default 1, the inverse
            curvature bound); None removes it.

    Reference: Song et al., ICLR 2021, Algorithms 4 and 5 (appendix G); Stam, *Some
    inequalities satisfied by the quantities of information of Fisher and Shannon*, 1959.
    """

    snr: float = option(0.16, gt=0.0)
    n_steps: int = option(1, ge=1)
    norms: str = option("sample", choices=CORRECTOR_NORMS)
    max_step: float | None = option(1.0, gt=0.0)

    def step_size(self, grad: Tensor, z: Tensor, sigma2: Tensor, alpha: Tensor | float) -> Tensor:
        r"""The step $\epsilon$ of each sample, `(B,)`, for the score `grad` and the noise `z` at noise level $\sigma_t^2$."""
        if self.norms == "sample":
            # eps = 2 alpha (r ||z|| / ||g||)^2, per sample
            g_norm = grad.flatten(1).norm(dim=1)
            eps = 2.0 * alpha * (self.snr * z.flatten(1).norm(dim=1) / g_norm) ** 2
            eps = torch.where(g_norm > 0, eps, torch.zeros_like(eps))
        elif self.norms == "batch":
            # eps = 2 alpha (r mean||z|| / mean||g||)^2, one step for the batch (score_sde_pytorch)
            g_norm = grad.flatten(1).norm(dim=1).mean()
            eps = 2.0 * alpha * (self.snr * z.flatten(1).norm(dim=1).mean() / g_norm) ** 2
            eps = torch.where(g_norm > 0, eps, torch.zeros_like(eps)).expand(grad.shape[0])
        else:
            # eps = 2 alpha r^2 sigma_t^2 (||z||^2 = D, ||g||^2 = D / sigma_t^2)
            eps = (2.0 * alpha * self.snr**2 * sigma2) * grad.new_ones(grad.shape[0])
        if self.max_step is not None:
            # eps <= max_step sigma_t^2, the stability bound of the curvature
            eps = torch.minimum(eps, self.max_step * sigma2)
        return eps

    def correct(self, ctx: SamplingContext, x: Tensor, i: int, alpha: Tensor) -> Tensor:
        """Run the `n_steps` Langevin steps at grid time $t_i$ with the factor $\alpha$."""
        sigma2 = ctx.sigma[i] ** 2
        for _ in range(self.n_steps):
            # g = s(x, t_i); z ~ N(0, I)
            grad = ctx.score(x, i)
            z = ctx.randn()
            eps = self.step_size(grad, z, sigma2, alpha)
            # x <- x + eps g + sqrt(2 eps) z
            x = x + ctx.b(eps) * grad + ctx.b((2.0 * eps).sqrt()) * z
        return x


@dataclass(frozen=True)
class PredictorCorrector(Sampler):
    r"""Predictor-corrector sampling: a predictor step to $t_{i+1}$, then corrector steps at $t_{i+1}$.

    Any one-step sampler predicts (`ReverseDiffusion`, `Ancestral`, `ReverseSDESampler`, `DDIM`,
    ...); the [`LangevinCorrector`][scoresde.samplers.reverse.LangevinCorrector] corrects the
    marginal at the new time with score-based MCMC. `predictor=None` gives corrector-only
    sampling (Song et al.'s view of NCSN's annealed Langevin dynamics); `corrector=None`
    the predictor alone.

    With `corrector_first=True` each step corrects at $t_i$ first and then predicts to
    $t_{i+1}$, the order of score_sde_pytorch's `pc_sampler` (its corrector's $\alpha$ is then
    $a_i^2$ of the step about to be taken, as that code's `sde.alphas[timestep]`); the run
    then corrects at $t_0 = T$ and not after its last predictor step.

    Arguments:
        predictor: a sampler instance, or None.
        corrector: a `LangevinCorrector`, or None.
        corrector_first: correct before predicting (score_sde_pytorch's order; default False).

    Reference: Song et al., ICLR 2021, Algorithm 1 (PC sampling) and appendix G.
    """

    predictor: Sampler | None = ReverseDiffusion()
    corrector: LangevinCorrector | None = LangevinCorrector()
    corrector_first: bool = option(False)
    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        super().__post_init__()
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
        if self.corrector is not None and self.corrector_first:
            # corrector first (score_sde_pytorch): Langevin steps targeting p_{t_i}
            a, _, _ = ctx.transition(i)
            x = self.corrector.correct(ctx, x, i, a * a)
        # predictor: x_{i+1} from x_i
        if self.predictor is not None:
            x, denoised = self.predictor.step(ctx, x, i, state)
        # corrector: Langevin steps targeting p_{t_{i+1}}
        if self.corrector is not None and not self.corrector_first:
            a, _, _ = ctx.transition(i)
            x = self.corrector.correct(ctx, x, i + 1, a * a)
        return x, denoised
