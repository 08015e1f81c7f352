r"""The flow-matching velocity of the linear interpolant, and its exact conversions.

For $x_t = \alpha_t x_0 + \sigma_t\varepsilon$ the time derivative of the path is the
*flow-matching velocity* (conditional vector field)

$$u_t = \frac{d x_t}{dt} = \dot\alpha_t\,x_0 + \dot\sigma_t\,\varepsilon ,$$

which for rectified flow ($\alpha_t = 1 - t$, $\sigma_t = t$) is $\varepsilon - x_0$
(Liu, Gong, Liu 2023; Lipman et al. 2023). A network trained to regress $u_t$ predicts
$E[u_t\mid x_t]$, the velocity of the probability-flow ODE. It is named `"flow"` here, to keep
it apart from Salimans & Ho's $v = \alpha_t\varepsilon - \sigma_t x_0$ (`"v"`).

Given $(x_t, u)$, the pair $(x_0, \varepsilon)$ solves a 2x2 linear system with determinant
$D_t = \alpha_t\dot\sigma_t - \dot\alpha_t\sigma_t$:

| quantity | from the velocity $u$ |
|---|---|
| $\varepsilon$ | $(\alpha_t u - \dot\alpha_t x_t)/D_t$ |
| $x_0$ | $(\dot\sigma_t x_t - \sigma_t u)/D_t$ |
| score | $-\varepsilon/\sigma_t = 2\,(f(t)\,x_t - u)/g(t)^2$ |

For the SDEs of this package $\dot\alpha_t = f(t)\alpha_t$ and
$\dot\sigma_t = f(t)\sigma_t + g(t)^2/(2\sigma_t)$ (from $\tfrac{d}{dt}\log\alpha_t = f$ and
$\tfrac{d}{dt}\sigma_t^2 = 2f\sigma_t^2 + g^2$), so $D_t = \alpha_t g(t)^2/(2\sigma_t) > 0$ and
$u = f(t)\,x_t - \tfrac12 g(t)^2\,\nabla\log p_t$: the exact velocity is the
probability-flow ODE's vector field (Song et al. 2021, eq. 13).

References: Lipman, Chen, Ben-Hamu, Nickel, Le, *Flow Matching for Generative Modeling*,
ICLR 2023; Liu, Gong, Liu, *Flow Straight and Fast*, ICLR 2023; Albergo & Vanden-Eijnden,
*Building Normalizing Flows with Stochastic Interpolants*, ICLR 2023.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import parameterization as P
from .sde import check_sde
from ._checks import append_dims, check_batched, check_float_tensor

if TYPE_CHECKING:
    from .sde import SDE

__all__ = ["marginal_derivatives", "flow_target", "to_flow", "from_flow"]

#: The prediction types a flow velocity converts to and from (those of `convert`).
_SPACES = ("eps", "score", "x0", "v")


def marginal_derivatives(sde: "SDE", t: Tensor) -> tuple[Tensor, Tensor]:
    r"""$(\dot\alpha_t, \dot\sigma_t)$, the time derivatives of the SDE's marginal coefficients.

    An SDE that defines `_marginal_derivatives(t)` supplies them itself (a process given by
    its $(\alpha_t, \sigma_t)$, where they are exact also where $\alpha_t = 0$); otherwise
    they follow from the drift and diffusion coefficients, exactly:
    $\dot\alpha_t = f(t)\,\alpha_t$ and $\dot\sigma_t = f(t)\,\sigma_t + g(t)^2/(2\sigma_t)$.

    Arguments:
        sde: a [`SDE`][scoresde.SDE].
        t: times, a floating tensor (no range check: call on checked times).

    Returns:
        `(d_alpha, d_sigma)`, shaped like `t`.
    """
    check_sde("sde", sde)
    if not isinstance(t, Tensor) or not torch.is_floating_point(t):
        raise TypeError(f"t: expected a floating tensor, got {type(t).__name__ if not isinstance(t, Tensor) else t.dtype}")
    own = getattr(sde, "_marginal_derivatives", None)
    if callable(own):
        return own(t)
    alpha, sigma = sde.marginal(t)
    f = sde.drift_coef(t)
    g2 = sde.diffusion(t) ** 2
    return f * alpha, f * sigma + 0.5 * g2 / sigma


def flow_target(x0: Tensor, eps: Tensor, d_alpha: Tensor | float, d_sigma: Tensor | float) -> Tensor:
    r"""The flow-matching regression target $u_t = \dot\alpha_t x_0 + \dot\sigma_t\varepsilon$.

    Arguments:
        x0: clean data `(B, ...)`.
        eps: the noise, shaped like `x0`.
        d_alpha, d_sigma: $\dot\alpha_t, \dot\sigma_t$ (numbers or `(B,)` tensors).
    """
    x0 = check_batched("x0", x0)
    check_float_tensor("eps", eps)
    if eps.shape != x0.shape:
        raise ValueError(f"eps: expected the shape of x0, {tuple(x0.shape)}, got {tuple(eps.shape)}")
    return _b(d_alpha, x0) * x0 + _b(d_sigma, x0) * eps


def _b(c: Tensor | float, x: Tensor) -> Tensor | float:
    return append_dims(c, x.ndim) if isinstance(c, Tensor) else c


def _check_space(name: str, value: str) -> str:
    if value not in _SPACES:
        raise ValueError(f"{name}: expected one of {_SPACES}, got {value!r}")
    return value


def _check_pair(name: str, value: Tensor, x_t: Tensor) -> None:
    check_batched(name, value)
    check_batched("x_t", x_t)
    if value.shape != x_t.shape:
        raise ValueError(f"{name}: expected the shape of x_t, {tuple(x_t.shape)}, got {tuple(value.shape)}")


def to_flow(value: Tensor, x_t: Tensor, alpha, sigma, d_alpha, d_sigma, *, source: str) -> Tensor:
    r"""Convert a prediction of type `source` (`"eps"`, `"score"`, `"x0"` or `"v"`) to the velocity $u$.

    $u = \dot\alpha_t\hat x_0 + \dot\sigma_t\hat\varepsilon$, where the prediction's own
    quantity is used as it is and the other one follows from $x_t = \alpha_t x_0 + \sigma_t\varepsilon$
    (for `"v"`, both from its exact inverse $x_0 = (\alpha x_t - \sigma v)/(\alpha^2+\sigma^2)$,
    $\varepsilon = (\sigma x_t + \alpha v)/(\alpha^2+\sigma^2)$).

    Arguments:
        value: the prediction `(B, ...)`.
        x_t: the noisy input, shaped like `value`.
        alpha, sigma, d_alpha, d_sigma: $\alpha_t, \sigma_t, \dot\alpha_t, \dot\sigma_t$ (numbers or `(B,)`).
        source: the prediction type of `value`.
    """
    _check_space("source", source)
    _check_pair("value", value, x_t)
    if source == "eps":
        eps, x0 = value, P.eps_to_x0(value, x_t, alpha, sigma)
    elif source == "x0":
        x0, eps = value, P.x0_to_eps(value, x_t, alpha, sigma)
    elif source == "score":
        eps, x0 = P.score_to_eps(value, sigma), P.score_to_x0(value, x_t, alpha, sigma)
    else:
        eps, x0 = P.v_to_eps(value, x_t, alpha, sigma), P.v_to_x0(value, x_t, alpha, sigma)
    return _b(d_alpha, x_t) * x0 + _b(d_sigma, x_t) * eps


def from_flow(u: Tensor, x_t: Tensor, alpha, sigma, d_alpha, d_sigma, *, target: str) -> Tensor:
    r"""Convert a velocity $u$ to a prediction of type `target` (`"eps"`, `"score"`, `"x0"` or `"v"`).

    With $D_t = \alpha_t\dot\sigma_t - \dot\alpha_t\sigma_t$:
    $\varepsilon = (\alpha_t u - \dot\alpha_t x_t)/D_t$, $x_0 = (\dot\sigma_t x_t - \sigma_t u)/D_t$,
    score $= -\varepsilon/\sigma_t$, $v = \alpha_t\varepsilon - \sigma_t x_0$.

    Arguments: as [`to_flow`][scoresde.flow.to_flow], with `target` the type wanted.
    """
    _check_space("target", target)
    _check_pair("u", u, x_t)
    a, s, da, ds = (_b(c, x_t) for c in (alpha, sigma, d_alpha, d_sigma))
    det = a * ds - da * s  # D_t = alpha sigma' - alpha' sigma > 0 for a decreasing SNR
    if target in ("eps", "score", "v"):
        eps = (a * u - da * x_t) / det
        if target == "eps":
            return eps
        if target == "score":
            return -eps / s
    x0 = (ds * x_t - s * u) / det
    if target == "x0":
        return x0
    return a * eps - s * x0

