r"""Imputation (inpainting) as a sampler wrapper: any sampler's step, then the known part replaced.

Given observed values $x_{\text{known}}$ on a mask $\Omega$ (True where a value is known),
the replacement method of Song et al. (2021, appendix I.2) samples the unknown coordinates
with an unconditional score: after every step of the wrapped sampler to grid time $t_{i+1}$
the known coordinates are overwritten with a fresh draw of their forward marginal,

$$\Omega(x_{t_{i+1}}) \leftarrow \alpha_{t_{i+1}}\,x_{\text{known}} + \sigma_{t_{i+1}}\,\varepsilon,$$

so the unknown coordinates always see a state consistent with the observation at the
current noise level. It is exact when the unknown coordinates are independent of the known
ones, and an approximation otherwise: the replaced noise is drawn independently of the
trajectory, so the sampler commits to a mode before the observation is informative. Two
remedies are offered:

* Langevin corrector steps at each level (wrap a
  [`PredictorCorrector`][scoresde.samplers.reverse.PredictorCorrector]): the known part is
  replaced after the predictor and after every corrector step, so the unknown part
  equilibrates with the observation at each level (Song et al.'s PC inpainter; with
  `LangevinCorrector(norms="batch")` their batch-averaged step rule).
* RePaint's resampling (Lugmayr et al. 2022): `jump_length` $= j$ and `resample` $= r$
  walk the grid back $j$ steps, re-noising with the forward transition
  $x_{t_{i}} = a_i x_{t_{i+1}} + \sqrt{v_i}\,z$, and redo them, $r - 1$ times per segment
  (see [`repaint_schedule`][scoresde.samplers.imputation.repaint_schedule]).

The wrapper is run by [`sample`][scoresde.samplers.run.sample], so it has its noise sources (a
per-sample seed list makes a sample independent of its batch), final denoising, progress,
callbacks and NaN reporting. The replacement noise comes from the call's noise source. The
known part of the returned samples equals $x_{\text{known}}$ exactly.

**Multistep samplers** (DPM-Solver++, UniPC) keep their history of denoised estimates
$\hat x_0^{(k)} = D(x_{t_k})$ at the *replaced* states, the points where the score was
evaluated; their updates are linear in the state and the estimates coordinate by
coordinate, so the unknown coordinates' update uses only their own past values and these
estimates, and the replaced known part never enters it except through the score. After a
RePaint jump back the history belongs to the discarded segment, so the wrapped sampler
restarts there (from first order, as at the start of a grid) on the rest of the grid.

References: Song et al., *Score-Based Generative Modeling through Stochastic Differential
Equations*, ICLR 2021, appendix I.2 and Algorithms 4-5; Lugmayr et al., *RePaint:
Inpainting using Denoising Diffusion Probabilistic Models*, CVPR 2022, Algorithm 1 and its
published resampling schedule (`get_schedule_jump`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from .._checks import append_dims, check_batched, check_int
from .base import Sampler, SamplingContext
from .reverse import PredictorCorrector

__all__ = ["Imputation", "repaint_schedule", "check_mask", "replace_known_part"]


def check_mask(mask: Any, x_known: Tensor) -> Tensor:
    """`mask` as a bool tensor on `x_known`'s device that broadcasts to `x_known`; a clear error otherwise."""
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


def check_known(x_known: Any, mask: Tensor) -> None:
    """Raise if a known value (mask True) is NaN or inf; values off the mask may be anything."""
    bad = (~torch.isfinite(x_known)) & mask
    if bool(bad.any()):
        raise ValueError(
            f"x_known: {int(bad.sum())} known values (where mask is True) are NaN or inf; the values"
            " on the mask must be finite (those off the mask are ignored and may be NaN)"
        )


def replace_known_part(x: Tensor, alpha: Tensor, sigma: Tensor, x_known: Tensor, mask: Tensor, z: Tensor) -> Tensor:
    r"""$x$ with $\Omega(x) \leftarrow \alpha\,x_{\text{known}} + \sigma z$ (`alpha`, `sigma` 0-d or `(B,)`)."""
    known_t = append_dims(alpha, x.ndim) * x_known + append_dims(sigma, x.ndim) * z
    return torch.where(mask, known_t, x)


def repaint_schedule(steps: int, jump_length: int = 10, resample: int = 10) -> list[int]:
    r"""RePaint's resampling schedule as the grid indices visited, from 0 ($t = T$) to `steps`.

    The published schedule (Lugmayr et al. 2022, `get_schedule_jump` with its defaults for the
    second and third jump levels, as diffusers' `RePaintScheduler`) in levels
    $\ell = N - 1, \dots, -1$ (level $\ell$ is grid index $N - 1 - \ell$): descend one level at a
    time; on reaching a level $\ell$ that is a multiple of $j$ below $N - j$ with resamplings
    left, climb back $j$ levels and descend again, $r - 1$ times per such level. A step to the
    next index is a step of the sampler; a step to the previous one is a forward transition
    (re-noising). With $j = r = 1$ it is the plain grid $0, 1, \dots, N$.

    Arguments:
        steps: the number of grid steps $N \ge 1$.
        jump_length: $j \ge 1$, the steps jumped back (10 in the paper).
        resample: $r \ge 1$, the times each segment is traversed (10 in the paper; 1: no resampling).

    Returns:
        The visited grid indices; `len - 1` moves, of which $N + (r - 1)\,j\,\lceil (N - j)/j\rceil$ are steps.
    """
    steps = check_int("steps", steps)
    jump_length = check_int("jump_length", jump_length)
    resample = check_int("resample", resample)
    # jumps[t] = r - 1 for t = 0, j, 2j, ... < N - j (the paper's dict of remaining jumps)
    jumps = {t: resample - 1 for t in range(0, steps - jump_length, jump_length)}
    t, levels = steps, []
    while t >= 1:
        # descend: t <- t - 1
        t -= 1
        levels.append(t)
        if jumps.get(t, 0) > 0:
            # jump back j levels, one forward transition each
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                levels.append(t)
    # the clean end (the paper's t = -1)
    levels.append(-1)
    return [steps - 1 - t for t in levels]


@dataclass(frozen=True, eq=False)
class Imputation(Sampler):
    r"""A sampler that imputes: `sampler`'s step, then the known part replaced by a draw of its marginal.

    For each step of the (optionally RePaint-resampled) grid: one step of `sampler` from
    $t_i$ to $t_{i+1}$, then $\Omega(x) \leftarrow \alpha_{t_{i+1}}x_{\text{known}} + \sigma_{t_{i+1}}\varepsilon$;
    the start $x_T$ has its known part replaced too, and the result's known part is
    $x_{\text{known}}$ exactly (after `sample`'s optional final denoising). A wrapped
    `PredictorCorrector` gets a replacement after its predictor and after every corrector
    step. See the module for the method, its bias, and how multistep samplers keep their
    history.

    Run it with [`sample`][scoresde.samplers.run.sample] on a state shaped like `x_known` (or use the
    convenience [`impute`][scoresde.inpainting.impute]):

    ```python
    x = scoresde.sample(sde, score, x_known.shape, Imputation(Ancestral(), x_known, mask),
                        steps=200, generator=list(range(len(x_known))))
    ```

    Arguments:
        sampler: any sampler that steps on a fixed grid (every sampler but the adaptive
            `ProbabilityFlowSampler` and `AnnealedLangevin`, which take over the whole loop;
            for Langevin-only imputation wrap `PredictorCorrector(None, LangevinCorrector(...))`).
        x_known: the observed data `(B, ...)`, on the state's device and dtype; values off
            the mask are ignored (may be NaN), those on it must be finite.
        mask: bool (or 0/1), broadcastable to `x_known`; True where the value is known.
        jump_length: RePaint's jump length $j \ge 1$.
        resample: RePaint's number of resamplings $r \ge 1$ (1, the default: no resampling).

    References: Song et al., ICLR 2021, appendix I.2; Lugmayr et al., CVPR 2022, Algorithm 1.
    """

    sampler: Sampler
    x_known: Tensor
    mask: Tensor
    jump_length: int = 1
    resample: int = 1

    def __post_init__(self):
        if isinstance(self.sampler, type):
            raise TypeError(f"sampler: pass an instance, e.g. {self.sampler.__name__}(), got the class itself")
        if not isinstance(self.sampler, Sampler):
            raise TypeError(f"sampler: expected a sampler instance such as Ancestral() or DDIM(), got {self.sampler!r}")
        if isinstance(self.sampler, Imputation):
            raise TypeError("sampler: an Imputation cannot wrap another Imputation; combine the masks instead")
        if self.sampler.adaptive:
            raise TypeError(
                f"sampler: {self.sampler!r} is adaptive and integrates without a grid, so there is no step after which"
                " to replace the known part; use a fixed-step solver such as ProbabilityFlowSampler(solvers.Heun())"
            )
        if type(self.sampler).step is Sampler.step:
            raise TypeError(
                f"sampler: {type(self.sampler).__name__} runs its own loop and has no per-step method to follow with"
                " the replacement; for Langevin-only imputation use PredictorCorrector(None, LangevinCorrector(...))"
            )
        x_known = check_batched("x_known", self.x_known)
        mask = check_mask(self.mask, x_known)
        check_known(x_known, mask)
        object.__setattr__(self, "mask", mask)
        check_int("jump_length", self.jump_length)
        check_int("resample", self.resample)

    # -- what sample() reads from a sampler: the wrapped sampler's
    @property
    def default_steps(self) -> int:  # type: ignore[override]
        return self.sampler.default_steps

    @property
    def default_grid(self):  # type: ignore[override]
        return self.sampler.default_grid

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return True  # the replacement draws noise

    def schedule(self, steps: int) -> list[int]:
        """The grid indices visited: [`repaint_schedule`][scoresde.samplers.imputation.repaint_schedule]."""
        if self.resample == 1:
            return list(range(steps + 1))
        return repaint_schedule(steps, self.jump_length, self.resample)

    def moves(self, steps: int) -> int:
        """The number of sampler steps (reported to callbacks and the progress bar)."""
        s = self.schedule(steps)
        return sum(b == a + 1 for a, b in zip(s[:-1], s[1:]))

    def evaluations(self, steps: int) -> int:
        """Score evaluations: the wrapped sampler's per step, times the schedule's steps (a PC
        corrector's steps included); exact for samplers with a fixed cost per step."""
        return round(self.sampler.evaluations(steps) * self.moves(steps) / steps)

    def check(self, sde, ts: Tensor) -> None:
        self.sampler.check(sde, ts)

    def __repr__(self) -> str:
        extra = f", jump_length={self.jump_length}, resample={self.resample}" if self.resample > 1 else ""
        return f"Imputation({self.sampler!r}, x_known=<{tuple(self.x_known.shape)}>{extra})"

    # -- the loop
    def _known_on(self, ctx: SamplingContext) -> tuple[Tensor, Tensor]:
        x_known, mask = self.x_known, self.mask
        if tuple(x_known.shape) != tuple(ctx.shape):
            raise ValueError(
                f"x_known: expected the shape of the state, {tuple(ctx.shape)}, got {tuple(x_known.shape)}"
                " (sample with shape=x_known.shape)"
            )
        if x_known.device != torch.device(ctx.device) or x_known.dtype != ctx.dtype:
            raise ValueError(
                f"x_known: it is {x_known.dtype} on {x_known.device} but the state is {ctx.dtype} on {ctx.device};"
                " sample with device=x_known.device, dtype=x_known.dtype"
            )
        if torch.device(mask.device) != torch.device(ctx.device):
            mask = mask.to(ctx.device)
        return x_known, mask

    def run(self, ctx: SamplingContext, x: Tensor, report: Callable[..., None]) -> Tensor:
        x_known, mask = self._known_on(ctx)
        alpha, sigma = ctx.alpha, ctx.sigma

        def replace(x: Tensor, i: int) -> Tensor:
            # Omega(x) <- alpha_{t_i} x_known + sigma_{t_i} eps, eps from the call's noise source
            return replace_known_part(x, alpha[i], sigma[i], x_known, mask, ctx.randn())

        inner = self.sampler
        pc = inner if isinstance(inner, PredictorCorrector) else None
        one_corrector = dataclasses.replace(pc.corrector, n_steps=1) if pc is not None and pc.corrector else None

        def step(sub: SamplingContext, x: Tensor, i: int, base: int, state: Any):
            if pc is None:
                # one step of the wrapped sampler, t_i -> t_{i+1}; then the replacement at t_{i+1}
                x, denoised = inner.step(sub, x, i - base, state)
                return replace(x, i + 1), denoised
            denoised = None
            if pc.predictor is not None:
                # predictor t_i -> t_{i+1}, then the replacement at t_{i+1}
                x, denoised = pc.predictor.step(sub, x, i - base, state)
            x = replace(x, i + 1)
            if one_corrector is not None:
                a, _, _ = ctx.transition(i)
                for _ in range(pc.corrector.n_steps):
                    # one Langevin step at t_{i+1}, then the replacement at t_{i+1}
                    x = one_corrector.correct(ctx, x, i + 1, a * a)
                    x = replace(x, i + 1)
            return x, denoised

        # x_T: its known part from the forward marginal at T
        x = replace(x, 0)
        sub, base, state = ctx, 0, inner.init(ctx, x)
        restart = False
        path = self.schedule(ctx.steps)
        for cur, nxt in zip(path[:-1], path[1:]):
            if nxt == cur + 1:
                if restart:
                    # after a jump back the history is the discarded segment's: restart on the rest of the grid
                    sub, base = ctx.tail(cur), cur
                    state, restart = inner.init(sub, x), False
                x, denoised = step(sub, x, cur, base, state)
                report(cur, x, denoised)
            else:
                # RePaint's jump back one step: x_{t_nxt} = a x_{t_cur} + sqrt(v) z, the forward transition
                a, v, _ = ctx.transition(nxt)
                x = a * x + v.sqrt() * ctx.randn()
                restart = True
        return x

    def finalize(self, ctx: SamplingContext, x: Tensor) -> Tensor:
        """The known part set to `x_known` exactly (after the final denoising, if any)."""
        x_known, mask = self._known_on(ctx)
        return torch.where(mask, x_known, x)
