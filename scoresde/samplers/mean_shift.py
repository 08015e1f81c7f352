r"""Classifier guidance as a mean shift of the ancestral step (Dhariwal & Nichol 2021, Algorithm 1).

The reverse step $p(x_{t_{i+1}}\mid x_{t_i}) = \mathcal N(\mu, \Sigma)$ of ancestral sampling is
conditioned on a label by multiplying it with the noisy classifier $p_\phi(y\mid x_{t_{i+1}})$.
Expanding $\log p_\phi$ to first order around the mean, $\log p_\phi(y\mid x) \approx
\log p_\phi(y\mid\mu) + (x - \mu)^\top g$ with $g = \nabla_x\log p_\phi(y\mid x)\big|_{x=\mu}$,
the product is again Gaussian: $\mathcal N(\mu + \Sigma g, \Sigma)$. Algorithm 1 samples it
with a gradient scale $s$:

$$x_{t_{i+1}} \sim \mathcal N(\mu + s\,\Sigma\,g,\ \Sigma).$$

Score-level classifier guidance ([`classifier_guided_score`][scoresde.guidance.classifier_guided_score])
shifts the same mean by $(v_i/a_i)\,\nabla\log p_{t_i}(y\mid x_{t_i})$ instead: the gradient at
the current state and time rather than at the mean and the next time, and $v_i/a_i$ rather
than $\Sigma$. The two agree to $O(h^2)$ per step, so both sample the conditional as the
steps shrink, and they differ at a finite number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from torch import Tensor

from ..guidance._checks import _finite_number
from ..guidance.classifier import classifier_gradient
from .base import Sampler, SamplingContext

__all__ = ["MeanShiftGuidance"]

#: Where the classifier's gradient is taken.
MEAN_SHIFT_AT = ("mean", "state")


@dataclass(frozen=True)
class MeanShiftGuidance(Sampler):
    r"""Ancestral sampling with the classifier's gradient as a shift of each step's mean (Algorithm 1).

    With the ancestral step's mean $\mu = (x_{t_i} + v_i\,s(x_{t_i}, t_i))/a_i$ and variance
    $\Sigma$ (see [`Ancestral`][scoresde.samplers.Ancestral]), one step is
    $x_{t_{i+1}} = \mu + s\,\Sigma\,g + \sqrt\Sigma\,z$. The `score` passed to `sample` is the
    unconditional one; the condition enters only through `log_prob_y`.

    Arguments:
        log_prob_y: the noisy classifier `log_prob_y(x, t) -> (B,)`, e.g. from
            [`classifier_log_prob`][scoresde.guidance.classifier_log_prob].
        scale: the gradient scale $s$ (1 targets $p(x\mid y)$).
        at: `"mean"` (default, the derivation's $g = \nabla\log p_\phi(y\mid x_{t_{i+1}})$ at
            $x_{t_{i+1}} = \mu$) or `"state"` (what the authors' code evaluates: the gradient at
            $x_{t_i}$ and time $t_i$).
        variance: `"posterior"` or `"transition"`, as for `Ancestral`.

    Reference: Dhariwal & Nichol, *Diffusion Models Beat GANs on Image Synthesis*,
    NeurIPS 2021, section 4.1, Algorithm 1.
    """

    log_prob_y: Callable[[Tensor, Tensor], Tensor]
    scale: float = 1.0
    at: str = "mean"
    variance: str = "posterior"
    default_steps: ClassVar[int] = 1000
    stochastic: ClassVar[bool] = True

    def __post_init__(self):
        if not callable(self.log_prob_y):
            raise TypeError(f"log_prob_y: expected a callable log_prob_y(x, t) -> (B,), got {type(self.log_prob_y).__name__}")
        object.__setattr__(self, "scale", _finite_number("scale", self.scale))
        if self.at not in MEAN_SHIFT_AT:
            raise ValueError(f"at: expected one of {MEAN_SHIFT_AT}, got {self.at!r}")
        if self.variance not in ("posterior", "transition"):
            raise ValueError(f"variance: expected 'posterior' or 'transition', got {self.variance!r}")

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: Any):
        a, v, _ = ctx.transition(i)
        score = ctx.score(x, i)
        # mu = (x + v_i s(x, t_i)) / a_i
        mean = (x + v * score) / a
        # Sigma = sigma_{i+1}^2 v_i / sigma_i^2 (posterior) or v_i (transition)
        var = v * (ctx.sigma[i + 1] / ctx.sigma[i]) ** 2 if self.variance == "posterior" else v
        # g = grad log p_phi(y | x) at x = mu, time t_{i+1} (or at x_{t_i}, time t_i)
        g = classifier_gradient(self.log_prob_y, mean, ctx.t_grid[i + 1]) if self.at == "mean" else (
            classifier_gradient(self.log_prob_y, x, ctx.t_grid[i])
        )
        # x_{i+1} = mu + s Sigma g + sqrt(Sigma) z
        x_next = mean + self.scale * var * g + var.sqrt() * ctx.randn()
        return x_next, ctx.denoised(x, i, score)
