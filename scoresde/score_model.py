r"""`ScoreModel`: a network with its prediction type and SDE, answering every parameterisation.

The conversions it applies are the pure functions of
[`scoresde.parameterization`][scoresde.parameterization] and, for a flow-matching network, of
[`scoresde.flow`][scoresde.flow]; this module sits above both, so neither imports the other's
users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import Tensor, nn

from . import flow
from ._checks import as_time, check_batched, check_output
from .parameterization import MODEL_PREDICTIONS, _check_prediction, convert
from .sde import check_sde

if TYPE_CHECKING:
    from .sde import SDE

__all__ = ["ScoreModel"]


class ScoreModel(nn.Module):
    r"""A network with its prediction type and SDE, answering every parameterisation.

    `ScoreModel(net, sde, prediction="eps")` calls `net(x, t_in, **cond)` and converts its
    output with the SDE's $(\alpha_t, \sigma_t)$. The network's time input `t_in` is the
    continuous time `t` as a `(B,)` tensor by default; `time_input` maps it to what the
    network was trained on, for example the DDPM step index
    (`time_input=schedule.index_of_t`), NCSN's level, or $\sigma_t$.

    A `ScoreModel` is itself a score callable (`model(x, t)` is `model.score(x, t)`), so
    it plugs into every sampler, guidance function and solver. It is an `nn.Module`:
    `.to(device)`, `.parameters()` and `state_dict()` reach the network.

    Arguments:
        net: a callable `net(x, t_in, **cond)` returning a tensor shaped like `x`.
        sde: the [`SDE`][scoresde.SDE] the network was trained with.
        prediction: what the network predicts: `"eps"`, `"score"`, `"x0"`, `"v"` or `"flow"`
            (the flow-matching velocity $\dot\alpha_t x_0 + \dot\sigma_t\varepsilon$, for
            rectified flow $\varepsilon - x_0$; converted exactly through
            [`scoresde.flow`][scoresde.flow] with the SDE's $\dot\alpha_t, \dot\sigma_t$).
        time_input: optional map from continuous `t` `(B,)` to the network's time input.
    """

    def __init__(self, net: Callable, sde: "SDE", prediction: str = "eps", time_input: Callable | None = None):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a callable net(x, t, **cond), got {type(net).__name__}")
        check_sde("sde", sde)
        if time_input is not None and not callable(time_input):
            raise TypeError(f"time_input: expected a callable or None, got {type(time_input).__name__}")
        self.net = net
        self.sde = sde
        self.prediction = _check_prediction("prediction", prediction, MODEL_PREDICTIONS)
        self.time_input = time_input

    def predict(self, x: Tensor, t: float | Tensor, target: str, **cond) -> Tensor:
        """The network's prediction at `(x, t)` converted to `target` (one of `MODEL_PREDICTIONS`)."""
        _check_prediction("target", target, MODEL_PREDICTIONS)
        x = check_batched("x", x)
        t = as_time(t, like=x)  # called every step: times are checked at the entry points
        if t.ndim == 0 or t.shape[0] != x.shape[0]:
            t = t.expand(x.shape[0])
        t_in = self.time_input(t) if self.time_input is not None else t
        out = self.net(x, t_in, **cond)
        check_output("net", out, x)
        if target == self.prediction:
            return out
        alpha, sigma = self.sde.marginal(t)
        if "flow" in (self.prediction, target):
            d_alpha, d_sigma = flow.marginal_derivatives(self.sde, t)
            if self.prediction == "flow":
                return flow.from_flow(out, x, alpha, sigma, d_alpha, d_sigma, target=target)
            return flow.to_flow(out, x, alpha, sigma, d_alpha, d_sigma, source=self.prediction)
        return convert(out, x, alpha, sigma, source=self.prediction, target=target)

    def score(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        r"""$\nabla_x\log p_t(x)$ as the network estimates it."""
        return self.predict(x, t, "score", **cond)

    def eps(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        r"""The noise estimate $\hat\varepsilon(x, t)$."""
        return self.predict(x, t, "eps", **cond)

    def x0(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        r"""The denoised estimate $\hat x_0(x, t)$ (Tweedie's formula for a score network)."""
        return self.predict(x, t, "x0", **cond)

    def v(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        r"""The velocity estimate $\hat v = \alpha_t\hat\varepsilon - \sigma_t\hat x_0$."""
        return self.predict(x, t, "v", **cond)

    def flow(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        r"""The flow-matching velocity estimate $\hat u = \dot\alpha_t\hat x_0 + \dot\sigma_t\hat\varepsilon$ (the probability-flow ODE's vector field)."""
        return self.predict(x, t, "flow", **cond)

    def forward(self, x: Tensor, t: float | Tensor, **cond) -> Tensor:
        return self.score(x, t, **cond)

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, prediction={self.prediction!r}"
