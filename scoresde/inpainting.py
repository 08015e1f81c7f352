r"""Imputation (inpainting) of known coordinates in one call: [`impute`][scoresde.inpainting.impute].

The method is the sampler wrapper [`Imputation`][scoresde.samplers.imputation.Imputation]
(any sampler's step followed by the replacement of the known part, optionally with
RePaint's resampling), run by [`sample`][scoresde.samplers.run.sample]; this module is its short
convenience and the one-off projection [`replace_known`][scoresde.inpainting.replace_known].

Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021, appendix I.2; Lugmayr et al., *RePaint*, CVPR 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .sde import check_sde
from ._checks import as_time, check_batched, check_int, check_positive_finite
from .samplers.base import Sampler
from .samplers.imputation import Imputation, check_mask, replace_known_part
from .samplers.reverse import Ancestral, LangevinCorrector, PredictorCorrector
from .samplers.run import sample
from .samplers.solver import ReverseSDESampler

__all__ = ["impute", "replace_known", "IMPUTE_PREDICTORS"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]

#: The predictors `impute(..., predictor=...)` names (score_sde's): `Ancestral()` and `ReverseSDESampler()`.
IMPUTE_PREDICTORS = ("ancestral", "euler_maruyama")
IMPUTE_NORMS = ("noise", "sample", "batch")


def replace_known(
    x: Tensor,
    t: float | Tensor,
    x_known: Tensor,
    mask: Tensor,
    sde,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Overwrite the known coordinates of $x_t$ with a draw of $\alpha_t\,x_{\text{known}} + \sigma_t\,\varepsilon$.

    The projection step of the replacement method (Song et al. 2021, appendix I.2), the one
    [`Imputation`][scoresde.samplers.imputation.Imputation] applies after every step.

    Arguments:
        x: the current state $x_t$, `(B, ...)`.
        t: the time of `x`, a number or a `(B,)` tensor.
        x_known: the observed clean data, shaped like `x` (values off the mask are ignored and may be NaN).
        mask: bool, broadcastable to `x`; True where the value is known.
        sde: the forward SDE.
        generator: a `torch.Generator` for $\varepsilon$ (None: torch's global one).

    Returns:
        `x` with its known coordinates replaced.
    """
    x = check_batched("x", x)
    check_sde("sde", sde)
    x_known = check_batched("x_known", x_known)
    if x_known.shape != x.shape:
        raise ValueError(f"x_known: expected the shape of x, {tuple(x.shape)}, got {tuple(x_known.shape)}")
    mask = check_mask(mask, x_known)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    t = as_time(t, like=x, T=sde.T)
    alpha, sigma = sde.marginal(t)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return replace_known_part(x, alpha, sigma, x_known, mask, z)


@dataclass(frozen=True)
class _BatchNormLangevin(LangevinCorrector):
    """Song et al.'s corrector rule with both norms averaged over the batch (their code), for
    `norms="batch"` where `LangevinCorrector` itself does not offer it."""

    def __post_init__(self):
        check_positive_finite("snr", self.snr)
        check_int("n_steps", self.n_steps)

    def step_size(self, grad: Tensor, z: Tensor, sigma2: Tensor, alpha) -> Tensor:
        # eps = 2 alpha (r mean||z|| / mean||g||)^2, one step for the whole batch
        g_norm = grad.flatten(1).norm(dim=1).mean()
        z_norm = z.flatten(1).norm(dim=1).mean()
        eps = torch.where(g_norm > 0, 2.0 * alpha * (self.snr * z_norm / torch.where(g_norm > 0, g_norm, 1.0)) ** 2, 0.0)
        return eps * grad.new_ones(grad.shape[0])


def _corrector(snr: float, n_steps: int, norms: str) -> LangevinCorrector:
    if norms != "batch":
        return LangevinCorrector(snr=snr, n_steps=n_steps, norms=norms)
    try:  # Song et al.'s rule, uncapped, where LangevinCorrector offers it
        return LangevinCorrector(snr=snr, n_steps=n_steps, norms="batch", max_step=None)
    except ValueError:
        return _BatchNormLangevin(snr=snr, n_steps=n_steps, max_step=None)


def impute(
    sde,
    score: ScoreFn,
    x_known: Tensor,
    mask: Tensor,
    sampler: Sampler | None = None,
    steps: int | None = None,
    *,
    generator: Any = None,
    jump_length: int = 1,
    resample: int = 1,
    grid=None,
    t_end: float | None = None,
    x_init: Tensor | None = None,
    denoise: bool | str | None = None,
    callback=None,
    progress: bool | dict = False,
    corrector_steps: int = 0,
    snr: float = 0.16,
    norms: str = "noise",
    predictor: str | None = None,
) -> Tensor:
    r"""Impute the unknown coordinates of `x_known`: [`sample`][scoresde.samplers.run.sample] with an [`Imputation`][scoresde.samplers.imputation.Imputation] sampler.

    Equivalent to `sample(sde, score, x_known.shape, Imputation(sampler, x_known, mask,
    jump_length, resample), steps, generator=..., ...)` on `x_known`'s device and dtype:
    after every step of `sampler` the known part is replaced by
    $\alpha_t x_{\text{known}} + \sigma_t\varepsilon$, and it is $x_{\text{known}}$ exactly in
    the result. `steps`, `generator` (None, a `torch.Generator`, an int seed, one seed or
    generator per sample, a noise source), `grid`, `t_end`, `x_init`, `denoise`, `callback`
    and `progress` mean what they mean for `sample`.

    Song et al.'s predictor-corrector inpainter is one line: `corrector_steps=M` wraps the
    sampler (default `Ancestral()`) in `PredictorCorrector(sampler, LangevinCorrector(snr,
    M, norms))`, with a replacement after the predictor and after each Langevin step;
    `norms="batch"` is their code's batch-averaged step rule (a sample then depends on its
    batch), `"noise"` (default) and `"sample"` are those of
    [`LangevinCorrector`][scoresde.samplers.reverse.LangevinCorrector].

    Arguments:
        sde: the forward SDE.
        score: any score callable `score(x, t)`, called with `t` a `(B,)` tensor.
        x_known: the observed data `(B, ...)`; values off the mask are ignored (may be NaN),
            those on it must be finite.
        mask: bool (or 0/1), broadcastable to `x_known`; True where the value is known.
        sampler: any sampler that steps on a grid (default `Ancestral()`, the replacement
            method's predictor in Song et al.).
        steps: the number of grid steps (default: the sampler's `default_steps`).
        generator: the noise source, as for `sample`.
        jump_length, resample: RePaint's $j$ and $r$ (see
            [`repaint_schedule`][scoresde.samplers.imputation.repaint_schedule]); `resample=1`
            (default) is no resampling.
        grid, t_end, x_init, denoise, callback, progress: as for `sample`.
        corrector_steps: Langevin corrector steps per level, $M \ge 0$ (0: none).
        snr: the corrector's signal-to-noise ratio $r$ (0.16: Song et al., CIFAR-10, VE).
        norms: the corrector's step rule, `"noise"`, `"sample"` or `"batch"`.
        predictor: score_sde's names for the sampler, `"ancestral"` or `"euler_maruyama"`
            (`ReverseSDESampler()`); give this or `sampler`, not both.

    Returns:
        The completed samples, shaped like `x_known`, equal to it on the mask.

    Reference: Song et al., ICLR 2021, appendix I.2, Algorithms 4-5; Lugmayr et al., CVPR 2022.
    """
    x_known = check_batched("x_known", x_known)
    mask = check_mask(mask, x_known)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
    snr = check_positive_finite("snr", snr)
    if norms not in IMPUTE_NORMS:
        raise ValueError(f"norms: expected one of {IMPUTE_NORMS}, got {norms!r}")
    if predictor is not None:
        if predictor not in IMPUTE_PREDICTORS:
            raise ValueError(f"predictor: expected one of {IMPUTE_PREDICTORS}, got {predictor!r}")
        if sampler is not None:
            raise ValueError(f"predictor: give a sampler or a predictor name, not both; got sampler={sampler!r}"
                             f" and predictor={predictor!r}")
        sampler = Ancestral() if predictor == "ancestral" else ReverseSDESampler()
    if sampler is None:
        sampler = Ancestral()
    if corrector_steps > 0:
        if isinstance(sampler, PredictorCorrector):
            raise ValueError("corrector_steps: the sampler is already a PredictorCorrector; set its corrector instead")
        sampler = PredictorCorrector(sampler, _corrector(snr, corrector_steps, norms))
    if x_init is not None:
        x_init = check_batched("x_init", x_init)
        if x_init.shape != x_known.shape:
            raise ValueError(f"x_init: expected the shape of x_known, {tuple(x_known.shape)}, got {tuple(x_init.shape)}")
    wrapped = Imputation(sampler, x_known, mask, jump_length=jump_length, resample=resample)
    return sample(
        sde, score, x_known.shape if x_init is None else None, wrapped, steps,
        grid=grid, t_end=t_end, generator=generator, x_init=x_init, denoise=denoise,
        callback=callback, progress=progress,
        device=None if x_init is not None else x_known.device,
        dtype=None if x_init is not None else x_known.dtype,
    )
