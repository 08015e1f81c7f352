r"""Parameterisations of a denoiser: noise $\varepsilon$, score, clean data $x_0$ and velocity $v$.

Given the transition $x_t = \alpha_t x_0 + \sigma_t\varepsilon$, a network may predict any
of four equivalent quantities; these pure functions convert between them exactly:

| quantity | in terms of $\varepsilon$ |
|---|---|
| score $\nabla_x\log p_t(x_t)$ | $-\varepsilon/\sigma_t$ |
| denoised $\hat x_0$ (Tweedie) | $(x_t - \sigma_t\varepsilon)/\alpha_t = (x_t + \sigma_t^2\,\text{score})/\alpha_t$ |
| velocity $v$ | $\alpha_t\varepsilon - \sigma_t x_0$ |

For the exact (Bayes-optimal) predictors the table holds with conditional expectations:
$E[\varepsilon\mid x_t] = -\sigma_t\nabla\log p_t(x_t)$ and Tweedie's formula
$E[x_0\mid x_t] = (x_t + \sigma_t^2\nabla\log p_t(x_t))/\alpha_t$.

`alpha` and `sigma` may be numbers, 0-d tensors or per-sample `(B,)` tensors; they are
broadcast against `x_t` `(B, ...)` through [`append_dims`][scoresde._checks.append_dims].
The $v$ formulas invert the 2x2 system in general
($x_0 = (\alpha x_t - \sigma v)/(\alpha^2+\sigma^2)$), so they hold for VE and sub-VP too.

References: Ho et al. 2020 ($\varepsilon$); Efron 2011, *Tweedie's formula and selection
bias* (Tweedie); Salimans & Ho, *Progressive Distillation*, ICLR 2022 ($v$).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

import numbers

from ._checks import values_on_host, append_dims


__all__ = [
    "PREDICTIONS",
    "eps_to_score",
    "score_to_eps",
    "eps_to_x0",
    "x0_to_eps",
    "score_to_x0",
    "x0_to_score",
    "eps_to_v",
    "v_to_eps",
    "x0_to_v",
    "v_to_x0",
    "convert",
    "MODEL_PREDICTIONS",
]

#: The prediction types a network may have.
PREDICTIONS = ("eps", "score", "x0", "v")
#: What a network wrapped in `ScoreModel` may predict: `PREDICTIONS` and the flow-matching
#: velocity `"flow"` ($\dot\alpha_t x_0 + \dot\sigma_t\varepsilon$, see [`scoresde.flow`][scoresde.flow]),
#: whose conversions need the SDE's derivatives and so live in `ScoreModel`, not in `convert`.
MODEL_PREDICTIONS = PREDICTIONS + ("flow",)


def _b(c: Tensor | float, x: Tensor, name: str = "", divides: str = "") -> Tensor | float:
    """`c` (a number, 0-d or `(B,)` tensor) shaped to multiply `x`; checked when `name` is given:
    its type and batch size always, and, with `divides` naming the function that divides by it
    and value checks on, that it is nonzero (0 would give inf or NaN silently)."""
    if name:
        if isinstance(c, Tensor):
            if c.is_complex() or c.dtype == torch.bool:
                raise TypeError(f"{name}: expected a real number or a real tensor, got dtype {c.dtype}")
            if c.ndim > 1 or (c.ndim == 1 and c.shape[0] not in (1, x.shape[0] if x.ndim else 1)):
                raise ValueError(
                    f"{name}: expected a number, a 0-d tensor or a (B,) tensor with B = {x.shape[0] if x.ndim else 1}"
                    f" (the batch of the data), got shape {tuple(c.shape)}"
                )
            if divides and values_on_host(c) and bool((c == 0).any()):
                raise ValueError(f"{name}: {divides} divides by {name}, which must be nonzero; got {name} = 0")
        elif isinstance(c, bool) or not isinstance(c, numbers.Real):
            raise TypeError(f"{name}: expected a real number or a tensor, got {type(c).__name__}")
        elif divides and c == 0:
            raise ValueError(f"{name}: {divides} divides by {name}, which must be nonzero; got {name} = {c!r}")
    return append_dims(c, x.ndim) if isinstance(c, Tensor) else c


def eps_to_score(eps: Tensor, sigma: Tensor | float) -> Tensor:
    r"""$\nabla\log p_t = -\varepsilon/\sigma_t$ ($\sigma_t \ne 0$)."""
    return -eps / _b(sigma, eps, "sigma", "eps_to_score")


def score_to_eps(score: Tensor, sigma: Tensor | float) -> Tensor:
    r"""$\varepsilon = -\sigma_t\nabla\log p_t$."""
    return -score * _b(sigma, score, "sigma")


def eps_to_x0(eps: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$x_0 = (x_t - \sigma_t\varepsilon)/\alpha_t$ ($\alpha_t \ne 0$)."""
    return (x_t - _b(sigma, x_t, "sigma") * eps) / _b(alpha, x_t, "alpha", "eps_to_x0")


def x0_to_eps(x0: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$\varepsilon = (x_t - \alpha_t x_0)/\sigma_t$ ($\sigma_t \ne 0$)."""
    return (x_t - _b(alpha, x_t, "alpha") * x0) / _b(sigma, x_t, "sigma", "x0_to_eps")


def score_to_x0(score: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""Tweedie's formula $E[x_0\mid x_t] = (x_t + \sigma_t^2\nabla\log p_t(x_t))/\alpha_t$ ($\alpha_t \ne 0$)."""
    s = _b(sigma, x_t, "sigma")
    return (x_t + s * s * score) / _b(alpha, x_t, "alpha", "Tweedie's formula (score_to_x0)")


def x0_to_score(x0: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$\nabla\log p_t = (\alpha_t x_0 - x_t)/\sigma_t^2$ (Tweedie inverted)."""
    s = _b(sigma, x_t, "sigma", "x0_to_score")
    return (_b(alpha, x_t, "alpha") * x0 - x_t) / (s * s)


def eps_to_v(eps: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$v = \alpha_t\varepsilon - \sigma_t x_0$ with $x_0$ from $(x_t, \varepsilon)$, i.e. $v = ((\alpha^2+\sigma^2)\varepsilon - \sigma x_t)/\alpha$."""
    a, s = _b(alpha, x_t, "alpha", "eps_to_v"), _b(sigma, x_t, "sigma")
    return ((a * a + s * s) * eps - s * x_t) / a


def v_to_eps(v: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$\varepsilon = (\sigma_t x_t + \alpha_t v)/(\alpha_t^2 + \sigma_t^2)$."""
    a, s = _b(alpha, x_t, "alpha"), _b(sigma, x_t, "sigma")
    return (s * x_t + a * v) / (a * a + s * s)


def x0_to_v(x0: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$v = \alpha_t\varepsilon - \sigma_t x_0$ with $\varepsilon$ from $(x_t, x_0)$."""
    return _b(alpha, x_t) * x0_to_eps(x0, x_t, alpha, sigma) - _b(sigma, x_t) * x0


def v_to_x0(v: Tensor, x_t: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    r"""$x_0 = (\alpha_t x_t - \sigma_t v)/(\alpha_t^2 + \sigma_t^2)$."""
    a, s = _b(alpha, x_t, "alpha"), _b(sigma, x_t, "sigma")
    return (a * x_t - s * v) / (a * a + s * s)


_TO_EPS: dict[str, Callable] = {
    "eps": lambda p, x, a, s: p,
    "score": lambda p, x, a, s: score_to_eps(p, s),
    "x0": x0_to_eps,
    "v": v_to_eps,
}
_FROM_EPS: dict[str, Callable] = {
    "eps": lambda e, x, a, s: e,
    "score": lambda e, x, a, s: eps_to_score(e, s),
    "x0": eps_to_x0,
    "v": eps_to_v,
}


def _check_prediction(name: str, value: str, allowed: tuple = PREDICTIONS) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")
    return value


def convert(
    value: Tensor,
    x_t: Tensor,
    alpha: Tensor | float,
    sigma: Tensor | float,
    *,
    source: str,
    target: str,
) -> Tensor:
    """Convert a prediction of type `source` to type `target` (each one of `PREDICTIONS`).

    Example:
        ```python
        x0 = convert(eps, x_t, alpha, sigma, source="eps", target="x0")
        ```
    """
    _check_prediction("source", source)
    _check_prediction("target", target)
    if source == target:
        return value
    if {source, target} == {"score", "x0"}:  # the direct Tweedie forms avoid a 1/sigma
        return score_to_x0(value, x_t, alpha, sigma) if source == "score" else x0_to_score(value, x_t, alpha, sigma)
    return _FROM_EPS[target](_TO_EPS[source](value, x_t, alpha, sigma), x_t, alpha, sigma)
