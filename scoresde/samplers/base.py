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
import numbers
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import solvers
import torch
from torch import Tensor

from .._checks import append_dims, check_float_tensor, check_int, validation
from ..grids import TimeGrid, UniformTime, check_grid

__all__ = ["Sampler", "SamplingContext", "StepInfo", "sample", "final_step", "PerSampleGenerators", "as_noise_source"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------- noise
class PerSampleGenerators(solvers.NoiseSource):
    r"""One `torch.Generator` per sample: sample $b$ draws all its noise from generator $b$.

    A sample's noise then depends only on its own generator, never on the batch around it.
    Each draw loops over the batch (one small kernel per sample), so for large batches
    prefer a list of integer seeds (a counter-based stream per sample, one kernel per draw).

    Arguments:
        generators: a sequence of `torch.Generator`, one per sample, on the state's device.
    """

    def __init__(self, generators: Sequence[torch.Generator]):
        generators = list(generators)
        if not generators or not all(isinstance(g, torch.Generator) for g in generators):
            raise TypeError("generator: expected a non-empty sequence of torch.Generator, one per sample")
        self.generators = generators

    def _check(self, shape, device) -> None:
        if shape[0] != len(self.generators):
            raise ValueError(
                f"generator: got {len(self.generators)} per-sample generators for a batch of {shape[0]}:"
                " pass one generator per sample"
            )
        for g in self.generators:
            if torch.device(g.device).type != torch.device(device).type:
                raise ValueError(f"generator: a generator lives on {g.device} but the state is on {device}")

    def standard_normal(self, shape, dtype, device) -> Tensor:
        shape = tuple(shape)
        self._check(shape, device)
        return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype, device=device) for g in self.generators])

    def bind(self, shape, dtype, device, *, levy_area=False, span=None):
        shape = tuple(shape)
        self._check(shape, device)

        def increment(t_cur: float, t_next: float) -> Tensor:
            return self.standard_normal(shape, dtype, device).mul_(math.sqrt(abs(t_next - t_cur)))

        def increment_levy(t_cur: float, t_next: float) -> tuple[Tensor, Tensor]:
            # dW = sqrt|h| xi_1, dZ = h (dW / 2 + sqrt(|h| / 12) xi_2) (Kloeden & Platen 1992, 10.4)
            h = t_next - t_cur
            xi = self.standard_normal((shape[0], 2, *shape[1:]), dtype, device)
            dw = xi[:, 0] * math.sqrt(abs(h))
            return dw, h * (0.5 * dw + math.sqrt(abs(h) / 12.0) * xi[:, 1])

        return increment_levy if levy_area else increment

    def __repr__(self) -> str:
        return f"PerSampleGenerators(<{len(self.generators)} generators>)"


def as_noise_source(generator: Any, batch: int):
    r"""The noise source of a sampling call, from what the user passed as `generator`.

    * `None`: torch's global generator (`torch.manual_seed` controls it);
    * a `torch.Generator`: draws from it (reproducible for a given batch);
    * an `int` seed: one counter-based stream per sample, keyed by `(seed, b)`;
    * a sequence of `int` seeds (or an integer tensor), one per sample: sample $b$'s noise
      depends on its seed alone, so a sample is the same in any batch;
    * a sequence of `torch.Generator`, one per sample: the same invariance, drawn per sample;
    * a `solvers` noise source (`GeneratorNoise`, `SeededNoise`; a `BrownianTree` gives
      increments only, for `ReverseSDESampler` with `x_init`).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return solvers.GeneratorNoise(generator)
    if isinstance(generator, solvers.NoiseSource):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return solvers.SeededNoise(int(generator))
    if isinstance(generator, Tensor) or (isinstance(generator, (list, tuple)) and generator):
        if all(isinstance(g, torch.Generator) for g in generator):
            gens = PerSampleGenerators(generator)
            gens._check((batch,), gens.generators[0].device)
            return gens
        seeds = solvers.SeededNoise(generator if not isinstance(generator, tuple) else list(generator))
        if seeds.n_seeds is not None and seeds.n_seeds != batch:
            raise ValueError(
                f"generator: got {seeds.n_seeds} per-sample seeds for a batch of {batch}: pass one seed per sample"
            )
        return seeds
    raise TypeError(
        "generator: expected None, a torch.Generator, an int seed, a sequence of seeds or generators"
        f" (one per sample) or a solvers noise source, got {type(generator).__name__}"
    )


# ---------------------------------------------------------------------- checked score
class _CheckedScore:
    """Calls the user's score, checks its shape, counts evaluations and records (without a
    host sync) the first time at which it returned a non-finite value."""

    def __init__(self, score: ScoreFn, like: Tensor):
        self.fn = score
        self.nfe = 0
        self._bad_t = torch.full((), float("nan"), dtype=like.dtype, device=like.device)
        self._bad_input = torch.zeros((), dtype=like.dtype, device=like.device)  # max |x| at that call

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        out = self.fn(x, t)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"score: expected an output shaped like x, {tuple(x.shape)}, got {got}")
        if out.dtype != x.dtype:
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
        lam: the half-log-SNR $\lambda_{t_i} = \log(\alpha_{t_i}/\sigma_{t_i})$ (DPM-Solver's
            convention; `sde.log_snr` is $2\lambda$), `(N + 1,)`.
        shape, dtype, device: of the state.
        final_denoise: whether a step into zero noise follows the last one (`denoise` on a
            grid that ends with $\sigma > 0$: Tweedie's or the flow's, see
            [`final_step`][scoresde.samplers.base.final_step]).
    """

    def __init__(self, sde, score: ScoreFn, ts: Tensor, noise, shape: tuple, dtype, device, denoise: bool = False):
        self.sde = sde
        self.ts = ts
        self.steps = ts.numel() - 1
        self.shape, self.dtype, self.device = shape, dtype, device
        self.batch, self.ndim = shape[0], len(shape)
        self.noise = noise
        self._score = _CheckedScore(score, ts)
        self.alpha, self.sigma = sde._marginal(ts)
        self.lam = 0.5 * sde._log_snr(ts)
        #: the grid as Python floats (read once, before the loop)
        self.times: list[float] = ts.tolist()
        #: the half-log-SNR on the grid as Python floats (read once, before the loop)
        self.lams: list[float] = self.lam.tolist()
        #: the grid times as the `(B,)` tensors the score receives, `(N + 1, B)`
        self.t_grid = ts[:, None].repeat(1, self.batch)
        #: whether the grid ends where the noise vanishes (sigma = 0, infinite log-SNR):
        #: read once on the host, so samplers can take a first-order last step there.
        self.ends_noise_free = not math.isfinite(self.lam[-1].item())
        #: whether a final step into zero noise follows the last step (Tweedie's or the flow's, one
        #: evaluation; multistep samplers count it when lowering their final orders).
        self.final_denoise = bool(denoise) and not self.ends_noise_free

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
        alpha, sigma = self.sde._marginal(t)
        return (x + sigma**2 * self.score_at(x, t)) / alpha

    def randn(self) -> Tensor:
        """Standard normal noise shaped like the state, from the call's noise source."""
        return self.noise.standard_normal(self.shape, self.dtype, self.device)

    def transition(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        r"""$(a_i, v_i, h_i)$ of the step $t_i \to t_{i+1}$: $x_{t_i} = a_i x_{t_{i+1}} + \sqrt{v_i} z$, $h_i = \lambda_{t_{i+1}} - \lambda_{t_i}$."""
        h = self.lam[i + 1] - self.lam[i]
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


class Sampler:
    """Base class of samplers: options in a frozen dataclass, one `step` per grid interval.

    Subclasses set `default_steps`, `default_grid`, `stochastic` and implement `step`
    (and `init` for multistep state, or `run` to take over the whole loop), and
    `evaluations(steps)` (score evaluations of a run, without the final denoising).
    """

    default_steps: ClassVar[int] = 100
    default_grid: ClassVar[TimeGrid] = UniformTime()
    stochastic: ClassVar[bool] = False
    #: whether the sampler chooses its own steps (then only the grid's ends are used)
    adaptive: ClassVar[bool] = False

    def evaluations(self, steps: int) -> int:
        """Score evaluations of a run with `steps` steps (without the optional final denoising)."""
        return steps

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
        state = self.init(ctx, x)
        for i in range(ctx.steps):
            x, denoised = self.step(ctx, x, i, state)
            report(i, x, denoised)
        return x


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, (tuple, list)) or not shape:
        raise TypeError(f"shape: expected a non-empty sequence of ints (B, ...), got {shape!r}")
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"shape: expected positive ints (B, ...), got {tuple(shape)!r}")
    return tuple(int(s) for s in shape)


#: the final steps `sample(..., denoise=...)` knows: True means "tweedie"
DENOISE_MODES = ("tweedie", "flow")


def check_denoise(denoise: bool | str | None) -> str | None:
    """`denoise` as None (no final step), "tweedie" or "flow"; a clear error for anything else."""
    if denoise is None or denoise is False:
        return None
    if denoise is True:
        return "tweedie"
    if isinstance(denoise, str) and denoise in DENOISE_MODES:
        return denoise
    raise (ValueError if isinstance(denoise, str) else TypeError)(
        f"denoise: expected a bool, 'tweedie' or 'flow', got {denoise!r}"
    )


def final_step(ctx: SamplingContext, x: Tensor, how: str) -> Tensor:
    r"""The last step from the grid's end $t_{\text{end}}$ into zero noise (one evaluation).

    With $\hat x = x/\alpha$, $\hat\sigma = \sigma/\alpha$ at $t_{\text{end}}$ and
    $D(\hat x) = \hat x + \hat\sigma^2\nabla_{\hat x}\log\hat p$ Tweedie's denoiser:

    * `"tweedie"`: $D(\hat x)$, the posterior mean $E[x_0\mid x_{t_{\text{end}}}]$. It is
      the first-order step of the probability flow with the denoiser held fixed, and it
      narrows the distribution: a component of standard deviation $s$ comes out with
      $s^2/\sqrt{s^2 + \hat\sigma^2}$, a relative error of $-\hat\sigma^2/2s^2$.
    * `"flow"`: $(\hat x + D(\hat x))/2$, the probability flow
      $d\hat x/d\hat\sigma = -\hat\sigma\nabla\log\hat p_{\hat\sigma}(\hat x)$ integrated
      from $\hat\sigma$ to 0 with the score held fixed. For a density smooth on the scale
      $\hat\sigma$ the score has a limit as $\hat\sigma \to 0$ (while $\hat x - D$ vanishes
      like $\hat\sigma^2$), so this step is exact to $O(\hat\sigma^4/s^4)$ and keeps the
      spread that Tweedie's step removes. For data
      concentrated on sets thinner than $\hat\sigma$ (a manifold, quantised pixels), the
      score grows like $1/\hat\sigma^2$ across them and the flow's own last step is the
      projection that Tweedie's denoiser makes: there `"tweedie"` is right and `"flow"`
      leaves half the remaining noise.

    Both are the limits of the step that is exact for Gaussian data of any covariance,
    $\hat x - (I + J^{1/2})^{-1}(\hat x - D)$ with $J = \partial D/\partial\hat x$
    ($J \to I$ for smooth densities, $J \to 0$ across thin sets).
    """
    x0 = ctx.denoised(x, ctx.steps)
    if how == "flow":
        x0 = 0.5 * (x / ctx.alpha[-1] + x0)
    return x0


def _make_progress(progress, total: int, name: str):
    if progress is False or progress is None:
        return None
    from tqdm.auto import tqdm

    kwargs = dict(progress) if isinstance(progress, dict) else {}
    kwargs.setdefault("desc", name)
    return tqdm(total=total, **kwargs)


def sample(
    sde,
    score: ScoreFn,
    shape: Sequence[int] | None = None,
    sampler: Sampler | None = None,
    steps: int | None = None,
    *,
    grid: TimeGrid | Tensor | None = None,
    t_end: float | None = None,
    generator: Any = None,
    x_init: Tensor | None = None,
    denoise: bool | str = False,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Draw samples by running `sampler` from the prior at $t = T$ down to $t_{\text{end}}$.

    The state starts at $x_T \sim$ the SDE's prior (or `x_init`) and is advanced over a
    decreasing time grid by the sampler; optionally a final Tweedie step returns
    $\hat x_0 = (x + \sigma_{t_{\text{end}}}^2 \nabla\log p_{t_{\text{end}}}(x))/\alpha_{t_{\text{end}}}$,
    which removes the noise left at $t_{\text{end}}$ (EDM's last step to $\sigma = 0$, NCSNv2's
    final denoising). Runs under `torch.no_grad()`; score callables that need gradients
    (classifier guidance) enable them locally. Value checks are off inside the loop (no host
    synchronisation per step); a score that returns NaN or inf is reported once at the end,
    with the time at which it first did.

    Arguments:
        sde: the [`SDE`][scoresde.SDE] whose reverse is sampled.
        score: any callable `score(x, t)` returning $\nabla_x\log p_t(x)$ shaped like `x`
            (`t` is a `(B,)` tensor), e.g. a [`ScoreModel`][scoresde.ScoreModel] or an exact
            [`DiffusedMixture.score`][scoresde.analytic.DiffusedMixture.score].
        shape: the batch shape `(B, ...)`; may be omitted when `x_init` is given.
        sampler: a sampler instance (default `DPMSolverPP(order=2)`).
        steps: the number of steps $N \ge 1$ (default: the sampler's `default_steps`).
        grid: a [`TimeGrid`][scoresde.grids.TimeGrid] (default: the sampler's) or an explicit
            strictly decreasing 1-D tensor of times in $[0, T]$ (then `steps` is its length - 1).
        t_end: the last time of the grid (default [`default_t_end`][scoresde.grids.default_t_end]).
        generator: the noise source: None, a `torch.Generator`, an int seed, a list of seeds
            or generators with one per sample (a sample then does not depend on its batch),
            or a `solvers` noise source.
        x_init: start from this state at `grid[0]` instead of a prior draw (e.g. a latent from
            the probability-flow encoder).
        denoise: finish with a step from $t_{\text{end}}$ into zero noise (one more
            evaluation): True or `"tweedie"`, Tweedie's denoiser (the posterior mean); `"flow"`,
            the probability flow's last step with the score held fixed,
            $(x/\alpha + \hat x_0)/2$, which keeps the spread Tweedie's step removes from
            data that is smooth on the scale of the remaining noise (see
            [`final_step`][scoresde.samplers.base.final_step]). False: end at $t_{\text{end}}$.
        callback: called with a [`StepInfo`][scoresde.samplers.base.StepInfo] after each step.
        progress: show a tqdm progress bar (a dict is passed to tqdm as keyword arguments).
        device, dtype: of the state when `x_init` is not given (default: the generator's
            device or the CPU; torch's default dtype).

    Returns:
        The samples, shape `shape`.

    Example:
        ```python
        x = scoresde.sample(sde, model, (64, 3, 32, 32), DPMSolverPP(order=3), steps=20, generator=0)
        ```
    """
    from ..sde import SDE
    from .exponential import DPMSolverPP

    if not isinstance(sde, SDE):
        raise TypeError(f"sde: expected a scoresde.SDE (VPSDE, SubVPSDE, VESDE, ...), got {type(sde).__name__}")
    if not callable(score):
        raise TypeError(f"score: expected a callable score(x, t), got {type(score).__name__}")
    sampler = DPMSolverPP() if sampler is None else sampler
    if not isinstance(sampler, Sampler):
        raise TypeError(
            "sampler: expected a sampler instance such as DDIM(), DPMSolverPP(order=2), EulerMaruyama(),"
            f" got {sampler!r}"
        )
    denoise = check_denoise(denoise)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable callback(info) or None, got {type(callback).__name__}")

    # -- the state's shape, device and dtype
    if isinstance(shape, Sampler):
        raise TypeError(f"shape: expected the batch shape (B, ...), got the sampler {shape!r}; pass it as sampler=...")
    if x_init is not None:
        check_float_tensor("x_init", x_init)
        if x_init.ndim < 1:
            raise ValueError("x_init: expected a tensor of shape (B, ...), got a 0-d tensor")
        if shape is not None and tuple(shape) != tuple(x_init.shape):
            raise ValueError(f"shape: expected the shape of x_init, {tuple(x_init.shape)}, got {tuple(shape)}")
        shape, device, dtype = tuple(x_init.shape), x_init.device, x_init.dtype
    else:
        if shape is None:
            raise ValueError("shape: expected the batch shape (B, ...) when x_init is not given, got None")
        shape = _check_shape(shape)
        if device is None:
            device = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
        device = torch.device(device)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating-point dtype, got {dtype}")

    # -- the grid
    if grid is None:
        grid = sampler.default_grid
    if sampler.adaptive and steps is not None:
        raise ValueError(
            f"steps: {sampler!r} is adaptive and chooses its own steps; set its rtol/atol instead, got steps={steps}"
        )
    if isinstance(grid, TimeGrid):
        if steps is None:
            steps = grid.fixed_steps or sampler.default_steps
        steps = check_int("steps", steps)
        ts = grid(sde, steps, t_end, device=device, dtype=dtype)
    elif isinstance(grid, Tensor):
        if t_end is not None:
            raise ValueError("t_end: an explicit grid already fixes the end time; pass one or the other")
        ts = check_grid("grid", grid, sde.T).to(device=device, dtype=dtype)
        if steps is not None and check_int("steps", steps) != ts.numel() - 1:
            raise ValueError(f"steps: the grid has {ts.numel() - 1} steps, got steps={steps}")
    else:
        raise TypeError(
            f"grid: expected a TimeGrid (UniformTime(), KarrasGrid(), UniformLogSNR()) or a 1-D tensor, got {grid!r}"
        )
    sampler.check(sde, ts)

    noise = as_noise_source(generator, shape[0])
    bar = _make_progress(progress, None if sampler.adaptive else ts.numel() - 1, type(sampler).__name__)
    try:
        with torch.no_grad(), validation(False):
            if x_init is None:
                if type(noise).standard_normal is solvers.NoiseSource.standard_normal:
                    raise TypeError(
                        f"generator: {noise!r} gives Brownian increments only; pass the prior draw as x_init"
                    )
                x = noise.standard_normal(shape, dtype, device) * sde.prior_std
            else:
                x = x_init.clone()
            ctx = SamplingContext(sde, score, ts, noise, shape, dtype, device, denoise=denoise is not None)

            def report(i: int, x_next: Tensor, denoised: Tensor | None, t_cur=None, t_next=None) -> None:
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    if t_cur is None:
                        t_cur, t_next = ts[i], ts[i + 1]
                    else:  # an adaptive solver's own step (times as floats)
                        t_cur, t_next = ts.new_tensor(t_cur), ts.new_tensor(t_next)
                    callback(StepInfo(i, ctx.steps, t_cur, t_next, x_next, denoised, ctx.nfe))

            x = sampler.run(ctx, x, report)
            if denoise is not None:
                x = final_step(ctx, x, denoise)
    finally:
        if bar is not None:
            bar.close()
    ctx._score.raise_if_nonfinite()
    if not bool(torch.isfinite(x).all()):
        raise solvers.NonFiniteError(
            f"sample: {type(sampler).__name__} produced non-finite values although the score stayed finite;"
            " the steps may be too large for this sampler (try more steps or another grid)"
        )
    return x
