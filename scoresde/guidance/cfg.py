r"""Classifier-free guidance as algebra on two score callables, and on one network with a null label.

`guided_score(uncond, cond, w)` combines two callables into $s_u + w\,(s_c - s_u)$;
`cfg_score(model, cond, null_cond, w)` evaluates one conditional network on the condition
and on a null condition, in one batched forward pass. Both accept $\varepsilon$-, $x_0$- or
$v$-predictions, per-sample scales, noise-level schedules and guidance rescale.

Reference: Ho & Salimans, *Classifier-Free Diffusion Guidance*, 2022.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from .._checks import as_time, check_batched, describe, check_output
from .. import flow
from ..parameterization import MODEL_PREDICTIONS, convert
from ..score_model import ScoreModel
from ..sde import SDE
from ._checks import ScoreFn, _check_callable, _check_output, _check_sde
from .rescale import RESCALE_SPACES, _check_rescale, _rescale
from .scales import Scale, _check_scale, _needs_sde, _resolve_scale


def _check_prediction(prediction: str, sde, rescale: float, rescale_space: str) -> None:
    if prediction not in MODEL_PREDICTIONS:
        raise ValueError(f"prediction: expected one of {MODEL_PREDICTIONS}, got {prediction!r}")
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
                coefs = self.sde.marginal(as_time(t, like=x))
            return coefs

        def level():
            alpha, sigma = marginal()
            return sigma / alpha

        weights = [_resolve_scale(n, s, x, level) for n, s in zip(self.names, self.scales)]
        def to(value: Tensor, source: str, target: str) -> Tensor:
            alpha, sigma = marginal()
            if "flow" not in (source, target):
                return convert(value, x, alpha, sigma, source=source, target=target)
            # the flow-matching velocity: affine in the score too, with alpha_t', sigma_t' (scoresde.flow)
            d_alpha, d_sigma = flow.marginal_derivatives(self.sde, as_time(t, like=x))
            if source == "flow":
                return flow.from_flow(value, x, alpha, sigma, d_alpha, d_sigma, target=target)
            return flow.to_flow(value, x, alpha, sigma, d_alpha, d_sigma, source=source)

        space = self.rescale_space if self.rescale else self.prediction
        if space != self.prediction:  # guidance is affine-invariant; only the rescale needs another space
            uncond = to(uncond, self.prediction, space)
            conds = [to(c, self.prediction, space) for c in conds]
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
            out = to(out, space, "score")
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
        prediction: what both models return: `"score"`, `"eps"`, `"x0"`, `"v"` or `"flow"` (the
            flow-matching velocity of [`scoresde.flow`][scoresde.flow]).
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
        check_output("model", out, x_in, like="its input")
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


