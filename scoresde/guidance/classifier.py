r"""Classifier guidance (Dhariwal & Nichol 2021): a score plus the gradient of a noisy classifier's log-probability.

The gradient $\nabla_x\log p_\phi(y\mid x_t, t)$ is taken by autograd enabled locally, so
guided sampling runs under `torch.no_grad()`. The classifier is trained on the diffusion's
own noise with [`train_noisy_classifier`][scoresde.guidance.train_noisy_classifier].

References: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021 (section 5, appendix I); Dhariwal & Nichol, *Diffusion Models Beat
GANs on Image Synthesis*, NeurIPS 2021, section 4.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .._checks import values_on_host, append_dims, as_time, check_batched, describe
from ..classifier_training import check_labels, classifier_logits
from ..sde import SDE
from ._checks import ScoreFn, _check_callable, _check_output, _check_sde
from .scales import Scale, _check_scale, _level, _needs_sde, _resolve_scale


# ---------------------------------------------------------------------- classifier guidance
def classifier_gradient(log_prob_y: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float | Tensor) -> Tensor:
    r"""$\nabla_x\log p_\phi(y\mid x_t = x, t)$ by autograd, enabled locally.

    Works inside `torch.no_grad()` and `torch.inference_mode()` (sampling loops): the
    gradient is taken on a fresh leaf copy of `x`, and nothing accumulates in the
    classifier's parameters.

    Arguments:
        log_prob_y: `log_prob_y(x, t) -> (B,)`, the log-probability of the target label of each sample.
        x: the noisy samples `(B, ...)`.
        t: a number or a `(B,)` tensor.

    Returns:
        The gradient, shaped like `x` (detached).
    """
    x = check_batched("x", x)
    _check_callable("log_prob_y", log_prob_y)
    with torch.inference_mode(False), torch.enable_grad():
        x_in = x.detach().clone().requires_grad_(True)
        lp = log_prob_y(x_in, t)
        if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
            got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise ValueError(f"log_prob_y: expected an output of shape ({x.shape[0]},), one log-probability per sample, got {got}")
        if not lp.requires_grad:
            raise ValueError(
                "log_prob_y: its output does not depend on x through autograd"
                " (computed under torch.no_grad(), detached, or through a non-differentiable step)"
            )
        (grad,) = torch.autograd.grad(lp.sum(), x_in, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad

class _ClassifierGuided:
    def __init__(self, fn, log_prob_y, scale, sde, form):
        self.fn, self.log_prob_y, self.scale, self.sde, self.form = fn, log_prob_y, scale, sde, form

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_batched("x", x)
        name = "score" if self.form == "score" else "eps"
        base = _check_output(name, self.fn(x, t), x)
        w = _resolve_scale("scale", self.scale, x, lambda: _level(self.sde, x, t))
        grad = classifier_gradient(self.log_prob_y, x, t)
        if self.form == "score":
            return base + w * grad
        _, sigma = self.sde.marginal(as_time(t, like=x))
        return base - w * append_dims(sigma, x.ndim) * grad

    def __repr__(self) -> str:
        s = describe(self.scale) if isinstance(self.scale, Tensor) else repr(self.scale)
        return f"ClassifierGuided{'Score' if self.form == 'score' else 'Eps'}(scale={s})"

def classifier_guided_score(
    score: ScoreFn,
    log_prob_y: Callable[[Tensor, Tensor], Tensor],
    scale: Scale,
    *,
    sde: SDE | None = None,
) -> ScoreFn:
    r"""Classifier guidance: $s(x, t) + w\,\nabla_x\log p_\phi(y\mid x_t = x, t)$.

    With the exact noisy classifier $p_t(y\mid x)$ and $s = \nabla\log p_t$, scale 1 gives
    the conditional score $\nabla\log p_t(x\mid y)$ (Bayes' rule) and scale $w$ the score
    of $p_t(x)\,p_t(y\mid x)^w$. The gradient is taken with autograd enabled locally, so
    sampling can run under `torch.no_grad()`. `score` may itself be guided: classifier
    guidance on top of classifier-free guidance is
    `classifier_guided_score(guided_score(u, c, w1), log_prob_y, w2)`.

    Arguments:
        score: the score to guide, `score(x, t)` (unconditional or conditional).
        log_prob_y: `log_prob_y(x, t) -> (B,)`, the classifier's log-probability of the target
            label (see [`classifier_log_prob`][scoresde.guidance.classifier_log_prob]).
        scale: $w$: a finite number, a `(B,)` tensor or a noise-level schedule (needs `sde`).
        sde: the SDE, needed for schedules.

    Returns:
        A score callable.

    Reference: Song et al., ICLR 2021, section 5 and appendix I.1; Dhariwal & Nichol, NeurIPS 2021, section 4.
    """
    _check_callable("score", score)
    _check_callable("log_prob_y", log_prob_y)
    scale = _check_scale("scale", scale)
    if sde is not None:
        _check_sde("sde", sde)
    elif _needs_sde(scale):
        raise ValueError("sde: a scale schedule (e.g. GuidanceInterval) maps the noise level, so it needs sde=; got None")
    return _ClassifierGuided(score, log_prob_y, scale, sde, "score")

def classifier_guided_eps(
    eps: Callable[[Tensor, Tensor], Tensor],
    log_prob_y: Callable[[Tensor, Tensor], Tensor],
    scale: Scale,
    sde: SDE,
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""Classifier guidance in the $\varepsilon$ form: $\hat\varepsilon - w\,\sigma_t\,\nabla_x\log p_\phi(y\mid x_t, t)$.

    Dhariwal & Nichol's Algorithm 2 (with $\sigma_t = \sqrt{1-\bar\alpha_t}$ for DDPM), for
    samplers that consume $\varepsilon$ (DDIM). Since $\varepsilon = -\sigma_t\,s$ it is
    exactly the $\varepsilon$ of [`classifier_guided_score`][scoresde.guidance.classifier_guided_score],
    for every SDE.

    Arguments:
        eps: the noise prediction `eps(x, t)`.
        log_prob_y: `log_prob_y(x, t) -> (B,)`.
        scale: $w$ (number, `(B,)` tensor or noise-level schedule).
        sde: the SDE, for $\sigma_t$.

    Returns:
        A callable `guided_eps(x, t)` returning the guided noise prediction (not a score).

    Reference: Dhariwal & Nichol, *Diffusion Models Beat GANs on Image Synthesis*,
    NeurIPS 2021, section 4.2, Algorithm 2.
    """
    _check_callable("eps", eps)
    _check_callable("log_prob_y", log_prob_y)
    _check_sde("sde", sde)
    return _ClassifierGuided(eps, log_prob_y, _check_scale("scale", scale), sde, "eps")

def _time_input(t, x: Tensor, T: float | None, time_input) -> Tensor:
    t = as_time(t, like=x, T=T)
    if t.ndim == 0 or t.shape[0] != x.shape[0]:
        t = t.expand(x.shape[0])
    return time_input(t) if time_input is not None else t

class _ClassifierLogProb:
    def __init__(self, classifier, y, time_input):
        self.classifier, self.y, self.time_input = classifier, y, time_input

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_batched("x", x)
        y = check_labels(self.y, x.shape[0], x.device)
        logits = classifier_logits(self.classifier, x, _time_input(t, x, None, self.time_input))
        if values_on_host(y) and bool(((y < 0) | (y >= logits.shape[1])).any()):
            raise ValueError(f"y: expected labels in [0, {logits.shape[1]}), got {y.tolist()}")
        return torch.log_softmax(logits, dim=-1).gather(1, y[:, None]).squeeze(1)

    def __repr__(self) -> str:
        return f"ClassifierLogProb({self.classifier!r})"

def classifier_log_prob(
    classifier: Callable[[Tensor, Tensor], Tensor],
    y: int | Tensor,
    *,
    time_input: Callable[[Tensor], Tensor] | None = None,
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""The `log_prob_y(x, t)` of a noisy classifier for labels `y`: $\log\operatorname{softmax}(f_\phi(x_t, t))_y$.

    Arguments:
        classifier: `classifier(x, t_in) -> logits (B, num_classes)`, trained on noisy data
            (see [`train_noisy_classifier`][scoresde.guidance.train_noisy_classifier]).
        y: the target label: an int, or a `(B,)` integer tensor (its size must match the batch).
        time_input: optional map from the continuous `t` `(B,)` to the classifier's time input.

    Returns:
        A callable `log_prob_y(x, t) -> (B,)` for [`classifier_guided_score`][scoresde.guidance.classifier_guided_score].
    """
    _check_callable("classifier", classifier)
    if time_input is not None:
        _check_callable("time_input", time_input)
    if isinstance(y, Tensor) and y.ndim > 1:
        raise ValueError(f"y: expected an int or a (B,) tensor of labels, got shape {tuple(y.shape)}")
    check_labels(y, y.shape[0] if isinstance(y, Tensor) and y.ndim == 1 else 1, None)
    return _ClassifierLogProb(classifier, y, time_input)

