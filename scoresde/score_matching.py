r"""Score matching without noise: implicit (Hyvarinen 2005) and sliced (Song et al. 2019).

The Fisher divergence $\tfrac12\mathbb E_p\|s_\theta(x) - \nabla\log p(x)\|^2$ needs the unknown
score of the data. Integration by parts removes it (Hyvarinen 2005, theorem 1): up to a
constant that does not depend on $\theta$, it equals

$$J(\theta) = \mathbb E_{p}\Big[\tfrac12\|s_\theta(x)\|^2 + \operatorname{tr}\nabla_x s_\theta(x)\Big],$$

the *implicit score-matching* objective, whose minimiser is the data's score. The trace of
the Jacobian costs $d$ backward passes ([`ism_loss`][scoresde.score_matching.ism_loss],
exact, for small dimensions). *Sliced score matching* replaces it by random projections:
with $v$ drawn so that $\mathbb E[vv^\top] = I$ (Rademacher or standard normal),
$\operatorname{tr}\nabla s = \mathbb E_v[v^\top\nabla_x s\,v]$ and $v^\top\nabla_x s\,v = v^\top\nabla_x(v^\top s)$
is one backward pass (Hutchinson's estimator). Song, Garg, Shi & Ermon (2019) give two forms,

$$J_{\text{SSM}} = \mathbb E_{x,v}\Big[v^\top\nabla_x s_\theta(x)\,v + \tfrac12\big(v^\top s_\theta(x)\big)^2\Big],\qquad
J_{\text{SSM-VR}} = \mathbb E_{x,v}\Big[v^\top\nabla_x s_\theta(x)\,v + \tfrac12\|s_\theta(x)\|^2\Big],$$

both equal to $J$ in expectation; the variance-reduced form computes $\tfrac12\|s\|^2$ exactly
([`ssm_loss`][scoresde.score_matching.ssm_loss]). For the linear score $s(x) = -Ax$ on
$x\sim\mathcal N(0, \Sigma)$, $J = \tfrac12\operatorname{tr}(A^\top A\Sigma) - \operatorname{tr}A$.

**With noise.** [`noisy_score_matching_loss`][scoresde.score_matching.noisy_score_matching_loss]
applies either objective to the perturbed data $x_t = \alpha_t x_0 + \sigma_t\varepsilon$ and a
time-conditioned score $s_\theta(\cdot, t)$, weighted by $\lambda(t) = \sigma_t^2$, as Song et al.
(2019, section 4.2) train NCSN with sliced instead of denoising score matching; its minimiser is
the score of $p_t$ at every $t$, as for the denoising loss.

The score callable must act on each sample separately (no batch statistics): the
divergence of sample $i$ is taken through the batch's output.

References: Hyvarinen, *Estimation of Non-Normalized Statistical Models by Score Matching*,
JMLR 2005; Song, Garg, Shi, Ermon, *Sliced Score Matching: A Scalable Approach to Density and
Score Estimation*, UAI 2019; Hutchinson, *A Stochastic Estimator of the Trace of the
Influence Matrix*, 1989.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ._checks import as_time, check_batched, check_int, check_output, check_finite_number

__all__ = ["ism_loss", "ssm_loss", "noisy_score_matching_loss", "PROJECTIONS"]

#: The distributions of the projection vectors $v$ of sliced score matching.
PROJECTIONS = ("rademacher", "gaussian")
_REDUCTIONS = ("mean", "sum", "none")


def _check_common(score, x, reduction) -> Tensor:
    if not callable(score):
        raise TypeError(f"score: expected a callable score(x), got {type(score).__name__}")
    x = check_batched("x", x)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    return x


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _call(score: Callable, x: Tensor, t: Tensor | None) -> Tensor:
    s = score(x) if t is None else score(x, t)
    check_output("score", s, x)
    return s


def _ism(score: Callable, x: Tensor, t: Tensor | None) -> Tensor:
    """Per-sample 1/2 |s(x)|^2 + tr(d s / d x), the trace by d backward passes."""
    create_graph = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()  # keep the graph for training
    with torch.inference_mode(False), torch.enable_grad():  # autograd locally, also under no_grad / inference_mode
        x = x.detach().clone().requires_grad_(True)
        s = _call(score, x, t).flatten(1)
        div = torch.zeros(x.shape[0], device=x.device, dtype=s.dtype)
        for i in range(s.shape[1]):  # tr(grad s) = sum_i d s_i / d x_i, exactly
            (g,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
            div = div + g.flatten(1)[:, i]
        per_sample = 0.5 * s.square().sum(1) + div  # Hyvarinen's J per sample
    return per_sample if create_graph else per_sample.detach()


def _projections(shape, distribution: str, generator, device, dtype) -> Tensor:
    if distribution == "rademacher":  # v_i = +-1 with probability 1/2
        return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)  # v ~ N(0, I)


def _ssm(score, x, t, n_projections, distribution, variance_reduced, generator, projections) -> Tensor:
    """Per-sample SSM (or SSM-VR) objective, averaged over the projections."""
    M, B = n_projections, x.shape[0]
    create_graph = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    if projections is None:
        v = _projections((M * B,) + tuple(x.shape[1:]), distribution, generator, x.device, x.dtype)
    else:
        v = projections.reshape((M * B,) + tuple(x.shape[1:])).to(device=x.device, dtype=x.dtype)
    with torch.inference_mode(False), torch.enable_grad():
        v = v.clone()
        xr = x.detach().repeat((M,) + (1,) * (x.ndim - 1)).requires_grad_(True)  # M copies of the batch
        tr = None if t is None else t.repeat(M)
        s = _call(score, xr, tr)
        sv = (s * v).flatten(1).sum(1)  # v^T s(x)
        (grad_sv,) = torch.autograd.grad(sv.sum(), xr, create_graph=create_graph)  # grad_x (v^T s) = J^T v
        vJv = (grad_sv * v).flatten(1).sum(1)  # v^T J v, Hutchinson's estimate of tr J
        if variance_reduced:
            quad = 0.5 * s.flatten(1).square().sum(1)  # 1/2 |s|^2, exact (SSM-VR)
        else:
            quad = 0.5 * sv.square()  # 1/2 (v^T s)^2 (SSM)
        per_sample = (vJv + quad).reshape(M, B).mean(0)
    return per_sample if create_graph else per_sample.detach()


def _check_ssm_options(n_projections, distribution, variance_reduced, generator, projections, x) -> int:
    n_projections = check_int("n_projections", n_projections)
    if distribution not in PROJECTIONS:
        raise ValueError(f"distribution: expected one of {PROJECTIONS}, got {distribution!r}")
    if not isinstance(variance_reduced, bool):
        raise TypeError(f"variance_reduced: expected a bool, got {variance_reduced!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if projections is not None:
        if not isinstance(projections, Tensor) or not torch.is_floating_point(projections):
            raise TypeError(f"projections: expected a floating tensor or None, got {type(projections).__name__}")
        want = (n_projections,) + tuple(x.shape)
        if tuple(projections.shape) != want:
            raise ValueError(f"projections: expected shape (n_projections, *x.shape) = {want}, got {tuple(projections.shape)}")
    return n_projections


def ism_loss(score: Callable[[Tensor], Tensor], x: Tensor, *, reduction: str = "mean") -> Tensor:
    r"""Implicit score matching, $\tfrac12\|s(x)\|^2 + \operatorname{tr}\nabla_x s(x)$, with the exact divergence.

    The divergence takes one backward pass per data dimension: for small dimensions.
    Under `torch.no_grad()` or `torch.inference_mode()` the value is computed (with autograd
    locally on) and returned detached; otherwise the graph is kept so the loss trains the score's parameters.

    Arguments:
        score: a callable `score(x) -> Tensor` shaped like `x`, acting per sample.
        x: data samples `(B, ...)`.
        reduction: `"mean"` (default) or `"sum"` over the batch, or `"none"` for `(B,)`.

    Returns:
        The objective $J$ (sum over data dimensions), reduced over the batch.

    Reference: Hyvarinen, JMLR 2005, eq. (4).
    """
    x = _check_common(score, x, reduction)
    return _reduce(_ism(score, x, None), reduction)


def ssm_loss(
    score: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    n_projections: int = 1,
    distribution: str = "rademacher",
    variance_reduced: bool = True,
    generator: torch.Generator | None = None,
    projections: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Sliced score matching, $v^\top\nabla_x s\,v + \tfrac12\|s\|^2$ (SSM-VR) or $+\tfrac12(v^\top s)^2$ (SSM).

    Averaged over `n_projections` vectors $v$ per sample, each Rademacher ($\pm1$) or standard
    normal, so that $\mathbb E[vv^\top] = I$ and the expectation is the implicit objective of
    [`ism_loss`][scoresde.score_matching.ism_loss]. One backward pass per projection, whatever
    the dimension.

    Arguments:
        score: a callable `score(x) -> Tensor` shaped like `x`, acting per sample.
        x: data samples `(B, ...)`.
        n_projections: projections per sample, default 1 (Song et al. 2019).
        distribution: `"rademacher"` (default) or `"gaussian"`.
        variance_reduced: compute $\tfrac12\|s\|^2$ exactly (SSM-VR, default) instead of
            $\tfrac12(v^\top s)^2$.
        generator: source of the projections.
        projections: optional fixed projections, shape `(n_projections, *x.shape)`.
        reduction: `"mean"` (default) or `"sum"` over the batch, or `"none"` for `(B,)`.

    Returns:
        The estimate of $J$, reduced over the batch.

    Reference: Song, Garg, Shi, Ermon, UAI 2019, eqs. (7)-(8) and Algorithm 1.
    """
    x = _check_common(score, x, reduction)
    M = _check_ssm_options(n_projections, distribution, variance_reduced, generator, projections, x)
    return _reduce(_ssm(score, x, None, M, distribution, variance_reduced, generator, projections), reduction)


def noisy_score_matching_loss(
    score: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    sde=None,
    *,
    method: str = "ssm",
    weighting: str | Callable[[Tensor], Tensor] = "sigma2",
    t: float | Tensor | None = None,
    t_eps: float | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    n_projections: int = 1,
    distribution: str = "rademacher",
    variance_reduced: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""Score matching on perturbed data: $\mathbb E_t\,\lambda(t)\,\mathbb E_{x_t}\big[\tfrac12\|s(x_t, t)\|^2 + \operatorname{tr}\nabla_x s(x_t, t)\big]$.

    $t\sim\mathcal U[t_\epsilon, T]$ (or given), $x_t = \alpha_t x_0 + \sigma_t\varepsilon$, the
    divergence exact (`method="ism"`) or sliced (`method="ssm"`, options as
    [`ssm_loss`][scoresde.score_matching.ssm_loss]). At each $t$ the inner objective is the
    Fisher divergence to $p_t$ up to a constant, so the minimiser is $\nabla\log p_t$, as for
    the denoising loss; $\lambda(t) = \sigma_t^2$ (default) makes every level's term of order one.

    Arguments:
        score: a score callable `score(x, t)` (a [`ScoreModel`][scoresde.ScoreModel] too), acting per sample.
        x0: clean data `(B, ...)`.
        sde: the forward SDE; omit it for a `ScoreModel` (its own is used).
        method: `"ssm"` (default) or `"ism"`.
        weighting: `"sigma2"` (default), `"uniform"` or a callable `weighting(t) -> (B,)`.
        t: fixed times (a number or `(B,)`); drawn uniformly on $[t_\epsilon, T]$ otherwise.
        t_eps: smallest time, default $10^{-5}T$.
        noise: fixed $\varepsilon$, shaped like `x0`.
        generator: source of $t$, $\varepsilon$ and the projections.
        n_projections, distribution, variance_reduced: as `ssm_loss` (ignored by `"ism"`).
        reduction: `"mean"` (default) or `"sum"` over the batch, or `"none"` for `(B,)`.

    Reference: Song, Garg, Shi, Ermon, UAI 2019, section 4.2 (NCSN trained with SSM); Song
    et al., ICLR 2021 (the SDE's perturbation kernels).
    """
    from .losses import _noise_for, _resolve_sde

    sde = _resolve_sde(score, sde)
    x0 = _check_common(score, x0, reduction)
    if method not in ("ssm", "ism"):
        raise ValueError(f"method: expected 'ssm' or 'ism', got {method!r}")
    if not callable(weighting) and weighting not in ("sigma2", "uniform"):
        raise ValueError(f"weighting: expected 'sigma2', 'uniform' or a callable weighting(t), got {weighting!r}")
    M = _check_ssm_options(n_projections, distribution, variance_reduced, generator, None, x0)
    if t_eps is None:
        t_eps = 1e-5 * sde.T
    t_eps = check_finite_number("t_eps", t_eps, ge=0.0, lt=sde.T)
    B = x0.shape[0]
    if t is None:
        t = t_eps + (sde.T - t_eps) * torch.rand(B, generator=generator, device=x0.device, dtype=x0.dtype)
    else:
        t = as_time(t, like=x0, T=sde.T)
        t = t.expand(B) if t.ndim == 0 or t.shape[0] != B else t
    noise = _noise_for(x0, noise, generator)
    x_t = sde.perturb(x0, t, noise)  # x_t = alpha_t x0 + sigma_t eps
    if method == "ism":
        per_sample = _ism(score, x_t, t)
    else:
        per_sample = _ssm(score, x_t, t, M, distribution, variance_reduced, generator, None)
    if callable(weighting):
        lam = weighting(t)
        if not isinstance(lam, Tensor) or lam.shape not in ((), t.shape):
            raise ValueError(f"weighting: expected a tensor of shape () or {tuple(t.shape)}, got {lam!r}")
    elif weighting == "sigma2":
        lam = sde.marginal(t)[1] ** 2  # lambda = sigma_t^2 (Song & Ermon 2019)
    else:
        lam = torch.ones_like(t)
    return _reduce(lam * per_sample, reduction)
