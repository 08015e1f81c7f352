r"""Denoising score matching losses, continuous and discrete.

Every loss here is one quantity, the weighted denoising score-matching objective

$$\mathcal L(\theta) = \mathbb E_{t}\,\mathbb E_{x_0, \varepsilon}\Big[\lambda(t)\,
\big\|s_\theta(x_t, t) - \nabla_{x_t}\log p(x_t\mid x_0)\big\|^2\Big],\qquad
x_t = \alpha_t x_0 + \sigma_t\varepsilon,\quad \nabla_{x_t}\log p(x_t\mid x_0) = -\varepsilon/\sigma_t,$$

whose minimiser is the true score $\nabla\log p_t$ whatever the positive weighting
$\lambda(t)$ (Vincent 2011; Song et al. 2021, eq. 7). A network that predicts
$\varepsilon$, $x_0$ or $v$ instead of the score measures its error in its own space, and
the errors differ from the score error only by known factors,

| space | error | equals $w(t)\,\lVert s_\theta - s\rVert^2$ with $w(t) =$ |
|---|---|---|
| score | $\lVert s_\theta + \varepsilon/\sigma_t\rVert^2$ | $1$ |
| $\varepsilon$ | $\lVert\hat\varepsilon - \varepsilon\rVert^2$ | $\sigma_t^2$ |
| $x_0$ | $\lVert\hat x_0 - x_0\rVert^2$ | $\sigma_t^4/\alpha_t^2$ |
| $v$ | $\lVert\hat v - v\rVert^2$, $v = \alpha_t\varepsilon - \sigma_t x_0$ | $\sigma_t^2(\alpha_t^2+\sigma_t^2)^2/\alpha_t^2$ |
| flow | $\lVert\hat u - u_t\rVert^2$, $u_t = \dot\alpha_t x_0 + \dot\sigma_t\varepsilon$ | $g(t)^4/4$ |

so each loss computes the error in the network's native space (no division by a small
$\sigma_t$) and multiplies it by $\lambda(t)/w(t)$. The weightings by name:

* `"sigma2"` (alias `"eps"`): $\lambda = \sigma_t^2$, Song et al. 2021; the $\varepsilon$-loss,
  in continuous time the "simple" loss of Ho et al. 2020;
* `"likelihood"`: $\lambda = g(t)^2$, for which the loss bounds the negative log-likelihood
  (Song, Durkan, Murray, Ermon 2021); with `importance_sampling=True` the time is drawn
  from the variance-reducing proposal $p(t)\propto g(t)^2/\sigma_t^2$;
* `"x0"`: $\lambda = \sigma_t^4/\alpha_t^2$, the data-prediction loss;
* `"v"`: $\lambda = \sigma_t^2(\alpha_t^2+\sigma_t^2)^2/\alpha_t^2$, the velocity loss of
  Salimans & Ho 2022;
* `"uniform"`: $\lambda = 1$, plain score matching;
* `"flow"`: $\lambda = g(t)^4/4$, the flow-matching loss $\|\hat u - u_t\|^2$ with
  $u_t = \dot\alpha_t x_0 + \dot\sigma_t\varepsilon$ (for rectified flow $\varepsilon - x_0$), since
  $\hat u - u_t = -\tfrac12 g(t)^2(s_\theta - s)$ (see [`scoresde.flow`][scoresde.flow]); a
  `ScoreModel` with `prediction="flow"` is trained on its velocity error directly;
* any callable `weighting(t) -> (B,)`.

The discrete losses are the same objective over a finite set of noise levels:
[`NCSNLoss`][scoresde.losses.NCSNLoss] (Song & Ermon 2019, $\lambda(\sigma_i) = \sigma_i^2$
with their factor $\tfrac12$) and [`DDPMLoss`][scoresde.losses.DDPMLoss] (Ho et al.'s simple
loss over integer steps).

The model is a [`ScoreModel`][scoresde.ScoreModel] of any prediction type, or a plain
score callable `score(x, t, **cond)` (then pass `sde`). Per-sample losses come back with
`reduction="none"`; `reduce_dims` chooses the mean (default, as Ho et al.) or the sum
(as the likelihood bound) over the data dimensions.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import Tensor

from .sde import check_sde
from ._checks import append_dims, as_time, check_batched, check_finite_number, check_float_tensor, check_output
from .score_model import ScoreModel

__all__ = [
    "WEIGHTINGS",
    "DSMLoss",
    "NCSNLoss",
    "DDPMLoss",
    "dsm_loss",
    "eps_loss",
    "x0_loss",
    "v_loss",
    "ncsn_loss",
    "ddpm_loss",
]

#: The named weightings $\lambda(t)$ of the continuous loss.
WEIGHTINGS = ("sigma2", "eps", "likelihood", "x0", "v", "uniform", "flow")
_REDUCTIONS = ("mean", "sum", "none")


# ---------------------------------------------------------------------- weights
def _space_weight(space: str, alpha: Tensor, sigma: Tensor) -> Tensor:
    r"""$w(t)$ with (error in `space`) $= w(t)\,\|s_\theta - s\|^2$, see the module table."""
    s2 = sigma * sigma
    if space == "score":
        return torch.ones_like(sigma)
    if space == "eps":
        return s2
    if space == "x0":
        return s2 * s2 / (alpha * alpha)
    # space == "v"
    r = alpha * alpha + s2
    return s2 * r * r / (alpha * alpha)


def _check_reduction(reduction: str, reduce_dims: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    if reduce_dims not in ("mean", "sum"):
        raise ValueError(f"reduce_dims: expected 'mean' or 'sum', got {reduce_dims!r}")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _same_sde(a, b) -> bool:
    """Whether two SDEs are the same process (same type, parameters equal to float rounding)."""
    if type(a) is not type(b):
        return False
    pa, pb = a.params(), b.params()
    if pa.keys() != pb.keys():
        return False
    for k in pa:
        u, v = pa[k], pb[k]
        if isinstance(u, float) and isinstance(v, float):
            if not math.isclose(u, v, rel_tol=1e-9, abs_tol=0.0):
                return False
        elif u != v:
            return False
    return True


def _resolve_sde(model, sde):
    """The SDE of the loss: the model's for a ScoreModel (checked against `sde`), else `sde`."""
    check_sde("sde", sde, optional=True)
    if isinstance(model, ScoreModel):
        if sde is not None and not _same_sde(sde, model.sde):
            raise ValueError(f"sde: the loss was given {sde!r} but the model was built with {model.sde!r}")
        return model.sde
    if not callable(model):
        raise TypeError(f"model: expected a ScoreModel or a score callable score(x, t), got {type(model).__name__}")
    if sde is None:
        raise ValueError("sde: a plain score callable needs the SDE it was trained for; pass sde=")
    return sde


def _check_cond(cond) -> dict:
    if cond is None:
        return {}
    if not isinstance(cond, Mapping):
        raise TypeError(f"cond: expected a mapping of keyword arguments for the model (e.g. {{'y': labels}}), got {type(cond).__name__}")
    return dict(cond)


def _noise_for(x0: Tensor, noise: Tensor | None, generator: torch.Generator | None) -> Tensor:
    if noise is None:
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    check_float_tensor("noise", noise)
    if noise.shape != x0.shape:
        raise ValueError(f"noise: expected the shape of x0, {tuple(x0.shape)}, got {tuple(noise.shape)}")
    return noise.to(dtype=x0.dtype)


def _weighted_error(
    model,
    x0: Tensor,
    t: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    noise: Tensor,
    weight: Tensor,
    cond: dict,
    reduce_dims: str,
) -> Tensor:
    r"""Per-sample $\lambda\,\|s_\theta(x_t, t) - s\|^2$, computed in the model's native space.

    `alpha`, `sigma`, `weight` (the loss weighting $\lambda$) are `(B,)`; the model is evaluated at $x_t = \alpha x_0 + \sigma\varepsilon$.
    """
    nd = x0.ndim
    a, s = append_dims(alpha, nd), append_dims(sigma, nd)
    x_t = a * x0 + s * noise
    if isinstance(model, ScoreModel):
        space = model.prediction
        pred = model.predict(x_t, t, space, **cond)
    else:
        space = "score"
        pred = model(x_t, t, **cond)
        check_output("model", pred, x_t)
    # The exact regression target in the model's space (the module table).
    if space == "flow":
        from .flow import marginal_derivatives

        d_alpha, d_sigma = marginal_derivatives(model.sde, t)
        target = append_dims(d_alpha, nd) * x0 + append_dims(d_sigma, nd) * noise
        err = (pred.to(x0.dtype) - target).square().flatten(1)
        err = err.mean(1) if reduce_dims == "mean" else err.sum(1)
        half_g2 = 0.5 * model.sde.diffusion(t) ** 2  # u_hat - u = -(g^2 / 2)(s_hat - s)
        return weight / (half_g2 * half_g2) * err
    if space == "eps":
        target = noise
    elif space == "score":
        target = -noise / s
    elif space == "x0":
        target = x0
    else:
        target = a * noise - s * x0
    err = (pred.to(x0.dtype) - target).square().flatten(1)
    err = err.mean(1) if reduce_dims == "mean" else err.sum(1)
    return weight / _space_weight(space, alpha, sigma) * err


# ---------------------------------------------------------------------- continuous
class DSMLoss:
    r"""Continuous-time denoising score matching with a weighting $\lambda(t)$.

    $$\mathcal L = \mathbb E_{t\sim\mathcal U[t_\epsilon, T]}\,\mathbb E_{x_0,\varepsilon}
    \big[\lambda(t)\,\|s_\theta(\alpha_t x_0 + \sigma_t\varepsilon, t) + \varepsilon/\sigma_t\|^2\big],$$

    evaluated in the network's own prediction space (see the module docstring). With
    `importance_sampling=True` the time is drawn from $p(t)\propto g(t)^2/\sigma_t^2$ and
    each sample is reweighted by $\lambda(t)/\big(p(t)\,(T - t_\epsilon)\big)$, an unbiased
    estimate of the same $\mathcal L$. For every SDE here $g^2/\sigma^2 = -\tfrac{d}{dt}\log\mathrm{SNR}(t)$,
    so this proposal is the uniform distribution of the log-SNR on
    $[\lambda_T, \lambda_{t_\epsilon}]$, drawn exactly through the SDE's inverse
    `t_from_log_snr`, and for the likelihood weighting the reweighted integrand becomes
    $\frac{\lambda_{t_\epsilon} - \lambda_T}{T - t_\epsilon}\,\|\hat\varepsilon - \varepsilon\|^2$,
    constant in $t$ up to the error itself (Song, Durkan, Murray, Ermon 2021, section 5;
    Kingma et al. 2021).

    Arguments:
        sde: the forward SDE; omit it to use the `ScoreModel`'s own (needed for a plain
            score callable).
        weighting: one of `WEIGHTINGS` or a callable `weighting(t) -> (B,)` tensor.
        importance_sampling: draw $t$ from $p(t)\propto g^2/\sigma^2$ and reweight.
        time_sampler: a noise-level proposal (for example
            [`LogNormalSigma`][scoresde.noise_levels.LogNormalSigma] or
            [`LogitNormalTime`][scoresde.noise_levels.LogitNormalTime]) with a method
            `sample(sde, n, t_min=, generator=, device=, dtype=)`; the times are drawn from it
            on $[t_\epsilon, T]$ and not reweighted, so the loss is
            $\int p(t)\,\lambda(t)\,\ell(t)\,dt$ with $p$ the proposal's density (the
            recipes of Karras et al. 2022 and Esser et al. 2024). Not with `importance_sampling`.
        t_eps: smallest time, default $10^{-5}T$ (Song et al. 2021).
        reduction: `"mean"` or `"sum"` over the batch, or `"none"` for per-sample losses `(B,)`.
        reduce_dims: `"mean"` (default) or `"sum"` of the squared error over data dimensions.

    Call it as `loss(model, x0, cond=None, t=None, noise=None, generator=None)`: `t`
    `(B,)` (or a number) fixes the times (then no importance weight applies), `noise`
    fixes $\varepsilon$, `generator` is the source of both otherwise, and `cond` holds
    keyword arguments for the network (for example `{"y": labels}`).

    References: Song et al., *Score-Based Generative Modeling through Stochastic
    Differential Equations*, ICLR 2021; Song, Durkan, Murray, Ermon, *Maximum Likelihood
    Training of Score-Based Diffusion Models*, NeurIPS 2021; Ho, Jain, Abbeel, NeurIPS 2020;
    Salimans & Ho, ICLR 2022.
    """

    def __init__(
        self,
        sde=None,
        weighting: str | Callable[[Tensor], Tensor] = "sigma2",
        *,
        importance_sampling: bool = False,
        t_eps: float | None = None,
        reduction: str = "mean",
        reduce_dims: str = "mean",
        time_sampler=None,
    ):
        check_sde("sde", sde, optional=True)
        if not callable(weighting) and weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS} or a callable weighting(t), got {weighting!r}")
        if not isinstance(importance_sampling, bool):
            raise TypeError(f"importance_sampling: expected a bool, got {importance_sampling!r}")
        if t_eps is not None:
            t_eps = check_finite_number("t_eps", t_eps, ge=0.0)
            if sde is not None and t_eps >= sde.T:
                raise ValueError(f"t_eps: expected a value below T = {sde.T}, got {t_eps!r}")
        _check_reduction(reduction, reduce_dims)
        if time_sampler is not None:
            if not callable(getattr(time_sampler, "sample", None)):
                raise TypeError(
                    "time_sampler: expected a noise-level proposal with a method sample(sde, n, ...)"
                    f" (e.g. scoresde.noise_levels.LogNormalSigma()), got {type(time_sampler).__name__}"
                )
            if importance_sampling:
                raise ValueError("time_sampler: expected None with importance_sampling=True (each draws the times)")
        self.time_sampler = time_sampler
        self.sde = sde
        self.weighting = weighting
        self.importance_sampling = importance_sampling
        self._t_eps = t_eps
        self.reduction = reduction
        self.reduce_dims = reduce_dims

    def __repr__(self) -> str:
        w = self.weighting if isinstance(self.weighting, str) else getattr(self.weighting, "__name__", "callable")
        return (
            f"DSMLoss(sde={self.sde!r}, weighting={w!r}, importance_sampling={self.importance_sampling},"
            f" t_eps={self._t_eps}, reduction={self.reduction!r}, reduce_dims={self.reduce_dims!r}"
            + (f", time_sampler={self.time_sampler!r})" if self.time_sampler is not None else ")")
        )

    def t_eps(self, sde) -> float:
        """The smallest training time for `sde` (`t_eps` if given, else $10^{-5}T$)."""
        t_eps = 1e-5 * sde.T if self._t_eps is None else self._t_eps
        if t_eps >= sde.T:
            raise ValueError(f"t_eps: expected a value below T = {sde.T}, got {t_eps!r}")
        return t_eps

    def weight(self, sde, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        r"""The weighting $\lambda(t)$ at times `t` `(B,)`."""
        w = self.weighting
        if callable(w):
            out = w(t)
            if not isinstance(out, Tensor):
                out = torch.as_tensor(out, dtype=t.dtype, device=t.device)
            if out.shape not in ((), t.shape):
                raise ValueError(f"weighting: expected a scalar or shape {tuple(t.shape)}, got {tuple(out.shape)}")
            ok = (out >= 0) & torch.isfinite(out)
            if not bool(ok.all()):
                bad = out.reshape(-1)[~ok.reshape(-1)][0].item()
                raise ValueError(
                    f"weighting: expected finite values lambda(t) >= 0 (a negative weight rewards error), got {bad!r}"
                    " from the callable"
                )
            return out.to(dtype=t.dtype).expand_as(t)
        if w in ("sigma2", "eps"):
            return sigma * sigma
        if w == "likelihood":
            return sde.diffusion(t) ** 2
        if w == "uniform":
            return torch.ones_like(t)
        if w == "flow":
            half_g2 = 0.5 * sde.diffusion(t) ** 2
            return half_g2 * half_g2
        return _space_weight(w, alpha, sigma)  # "x0" or "v"

    def sample_time(
        self,
        sde,
        n: int,
        *,
        device=None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        r"""Draw `n` training times and their importance weights $1/(p(t)(T - t_\epsilon))$.

        Uniform on $[t_\epsilon, T]$ (weights 1), or, with `importance_sampling`, from
        $p(t) = \frac{g(t)^2/\sigma_t^2}{\lambda_{t_\epsilon} - \lambda_T}$ by inverting its CDF
        $F(t) = \frac{\lambda_{t_\epsilon} - \lambda_t}{\lambda_{t_\epsilon} - \lambda_T}$
        in closed form: $t = \lambda^{-1}\big(\lambda_{t_\epsilon} - u(\lambda_{t_\epsilon} - \lambda_T)\big)$,
        $u\sim\mathcal U[0, 1)$.
        """
        dtype = dtype or torch.get_default_dtype()
        t_eps, T = self.t_eps(sde), sde.T
        if self.time_sampler is not None:  # the proposal is part of the objective: no weights
            t = self.time_sampler.sample(sde, n, t_min=t_eps, generator=generator, device=device, dtype=dtype)
            return t, torch.ones_like(t)
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        if not self.importance_sampling:
            return t_eps + (T - t_eps) * u, torch.ones_like(u)
        ends = sde.log_snr(torch.tensor([t_eps, T], dtype=torch.float64))  # on the host: no device sync
        lam_hi, lam_lo = ends[0].item(), ends[1].item()
        lam_t = lam_hi - u.double() * (lam_hi - lam_lo)  # uniform in log-SNR (float64: VP's lam(t_eps) ~ 14)
        t = sde.t_from_log_snr(lam_t).clamp(t_eps, T)
        alpha, sigma = sde.marginal(t)
        g2 = sde.diffusion(t) ** 2
        # 1 / (p(t) (T - t_eps)) with p(t) = (g^2 / sigma^2) / (lam_hi - lam_lo).
        iw = (lam_hi - lam_lo) * sigma * sigma / (g2 * (T - t_eps))
        return t.to(dtype), iw.to(dtype)

    def __call__(
        self,
        model,
        x0: Tensor,
        *,
        cond: Mapping | None = None,
        t: float | Tensor | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        sde = _resolve_sde(model, self.sde)
        x0 = check_batched("x0", x0)
        cond = _check_cond(cond)
        B = x0.shape[0]
        if t is None:
            t, iw = self.sample_time(sde, B, device=x0.device, dtype=x0.dtype, generator=generator)
        else:
            t = as_time(t, like=x0, T=sde.T)
            t = t.expand(B) if t.ndim == 0 or t.shape[0] != B else t
            iw = None
        noise = _noise_for(x0, noise, generator)
        alpha, sigma = sde.marginal(t)
        if iw is None and bool((sigma <= 0).any()):
            raise ValueError(
                f"t: expected times with sigma_t > 0 (the target -eps/sigma_t is infinite at sigma_t = 0),"
                f" got t = {t[sigma <= 0][0].item()!r}; use t >= t_eps"
            )
        weight = self.weight(sde, t, alpha, sigma)
        if iw is not None:
            weight = weight * iw
        per_sample = _weighted_error(model, x0, t, alpha, sigma, noise, weight, cond, self.reduce_dims)
        return _reduce(per_sample, self.reduction)


def dsm_loss(
    model,
    x0: Tensor,
    sde=None,
    *,
    weighting: str | Callable[[Tensor], Tensor] = "sigma2",
    importance_sampling: bool = False,
    t_eps: float | None = None,
    reduction: str = "mean",
    reduce_dims: str = "mean",
    time_sampler=None,
    cond: Mapping | None = None,
    t: float | Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The continuous denoising score-matching loss, a one-call form of [`DSMLoss`][scoresde.losses.DSMLoss].

    $\mathbb E_{t,x_0,\varepsilon}[\lambda(t)\|s_\theta(x_t,t)+\varepsilon/\sigma_t\|^2]$ with
    $\lambda$ given by `weighting` (default $\sigma_t^2$, Song et al. 2021).

    Example:
        ```python
        model = ScoreModel(net, VPSDE(), prediction="eps")
        loss = dsm_loss(model, x0, weighting="likelihood", importance_sampling=True)
        ```
    """
    return DSMLoss(
        sde,
        weighting,
        importance_sampling=importance_sampling,
        t_eps=t_eps,
        reduction=reduction,
        reduce_dims=reduce_dims,
        time_sampler=time_sampler,
    )(model, x0, cond=cond, t=t, noise=noise, generator=generator)


def eps_loss(model, x0: Tensor, sde=None, **kwargs) -> Tensor:
    r"""The $\varepsilon$-loss $\mathbb E\|\hat\varepsilon(x_t, t) - \varepsilon\|^2$, $t\sim\mathcal U[t_\epsilon, T]$.

    Ho et al.'s "simple" loss in continuous time; equal to the score loss with
    $\lambda = \sigma_t^2$. Keyword arguments as [`dsm_loss`][scoresde.losses.dsm_loss].

    Reference: Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic Models*, NeurIPS 2020, eq. (14).
    """
    return dsm_loss(model, x0, sde, weighting="eps", **kwargs)


def x0_loss(model, x0: Tensor, sde=None, **kwargs) -> Tensor:
    r"""The data-prediction loss $\mathbb E\|\hat x_0(x_t, t) - x_0\|^2$ ($\lambda = \sigma_t^4/\alpha_t^2$).

    Keyword arguments as [`dsm_loss`][scoresde.losses.dsm_loss].
    """
    return dsm_loss(model, x0, sde, weighting="x0", **kwargs)


def v_loss(model, x0: Tensor, sde=None, **kwargs) -> Tensor:
    r"""The velocity loss $\mathbb E\|\hat v(x_t, t) - v\|^2$, $v = \alpha_t\varepsilon - \sigma_t x_0$.

    Equal to the score loss with $\lambda = \sigma_t^2(\alpha_t^2+\sigma_t^2)^2/\alpha_t^2$.
    Keyword arguments as [`dsm_loss`][scoresde.losses.dsm_loss].

    Reference: Salimans & Ho, *Progressive Distillation for Fast Sampling of Diffusion
    Models*, ICLR 2022.
    """
    return dsm_loss(model, x0, sde, weighting="v", **kwargs)


# ---------------------------------------------------------------------- discrete
class _DiscreteLoss:
    """Shared machinery of the losses over a finite set of noise levels."""

    _factor = 1.0

    def __init__(self, schedule, reduction: str, reduce_dims: str):
        _check_reduction(reduction, reduce_dims)
        self.schedule = schedule
        self.reduction = reduction
        self.reduce_dims = reduce_dims
        self._checked: list = []  # the SDEs of models already checked against the schedule

    def _levels(self) -> int:
        raise NotImplementedError

    def _level_marginal(self, index: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _level_time(self, index: Tensor, like: Tensor) -> Tensor:
        """The schedule's `t_of_index`, evaluated in the dtype of `like` (not the default dtype)."""
        raise NotImplementedError

    def _check_model(self, model) -> None:
        """A ScoreModel must carry the SDE of this schedule (its time input maps t back to the level)."""
        if not isinstance(model, ScoreModel):
            if not callable(model):
                raise TypeError(f"model: expected a ScoreModel or a score callable score(x, t), got {type(model).__name__}")
            return
        if any(sde is model.sde for sde in self._checked):
            return
        try:
            sde = self.schedule.to_sde()
        except ValueError:
            sde = None
        if sde is None or not _same_sde(sde, model.sde):
            raise ValueError(
                f"model: its SDE {model.sde!r} is not the continuous form of {self.schedule!r}"
                f" ({sde!r}); build the ScoreModel with schedule.to_sde()"
            )
        self._checked.append(model.sde)

    def __call__(
        self,
        model,
        x0: Tensor,
        *,
        cond: Mapping | None = None,
        index: Tensor | int | None = None,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        self._check_model(model)
        x0 = check_batched("x0", x0)
        cond = _check_cond(cond)
        B, n = x0.shape[0], self._levels()
        if index is None:
            index = torch.randint(0, n, (B,), generator=generator, device=x0.device)
        else:
            index = torch.as_tensor(index, device=x0.device)
            if index.is_floating_point() or index.dtype == torch.bool:
                raise TypeError(f"index: expected integer levels, got dtype {index.dtype}")
            index = index.expand(B) if index.ndim == 0 else index
            if index.shape != (B,):
                raise ValueError(f"index: expected an int or shape ({B},), got shape {tuple(index.shape)}")
            if bool(((index < 0) | (index >= n)).any()):
                raise ValueError(f"index: expected integers in [0, {n - 1}], got {index.tolist()}")
        noise = _noise_for(x0, noise, generator)
        t = self._level_time(index, x0)
        alpha, sigma = self._level_marginal(index, x0)
        weight = self._factor * sigma * sigma
        per_sample = _weighted_error(model, x0, t, alpha, sigma, noise, weight, cond, self.reduce_dims)
        return _reduce(per_sample, self.reduction)


class NCSNLoss(_DiscreteLoss):
    r"""NCSN's annealed denoising score matching over noise levels $\sigma_1 < \dots < \sigma_L$.

    $$\mathcal L = \frac1L\sum_{i}\sigma_i^2\,\tfrac12\,\mathbb E\big\|s_\theta(x_0 + \sigma_i\varepsilon, \sigma_i)
    + \varepsilon/\sigma_i\big\|^2 = \frac1L\sum_i\tfrac12\,\mathbb E\|\sigma_i s_\theta + \varepsilon\|^2,$$

    with the level drawn uniformly per sample (Song & Ermon 2019, eqs. 5-6: $\lambda(\sigma) = \sigma^2$
    makes every level's term of order one). The network is called at the level's continuous
    time $t_i = iT/(L-1)$, so a `ScoreModel` built on `schedule.to_sde()` with
    `time_input=lambda t: schedule.index_of_t(t).round().long()` sees the level index.
    With `reduce_dims="sum"` this is the paper's loss exactly.

    Arguments:
        schedule: an [`NCSNSchedule`][scoresde.NCSNSchedule].
        reduction, reduce_dims: as [`DSMLoss`][scoresde.losses.DSMLoss].

    Call it as `loss(model, x0, cond=None, index=None, noise=None, generator=None)`.

    Reference: Song & Ermon, *Generative Modeling by Estimating Gradients of the Data
    Distribution*, NeurIPS 2019.
    """

    _factor = 0.5

    def __init__(self, schedule, *, reduction: str = "mean", reduce_dims: str = "mean"):
        from .chains import NCSNSchedule

        if not isinstance(schedule, NCSNSchedule):
            raise TypeError(f"schedule: expected an NCSNSchedule, got {type(schedule).__name__}")
        super().__init__(schedule, reduction, reduce_dims)

    def _levels(self) -> int:
        return self.schedule.L

    def _level_marginal(self, index: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.schedule.sigma(index, like=like)
        return torch.ones_like(sigma), sigma

    def _level_time(self, index: Tensor, like: Tensor) -> Tensor:
        return self.schedule.t_of_index(index).to(device=like.device, dtype=like.dtype)  # t_i = i T / (L - 1)

    def __repr__(self) -> str:
        return f"NCSNLoss({self.schedule!r}, reduction={self.reduction!r}, reduce_dims={self.reduce_dims!r})"


class DDPMLoss(_DiscreteLoss):
    r"""DDPM's simple loss over integer steps: $\mathbb E_{i,x_0,\varepsilon}\|\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_i}x_0 + \sqrt{1-\bar\alpha_i}\varepsilon, i)\|^2$.

    The step $i$ is uniform on $\{0, \dots, N-1\}$ (Ho et al. 2020, Algorithm 1). The network
    is called at the step's continuous time $t_i = (i+1)T/N$ and its prediction converted
    with the chain's own $(\sqrt{\bar\alpha_i}, \sqrt{1-\bar\alpha_i})$, so an $x_0$- or
    $v$-network trains on the same objective. A `ScoreModel` built on `schedule.to_sde()`
    with `time_input=lambda t: schedule.index_of_t(t).round().long()` sees the step index.

    Arguments:
        schedule: a [`DDPMSchedule`][scoresde.DDPMSchedule].
        reduction, reduce_dims: as [`DSMLoss`][scoresde.losses.DSMLoss].

    Call it as `loss(model, x0, cond=None, index=None, noise=None, generator=None)`.

    Reference: Ho, Jain, Abbeel, *Denoising Diffusion Probabilistic Models*, NeurIPS 2020, eq. (14).
    """

    def __init__(self, schedule, *, reduction: str = "mean", reduce_dims: str = "mean"):
        from .chains import DDPMSchedule

        if not isinstance(schedule, DDPMSchedule):
            raise TypeError(f"schedule: expected a DDPMSchedule, got {type(schedule).__name__}")
        super().__init__(schedule, reduction, reduce_dims)

    def _levels(self) -> int:
        return self.schedule.N

    def _level_marginal(self, index: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        return self.schedule.marginal(index, like=like)

    def _level_time(self, index: Tensor, like: Tensor) -> Tensor:
        return self.schedule.t_of_index(index).to(device=like.device, dtype=like.dtype)  # t_i = (i + 1) T / N

    def __repr__(self) -> str:
        return f"DDPMLoss({self.schedule!r}, reduction={self.reduction!r}, reduce_dims={self.reduce_dims!r})"


def ncsn_loss(model, x0: Tensor, schedule, *, reduction: str = "mean", reduce_dims: str = "mean", **kwargs) -> Tensor:
    """One-call form of [`NCSNLoss`][scoresde.losses.NCSNLoss]; `kwargs` go to its call (`cond`, `index`, `noise`, `generator`)."""
    return NCSNLoss(schedule, reduction=reduction, reduce_dims=reduce_dims)(model, x0, **kwargs)


def ddpm_loss(model, x0: Tensor, schedule, *, reduction: str = "mean", reduce_dims: str = "mean", **kwargs) -> Tensor:
    """One-call form of [`DDPMLoss`][scoresde.losses.DDPMLoss]; `kwargs` go to its call (`cond`, `index`, `noise`, `generator`)."""
    return DDPMLoss(schedule, reduction=reduction, reduce_dims=reduce_dims)(model, x0, **kwargs)
