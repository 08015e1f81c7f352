r"""Conditional generation through the score: imputation (inpainting) of known coordinates.

Given observed values $\Omega(x_0) = x_{\text{known}}$ on a mask $\Omega$, the replacement
method of Song et al. (2021, appendix I.2) samples the unknown coordinates with an
unconditional score: after every reverse step to time $t$, the known coordinates are
overwritten with a fresh draw of their forward marginal,
$\Omega(x_t) \leftarrow \alpha_t\,x_{\text{known}} + \sigma_t\,\varepsilon$, so the unknown
coordinates see a state that is consistent with the observation at every noise level.
Langevin corrector steps (each followed by the same replacement) let the unknown part
equilibrate with the known part at each level: the predictor-corrector form of the paper.

The replacement method is exact when the unknown coordinates are independent of the
known ones, and an approximation otherwise (the replaced noise is drawn independently of
the trajectory); the corrector steps reduce the error. No retraining is needed: any
score callable works, including guided ones.

Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021, section 4.2 (predictor-corrector samplers), appendix I.2
(imputation) and Algorithms 4-5 (the Langevin corrector).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ._checks import append_dims, check_batched, check_int, check_positive_finite, validation
from .sde import SDE, _checked_score

__all__ = ["impute", "replace_known", "IMPUTE_PREDICTORS"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]

#: The reverse-time steps `impute` offers.
IMPUTE_PREDICTORS = ("ancestral", "euler_maruyama")
IMPUTE_NORMS = ("noise", "sample", "batch")


def _check_mask(mask, x_known: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a bool tensor (True where x is known), got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask: expected a bool tensor or one of 0s and 1s, got dtype {mask.dtype} with other values")
        mask = mask != 0
    try:
        shape = torch.broadcast_shapes(mask.shape, x_known.shape)
    except RuntimeError:
        shape = None
    if shape != x_known.shape:
        raise ValueError(
            f"mask: expected a shape that broadcasts to x_known's {tuple(x_known.shape)}, got {tuple(mask.shape)}"
        )
    return mask.to(x_known.device)


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _replace(x: Tensor, t: Tensor, x_known: Tensor, mask: Tensor, sde, generator) -> Tensor:
    alpha, sigma = sde._marginal(t)
    known_t = append_dims(alpha, x.ndim) * x_known + append_dims(sigma, x.ndim) * _noise(x, generator)
    return torch.where(mask, known_t, x)


def replace_known(
    x: Tensor,
    t: float | Tensor,
    x_known: Tensor,
    mask: Tensor,
    sde: SDE,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Overwrite the known coordinates of $x_t$ with a draw of $\alpha_t\,x_{\text{known}} + \sigma_t\,\varepsilon$.

    The projection step of the replacement method (Song et al. 2021, appendix I.2); a
    sampler that offers a per-step callback can call it after each step to impute.

    Arguments:
        x: the current state $x_t$, `(B, ...)`.
        t: the time of `x`, a number or a `(B,)` tensor.
        x_known: the observed clean data, shaped like `x` (values off the mask are ignored and may be NaN).
        mask: bool, broadcastable to `x`; True where the value is known.
        sde: the forward SDE.
        generator: source of $\varepsilon$.

    Returns:
        `x` with its known coordinates replaced.
    """
    x = check_batched("x", x)
    if not isinstance(sde, SDE):
        raise TypeError(f"sde: expected a scoresde.SDE, got {type(sde).__name__}")
    x_known = check_batched("x_known", x_known)
    if x_known.shape != x.shape:
        raise ValueError(f"x_known: expected the shape of x, {tuple(x.shape)}, got {tuple(x_known.shape)}")
    mask = _check_mask(mask, x_known)
    t = sde._time(t, like=x)
    return _replace(x, t, x_known, mask, sde, generator)


def _mean_norm(v: Tensor) -> Tensor:
    """The batch mean of the per-sample Euclidean norms (a 0-d tensor)."""
    return v.reshape(v.shape[0], -1).norm(dim=-1).mean()


def impute(
    sde: SDE,
    score: ScoreFn,
    x_known: Tensor,
    mask: Tensor,
    *,
    steps: int = 500,
    predictor: str = "ancestral",
    corrector_steps: int = 0,
    snr: float = 0.16,
    norms: str = "noise",
    t_end: float = 0.0,
    denoise: bool = True,
    x_init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Impute the unknown coordinates of `x_known` with the replacement method (Song et al. 2021).

    On the grid $T = t_0 > t_1 > \dots > t_N = t_{\text{end}}$ (uniform, `steps` $= N$):

    1. $x \sim$ prior; replace its known part with $\alpha_T x_{\text{known}} + \sigma_T\varepsilon$.
    2. For $i = 0, \dots, N-1$: one predictor step from $t_i$ to $t_{i+1}$; replace the known
       part at $t_{i+1}$; then `corrector_steps` Langevin steps at $t_{i+1}$, each followed
       by a replacement.
    3. The last predictor step adds no noise when `denoise` (it returns the mean), and the
       known part is set to $x_{\text{known}}$ exactly.

    Predictors: `"ancestral"` samples the exact Gaussian posterior of the forward kernel
    given Tweedie's $\hat x_0$: with $a = \alpha_{t_i}/\alpha_{t_{i+1}}$ and
    $\tau^2 = \sigma_{t_i}^2 - a^2\sigma_{t_{i+1}}^2$,
    $x_{i+1} = (x_i + \tau^2 s(x_i, t_i))/a + \sigma_{t_{i+1}}\tau/\sigma_{t_i}\,z$: DDPM's
    ancestral step for the VP SDE and Song et al.'s ancestral step for the VE SDE (their
    appendix F). `"euler_maruyama"` steps the reverse SDE $dx = [f x - g^2 s]\,dt + g\,d\bar w$.
    The corrector is Song et al.'s Langevin step (Algorithms 4-5),
    $x \leftarrow x + \epsilon\,s + \sqrt{2\epsilon}\,z$ with the signal-to-noise rule
    $\epsilon = 2\,a^2 (r\,\lVert z\rVert / \lVert s\rVert)^2$ ($r$ = `snr`). `norms` says whose
    norms: `"noise"` (default) takes those of the noise-dominated limit,
    $\lVert z\rVert^2 = D$, $\lVert s\rVert^2 = D/\sigma_t^2$, so $\epsilon = 2a^2r^2\sigma_t^2$ for every
    sample: unbiased in any dimension, and no sample's step depends on the others; `"sample"` each
    sample's own norms (these two as in
    [`LangevinCorrector`][scoresde.samplers.reverse.LangevinCorrector], with its cap
    $\epsilon \le \sigma_t^2$); `"batch"` the authors' code, norms averaged over the batch (a
    sample then depends on the rest of its batch).

    With a mask that is all False this is ordinary predictor-corrector sampling.

    Arguments:
        sde: the forward SDE.
        score: any score callable `score(x, t)`, called with `t` a `(B,)` tensor.
        x_known: the observed data `(B, ...)`; values off the mask are ignored (may be NaN).
        mask: bool, broadcastable to `x_known`; True where the value is known.
        steps: the number of predictor steps $N$.
        predictor: `"ancestral"` or `"euler_maruyama"`.
        corrector_steps: Langevin steps per noise level (0: replacement alone).
        snr: the corrector's signal-to-noise ratio $r$ (Song et al. use 0.16 on CIFAR-10, VE).
        norms: the corrector's step-size rule: `"noise"`, `"sample"` or `"batch"` (see above).
        t_end: the final time (0 by default).
        denoise: make the last step noise-free.
        x_init: the initial state at $T$ (drawn from the prior when omitted).
        generator: source of all noise.

    Returns:
        The completed samples, shaped like `x_known`, equal to it on the mask.

    Reference: Song et al., ICLR 2021, appendix I.2, Algorithms 4-5; Ho et al. 2020, eqs. (6)-(7).
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde: expected a scoresde.SDE, got {type(sde).__name__}")
    if not callable(score):
        raise TypeError(f"score: expected a callable score(x, t), got {type(score).__name__}")
    x_known = check_batched("x_known", x_known)
    mask = _check_mask(mask, x_known)
    steps = check_int("steps", steps)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
    if predictor not in IMPUTE_PREDICTORS:
        raise ValueError(f"predictor: expected one of {IMPUTE_PREDICTORS}, got {predictor!r}")
    snr = check_positive_finite("snr", snr)
    if norms not in IMPUTE_NORMS:
        raise ValueError(f"norms: expected one of {IMPUTE_NORMS}, got {norms!r}")
    from .samplers.reverse import LangevinCorrector

    rule = None if norms == "batch" else LangevinCorrector(snr=snr, norms=norms)
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)) or not 0.0 <= t_end < sde.T:
        raise ValueError(f"t_end: expected a time in [0, T) = [0, {sde.T}), got {t_end!r}")
    if not isinstance(denoise, bool):
        raise TypeError(f"denoise: expected a bool, got {denoise!r}")
    B, device, dtype = x_known.shape[0], x_known.device, x_known.dtype
    if x_init is None:
        x = sde.prior_sample(x_known.shape, generator=generator, device=device, dtype=dtype)
    else:
        x = check_batched("x_init", x_init)
        if x.shape != x_known.shape:
            raise ValueError(f"x_init: expected the shape of x_known, {tuple(x_known.shape)}, got {tuple(x.shape)}")
    ts = torch.linspace(sde.T, float(t_end), steps + 1, device=device, dtype=dtype)

    with validation(False):
        x = _replace(x, ts[0].expand(B), x_known, mask, sde, generator)
        for i in range(steps):
            t_cur, t_next = ts[i].expand(B), ts[i + 1].expand(B)
            last = i == steps - 1
            alpha_cur, sigma_cur = sde._marginal(t_cur)
            alpha_next, sigma_next = sde._marginal(t_next)
            # a = alpha_cur / alpha_next: the signal kept by the forward kernel from t_next to t_cur
            a = alpha_cur / alpha_next
            s = _checked_score(score, x, t_cur)
            if predictor == "ancestral":
                # tau^2 = sigma_cur^2 - a^2 sigma_next^2 = sigma_cur^2 (1 - e^{lambda_cur - lambda_next})
                decay = -torch.expm1(sde._log_snr(t_cur) - sde._log_snr(t_next))
                tau2 = sigma_cur**2 * decay
                # x_next = (x + tau^2 s) / a + sigma_next tau / sigma_cur z   (Gaussian posterior given Tweedie's x0)
                x_mean = (x + append_dims(tau2, x.ndim) * s) / append_dims(a, x.ndim)
                std = sigma_next * torch.sqrt(decay)
            else:
                dt = t_next - t_cur  # negative: reverse time
                f, g = sde._drift_coef(t_cur), sde._diffusion(t_cur)
                # x_next = x + [f x - g^2 s] dt + g sqrt(|dt|) z
                x_mean = x + append_dims(dt, x.ndim) * (append_dims(f, x.ndim) * x - append_dims(g * g, x.ndim) * s)
                std = g * torch.sqrt(-dt)
            if last and denoise:
                x = x_mean
            else:
                x = x_mean + append_dims(std, x.ndim) * _noise(x, generator)
            if last:
                break
            # Replace the known coordinates by a draw of their marginal at t_next.
            x = _replace(x, t_next, x_known, mask, sde, generator)
            for _ in range(corrector_steps):
                # Langevin: eps = 2 a^2 (r |z| / |s|)^2, x <- x + eps s + sqrt(2 eps) z, then replace.
                s = _checked_score(score, x, t_next)
                z = _noise(x, generator)
                if rule is None:
                    s_norm, z_norm = _mean_norm(s), _mean_norm(z)
                    eps = torch.where(s_norm > 0, 2.0 * a * a * (snr * z_norm / torch.where(s_norm > 0, s_norm, 1.0)) ** 2, 0.0)
                else:
                    eps = rule.step_size(s, z, sigma_next**2, a * a)
                x = x + append_dims(eps, x.ndim) * s + append_dims(torch.sqrt(2.0 * eps), x.ndim) * z
                x = _replace(x, t_next, x_known, mask, sde, generator)
        x = torch.where(mask, x_known, x)
    return x
