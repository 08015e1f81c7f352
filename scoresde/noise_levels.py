r"""Noise-level proposals for the denoising loss: log-normal in $\sigma$ and logit-normal in $t$.

Beyond uniform $t$ and uniform log-SNR (both in [`DSMLoss`][scoresde.losses.DSMLoss]),
two recipes draw the training noise level from a bell curve:

* **log-normal in $\sigma$** (Karras et al. 2022, EDM): $\ln\tilde\sigma\sim\mathcal N(P_{\text{mean}}, P_{\text{std}}^2)$
  with $P_{\text{mean}} = -1.2$, $P_{\text{std}} = 1.2$;
* **logit-normal in $t$** (Esser et al. 2024, Stable Diffusion 3): for rectified flow
  ($\alpha_t = 1 - t$, $\sigma_t = t$), $\operatorname{logit}(t)\sim\mathcal N(m, s^2)$, default $m = 0$, $s = 1$.

Both are stated on the scale-free noise level $\tilde\sigma_t = \sigma_t/\alpha_t$ of the
variable $x_t/\alpha_t = x_0 + \tilde\sigma_t\varepsilon$ (the variable EDM's $\sigma$ lives in),
and so on the log-SNR $\lambda_t = \log(\alpha_t^2/\sigma_t^2) = -2\ln\tilde\sigma_t$, which every
SDE here inverts exactly (`t_from_log_snr`). For rectified flow $\tilde\sigma_t = t/(1-t)$, so
$\ln\tilde\sigma_t = \operatorname{logit}(t)$: *the logit-normal in rectified-flow time is the
log-normal in $\tilde\sigma$*, with other parameters. Both proposals are therefore one
distribution, a normal law of the log-SNR,
$\lambda\sim\mathcal N(-2\mu, 4s^2)$, truncated to the SDE's range
$[\lambda_T, \lambda_{t_\epsilon}]$ and mapped to the SDE's time by $t = \lambda^{-1}(\cdot)$; any
SDE obeying the protocol (VP, sub-VP, VE, rectified flow, EDM) gets the same noise-level
distribution up to that truncation. The draw is exact: inverse-CDF sampling of the truncated
normal, $z = \Phi^{-1}\big(\Phi(a) + u\,(\Phi(b) - \Phi(a))\big)$, in float64.

The density of the drawn time on $[t_\epsilon, T]$ is
$p(t) = \phi\big((\lambda_t - \mu_\lambda)/s_\lambda\big)\,|\dot\lambda_t| / \big(s_\lambda Z\big)$ with
$|\dot\lambda_t| = g(t)^2/\sigma_t^2$ and $Z = \Phi(b) - \Phi(a)$
([`density`][scoresde.noise_levels.LogSNRNormal.density]).

Each proposal comes with its paper's weighting (see [`scoresde.recipes`][scoresde.recipes]):
EDM's $\lambda(\tilde\sigma) = (\tilde\sigma^2+\sigma_{\text{data}}^2)/(\tilde\sigma\sigma_{\text{data}})^2$ on
$\|D - x_0\|^2$, and the flow-matching loss $\|\hat u - u_t\|^2$ for the logit-normal.

References: Karras, Aittala, Aila, Laine, *Elucidating the Design Space of Diffusion-Based
Generative Models*, NeurIPS 2022, table 1 and section 5; Esser et al., *Scaling Rectified
Flow Transformers for High-Resolution Image Synthesis*, ICML 2024, section 3.1.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import as_time, check_finite_number, check_int, check_positive_finite
from .sde import check_sde

__all__ = ["LogSNRNormal", "LogNormalSigma", "LogitNormalTime"]


def _check_sde(sde) -> None:
    check_sde("sde", sde)


def _check_t_min(t_min: float, T: float) -> float:
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not (0.0 <= t_min < T):
        raise ValueError(f"t_min: expected a number in [0, T) = [0, {T}), got {t_min!r}")
    return float(t_min)


class LogSNRNormal:
    r"""A normal law of the log-SNR, $\lambda\sim\mathcal N(\mu_\lambda, s_\lambda^2)$, truncated to the SDE's range.

    The common form of [`LogNormalSigma`][scoresde.noise_levels.LogNormalSigma] and
    [`LogitNormalTime`][scoresde.noise_levels.LogitNormalTime] (see the module docstring).

    Arguments:
        mean: $\mu_\lambda$, the mean of the log-SNR.
        std: $s_\lambda > 0$, its standard deviation.
    """

    def __init__(self, mean: float, std: float):
        self.mean = check_finite_number("mean", mean)
        self.std = check_positive_finite("std", std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(log-SNR ~ N({self.mean!r}, {self.std!r}^2))"

    def _bounds(self, sde, t_min: float) -> tuple[float, float]:
        """Standardised ends (a, b) of the log-SNR range [lambda_T, lambda_{t_min}] (host floats)."""
        ends = sde.log_snr(torch.tensor([t_min, sde.T], dtype=torch.float64))
        lam_hi, lam_lo = ends[0].item(), ends[1].item()
        return (lam_lo - self.mean) / self.std, (lam_hi - self.mean) / self.std

    def sample(
        self,
        sde,
        n: int,
        *,
        t_min: float = 0.0,
        generator: torch.Generator | None = None,
        device=None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        r"""Draw `n` times in $[t_{\min}, T]$ whose log-SNR is the truncated normal.

        Arguments:
            sde: the forward [`SDE`][scoresde.SDE] (any process with `log_snr` and its inverse).
            n: how many times.
            t_min: the smallest time ($t_\epsilon$ of the loss), in $[0, T)$.
            generator, device, dtype: the source, device and dtype of the draw.

        Returns:
            `(n,)` times.
        """
        _check_sde(sde)
        n = check_int("n", n)
        t_min = _check_t_min(t_min, sde.T)
        dtype = dtype or torch.get_default_dtype()
        a, b = self._bounds(sde, t_min)
        if not a < b:
            raise ValueError(f"sde: its log-SNR range on [t_min, T] = [{t_min}, {sde.T}] is empty")
        pa, pb = _ndtr(a), _ndtr(b)
        u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        # Inverse CDF of the truncated normal: z = Phi^-1(Phi(a) + u (Phi(b) - Phi(a))).
        z = torch.special.ndtri(pa + u * (pb - pa))
        lam = self.mean + self.std * z  # the log-SNR of each draw
        t = sde.t_from_log_snr(lam).clamp(t_min, sde.T)  # t = lambda^-1, rounding kept in range
        return t.to(dtype)

    def density(self, sde, t: float | Tensor, *, t_min: float = 0.0) -> Tensor:
        r"""The density $p(t)$ of the drawn times on $[t_{\min}, T]$.

        $p(t) = \phi(z_t)\,|\dot\lambda_t|/(s_\lambda Z)$, $z_t = (\lambda_t - \mu_\lambda)/s_\lambda$,
        $|\dot\lambda_t| = g(t)^2/\sigma_t^2$, $Z = \Phi(b) - \Phi(a)$; zero below $t_{\min}$.
        """
        _check_sde(sde)
        t_min = _check_t_min(t_min, sde.T)
        t = as_time(t, T=sde.T)
        a, b = self._bounds(sde, t_min)
        Z = _ndtr(b) - _ndtr(a)
        _, sigma = sde.marginal(t)
        z = (sde.log_snr(t) - self.mean) / self.std
        dlam = sde.diffusion(t) ** 2 / sigma**2  # -d(lambda)/dt = g^2 / sigma^2
        p = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) * dlam / (self.std * Z)
        return torch.where(t >= t_min, p, torch.zeros_like(p))


class LogNormalSigma(LogSNRNormal):
    r"""EDM's noise levels: $\ln\tilde\sigma\sim\mathcal N(P_{\text{mean}}, P_{\text{std}}^2)$, $\tilde\sigma_t = \sigma_t/\alpha_t$.

    The log-SNR is $-2\ln\tilde\sigma\sim\mathcal N(-2P_{\text{mean}}, 4P_{\text{std}}^2)$, truncated
    to the SDE's range. Pair it with EDM's weighting
    ([`edm_weighting`][scoresde.preconditioning.edm_weighting]), as in
    [`edm_loss`][scoresde.recipes.edm_loss].

    Arguments:
        p_mean: $P_{\text{mean}}$, default $-1.2$ (Karras et al. 2022, table 1).
        p_std: $P_{\text{std}}$, default $1.2$.

    Reference: Karras et al., NeurIPS 2022, table 1 ("Training, noise distribution").
    """

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        self.p_mean = check_finite_number("p_mean", p_mean)
        self.p_std = check_positive_finite("p_std", p_std)
        super().__init__(-2.0 * self.p_mean, 2.0 * self.p_std)

    def __repr__(self) -> str:
        return f"LogNormalSigma(p_mean={self.p_mean!r}, p_std={self.p_std!r})"


class LogitNormalTime(LogSNRNormal):
    r"""Stable Diffusion 3's times: $\operatorname{logit}(t_{\text{RF}})\sim\mathcal N(m, s^2)$ in rectified-flow time.

    Rectified-flow time is $t_{\text{RF}} = \tilde\sigma/(1+\tilde\sigma) = \operatorname{sigmoid}(-\lambda/2)$,
    so $\lambda = -2\operatorname{logit}(t_{\text{RF}})\sim\mathcal N(-2m, 4s^2)$; on the rectified
    flow itself this is exactly the logit-normal of its own $t$, on another SDE the same
    noise levels at that SDE's times. Pair it with the flow-matching loss
    ([`flow_matching_loss`][scoresde.recipes.flow_matching_loss]).

    Arguments:
        loc: $m$, default 0 (Esser et al.'s choice, "rf/lognorm(0.00, 1.00)").
        scale: $s$, default 1.

    Reference: Esser et al., *Scaling Rectified Flow Transformers for High-Resolution Image
    Synthesis*, ICML 2024, eq. (19).
    """

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        self.loc = check_finite_number("loc", loc)
        self.scale = check_positive_finite("scale", scale)
        super().__init__(-2.0 * self.loc, 2.0 * self.scale)

    def __repr__(self) -> str:
        return f"LogitNormalTime(loc={self.loc!r}, scale={self.scale!r})"


def _ndtr(x: float) -> float:
    """The standard normal CDF of a host float (infinite ends allowed)."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))
