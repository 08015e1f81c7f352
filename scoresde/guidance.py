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

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from ._checks import append_dims, as_time, check_batched, check_float_tensor, check_int, describe, validation_enabled
from .inpainting import IMPUTE_PREDICTORS, impute, replace_known
from .parameterization import PREDICTIONS, ScoreModel, convert

if TYPE_CHECKING:
    from .sde import SDE

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
    "impute",
    "replace_known",
    "IMPUTE_PREDICTORS",
]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
#: A guidance scale: a number, a per-sample `(B,)` tensor, or a schedule `sigma -> scale`.
Scale = Union[float, Tensor, Callable[[Tensor], Tensor]]

#: Where guidance rescale may be applied (any parameterisation but the score itself works).
RESCALE_SPACES = ("x0", "eps", "v", "score")


# ---------------------------------------------------------------------- noise level
def noise_level(sde: SDE, t: float | Tensor) -> Tensor:
    r"""The noise level $\sigma = \sigma_t/\alpha_t = e^{-\lambda_t/2}$ of `sde` at time `t`.

    This is the $\sigma$ of Karras et al. (EDM) for every SDE: $x_t/\alpha_t = x_0 + \sigma\,\varepsilon$.
    For the VE SDE it is $\sigma_t$ itself, for the VP SDE $\sqrt{(1-\bar\alpha)/\bar\alpha}$.
    Guidance intervals are set in this $\sigma$, so published intervals (given in EDM's
    $\sigma$) carry over to every SDE.

    Arguments:
        sde: a [`SDE`][scoresde.SDE].
        t: a number or a `(B,)` tensor of times in $[0, T]$.

    Returns:
        $\sigma$, shaped like `t`.
    """
    _check_sde("sde", sde)
    alpha, sigma = sde._marginal(as_time(t, T=sde.T))
    return sigma / alpha


def _level(sde, x: Tensor, t) -> Tensor:
    alpha, sigma = sde._marginal(as_time(t, like=x, T=sde.T))
    return sigma / alpha


# ---------------------------------------------------------------------- scales
@dataclass(frozen=True)
class GuidanceInterval:
    r"""A guidance scale applied only in a band of noise levels (Kynkäänniemi et al. 2024).

    As a schedule of the noise level $\sigma = \sigma_t/\alpha_t$ it returns `scale` when
    $\sigma_{lo} < \sigma \le \sigma_{hi}$ (the paper's half-open interval) and `outside`
    elsewhere. With the default `outside=1`, classifier-free guidance outside the band is
    the plain conditional score (no guidance), as in the paper; classifier guidance of an
    unconditional score likewise reduces to the exact conditional score there. Use
    `outside=0` to switch a classifier or a composed condition off.

    Kynkäänniemi et al. report, for EDM2-S on ImageNet-512, $w = 2.1$ on
    $\sigma \in (0.28, 2.9]$ (their $w$ is our `scale`).

    Arguments:
        scale: the guidance scale inside the interval, a finite number.
        sigma_lo: lower end, $\ge 0$ (excluded).
        sigma_hi: upper end, $> \sigma_{lo}$ (included; may be `math.inf`).
        outside: the scale outside the interval, default 1.

    Example:
        ```python
        guided = guided_score(uncond, cond, GuidanceInterval(2.1, 0.28, 2.9), sde=sde)
        ```
    """

    scale: float
    sigma_lo: float
    sigma_hi: float
    outside: float = 1.0

    def __post_init__(self):
        for name in ("scale", "outside"):
            object.__setattr__(self, name, _finite_number(name, getattr(self, name)))
        for name in ("sigma_lo", "sigma_hi"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name}: expected a real number, got {v!r}")
            if math.isnan(v) or v < 0:
                raise ValueError(f"{name}: expected a noise level >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not self.sigma_lo < self.sigma_hi:
            raise ValueError(
                f"sigma_hi: expected a value > sigma_lo = {self.sigma_lo!r}, got {self.sigma_hi!r}"
            )

    def contains(self, sigma: Tensor) -> Tensor:
        r"""Whether each noise level lies in $(\sigma_{lo}, \sigma_{hi}]$ (a bool tensor)."""
        return (sigma > self.sigma_lo) & (sigma <= self.sigma_hi)

    def __call__(self, sigma: Tensor) -> Tensor:
        inside = torch.full_like(sigma, self.scale)
        return torch.where(self.contains(sigma), inside, torch.full_like(sigma, self.outside))


def _finite_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


def _check_scale(name: str, scale) -> Scale:
    """A number (finite), a 0-d or (B,) floating tensor (finite) or a schedule callable."""
    if isinstance(scale, Tensor):
        check_float_tensor(name, scale)
        if scale.ndim > 1:
            raise ValueError(f"{name}: expected a number or a (B,) tensor, got shape {tuple(scale.shape)}")
        if not bool(torch.isfinite(scale).all()):  # once, at construction
            raise ValueError(f"{name}: expected finite scales, got {describe(scale)} with NaN or inf")
        return scale
    if callable(scale) and not isinstance(scale, (int, float)):
        return scale
    return _finite_number(name, scale)


def _needs_sde(scale) -> bool:
    return callable(scale) and not isinstance(scale, (Tensor, int, float))


def _resolve_scale(name: str, scale, x: Tensor, level: Callable[[], Tensor]) -> float | Tensor:
    """The scale at (x, t), shaped to multiply x: a float, or a (B, 1, ..., 1) / 0-d tensor."""
    if isinstance(scale, float):
        return scale
    if not isinstance(scale, Tensor):
        sigma = level()
        scale = scale(sigma)
        if not isinstance(scale, Tensor):
            scale = torch.as_tensor(scale, device=x.device, dtype=x.dtype)
        if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] not in (1, x.shape[0])):
            raise ValueError(
                f"{name}: the schedule returned shape {tuple(scale.shape)}, expected a scalar or ({x.shape[0]},)"
            )
        if validation_enabled() and not bool(torch.isfinite(scale).all()):
            raise ValueError(f"{name}: the schedule returned a NaN or infinite scale")
    elif scale.ndim == 1 and scale.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name}: expected a number or a ({x.shape[0]},) tensor to match the batch of x, got shape {tuple(scale.shape)}"
        )
    return append_dims(scale.to(device=x.device, dtype=x.dtype), x.ndim)


# ---------------------------------------------------------------------- shared checks
def _check_sde(name: str, sde) -> None:
    from .sde import SDE

    if not isinstance(sde, SDE):
        raise TypeError(f"{name}: expected a scoresde.SDE (VPSDE, SubVPSDE, VESDE, ...), got {type(sde).__name__}")


def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable {name}(x, t), got {type(fn).__name__}")


def _check_prediction(prediction: str, sde, rescale: float, rescale_space: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
    if rescale_space not in RESCALE_SPACES:
        raise ValueError(f"rescale_space: expected one of {RESCALE_SPACES}, got {rescale_space!r}")
    if sde is not None:
        _check_sde("sde", sde)
    elif prediction != "score":
        raise ValueError(f"sde: needed to convert prediction={prediction!r} to a score (alpha_t, sigma_t); got None")
    elif rescale and rescale_space != "score":
        raise ValueError(
            f"sde: needed to apply the rescale in rescale_space={rescale_space!r}; got None"
            " (pass the SDE, or rescale_space='score')"
        )


def _check_rescale(rescale) -> float:
    rescale = _finite_number("rescale", rescale)
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale: expected phi in [0, 1], got {rescale!r}")
    return rescale


def _check_output(name: str, out, x: Tensor) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name}: expected an output shaped like x, {tuple(x.shape)}, got {got}")
    return out


# ---------------------------------------------------------------------- guidance rescale
def rescale_guidance(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    r"""Guidance rescale (Lin et al. 2024, section 3.4): match the guided prediction's std to the conditional's.

    $$x_{\text{rescaled}} = x_{\text{cfg}}\,\frac{\operatorname{std}(x_{\text{pos}})}{\operatorname{std}(x_{\text{cfg}})},\qquad
    x_{\text{final}} = \phi\,x_{\text{rescaled}} + (1-\phi)\,x_{\text{cfg}},$$

    with the standard deviation taken per sample over all non-batch dimensions. A guided
    prediction with zero spread is left as it is.

    Arguments:
        guided: the classifier-free guided prediction $x_{\text{cfg}}$, `(B, ...)` with at least one event dimension.
        cond: the conditional ("positive") prediction $x_{\text{pos}}$, shaped like `guided`.
        phi: the rescale weight in $[0, 1]$; the paper uses 0.7.

    Returns:
        $x_{\text{final}}$, shaped like `guided`.

    Reference: Lin, Liu, Li, Yang, *Common Diffusion Noise Schedules and Sample Steps are
    Flawed*, WACV 2024, section 3.4, Algorithm 2.
    """
    check_batched("guided", guided)
    check_float_tensor("cond", cond)
    if cond.shape != guided.shape:
        raise ValueError(f"cond: expected the shape of guided, {tuple(guided.shape)}, got {tuple(cond.shape)}")
    if guided.ndim < 2:
        raise ValueError(
            f"guided: expected (B, ...) with at least one event dimension to take a per-sample std, got shape {tuple(guided.shape)}"
        )
    phi = _check_rescale(phi)
    return _rescale(guided, cond, phi)


def _rescale(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    dims = tuple(range(1, guided.ndim))
    std_cond = cond.std(dim=dims, correction=0, keepdim=True)
    std_cfg = guided.std(dim=dims, correction=0, keepdim=True)
    ratio = torch.where(std_cfg > 0, std_cond / torch.where(std_cfg > 0, std_cfg, 1.0), 1.0)
    return guided * (phi * ratio + (1.0 - phi))


# ---------------------------------------------------------------------- linear guidance
class _LinearGuidance:
    r"""$s_u + \sum_i w_i (s_i - s_u)$ from predictions of one type, returned as a score."""

    def __init__(self, names, scales, sde, prediction, rescale, rescale_space, kind):
        self.names, self.scales, self.sde = names, scales, sde
        self.prediction, self.rescale, self.rescale_space = prediction, rescale, rescale_space
        self.kind = kind
        if sde is None and any(_needs_sde(s) for s in scales):
            raise ValueError("sde: a scale schedule (e.g. GuidanceInterval) maps the noise level, so it needs sde=; got None")

    def _predictions(self, x: Tensor, t) -> tuple[Tensor, list[Tensor]]:
        raise NotImplementedError

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_batched("x", x)
        uncond, conds = self._predictions(x, t)
        coefs: tuple | None = None

        def marginal():
            nonlocal coefs
            if coefs is None:
                coefs = self.sde._marginal(as_time(t, like=x, T=self.sde.T))
            return coefs

        def level():
            alpha, sigma = marginal()
            return sigma / alpha

        weights = [_resolve_scale(n, s, x, level) for n, s in zip(self.names, self.scales)]
        space = self.rescale_space if self.rescale else self.prediction
        if space != self.prediction:  # guidance is affine-invariant; only the rescale needs another space
            alpha, sigma = marginal()
            uncond = convert(uncond, x, alpha, sigma, source=self.prediction, target=space)
            conds = [convert(c, x, alpha, sigma, source=self.prediction, target=space) for c in conds]
        if len(conds) == 1:
            w = weights[0]
            # lerp: exactly uncond at w = 0 and exactly cond at w = 1
            out = torch.lerp(uncond, conds[0], w)
        else:
            out = uncond
            for w, c in zip(weights, conds):
                out = out + w * (c - uncond)
        if self.rescale:
            if x.ndim < 2:
                raise ValueError(f"rescale: needs data (B, ...) with event dimensions, got x of shape {tuple(x.shape)}")
            out = _rescale(out, conds[0], self.rescale)
        if space != "score":
            alpha, sigma = marginal()
            out = convert(out, x, alpha, sigma, source=space, target="score")
        return out

    def __repr__(self) -> str:
        scales = ", ".join(repr(s) if not isinstance(s, Tensor) else describe(s) for s in self.scales)
        extra = f", rescale={self.rescale}, rescale_space={self.rescale_space!r}" if self.rescale else ""
        return f"{self.kind}(scales=[{scales}], prediction={self.prediction!r}{extra})"


class _GuidedCallables(_LinearGuidance):
    def __init__(self, uncond, conds, **kw):
        super().__init__(**kw)
        self.uncond, self.conds = uncond, list(conds)

    def _predictions(self, x, t):
        uncond = _check_output("uncond", self.uncond(x, t), x)
        conds = []
        for i, c in enumerate(self.conds):
            name = "cond" if len(self.conds) == 1 else f"conds[{i}]"
            conds.append(_check_output(name, c(x, t), x))
        return uncond, conds


def guided_score(
    uncond: ScoreFn,
    cond: ScoreFn,
    scale: Scale,
    *,
    sde: SDE | None = None,
    prediction: str = "score",
    rescale: float = 0.0,
    rescale_space: str = "x0",
) -> ScoreFn:
    r"""Classifier-free guidance: the score $s_u + w\,(s_c - s_u)$.

    $w = 0$ gives the unconditional score $s_u(x, t) = \nabla\log p_t(x)$ and $w = 1$ the
    conditional one $s_c(x, t) = \nabla\log p_t(x\mid y)$, both exactly; $w > 1$ sharpens
    towards $p_t(x)\,p_t(y\mid x)^w$, negative $w$ pushes away from the condition.

    `uncond` and `cond` may predict $\varepsilon$, $x_0$ or $v$ instead of the score
    (`prediction=`, with the `sde` for $(\alpha_t, \sigma_t)$). The combination is affine
    and every parameterisation is an affine function of the score with the same offset
    for both models, so guiding in any of them gives the same score; only the rescale
    depends on the space it is applied in. For a single network called with a null
    label, use [`cfg_score`][scoresde.guidance.cfg_score]. (Ho & Salimans write
    $(1+w)\,\varepsilon_c - w\,\varepsilon_u$: their $w$ is our `scale` minus one.)

    Arguments:
        uncond: the unconditional model `uncond(x, t)`.
        cond: the conditional model `cond(x, t)` (the condition bound in, e.g. with `functools.partial`).
        scale: $w$: a finite number, a per-sample `(B,)` tensor, or a schedule of the noise
            level such as [`GuidanceInterval`][scoresde.guidance.GuidanceInterval] (needs `sde`).
        sde: the SDE, needed for `prediction != "score"`, schedules and the rescale.
        prediction: what both models return: `"score"`, `"eps"`, `"x0"` or `"v"`.
        rescale: $\phi \in [0, 1]$ of guidance rescale (Lin et al. 2024); 0 switches it off.
        rescale_space: the prediction the rescale acts on: `"x0"` (default, the paper's
            formulation), `"eps"` or `"v"` (what implementations that rescale the network
            output do) or `"score"`. The rescaled prediction is converted back to a score.

    Returns:
        A score callable `guided(x, t)`.

    Reference: Ho & Salimans, *Classifier-Free Diffusion Guidance*, 2022, eq. (6).
    """
    _check_callable("uncond", uncond)
    _check_callable("cond", cond)
    scale = _check_scale("scale", scale)
    rescale = _check_rescale(rescale)
    _check_prediction(prediction, sde, rescale, rescale_space)
    return _GuidedCallables(
        uncond, [cond], names=["scale"], scales=[scale], sde=sde, prediction=prediction,
        rescale=rescale, rescale_space=rescale_space, kind="GuidedScore",
    )


def composed_score(
    uncond: ScoreFn,
    conds: Sequence[ScoreFn],
    weights: Sequence[Scale],
    *,
    sde: SDE | None = None,
    prediction: str = "score",
) -> ScoreFn:
    r"""Composition of conditions (Liu et al. 2022): $s_u + \sum_i w_i\,(s_i - s_u)$.

    With exact scores, $s_i - s_u = \nabla\log p_t(y_i\mid x)$, so the result is the score
    of $p_t(x)\prod_i p_t(y_i\mid x)^{w_i}$: a conjunction of the conditions ("AND") with
    positive weights, a negation ("NOT") with negative ones. One condition is
    classifier-free guidance. The result is linear in the weights.

    Arguments:
        uncond: the unconditional model `uncond(x, t)`.
        conds: the conditional models, one per condition.
        weights: one weight per condition: numbers (negative allowed), `(B,)` tensors or
            noise-level schedules (these need `sde`).
        sde: the SDE, needed for `prediction != "score"` and for schedules.
        prediction: what all models return: `"score"`, `"eps"`, `"x0"` or `"v"`.

    Returns:
        A score callable.

    Reference: Liu, Li, Du, Torralba, Tenenbaum, *Compositional Visual Generation with
    Composable Diffusion Models*, ECCV 2022, section 4.
    """
    _check_callable("uncond", uncond)
    conds, weights = _check_conds_weights(conds, weights)
    for i, c in enumerate(conds):
        _check_callable(f"conds[{i}]", c)
    _check_prediction(prediction, sde, 0.0, "x0")
    return _GuidedCallables(
        uncond, conds, names=[f"weights[{i}]" for i in range(len(weights))], scales=weights, sde=sde,
        prediction=prediction, rescale=0.0, rescale_space="x0", kind="ComposedScore",
    )


def _check_conds_weights(conds, weights) -> tuple[list, list]:
    if isinstance(conds, (str, bytes)) or not isinstance(conds, Iterable) or callable(conds) and not isinstance(conds, Sequence):
        raise TypeError(f"conds: expected a sequence of models, got {type(conds).__name__}")
    if isinstance(weights, (str, bytes, Tensor)) or not isinstance(weights, Iterable):
        raise TypeError(f"weights: expected a sequence with one weight per condition, got {type(weights).__name__}")
    conds, weights = list(conds), list(weights)
    if not conds:
        raise ValueError("conds: expected at least one condition, got none")
    if len(weights) != len(conds):
        raise ValueError(f"weights: expected {len(conds)} weights (one per condition), got {len(weights)}")
    return conds, [_check_scale(f"weights[{i}]", w) for i, w in enumerate(weights)]


class _ProductOfExperts:
    def __init__(self, scores, weights):
        self.scores, self.weights = scores, weights

    def __call__(self, x: Tensor, t) -> Tensor:
        check_batched("x", x)
        out = None
        for i, (s, w) in enumerate(zip(self.scores, self.weights)):
            term = _check_output(f"scores[{i}]", s(x, t), x)
            w = _resolve_scale(f"weights[{i}]", w, x, lambda: None)
            out = w * term if out is None else out + w * term
        return out

    def __repr__(self) -> str:
        return f"ProductOfExperts(n={len(self.scores)}, weights={self.weights!r})"


def product_of_experts(scores: Sequence[ScoreFn], weights: Sequence[float | Tensor]) -> ScoreFn:
    r"""The weighted sum of scores $\sum_i w_i\,s_i(x, t)$: the score of $\prod_i p_i^{w_i}$ at $t = 0$.

    At $t = 0$ this is exactly the score of the (unnormalised) product of experts
    $\prod_i p_i(x)^{w_i}$ (Hinton 2002). At $t > 0$ it is the sum of the diffused
    scores, which is *not* the score of the diffused product (diffusion does not commute
    with products); samplers that need the exact product use MCMC correctors
    (Du et al. 2023). With `scores = [s_u, s_c]` and `weights = [1 - w, w]` it is
    classifier-free guidance.

    Arguments:
        scores: score callables.
        weights: one number or `(B,)` tensor per score.

    Returns:
        A score callable.

    Reference: Liu et al., ECCV 2022; Du et al., *Reduce, Reuse, Recycle: Compositional
    Generation with Energy-Based Diffusion Models and MCMC*, ICML 2023.
    """
    scores, weights = _check_conds_weights(scores, weights)
    for i, (s, w) in enumerate(zip(scores, weights)):
        _check_callable(f"scores[{i}]", s)
        if _needs_sde(w):
            raise TypeError(f"weights[{i}]: expected a number or a (B,) tensor, got a schedule {w!r}")
    return _ProductOfExperts(scores, weights)


# ---------------------------------------------------------------------- single network, null label
class _NullLabelGuidance(_LinearGuidance):
    def __init__(self, model, conds, null_cond, batched, **kw):
        super().__init__(**kw)
        self.model, self.conds, self.null_cond, self.batched = model, conds, null_cond, batched
        if isinstance(model, ScoreModel):
            self._fn = lambda x, t, **c: model.predict(x, t, model.prediction, **c)
        else:
            self._fn = model

    def _predictions(self, x, t):
        B = x.shape[0]
        all_conds = [*self.conds, self.null_cond]
        names = ["cond" if len(self.conds) == 1 else f"cond[{i}]" for i in range(len(self.conds))] + ["null_cond"]
        for name, c in zip(names, all_conds):
            _check_cond_batch(name, c, B)
        all_conds = [{k: _batch_of(v, B) if isinstance(v, Tensor) else v for k, v in c.items()} for c in all_conds]
        t = as_time(t, like=x)
        t = t.expand(B) if t.ndim == 0 or t.shape[0] == 1 else t  # the network sees a (B,) time
        if not self.batched:
            outs = [_check_output("model", self._fn(x, t, **c), x) for c in all_conds]
            return outs[-1], outs[:-1]
        n = len(all_conds)
        # One forward pass: the conditional and the null batch concatenated along the batch.
        x_in = x.repeat(n, *([1] * (x.ndim - 1)))
        t_in = t.repeat(n)
        kwargs = {}
        for key in self.null_cond:
            values = [c[key] for c in all_conds]
            if isinstance(values[0], Tensor):
                kwargs[key] = torch.cat(values)
            else:  # a non-tensor option shared by every condition, checked at construction
                kwargs[key] = values[0]
        out = self._fn(x_in, t_in, **kwargs)
        if not isinstance(out, Tensor) or out.shape != x_in.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model: expected an output shaped like its input, {tuple(x_in.shape)}, got {got}")
        chunks = list(out.chunk(n))
        return chunks[-1], chunks[:-1]


def _batch_of(v: Tensor, B: int) -> Tensor:
    """A condition tensor with a leading batch dimension B (a single shared label broadcast)."""
    return v.expand(B, *v.shape[1:]) if v.shape[0] == 1 else v


def _check_cond_batch(name: str, cond: Mapping, B: int) -> None:
    for key, v in cond.items():
        if isinstance(v, Tensor) and (v.ndim == 0 or v.shape[0] not in (1, B)):
            raise ValueError(
                f"{name}[{key!r}]: expected a leading batch dimension of {B} (or 1) to match x,"
                f" got shape {tuple(v.shape)}"
            )


def _check_cond_dicts(conds: list, null_cond) -> None:
    if not isinstance(null_cond, Mapping):
        raise TypeError(f"null_cond: expected a dict of keyword arguments for the model, got {type(null_cond).__name__}")
    for i, c in enumerate(conds):
        name = "cond" if len(conds) == 1 else f"cond[{i}]"
        if not isinstance(c, Mapping):
            raise TypeError(f"{name}: expected a dict of keyword arguments for the model, got {type(c).__name__}")
        if set(c) != set(null_cond):
            raise ValueError(f"{name}: expected the keys of null_cond, {sorted(null_cond)}, got {sorted(c)}")
        for key, v in c.items():
            n = null_cond[key]
            if isinstance(v, Tensor) != isinstance(n, Tensor):
                raise TypeError(f"{name}[{key!r}]: a tensor in one condition and not in the other ({type(v).__name__} vs {type(n).__name__})")
            if isinstance(v, Tensor):
                if v.ndim == 0 or n.ndim == 0:
                    raise ValueError(f"{name}[{key!r}]: expected tensors with a leading batch dimension, got a 0-d tensor")
                if v.shape[1:] != n.shape[1:]:
                    raise ValueError(
                        f"{name}[{key!r}]: expected the per-sample shape of null_cond[{key!r}], {tuple(n.shape[1:])}, got {tuple(v.shape[1:])}"
                    )
            elif v is not n and v != n:
                raise ValueError(
                    f"{name}[{key!r}]: non-tensor options must be equal in every condition to batch them, got {v!r} and {n!r}"
                    " (pass batched=False)"
                )


def cfg_score(
    model: Callable,
    cond: Mapping | Sequence[Mapping],
    null_cond: Mapping,
    scale: Scale | Sequence[Scale],
    *,
    sde: SDE | None = None,
    prediction: str | None = None,
    batched: bool = True,
    rescale: float = 0.0,
    rescale_space: str = "x0",
) -> ScoreFn:
    r"""Classifier-free guidance with one conditional network and a null condition.

    The network, trained with condition dropout (Ho & Salimans 2022), is evaluated on the
    conditional keyword arguments `cond` and on the null ones `null_cond` (the "empty"
    label or prompt); the guided score is $s(x,t,\varnothing) + w\,(s(x,t,y) - s(x,t,\varnothing))$.
    With `batched=True` (default) both run in one forward pass of twice the batch (the
    inputs concatenated, the output split), which is what a GPU prefers. Several
    conditions with one weight each (a list of dicts and a list of scales) give the
    composition of [`composed_score`][scoresde.guidance.composed_score] in one pass of
    $(n+1)B$ samples.

    Arguments:
        model: a [`ScoreModel`][scoresde.ScoreModel] (its prediction type and SDE are used),
            or any callable `model(x, t, **kwargs)` returning a prediction of type `prediction`.
        cond: keyword arguments of the conditional call, e.g. `{"y": labels}`; tensors have a
            leading batch dimension `B` (or 1, shared by all samples). A list of such dicts composes.
        null_cond: keyword arguments of the unconditional call, the same keys, e.g. `{"y": null_labels}`.
        scale: $w$ (a number, a `(B,)` tensor or a noise-level schedule), or a list of them, one per condition.
        sde: the SDE (taken from a `ScoreModel` when omitted); needed for non-score
            predictions, schedules and the rescale.
        prediction: what `model` returns (default: the `ScoreModel`'s, else `"score"`).
        batched: evaluate all conditions in one forward pass.
        rescale: guidance rescale $\phi$ (Lin et al. 2024), one condition only; see [`guided_score`][scoresde.guidance.guided_score].
        rescale_space: the prediction the rescale acts on.

    Returns:
        A score callable.

    Example:
        ```python
        model = ScoreModel(net, sde, prediction="eps")
        guided = cfg_score(model, {"y": labels}, {"y": torch.full_like(labels, NULL)}, 3.0)
        ```
    """
    _check_callable("model", model)
    if not isinstance(batched, bool):
        raise TypeError(f"batched: expected a bool, got {batched!r}")
    if isinstance(model, ScoreModel):
        sde = model.sde if sde is None else sde
        if prediction is not None and prediction != model.prediction:
            raise ValueError(
                f"prediction: a ScoreModel predicts {model.prediction!r}; got prediction={prediction!r}"
            )
        prediction = model.prediction
    prediction = "score" if prediction is None else prediction
    several = isinstance(cond, Sequence) and not isinstance(cond, (str, bytes, Mapping))
    if several:
        if isinstance(scale, Sequence) and not isinstance(scale, (str, bytes)):
            conds, scales = _check_conds_weights(cond, scale)
        else:
            raise TypeError(f"scale: with a list of conditions, expected a list of scales, got {scale!r}")
        names = [f"scale[{i}]" for i in range(len(scales))]
    else:
        conds, scales, names = [cond], [_check_scale("scale", scale)], ["scale"]
    _check_cond_dicts(conds, null_cond)
    rescale = _check_rescale(rescale)
    if rescale and len(conds) > 1:
        raise ValueError("rescale: defined for one condition (it matches the conditional prediction's std), got several")
    _check_prediction(prediction, sde, rescale, rescale_space)
    return _NullLabelGuidance(
        model, conds, dict(null_cond), batched, names=names, scales=scales, sde=sde, prediction=prediction,
        rescale=rescale, rescale_space=rescale_space, kind="CFGScore",
    )


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
        _, sigma = self.sde._marginal(as_time(t, like=x, T=self.sde.T))
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


def _check_labels(y, B: int, device) -> Tensor:
    if isinstance(y, bool):
        raise TypeError(f"y: expected an int label or an integer tensor of labels, got {y!r}")
    y = torch.as_tensor(y, device=device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y: expected integer labels, got dtype {y.dtype}")
    if y.ndim > 1 or (y.ndim == 1 and y.shape[0] != B):
        raise ValueError(f"y: expected a label or a ({B},) tensor of labels to match the batch of x, got shape {tuple(y.shape)}")
    return y.long().expand(B)


def _time_input(t, x: Tensor, T: float | None, time_input) -> Tensor:
    t = as_time(t, like=x, T=T)
    if t.ndim == 0 or t.shape[0] != x.shape[0]:
        t = t.expand(x.shape[0])
    return time_input(t) if time_input is not None else t


def _logits(classifier, x: Tensor, t_in: Tensor) -> Tensor:
    logits = classifier(x, t_in)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"classifier: expected logits of shape ({x.shape[0]}, num_classes), got {got}")
    return logits


class _ClassifierLogProb:
    def __init__(self, classifier, y, time_input):
        self.classifier, self.y, self.time_input = classifier, y, time_input

    def __call__(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_batched("x", x)
        y = _check_labels(self.y, x.shape[0], x.device)
        logits = _logits(self.classifier, x, _time_input(t, x, None, self.time_input))
        if validation_enabled() and bool(((y < 0) | (y >= logits.shape[1])).any()):
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
    _check_labels(y, y.shape[0] if isinstance(y, Tensor) and y.ndim == 1 else 1, None)
    return _ClassifierLogProb(classifier, y, time_input)


def noisy_classifier_loss(
    classifier: Callable[[Tensor, Tensor], Tensor],
    sde: SDE,
    x0: Tensor,
    y: Tensor,
    *,
    t: Tensor | None = None,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    time_input: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    r"""Cross-entropy of a time-conditioned classifier on noised data, $E_{t, x_t}\big[-\log p_\phi(y\mid x_t, t)\big]$.

    Draws $t \sim \mathcal U[t_{\min}, T]$ (unless given) and $x_t = \alpha_t x_0 + \sigma_t\varepsilon$
    from the SDE's transition kernel; the minimiser over all classifiers is the exact noisy
    classifier $p_t(y\mid x_t)$ that guidance needs (Dhariwal & Nichol 2021 train theirs this
    way, on the diffusion's own noise distribution).

    Arguments:
        classifier: `classifier(x_t, t_in) -> logits (B, num_classes)`.
        sde: the forward SDE.
        x0: clean data `(B, ...)`.
        y: integer labels `(B,)`.
        t: optional times `(B,)`; drawn uniformly in $[t_{\min}, T]$ when omitted.
        t_min: the smallest time drawn.
        generator: source of $t$ and $\varepsilon$.
        time_input: optional map from `t` to the classifier's time input.

    Returns:
        The mean cross-entropy (a 0-d tensor, differentiable in the classifier's parameters).
    """
    _check_callable("classifier", classifier)
    _check_sde("sde", sde)
    x0 = check_batched("x0", x0)
    B = x0.shape[0]
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a ({B},) integer tensor of labels, got {type(y).__name__}")
    if y.shape != (B,):
        raise ValueError(f"y: expected a ({B},) tensor of labels to match the batch of x0, got shape {tuple(y.shape)}")
    y = _check_labels(y, B, x0.device)
    t_min = _finite_number("t_min", t_min)
    if not 0.0 <= t_min < sde.T:
        raise ValueError(f"t_min: expected a time in [0, T) = [0, {sde.T}), got {t_min!r}")
    if t is None:
        u = torch.rand(B, generator=generator, device=x0.device, dtype=x0.dtype)
        t = t_min + (sde.T - t_min) * u
    else:
        t = as_time(t, like=x0, T=sde.T)
        t = t.expand(B) if t.ndim == 0 else t
    x_t = sde.perturb(x0, t, generator=generator)
    logits = _logits(classifier, x_t, time_input(t) if time_input is not None else t)
    return torch.nn.functional.cross_entropy(logits, y)


def train_noisy_classifier(
    classifier: nn.Module,
    sde: SDE,
    data: Callable[[], tuple[Tensor, Tensor]] | Iterable[tuple[Tensor, Tensor]],
    *,
    steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    time_input: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    r"""Train a time-conditioned classifier on noised data with [`noisy_classifier_loss`][scoresde.guidance.noisy_classifier_loss].

    Each step draws a batch $(x_0, y)$, noises it at uniform random times and takes one
    optimizer step on the cross-entropy. The classifier is left in the mode it came in.

    Arguments:
        classifier: an `nn.Module`, `classifier(x_t, t_in) -> logits (B, num_classes)`.
        sde: the forward SDE whose noise the classifier must see through.
        data: a callable returning one batch `(x0, y)` per call, or an iterable of batches.
        steps: the number of optimizer steps (required for a callable; for an iterable, at
            most this many, all of it when omitted).
        optimizer: defaults to Adam with learning rate `lr` over the classifier's parameters.
        lr: learning rate of the default optimizer.
        t_min: the smallest time drawn.
        generator: source of times and noise.
        time_input: optional map from `t` to the classifier's time input.

    Returns:
        The loss of every step, a `(steps,)` tensor (detached).
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"classifier: expected a torch.nn.Module, got {type(classifier).__name__}")
    _check_sde("sde", sde)
    if steps is not None:
        steps = check_int("steps", steps)
    if callable(data) and not isinstance(data, Iterable):
        if steps is None:
            raise ValueError("steps: required when data is a callable returning batches, got None")
        batches: Iterable = (data() for _ in range(steps))
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError(f"data: expected a callable returning (x0, y) or an iterable of batches, got {type(data).__name__}")
    if optimizer is None:
        optimizer = torch.optim.Adam(classifier.parameters(), lr=_finite_number("lr", lr))
    was_training = classifier.training
    classifier.train()
    losses = []
    try:
        for i, batch in enumerate(batches):
            if steps is not None and i >= steps:
                break
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(f"data: expected batches (x0, y), got {type(batch).__name__}")
            x0, y = batch
            loss = noisy_classifier_loss(classifier, sde, x0, y, t_min=t_min, generator=generator, time_input=time_input)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    finally:
        classifier.train(was_training)
    if not losses:
        raise ValueError("data: yielded no batches")
    return torch.stack(losses)
