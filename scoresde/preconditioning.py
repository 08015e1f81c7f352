r"""EDM's preconditioning of a denoiser network (Karras et al. 2022, table 1).

The raw network $F_\theta$ is wrapped into a denoiser

$$D_\theta(\tilde x; \tilde\sigma) = c_{\text{skip}}(\tilde\sigma)\,\tilde x
+ c_{\text{out}}(\tilde\sigma)\,F_\theta\big(c_{\text{in}}(\tilde\sigma)\,\tilde x,\ c_{\text{noise}}(\tilde\sigma)\big),$$

$$c_{\text{skip}} = \frac{\sigma_{\text{data}}^2}{\tilde\sigma^2 + \sigma_{\text{data}}^2},\quad
c_{\text{out}} = \frac{\tilde\sigma\,\sigma_{\text{data}}}{\sqrt{\tilde\sigma^2 + \sigma_{\text{data}}^2}},\quad
c_{\text{in}} = \frac{1}{\sqrt{\tilde\sigma^2 + \sigma_{\text{data}}^2}},\quad
c_{\text{noise}} = \tfrac14\ln\tilde\sigma,$$

trained with the weight $\lambda(\tilde\sigma) = (\tilde\sigma^2 + \sigma_{\text{data}}^2)/(\tilde\sigma\,\sigma_{\text{data}})^2$
on $\|D_\theta - x_0\|^2$. With these choices, on data of standard deviation
$\sigma_{\text{data}}$, the network's input $c_{\text{in}}\tilde x$ and its effective target
$(x_0 - c_{\text{skip}}\tilde x)/c_{\text{out}}$ both have unit variance, and the effective weight
$\lambda\,c_{\text{out}}^2$ on $\|F_\theta - \text{target}\|^2$ is 1 at every noise level.

**Any SDE.** EDM's variable is the unscaled $\tilde x = x_0 + \tilde\sigma\varepsilon$. An SDE's
$x_t = \alpha_t x_0 + \sigma_t\varepsilon = \alpha_t\,\tilde x$ with $\tilde\sigma_t = \sigma_t/\alpha_t$, so
with `sde=` the wrapper maps $(x_t, t)$ to $(\tilde x, \tilde\sigma) = (x_t/\alpha_t, \sigma_t/\alpha_t)$
and returns $D_\theta$, an estimate of $x_0$ (the same in both variables): use it in
[`ScoreModel`][scoresde.ScoreModel] with `prediction="x0"`. For the VP SDE,
$\tilde\sigma_t = \sqrt{1-\alpha_t^2}/\alpha_t$ and the network's input is
$c_{\text{in}}\tilde x = x_t/\sqrt{\sigma_t^2 + \alpha_t^2\sigma_{\text{data}}^2}$ (exactly $x_t$ when
$\sigma_{\text{data}} = 1$). Without `sde=` the second argument *is* $\tilde\sigma$ and the input
is $\tilde x$: EDM's own convention, right for any process with $\alpha_t = 1$ and
$\sigma_t = t$ (EDM's).

Reference: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of Diffusion-Based
Generative Models*, NeurIPS 2022, table 1 and appendix B.6.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .sde import check_sde
from ._checks import values_on_host, append_dims, as_time, check_batched, check_positive_finite, check_output

__all__ = ["EDMPreconditioning", "edm_coefficients", "edm_loss_weight", "edm_weighting"]


def _check_sigma(sigma: Tensor | float) -> Tensor:
    sigma = as_time(sigma, name="sigma")
    if values_on_host(sigma) and bool((~(sigma > 0) | ~torch.isfinite(sigma)).any()):
        bad = sigma[~(sigma > 0) | ~torch.isfinite(sigma)].flatten()[0].item() if sigma.ndim else sigma.item()
        raise ValueError(f"sigma: expected noise levels > 0 and finite (c_noise = ln(sigma)/4), got {bad!r}")
    return sigma


def edm_coefficients(sigma: Tensor | float, sigma_data: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Karras et al.'s table-1 coefficients $(c_{\text{skip}}, c_{\text{out}}, c_{\text{in}}, c_{\text{noise}})$ at $\tilde\sigma$.

    Arguments:
        sigma: noise levels $\tilde\sigma > 0$ (a number or a tensor).
        sigma_data: the data's standard deviation, default 0.5 (EDM's for images in $[-1, 1]$).

    Returns:
        Four tensors shaped like `sigma`.
    """
    sigma = _check_sigma(sigma)
    sd = check_positive_finite("sigma_data", sigma_data)
    r = sigma * sigma + sd * sd
    c_skip = sd * sd / r  # sigma_data^2 / (sigma^2 + sigma_data^2)
    c_out = sigma * sd / r.sqrt()  # sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = r.rsqrt()  # 1 / sqrt(sigma^2 + sigma_data^2)
    c_noise = 0.25 * sigma.log()  # ln(sigma) / 4
    return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma: Tensor | float, sigma_data: float = 0.5) -> Tensor:
    r"""EDM's loss weight $\lambda(\tilde\sigma) = (\tilde\sigma^2 + \sigma_{\text{data}}^2)/(\tilde\sigma\,\sigma_{\text{data}})^2$ on $\|D - x_0\|^2$ (table 1)."""
    sigma = _check_sigma(sigma)
    sd = check_positive_finite("sigma_data", sigma_data)
    return (sigma * sigma + sd * sd) / (sigma * sd) ** 2


def edm_weighting(sde, sigma_data: float = 0.5) -> Callable[[Tensor], Tensor]:
    r"""EDM's weighting as a score-space weighting $\lambda(t)$ for [`DSMLoss`][scoresde.losses.DSMLoss].

    The $x_0$-error is $\|\hat x_0 - x_0\|^2 = (\sigma_t^4/\alpha_t^2)\,\|s_\theta - s\|^2$, so EDM's
    $\lambda(\tilde\sigma_t)\,\|D - x_0\|^2$ is the score loss with
    $\lambda(t) = \lambda_{\text{EDM}}(\sigma_t/\alpha_t)\,\sigma_t^4/\alpha_t^2
    = \sigma_t^2(\sigma_t^2 + \alpha_t^2\sigma_{\text{data}}^2)/(\alpha_t^2\sigma_{\text{data}}^2)$.

    Arguments:
        sde: the forward [`SDE`][scoresde.SDE].
        sigma_data: the data's standard deviation, default 0.5.

    Returns:
        A callable `weighting(t) -> (B,)`.
    """
    check_sde("sde", sde)
    sd2 = check_positive_finite("sigma_data", sigma_data) ** 2

    def weighting(t: Tensor) -> Tensor:
        alpha, sigma = sde.marginal(t)
        s2, a2 = sigma * sigma, alpha * alpha
        return s2 * (s2 + a2 * sd2) / (a2 * sd2)

    weighting.__name__ = f"edm_weighting(sigma_data={sigma_data!r})"
    return weighting


class EDMPreconditioning(nn.Module):
    r"""EDM's preconditioned denoiser $D(\tilde x;\tilde\sigma) = c_{\text{skip}}\tilde x + c_{\text{out}}F(c_{\text{in}}\tilde x, c_{\text{noise}})$.

    Arguments:
        net: the raw network $F$, a callable `net(x, c_noise, **cond)` returning a tensor shaped
            like `x`; `c_noise` is a `(B,)` tensor $\tfrac14\ln\tilde\sigma$.
        sigma_data: the data's standard deviation, default 0.5.
        sde: optional [`SDE`][scoresde.SDE]; with it, `forward(x_t, t)` takes that SDE's
            $(x_t, t)$ and maps them to $(x_t/\alpha_t, \sigma_t/\alpha_t)$; without it,
            `forward(x, sigma)` is EDM's $D(x; \sigma)$.

    Returns (when called): the denoised estimate of $x_0$, shaped like `x`. Use it as
    `ScoreModel(EDMPreconditioning(net, sde=sde), sde, prediction="x0")` (no `time_input`).

    Example:
        ```python
        model = ScoreModel(EDMPreconditioning(F, sigma_data=0.5, sde=sde), sde, prediction="x0")
        ```

    Reference: Karras et al., NeurIPS 2022, table 1, and `EDMPrecond` in their `training/networks.py`.
    """

    def __init__(self, net: Callable, sigma_data: float = 0.5, sde=None):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a callable net(x, c_noise, **cond), got {type(net).__name__}")
        check_sde("sde", sde, optional=True)
        self.net = net
        self.sigma_data = check_positive_finite("sigma_data", sigma_data)
        self.sde = sde

    def denoise(self, x: Tensor, sigma: Tensor | float, **cond) -> Tensor:
        r"""EDM's $D(x;\sigma)$ in the unscaled variable $x = x_0 + \sigma\varepsilon$."""
        x = check_batched("x", x)
        sigma = as_time(sigma, like=x, name="sigma")
        if sigma.ndim == 0 or sigma.shape[0] != x.shape[0]:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (append_dims(c, x.ndim) for c in edm_coefficients(sigma, self.sigma_data))
        F = self.net(c_in * x, c_noise.reshape(-1), **cond)  # F(c_in x, c_noise)
        check_output("net", F, x)
        return c_skip * x + c_out * F.to(x.dtype)  # D = c_skip x + c_out F

    def forward(self, x: Tensor, t: Tensor | float, **cond) -> Tensor:
        if self.sde is None:
            return self.denoise(x, t, **cond)
        x = check_batched("x", x)
        t = as_time(t, like=x)  # called every step: times are checked at the entry points
        alpha, sigma = self.sde.marginal(t)
        # The SDE's x_t = alpha_t (x0 + (sigma_t / alpha_t) eps): EDM's variable is x_t / alpha_t.
        return self.denoise(x / append_dims(alpha, x.ndim), sigma / alpha, **cond)

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data!r}, sde={self.sde!r}"
