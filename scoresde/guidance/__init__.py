r"""Guidance as algebra on score functions.

A score is any callable `score(x, t)` returning $\nabla_x\log p_t(x)$ shaped like `x`.
Every function here takes score callables (or networks that predict $\varepsilon$, $x_0$ or
$v$) and returns another score callable, so guided, composed and interval-limited scores
plug into every sampler, corrector and solver without special cases.

| method | guided score |
|---|---|
| classifier-free guidance (Ho & Salimans 2022) | $s_u + w\,(s_c - s_u)$ |
| classifier guidance (Dhariwal & Nichol 2021) | $s + w\,\nabla_x\log p_\phi(y\mid x_t, t)$ |
| composition (Liu et al. 2022) | $s_u + \sum_i w_i\,(s_i - s_u)$, negative $w_i$ negate |
| product of experts | $\sum_i w_i\,s_i$ |
| guidance interval (Kynkäänniemi et al. 2024) | $w$ replaced by `outside` unless $\sigma \in (\sigma_{lo}, \sigma_{hi}]$ |
| guidance rescale (Lin et al. 2024) | std of the guided $\hat x_0$ (or $\hat\varepsilon$) matched to the conditional's |
| posterior sampling (DPS, PiGDM, MMPS) | $s + w\,\nabla_x\log p_t(y\mid x_t)$ for a measurement $y$ of $x_0$, through Tweedie's denoiser |

With exact scores, $s_c - s_u = \nabla_x\log p_t(y\mid x)$, so classifier-free guidance at
scale $w$ equals classifier guidance with the exact classifier at the same scale: both are
$\nabla_x\log\big[p_t(x)\,p_t(y\mid x)^w\big]$. Scale 0 is the unconditional score, 1 the
conditional one, $w > 1$ sharpens. The tests check all of it pointwise on labelled
Gaussian mixtures, where every term is closed-form.

A scale (or weight) is a number, a per-sample `(B,)` tensor, or a schedule: a callable of
the noise level $\sigma = \sigma_t/\alpha_t$ (see [`noise_level`][scoresde.guidance.noise_level])
such as [`GuidanceInterval`][scoresde.guidance.GuidanceInterval]; a schedule needs the `sde`
that maps $t$ to $\sigma$.

References: Ho & Salimans, *Classifier-Free Diffusion Guidance*, 2022; Dhariwal & Nichol,
*Diffusion Models Beat GANs on Image Synthesis*, NeurIPS 2021; Liu et al., *Compositional
Visual Generation with Composable Diffusion Models*, ECCV 2022; Kynkäänniemi et al.,
*Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in
Diffusion Models*, NeurIPS 2024; Lin et al., *Common Diffusion Noise Schedules and Sample
Steps are Flawed*, WACV 2024; Song et al., *Score-Based Generative Modeling through
Stochastic Differential Equations*, ICLR 2021 (section 5, appendix I).
"""

from ..classifier_training import noisy_classifier_loss, train_noisy_classifier
from .cfg import cfg_score, guided_score
from .classifier import classifier_gradient, classifier_guided_eps, classifier_guided_score, classifier_log_prob
from .composition import composed_score, product_of_experts
from .posterior import POSTERIOR_METHODS, LinearMeasurement, posterior_score  # noqa: F401
from .rescale import RESCALE_SPACES, rescale_guidance  # noqa: F401  (RESCALE_SPACES, Scale: module attributes)
from .scales import GuidanceInterval, Scale, noise_level  # noqa: F401

__all__ = [
    "guided_score",
    "cfg_score",
    "composed_score",
    "product_of_experts",
    "classifier_guided_score",
    "classifier_guided_eps",
    "classifier_gradient",
    "classifier_log_prob",
    "noisy_classifier_loss",
    "train_noisy_classifier",
    "GuidanceInterval",
    "noise_level",
    "rescale_guidance",
    "posterior_score",
    "LinearMeasurement",
]
