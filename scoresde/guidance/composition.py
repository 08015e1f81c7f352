r"""Composition of conditions (Liu et al. 2022) and products of experts: weighted sums of scores."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .._checks import check_batched
from ..sde import SDE
from ._checks import ScoreFn, _check_callable, _check_output
from .cfg import _check_conds_weights, _check_prediction, _GuidedCallables
from .scales import Scale, _needs_sde, _resolve_scale


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


