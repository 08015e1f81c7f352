r"""Training recipes of the papers, as one-call losses: flow matching and EDM.

Each is the weighted denoising loss of [`DSMLoss`][scoresde.losses.DSMLoss] with its paper's
weighting and noise-level distribution, for any SDE of the protocol:

| recipe | noise levels | loss | reference |
|---|---|---|---|
| [`flow_matching_loss`][scoresde.recipes.flow_matching_loss] | $t\sim\mathcal U[t_\epsilon, T]$, or logit-normal ([`LogitNormalTime`][scoresde.noise_levels.LogitNormalTime]) | $\|\hat u - (\dot\alpha_t x_0 + \dot\sigma_t\varepsilon)\|^2$ | Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024 |
| [`edm_loss`][scoresde.recipes.edm_loss] | $\ln\tilde\sigma\sim\mathcal N(-1.2, 1.2^2)$ ([`LogNormalSigma`][scoresde.noise_levels.LogNormalSigma]) | $\lambda(\tilde\sigma)\,\|D - x_0\|^2$ | Karras et al. 2022 |

The losses are exact in every prediction space (the error is computed where the network
lives and multiplied by the known factor); a `ScoreModel` with `prediction="flow"` (flow
matching) or `prediction="x0"` around [`EDMPreconditioning`][scoresde.preconditioning.EDMPreconditioning]
(EDM) is trained on the paper's error itself.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from .losses import DSMLoss, _resolve_sde
from .noise_levels import LogNormalSigma
from .preconditioning import edm_weighting

__all__ = ["flow_matching_loss", "edm_loss"]


def flow_matching_loss(
    model,
    x0: Tensor,
    sde=None,
    *,
    time_sampler=None,
    t_eps: float | None = None,
    reduction: str = "mean",
    reduce_dims: str = "mean",
    cond: Mapping | None = None,
    t=None,
    noise: Tensor | None = None,
    generator=None,
) -> Tensor:
    r"""The (conditional) flow-matching loss $\mathbb E\,\|\hat u(x_t, t) - (\dot\alpha_t x_0 + \dot\sigma_t\varepsilon)\|^2$.

    For rectified flow the target is $\varepsilon - x_0$. Equal to the score loss with
    $\lambda = g(t)^4/4$ (`weighting="flow"`), since $\hat u - u_t = -\tfrac12 g(t)^2 (s_\theta - s)$,
    so any prediction type trains on it. Times are uniform on $[t_\epsilon, T]$ (Lipman et al.;
    Liu et al.) unless `time_sampler` is given, for example
    [`LogitNormalTime()`][scoresde.noise_levels.LogitNormalTime] (Esser et al. 2024).

    Arguments:
        model: a [`ScoreModel`][scoresde.ScoreModel] (ideally `prediction="flow"`) or a score callable.
        x0: clean data `(B, ...)`.
        sde: the forward SDE (needed for a plain score callable).
        time_sampler: a noise-level proposal, or None for uniform times.
        t_eps, reduction, reduce_dims, cond, t, noise, generator: as [`DSMLoss`][scoresde.losses.DSMLoss].

    Returns:
        The loss (a scalar, or `(B,)` with `reduction="none"`).

    References: Lipman et al., *Flow Matching for Generative Modeling*, ICLR 2023, eq. (23);
    Liu, Gong, Liu, *Flow Straight and Fast*, ICLR 2023, eq. (1); Esser et al., ICML 2024.
    """
    return DSMLoss(
        sde, "flow", t_eps=t_eps, reduction=reduction, reduce_dims=reduce_dims, time_sampler=time_sampler
    )(model, x0, cond=cond, t=t, noise=noise, generator=generator)


def edm_loss(
    model,
    x0: Tensor,
    sde=None,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    t_eps: float | None = None,
    reduction: str = "mean",
    reduce_dims: str = "mean",
    cond: Mapping | None = None,
    t=None,
    noise: Tensor | None = None,
    generator=None,
) -> Tensor:
    r"""EDM's training loss $\mathbb E_{\ln\tilde\sigma\sim\mathcal N(P_{\text{mean}}, P_{\text{std}}^2)}\,\lambda(\tilde\sigma)\,\|D(x_0 + \tilde\sigma\varepsilon; \tilde\sigma) - x_0\|^2$.

    $\lambda(\tilde\sigma) = (\tilde\sigma^2 + \sigma_{\text{data}}^2)/(\tilde\sigma\sigma_{\text{data}})^2$,
    with $\tilde\sigma_t = \sigma_t/\alpha_t$ drawn by
    [`LogNormalSigma`][scoresde.noise_levels.LogNormalSigma] (truncated to the SDE's range)
    and the score-space weighting [`edm_weighting`][scoresde.preconditioning.edm_weighting].
    For a model around [`EDMPreconditioning`][scoresde.preconditioning.EDMPreconditioning] the effective
    loss is $\|F_\theta - (x_0 - c_{\text{skip}}\tilde x)/c_{\text{out}}\|^2$ with weight 1.

    Arguments:
        model: a [`ScoreModel`][scoresde.ScoreModel] or a score callable.
        x0: clean data `(B, ...)`.
        sde: the forward SDE (needed for a plain score callable).
        sigma_data: the data's standard deviation, default 0.5.
        p_mean, p_std: the log-normal's parameters, default $-1.2$ and $1.2$ (table 1).
        t_eps, reduction, reduce_dims, cond, t, noise, generator: as [`DSMLoss`][scoresde.losses.DSMLoss].

    Returns:
        The loss (a scalar, or `(B,)` with `reduction="none"`).

    Reference: Karras, Aittala, Aila, Laine, NeurIPS 2022, table 1 and eq. (2), and
    `EDMLoss` in their `training/loss.py`.
    """
    sde = _resolve_sde(model, sde)
    return DSMLoss(
        sde,
        edm_weighting(sde, sigma_data),
        t_eps=t_eps,
        reduction=reduction,
        reduce_dims=reduce_dims,
        time_sampler=LogNormalSigma(p_mean, p_std),
    )(model, x0, cond=cond, t=t, noise=noise, generator=generator)
