r"""The sampling loop shared by every sampler: grid, noise, score checks, callbacks, progress.

A sampler is a small frozen dataclass holding its options (`DDIM(eta=0.0)`,
`DPMSolverPP(order=3)`, ...). [`sample`][scoresde.sample] builds a
[`SamplingContext`][scoresde.samplers.base.SamplingContext] (the time grid with its
$\alpha_t$, $\sigma_t$ and half-log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$ precomputed on the
state's device, the noise source and a checked score), draws $x_T$ from the prior and
hands both to the sampler, whose `step` advances the state from grid time $t_i$ to
$t_{i+1}$. The base class owns the loop, so each method is the few lines of its paper.

Every coefficient is computed from $(\alpha_t, \sigma_t)$ of the SDE's marginal
$x_t \mid x_0 \sim \mathcal N(\alpha_t x_0, \sigma_t^2 I)$, so one implementation serves the
VP, sub-VP and VE SDEs and any new linear SDE. For a step from $t_i$ to $t_{i+1} < t_i$ write
$h_i = \lambda_{t_{i+1}} - \lambda_{t_i} > 0$; the forward transition between the two times is
$x_{t_i} = a_i x_{t_{i+1}} + \sqrt{v_i}\,z$ with $a_i = \alpha_{t_i}/\alpha_{t_{i+1}}$ and
$v_i = \sigma_{t_i}^2 - a_i^2\sigma_{t_{i+1}}^2 = \sigma_{t_i}^2(1 - e^{-2h_i})$ (the SDE's exact
discretisation on the grid: DDPM's $\sqrt{1-\beta_i}$ and $\beta_i$ for the VP SDE, NCSN's
$\sigma_i^2 - \sigma_{i-1}^2$ for the VE SDE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import solvers
import torch
from torch import Tensor

from .._checks import Options, append_dims, check_output
from ..time_grids import TimeGrid, UniformTime

__all__ = ["Sampler", "SamplingContext", "StepInfo", "PerSampleGenerators", "as_noise_source"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------- noise
# The noise sources of a sampling call live in `solvers.noise` (they know nothing of diffusion);
# they are re-exported here and from `scoresde.samplers`.
PerSampleGenerators = solvers.PerSampleGenerators
as_noise_source = solvers.as_noise_source


# ---------------------------------------------------------------------- checked score
class _CheckedScore:
    """Calls the user's score, checks its shape, counts evaluations and records (without a
    host sync) the first time at which it returned a non-finite value.

    The score receives the state in the state's dtype (`dtype`, e.g. a half-precision network's
    float16) even where a step computes in higher precision, and its output is cast to it."""

    def __init__(self, score: ScoreFn, like: Tensor, dtype: torch.dtype | None = None):
        self.fn = score
        self.dtype = like.dtype if dtype is None else dtype
        self.nfe = 0
        self._bad_t = torch.full((), float("nan"), dtype=like.dtype, device=like.device)
        self._bad_input = torch.zeros((), dtype=like.dtype, device=like.device)  # max |x| at that call

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        x = x.to(self.dtype)
        out = check_output("score", self.fn(x, t), x)
        if out.dtype != x.dtype:
            if not out.is_floating_point():
                raise TypeError(
                    f"score: expected a real floating-point output like x ({x.dtype}), got dtype {out.dtype}"
                    " (an integer, bool or complex score would be cast silently)"
                )
            out = out.to(x.dtype)
        self.nfe += 1
        first = torch.isnan(self._bad_t) & ~torch.isfinite(out).all()
        self._bad_t = torch.where(first, t.reshape(-1)[0].to(self._bad_t.dtype), self._bad_t)
        self._bad_input = torch.where(first, x.detach().abs().amax().to(self._bad_input.dtype), self._bad_input)
        return out

    def raise_if_nonfinite(self) -> None:
        """Raise `solvers.NonFiniteError` (a `ValueError`) if the score ever returned NaN or inf."""
        bad = self._bad_t.item()
        if math.isnan(bad):
            return
        size = self._bad_input.item()
        raise solvers.NonFiniteError(
            f"score: returned a non-finite value (NaN or inf) at t = {bad:.6g}; its input had max |x| = {size:.3g}"
            " (a non-finite or huge input means the sampler diverged: use more steps or a smaller step size;"
            " a moderate one points at the score function or its time input)"
        )


# ---------------------------------------------------------------------- context
class SamplingContext:
    r"""What a sampler sees: the SDE, the checked score, the grid and its coefficients, the noise.

    Attributes:
        sde: the [`SDE`][scoresde.SDE].
        steps: the number of steps $N$ (the grid has $N + 1$ times).
        ts: the grid `(N + 1,)`, decreasing, on the state's device and dtype.
        alpha, sigma: $\alpha_{t_i}$, $\sigma_{t_i}$ on the grid, `(N + 1,)`.
        half_log_snr: the half-log-SNR $\lambda_{t_i} = \log(\alpha_{t_i}/\sigma_{t_i})$ (DPM-Solver's
            convention; `sde.log_snr` is $2\lambda$), `(N + 1,)`.
        shape, dtype, device: of the state.
        work_dtype: the dtype of the grid, its coefficients and each step's arithmetic: the
            state's, or float32 for a float16/bfloat16 state. Such a state is rounded once per step
            (the loop casts it to `work_dtype` before a step and back after it; the score receives
            it in `dtype`), not at every operation of the update, and its noise is drawn in
            float32: with an 8-bit significand (bfloat16) each rounding of a state of size 4 adds a
            variance of about 1e-4, which widened 0.25-wide modes by 2-4% over 20 steps when every
            operation rounded.
        final_denoise: whether a step into zero noise follows the last one (`denoise` on a
            grid that ends with $\sigma > 0$: Tweedie's or the flow's, see
            [`final_step`][scoresde.samplers.run.final_step]).
    """

    def __init__(self, sde, score: ScoreFn, ts: Tensor, noise, shape: tuple, dtype, device, denoise: bool = False):
        self.sde = sde
        self.ts = ts
        self.steps = ts.numel() - 1
        self.shape, self.dtype, self.device = shape, dtype, device
        self.batch, self.ndim = shape[0], len(shape)
        self.noise = noise
        self.work_dtype = ts.dtype
        self._score = _CheckedScore(score, ts, dtype)
        self.alpha, self.sigma = sde.marginal(ts)
        self.half_log_snr = 0.5 * sde.log_snr(ts)
        #: the grid as Python floats (read once, before the loop)
        self.times: list[float] = ts.tolist()
        #: the half-log-SNR on the grid as Python floats (read once, before the loop)
        self.half_log_snrs: list[float] = self.half_log_snr.tolist()
        #: the grid times as the `(B,)` tensors the score receives, `(N + 1, B)`
        self.t_grid = ts[:, None].repeat(1, self.batch)
        #: whether the grid ends where the noise vanishes (sigma = 0, infinite log-SNR):
        #: read once on the host, so samplers can take a first-order last step there.
        self.ends_noise_free = not math.isfinite(self.half_log_snr[-1].item())
        #: whether a final step into zero noise follows the last step (Tweedie's or the flow's, one
        #: evaluation; multistep samplers count it when lowering their final orders).
        self.final_denoise = bool(denoise) and not self.ends_noise_free

    def tail(self, k: int) -> "SamplingContext":
        """The same call from grid index `k` on: the grid and its coefficients from $t_k$, sharing
        the score (and its evaluation count) and the noise source. A sampler restarted on it
        (RePaint's jump back) sees $t_k$ as its first time, so multistep methods warm up again."""
        c = object.__new__(SamplingContext)
        c.__dict__.update(self.__dict__)
        c.ts, c.alpha, c.sigma, c.half_log_snr = self.ts[k:], self.alpha[k:], self.sigma[k:], self.half_log_snr[k:]
        c.times, c.half_log_snrs, c.t_grid = self.times[k:], self.half_log_snrs[k:], self.t_grid[k:]
        c.steps = self.steps - k
        return c

    # -- coefficient helpers
    def b(self, v: Tensor) -> Tensor:
        """Broadcast a 0-d or `(B,)` coefficient against the state (`append_dims`)."""
        return append_dims(v, self.ndim)

    @property
    def nfe(self) -> int:
        """Score evaluations so far."""
        return self._score.nfe

    @property
    def score_fn(self) -> ScoreFn:
        """The checked score callable `score(x, t)` (counts evaluations, tracks non-finite output)."""
        return self._score

    def t_batch(self, t: Tensor) -> Tensor:
        """A 0-d time as the `(B,)` tensor the score receives."""
        return t.reshape(1).expand(self.batch)

    # -- the score and what follows from it
    def score(self, x: Tensor, i: int) -> Tensor:
        r"""$\nabla_x\log p_{t_i}(x)$ at grid time $t_i$."""
        return self._score(x, self.t_grid[i])

    def score_at(self, x: Tensor, t: Tensor) -> Tensor:
        """The score at a 0-d time `t` off the grid (e.g. after EDM's noise increase)."""
        return self._score(x, self.t_batch(t))

    def denoised(self, x: Tensor, i: int, score: Tensor | None = None) -> Tensor:
        r"""Tweedie's $\hat x_0 = (x + \sigma_{t_i}^2\nabla\log p_{t_i}(x))/\alpha_{t_i}$ at grid time $t_i$."""
        s = self.score(x, i) if score is None else score
        return (x + self.sigma[i] ** 2 * s) / self.alpha[i]

    def denoised_at(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie's denoiser at a 0-d time `t` off the grid."""
        alpha, sigma = self.sde.marginal(t)
        return (x + sigma**2 * self.score_at(x, t)) / alpha

    def randn(self) -> Tensor:
        """Standard normal noise shaped like the state, from the call's noise source."""
        return self.noise.standard_normal(self.shape, self.work_dtype, self.device)

    def transition(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        r"""$(a_i, v_i, h_i)$ of the step $t_i \to t_{i+1}$: $x_{t_i} = a_i x_{t_{i+1}} + \sqrt{v_i} z$, $h_i = \lambda_{t_{i+1}} - \lambda_{t_i}$."""
        h = self.half_log_snr[i + 1] - self.half_log_snr[i]
        a = self.alpha[i] / self.alpha[i + 1]
        v = -self.sigma[i] ** 2 * torch.expm1(-2.0 * h)
        return a, v, h


# ---------------------------------------------------------------------- samplers
@dataclass
class StepInfo:
    """What a `callback` receives after each step.

    Attributes:
        step: the index $i$ of the step just taken ($t_i \to t_{i+1}$), from 0.
        steps: the number of steps $N$.
        t_cur, t_next: the step's times (0-d tensors).
        x: the state at `t_next`.
        denoised: the step's estimate of $x_0$ (Tweedie at `t_cur`), when the sampler
            computed one, else None.
        nfe: score evaluations so far.
    """

    step: int
    steps: int
    t_cur: Tensor
    t_next: Tensor
    x: Tensor
    denoised: Tensor | None
    nfe: int


class Sampler(Options):
    """Base class of samplers: options in a frozen dataclass, one `step` per grid interval.

    Options are declared with their checks ([`option`][scoresde._checks.option], e.g.
    `order: int = option(2, choices=(1, 2, 3))`); the inherited `__post_init__` runs them.

    Subclasses set `default_steps`, `default_grid`, `stochastic` and implement `step`
    (and `init` for multistep state, or `run` to take over the whole loop), and
    `evaluations(steps)` (score evaluations of a run, without the final denoising).
    """

    default_steps: ClassVar[int] = 100
    default_grid: ClassVar[TimeGrid] = UniformTime()
    stochastic: ClassVar[bool] = False
    #: whether the sampler chooses its own steps (then only the grid's ends are used)
    adaptive: ClassVar[bool] = False

    @property
    def steps_to_zero_noise(self) -> bool:
        """Whether the sampler takes its own last step from the grid's end into zero noise (as
        `LMS(to_zero=True)` and `EDMHeun(to_zero=True)` do); if not, and its grid ends with noise
        left, [`sample`][scoresde.samplers.run.sample] finishes with the final step of the default
        recipe unless `denoise` says otherwise."""
        return False

    def evaluations(self, steps: int) -> int:
        """Score evaluations of a run with `steps` steps (without the optional final denoising)."""
        return steps

    def moves(self, steps: int) -> int:
        """The number of steps a run reports to callbacks and the progress bar (`steps`; more for
        a wrapper that revisits the grid, as RePaint's resampling does)."""
        return steps

    def finalize(self, ctx: "SamplingContext", x: Tensor) -> Tensor:
        """Called once on the result, after the optional final denoising (the identity; a wrapper
        such as [`Imputation`][scoresde.samplers.imputation.Imputation] sets its known part)."""
        return x

    def check(self, sde, ts: Tensor) -> None:
        """Check, once before the loop, that this sampler can run `sde` on the grid `ts`."""

    def init(self, ctx: SamplingContext, x: Tensor) -> Any:
        """State carried between steps (multistep methods); None by default."""
        return None

    def step(self, ctx: SamplingContext, x: Tensor, i: int, state: Any) -> tuple[Tensor, Tensor | None]:
        """Advance `x` from $t_i$ to $t_{i+1}$; return the new state and the step's $\\hat x_0$ (or None)."""
        raise NotImplementedError

    def run(self, ctx: SamplingContext, x: Tensor, report: Callable[..., None]) -> Tensor:
        """The loop: `step` over the grid, `report(i, x, denoised)` after each step."""
        # each step computes in ctx.work_dtype; the state is stored (rounded once) in ctx.dtype
        state = self.init(ctx, x.to(ctx.work_dtype))
        for i in range(ctx.steps):
            x, denoised = self.step(ctx, x.to(ctx.work_dtype), i, state)
            x = x.to(ctx.dtype)
            report(i, x, denoised)
        return x
