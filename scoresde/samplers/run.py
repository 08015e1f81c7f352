r"""The sampling entry point: [`sample`][scoresde.sample] checks its arguments once, builds
the grid, the noise source and the [`SamplingContext`][scoresde.samplers.base.SamplingContext],
and hands them to the sampler; [`final_step`][scoresde.samplers.run.final_step] is the optional
last step into zero noise. The defaults it applies live in
[`scoresde.samplers.defaults`][scoresde.samplers.defaults], where the reasoning for each is written.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import solvers
import torch
from torch import Tensor

from .._checks import check_float_tensor, check_int, check_shape
from ..time_grids import TimeGrid, check_grid
from . import defaults
from ..sde import check_sde
from .base import Sampler, SamplingContext, ScoreFn, StepInfo, as_noise_source

__all__ = ["sample", "final_step", "check_denoise", "DENOISE_MODES", "check_steps", "check_device", "check_dtype",
           "check_score_callable", "check_progress"]


def check_steps(name: str, steps: Any) -> int:
    """`steps` as a Python int >= 1 (numpy and other integral types accepted, as for `shape`)."""
    return check_int(name, steps)


def check_device(device: Any) -> torch.device:
    """`device` as a `torch.device` that exists here; a clear error for a bad name, a missing accelerator or meta."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise TypeError(f"device: expected a torch.device or a name such as 'cpu' or 'cuda', got {device!r}")
    if isinstance(device, int):
        if device < 0:
            raise ValueError(f"device: expected an accelerator index >= 0 or a device name, got {device!r}")
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {device!r} names an accelerator by index, but none is available here"
                " (torch.cuda.is_available() is False); use 'cpu'"
            )
        device = torch.device("cuda", device)
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device: expected a device name such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if d.type == "meta":
        raise ValueError(f"device: {device!r} holds no values to sample; use 'cpu' or an accelerator")
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device: {device!r} asks for CUDA, but torch.cuda.is_available() is False here (no CUDA device or a"
                " CPU-only build of torch); use 'cpu'"
            )
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r}, but there are {torch.cuda.device_count()} CUDA devices")
    elif d.type != "cpu":
        backend = getattr(torch.backends, d.type, None) or getattr(torch, d.type, None)
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise ValueError(f"device: {device!r} is not available here; use 'cpu'")
    return d


def check_dtype(dtype: Any) -> torch.dtype:
    """`dtype` as a floating-point `torch.dtype`; a clear error for strings, numpy dtypes and integer types."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype: expected a torch.dtype such as torch.float32 or torch.float64, got {dtype!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating-point dtype, got {dtype}")
    return dtype


def check_score_callable(score: Any) -> None:
    """Raise unless `score` is a callable that accepts `(x, t)`."""
    if not callable(score):
        raise TypeError(f"score: expected a callable score(x, t), got {type(score).__name__}")
    try:
        signature = inspect.signature(score)
    except (TypeError, ValueError):  # builtins and some C extensions have none: trust the call
        return
    try:
        signature.bind(None, None)
    except TypeError:
        name = getattr(score, "__name__", type(score).__name__)
        raise TypeError(
            f"score: expected a callable score(x, t) taking the state and the time, got {name}{signature}"
        ) from None


def _check_model_matches(score: Any, dtype: torch.dtype, device: torch.device) -> None:
    """A network (an nn.Module, or a bound method of one) whose parameters disagree with the state."""
    net = score if isinstance(score, torch.nn.Module) else getattr(score, "__self__", None)
    if not isinstance(net, torch.nn.Module):
        return
    p = next((p for p in net.parameters() if p.is_floating_point()), None)
    if p is None:
        return
    if p.dtype != dtype:
        raise ValueError(
            f"score: the model's parameters are {p.dtype} but the state is {dtype}; sample with dtype={p.dtype}"
            f" or convert the model with .to({dtype})"
        )
    if p.device.type != device.type:
        raise ValueError(
            f"score: the model's parameters are on {p.device} but the state is on {device}; sample with"
            f" device={str(p.device)!r} or move the model with .to({str(device)!r})"
        )


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
    x = x.to(ctx.work_dtype)  # computed in the coefficients' precision, returned in the state's
    x0 = ctx.denoised(x, ctx.steps)
    if how == "flow":
        x0 = 0.5 * (x / ctx.alpha[-1] + x0)
    return x0.to(ctx.dtype)


def check_progress(progress: Any) -> None:
    """`progress` is a bool, None or a dict of tqdm keyword arguments that tqdm accepts."""
    if progress is None or isinstance(progress, bool):
        return
    if not isinstance(progress, dict):
        raise TypeError(f"progress: expected a bool or a dict of tqdm keyword arguments, got {progress!r}")
    from tqdm.auto import tqdm

    import io

    # tqdm checks its keywords only when enabled: build one that writes to a buffer
    kwargs = {k: v for k, v in progress.items() if k not in ("total", "file", "disable")}
    kwargs["file"] = io.StringIO()
    try:
        tqdm(total=1, **kwargs).close()
    except Exception as err:  # tqdm's own TqdmKeyError, or a TypeError for a bad value
        raise TypeError(f"progress: tqdm does not accept these keyword arguments, {sorted(progress)}: {err}") from None


def _make_progress(progress, total: int, name: str):
    if progress is False or progress is None:
        return None
    from tqdm.auto import tqdm

    kwargs = dict(progress) if isinstance(progress, dict) else {}
    kwargs.setdefault("desc", name)
    kwargs.pop("total", None)
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
    denoise: bool | str | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Draw samples by running `sampler` from the prior at $t = T$ down to $t_{\text{end}}$.

    The state starts at $x_T \sim$ the SDE's prior (or `x_init`) and is advanced over a
    decreasing time grid by the sampler; unless `denoise=False`, a final step into zero noise
    then removes the noise left at $t_{\text{end}}$ (see `denoise`), so that the result is clean
    data, as every peer's default returns it. Runs under `torch.no_grad()`; score callables that
    need gradients (classifier guidance) enable them locally. Value checks are off inside the loop (no host
    synchronisation per step); a score that returns NaN or inf is reported once at the end,
    with the time at which it first did.

    Arguments:
        sde: the [`SDE`][scoresde.SDE] whose reverse is sampled.
        score: any callable `score(x, t)` returning $\nabla_x\log p_t(x)$ shaped like `x`
            (`t` is a `(B,)` tensor), e.g. a [`ScoreModel`][scoresde.ScoreModel] or an exact
            [`DiffusedMixture.score`][scoresde.analytic.DiffusedMixture.score].
        shape: the batch shape `(B, ...)`; may be omitted when `x_init` is given.
        sampler: a sampler instance. Left out, the default recipe of
            [`scoresde.samplers.defaults`][scoresde.samplers.defaults] runs (its sampler, grid,
            end time and final step into zero noise, chosen by measurement against the peers'
            defaults); its final step then counts among `steps`.
        steps: the number of steps $N \ge 1$ (default: the sampler's `default_steps`; for the
            default recipe, 20, the final step included, so $N$ evaluations).
        grid: a [`TimeGrid`][scoresde.time_grids.TimeGrid] (default: the sampler's) or an explicit
            strictly decreasing 1-D tensor of times in $[0, T]$ (then `steps` is its length - 1).
        t_end: the last time of the grid (default [`default_t_end`][scoresde.time_grids.default_t_end];
            for the default recipe, [its own][scoresde.samplers.defaults.default_t_end]).
        generator: the noise source: None, a `torch.Generator`, an int seed, a list of seeds
            or generators with one per sample (a sample then does not depend on its batch:
            bit for bit with exact scores; a network's arithmetic depends on the batch size,
            so with a network up to rounding),
            or a `solvers` noise source.
        x_init: start from this state at `grid[0]` instead of a prior draw (e.g. a latent from
            the probability-flow encoder).
        denoise: finish with a step from $t_{\text{end}}$ into zero noise (one more
            evaluation): True or `"tweedie"`, Tweedie's denoiser (the posterior mean); `"flow"`,
            the probability flow's last step with the score held fixed,
            $(x/\alpha + \hat x_0)/2$, which keeps the spread Tweedie's step removes from
            data that is smooth on the scale of the remaining noise (see
            [`final_step`][scoresde.samplers.run.final_step]). False: end at $t_{\text{end}}$
            with its noise left (to go on from there, or to reproduce a peer that stops there,
            as DPM-Solver's code does). Left out (None): when `sampler` is left out, the default
            recipe's final step, `"flow"`, counted among `steps`; for a sampler given explicitly,
            the same step whenever its grid ends with noise left, as one more evaluation beyond
            the sampler's `steps`; none on a grid that already ends at zero noise, or after
            `LMS(to_zero=True)` and `EDMHeun(to_zero=True)`, which step there themselves
            ([`steps_to_zero_noise`][scoresde.samplers.base.Sampler.steps_to_zero_noise]).
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
    check_sde("sde", sde)
    check_score_callable(score)
    check_progress(progress)
    # left out, the final step is the default recipe's: counted among its steps, or for a sampler
    # given explicitly, one more evaluation when its grid ends with noise left
    denoise_left_out = denoise is None
    if sampler is None:  # the default recipe: sampler, grid, end time and final step (see defaults.py)
        sampler, steps, grid, t_end, denoise = defaults.default_recipe(sde, steps, grid, t_end, denoise)
        denoise_left_out = False
    if not isinstance(sampler, Sampler):
        raise TypeError(
            "sampler: expected a sampler instance such as DDIM(), DPMSolverPP(order=2), ReverseSDESampler(),"
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
        if dtype is not None and check_dtype(dtype) != x_init.dtype:
            raise ValueError(
                f"dtype: the state takes x_init's dtype, {x_init.dtype}, but dtype={dtype}; leave dtype out or"
                f" convert x_init with .to({dtype})"
            )
        if device is not None:
            d = check_device(device)
            if d.type != x_init.device.type or (d.index is not None and d.index != x_init.device.index):
                raise ValueError(
                    f"device: the state takes x_init's device, {x_init.device}, but device={device!r}; leave device"
                    f" out or move x_init with .to({str(d)!r})"
                )
        shape, device, dtype = tuple(x_init.shape), x_init.device, x_init.dtype
    else:
        if shape is None:
            raise ValueError("shape: expected the batch shape (B, ...) when x_init is not given, got None")
        shape = check_shape("shape", shape)
        if device is None:
            device = generator.device if isinstance(generator, torch.Generator) else torch.device("cpu")
        device = check_device(device)
        dtype = torch.get_default_dtype() if dtype is None else check_dtype(dtype)
    _check_model_matches(score, dtype, torch.device(device))

    # -- the grid, in the precision of the coefficients: a float16/bfloat16 state keeps its grid,
    # alpha_t, sigma_t and lambda_t in float32 (rounded once where they multiply the state), since
    # half-precision tables shift the step sizes h_i by up to 1e-2 and unbalance the noise added by
    # stochastic steps against the drift that removes it (bfloat16 spreads widened by ~4%)
    coef_dtype = torch.promote_types(dtype, torch.float32)
    if grid is None:
        grid = sampler.default_grid
    if sampler.adaptive and steps is not None:
        raise ValueError(
            f"steps: {sampler!r} is adaptive and chooses its own steps; set its rtol/atol instead, got steps={steps}"
        )
    if isinstance(grid, TimeGrid):
        if steps is None:
            steps = grid.fixed_steps or sampler.default_steps
        steps = check_steps("steps", steps)
        ts = grid(sde, steps, t_end, device=device, dtype=coef_dtype)
    elif isinstance(grid, Tensor):
        if t_end is not None:
            raise ValueError("t_end: an explicit grid already fixes the end time; pass one or the other")
        ts = check_grid("grid", grid, sde.T).to(device=device, dtype=coef_dtype)
        if steps is not None and check_steps("steps", steps) != ts.numel() - 1:
            raise ValueError(f"steps: the grid has {ts.numel() - 1} steps, got steps={steps}")
    else:
        raise TypeError(
            f"grid: expected a TimeGrid (UniformTime(), KarrasGrid(), UniformLogSNR()) or a 1-D tensor, got {grid!r}"
        )
    sampler.check(sde, ts)
    if denoise_left_out and not sampler.steps_to_zero_noise and math.isfinite(
        sde.log_snr(ts[-1:].detach().to("cpu", torch.float64)).item()
    ):  # the grid ends with noise left: finish at zero noise, as the default recipe does
        denoise = defaults.DEFAULT_DENOISE

    noise = as_noise_source(generator, shape[0])
    bar = _make_progress(progress, None if sampler.adaptive else sampler.moves(ts.numel() - 1), type(sampler).__name__)
    try:
        with torch.no_grad():
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

            x = sampler.run(ctx, x, report).to(dtype)
            if denoise is not None:
                x = final_step(ctx, x, denoise)
            x = sampler.finalize(ctx, x)
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
