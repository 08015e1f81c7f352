r"""Exact likelihoods through the probability-flow ODE, and bits per dimension.

The probability-flow ODE $\dot x = \tilde f(x, t) = f(t)x - \tfrac12 g(t)^2\nabla\log p_t(x)$ moves
samples of $p_{t_\epsilon}$ to samples of $p_T$; by the instantaneous change of variables
(Chen et al. 2018) the log-density obeys $\frac{d}{dt}\log p_t(x(t)) = -\nabla\cdot\tilde f(x(t), t)$, so

$$\log p_{t_\epsilon}(x) = \log p_T(x(T)) + \int_{t_\epsilon}^{T}\nabla\cdot\tilde f(x(t), t)\,dt,
\qquad \nabla\cdot\tilde f = D\,f(t) - \tfrac12 g(t)^2\,\nabla\cdot\nabla\log p_t(x)$$

(Song et al. 2021, eq. 39), with $p_T$ replaced by the prior. [`log_likelihood`][scoresde.log_likelihood]
integrates the state and the divergence together with any `solvers` ODE method (by
default Dormand-Prince with rtol = atol = 1e-5, as Song et al.), on the tensors' own
device. The divergence of the score is exact (autograd, one backward pass per dimension)
or Hutchinson's unbiased estimate $\nabla\cdot s = E[v^\top(\partial s/\partial x)v]$ with
Rademacher or Gaussian probes, fixed along the trajectory (FFJORD); several probes give
several unbiased estimates of the whole integral, whose spread is reported as a standard
error.

Bits per dimension follow as $-\log p/(D\ln 2)$. For 8-bit data the density of
continuous data must be turned into a probability of the discrete values:
[`dequantize`][scoresde.likelihood.dequantize] explains and implements it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import solvers
import torch
from torch import Tensor

from .sde import check_sde
from ._checks import append_dims, check_batched, check_int, check_output
from .time_grids import default_t_end
from .samplers.run import check_steps

__all__ = ["log_likelihood", "LikelihoodResult", "Hutchinson", "bits_per_dim", "dequantize"]

#: basis vectors per batched backward pass of the exact divergence (bounds its memory)
_EXACT_CHUNK = 64


@dataclass(frozen=True)
class Hutchinson:
    r"""Hutchinson's trace estimator $\nabla\cdot s(x) = E_v[v^\top \tfrac{\partial s}{\partial x} v]$, $E[vv^\top] = I$.

    One vector-Jacobian product per probe and evaluation, instead of one backward pass per
    dimension: use it when $D$ is large. Each probe is drawn once and kept along the whole
    trajectory, so each gives an unbiased estimate of the log-likelihood; their sample
    standard deviation over $\sqrt{K}$ is the reported standard error.

    Arguments:
        n_probes: the number of probes $K \ge 1$ (a standard error needs $K \ge 2$).
        distribution: `"rademacher"` (entries $\pm1$, the smaller variance) or `"gaussian"`.

    References: Hutchinson, *A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines*, 1989; Grathwohl et al., *FFJORD*, ICLR 2019.
    """

    n_probes: int = 4
    distribution: str = "rademacher"

    def __post_init__(self):
        check_int("n_probes", self.n_probes)
        if self.distribution not in ("rademacher", "gaussian"):
            raise ValueError(f"distribution: expected 'rademacher' or 'gaussian', got {self.distribution!r}")

    def probes(self, shape: tuple, dtype, device, generator: torch.Generator | None) -> Tensor:
        """`n_probes` probes shaped like the data, `(K, B, ...)`."""
        size = (self.n_probes, *shape)
        if self.distribution == "gaussian":
            return torch.randn(size, generator=generator, dtype=dtype, device=device)
        bits = torch.randint(0, 2, size, generator=generator, device=device)
        return bits.to(dtype).mul_(2.0).sub_(1.0)


@dataclass
class LikelihoodResult:
    r"""The result of [`log_likelihood`][scoresde.log_likelihood].

    Attributes:
        log_prob: $\log p_{t_\epsilon}(x)$ in nats, `(B,)` (the mean over probes with Hutchinson).
        std_error: the standard error of `log_prob`, `(B,)`, with Hutchinson and $K \ge 2$
            probes; None for the exact divergence.
        prior_log_prob: $\log p_T(x(T))$ under the prior, `(B,)`.
        delta_log_prob: $\int_{t_\epsilon}^T \nabla\cdot\tilde f\,dt$, `(B,)`.
        latent: $x(T)$, the probability-flow encoding of `x`.
        dim: the data dimension $D$.
        nfe: evaluations of the score.
        t_eps: the start time $t_\epsilon$.
    """

    log_prob: Tensor
    std_error: Tensor | None
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    latent: Tensor
    dim: int
    nfe: int
    t_eps: float

    def bits_per_dim(self, n_bits: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
        """Bits per dimension of each sample; see [`bits_per_dim`][scoresde.likelihood.bits_per_dim]."""
        return bits_per_dim(self.log_prob, self.dim, n_bits=n_bits, data_range=data_range)


def _check_data_range(data_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise TypeError(f"data_range: expected a pair (low, high) of numbers, got {data_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"data_range: expected finite low < high, got {data_range!r}")
    return lo, hi


def bits_per_dim(
    log_prob: Tensor, dim: int, *, n_bits: int | None = None, data_range: tuple[float, float] = (-1.0, 1.0)
) -> Tensor:
    r"""Bits per dimension: $-\log p / (D\ln 2)$, or of the discrete data for `n_bits`-bit values.

    With `n_bits` given, `log_prob` is the density of uniformly dequantised data (see
    [`dequantize`][scoresde.likelihood.dequantize]) on `data_range`, where each of the
    $2^n$ discrete values owns a bin of width $w = (\text{high} - \text{low})/2^n$; then
    $\log P(k) \ge E_u[\log p(x)] + D\log w$, so the discrete bits per dimension are
    $-\log p/(D\ln 2) - \log_2 w$. For 8-bit data on $[-1, 1]$ that adds $\log_2(256/2) = 7$
    bits, on $[0, 1]$ it adds 8: the unexplained "offset" of score_sde's likelihood code.

    Arguments:
        log_prob: log-densities in nats, any shape (e.g. `(B,)`).
        dim: the data dimension $D$ (e.g. $3\cdot32\cdot32$).
        n_bits: the bit depth of the original discrete data, or None for the continuous density.
        data_range: the interval the discrete values were mapped to.

    Returns:
        A tensor shaped like `log_prob`.
    """
    if not isinstance(log_prob, Tensor):
        raise TypeError(f"log_prob: expected a tensor, got {type(log_prob).__name__}")
    dim = check_int("dim", dim)
    bpd = -log_prob / (dim * math.log(2.0))
    if n_bits is None:
        return bpd
    n_bits = check_int("n_bits", n_bits)
    lo, hi = _check_data_range(data_range)
    return bpd - math.log2((hi - lo) / 2**n_bits)


def dequantize(
    values: Tensor,
    *,
    n_bits: int = 8,
    data_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Uniform dequantisation: map integers $k \in \{0, \dots, 2^n - 1\}$ to $x = \text{low} + (k + u)\,w$, $u \sim U[0, 1)$.

    A model of continuous data assigns probability $P(k) = \int_{\text{bin}(k)} p(x)\,dx$ to
    each discrete value; by Jensen, $\log P(k) \ge E_u[\log p(x)] + D\log w$ with bin width
    $w = (\text{high} - \text{low})/2^n$ (Theis et al. 2016). So the log-likelihood of
    dequantised data, converted by [`bits_per_dim`][scoresde.likelihood.bits_per_dim] with
    the same `n_bits` and `data_range`, is an upper bound on the discrete data's bits per
    dimension (average several draws of $u$ for a tighter estimate).

    Arguments:
        values: an integer tensor (e.g. `uint8` images) with values in $[0, 2^n)$.
        n_bits: the bit depth $n$.
        data_range: the interval $[\text{low}, \text{high}]$ the values map to.
        generator: source of $u$.
        dtype: of the result (default: torch's default dtype).

    Reference: Theis, van den Oord, Bethge, *A note on the evaluation of generative models*,
    ICLR 2016; Song et al., ICLR 2021, appendix D.2.
    """
    if not isinstance(values, Tensor):
        raise TypeError(f"values: expected an integer tensor, got {type(values).__name__}")
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"values: expected an integer tensor of discrete values (e.g. uint8), got dtype {values.dtype}")
    n_bits = check_int("n_bits", n_bits)
    lo, hi = _check_data_range(data_range)
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= 2**n_bits):
        raise ValueError(
            f"values: expected integers in [0, {2**n_bits - 1}] for n_bits={n_bits},"
            f" got range [{int(values.min())}, {int(values.max())}]"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype
    u = torch.rand(values.shape, generator=generator, dtype=dtype, device=values.device)
    return lo + (values.to(dtype) + u) * ((hi - lo) / 2**n_bits)


class _AugmentedFlow:
    """The probability flow with the divergence integrand appended: state `(B, D + K)`."""

    def __init__(self, sde, score, shape: tuple, probes: Tensor | None):
        self.sde, self.score, self.shape = sde, score, shape
        self.batch, self.dim = shape[0], math.prod(shape[1:])
        self.probes = probes  # (K, B, ...) or None for the exact divergence
        self.nfe = 0

    def _divergence(self, s: Tensor, x: Tensor) -> Tensor:
        """div_x s per sample, `(B, K)`: exact (K = 1) or one Hutchinson estimate per probe."""
        if self.probes is not None:
            vjps = _batched_vjp(s, x, self.probes)
            return (vjps * self.probes).flatten(2).sum(-1).transpose(0, 1)
        # Exact: e_d^T (ds/dx) e_d for every coordinate d, in chunks of basis vectors.
        total = x.new_zeros(self.batch)
        for start in range(0, self.dim, _EXACT_CHUNK):
            idx = torch.arange(start, min(start + _EXACT_CHUNK, self.dim), device=x.device)
            rows = torch.arange(idx.numel(), device=x.device)
            basis = x.new_zeros(idx.numel(), self.batch, self.dim)
            basis[rows, :, idx] = 1.0
            vjps = _batched_vjp(s, x, basis.reshape(idx.numel(), *self.shape)).flatten(2)
            total = total + vjps[rows, :, idx].sum(0)
        return total[:, None]

    def vector_field(self, state: Tensor, t: Tensor) -> Tensor:
        x = state[:, : self.dim].reshape(self.shape)
        f = self.sde.drift_coef(t)
        g2 = self.sde.diffusion(t) ** 2
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            s = check_output("score", self.score(x, t), x)
            if not s.requires_grad:
                raise ValueError(
                    "score: its output does not depend on x through autograd; the likelihood needs the"
                    " divergence of the score (do not compute it under torch.no_grad or on detached inputs)"
                )
            div_s = self._divergence(s, x)
        self.nfe += 1
        # dx/dt = f x - g^2 s / 2;  d(delta)/dt = D f - g^2 div(s) / 2
        dx = append_dims(f, x.ndim) * x.detach() - 0.5 * append_dims(g2, x.ndim) * s.detach()
        ddelta = self.dim * f[:, None] - 0.5 * g2[:, None] * div_s.detach()
        return torch.cat([dx.reshape(self.batch, self.dim), ddelta], dim=1)


def _batched_vjp(out: Tensor, x: Tensor, vectors: Tensor) -> Tensor:
    """`vectors[k]^T d out / d x` for every k, `(K, B, ...)`: vmapped backward, or a loop where vmap fails."""
    try:
        (g,) = torch.autograd.grad(out, x, vectors, retain_graph=True, is_grads_batched=True)
        return g
    except RuntimeError:
        return torch.stack([torch.autograd.grad(out, x, v, retain_graph=True)[0] for v in vectors])


def _check_data(sde, x: Tensor) -> None:
    r"""Refuse data the SDE cannot have produced: non-finite values, or a scale beyond what it forgets by $T$.

    At $T$ the forward process holds $\alpha_T x_0 + \sigma_T\varepsilon$; the likelihood replaces its
    law by the prior, which is right only where the signal left, $\alpha_T\lvert x_0\rvert$, is small
    against the noise $\sigma_T$. Data beyond $\sigma_T/\alpha_T$ (152 for the default VP SDE, $\sigma_{\max}$
    for VE) is not forgotten: its likelihood is meaningless, and the flow is stiff there (minutes of
    adaptive steps ending in `MaxStepsError`).
    """
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).flatten(1).any(1).sum())
        raise ValueError(f"x: {bad} of {x.shape[0]} samples contain NaN or inf; expected finite data")
    alpha_T, sigma_T = (v.item() for v in sde.marginal(torch.tensor(float(sde.T), dtype=torch.float64)))
    limit = sigma_T / alpha_T if alpha_T > 0 else math.inf
    size = x.detach().abs().amax().item()
    if size > limit:
        over = int((x.detach().flatten(1).abs().amax(1) > limit).sum())
        raise ValueError(
            f"x: max |x| = {size:.3g} ({over} of {x.shape[0]} samples above {limit:.3g}), but {type(sde).__name__}"
            f" keeps alpha_T = {alpha_T:.3g} of the data at T = {sde.T} against noise sigma_T = {sigma_T:.3g}: data"
            f" beyond sigma_T / alpha_T = {limit:.3g} is not forgotten by T, so its prior N(0, {sde.prior_std:.3g}^2 I)"
            " does not describe x(T) and the likelihood is meaningless (the flow is also stiff there). The SDE expects"
            f" data of scale well below {limit:.3g} (typically scaled to [-1, 1]); rescale x (a factor c adds"
            " D log c to the log-likelihood) or use an SDE with a larger noise scale"
        )


class _Progress:
    """A progress bar for the likelihood's integration: steps for a fixed-step solver, the
    fraction of [t_eps, T] done (in per mille) for an adaptive one; it stays on screen."""

    def __init__(self, t0: float, t1: float, steps: int | None):
        from tqdm.auto import tqdm

        self.t0, self.t1, self.steps = t0, t1, steps
        total = steps if steps is not None else 1000
        unit = "step" if steps is not None else "‰"
        self.bar = tqdm(total=total, desc="log_likelihood", unit=unit, leave=True)
        self.done = 0

    def __call__(self, event) -> None:
        if self.steps is not None:
            self.bar.update(1)
            return
        t = event.t
        t = float(t.min()) if isinstance(t, Tensor) else float(t)
        done = min(1000, int(1000 * (t - self.t0) / (self.t1 - self.t0)))
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        self.bar.close()


def log_likelihood(
    sde,
    score: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    *,
    divergence: str | Hutchinson = "exact",
    solver=None,
    steps: int | None = None,
    t_eps: float | None = None,
    prior_logp: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> LikelihoodResult:
    r"""$\log p_{t_\epsilon}(x)$ by the probability-flow ODE and the instantaneous change of variables.

    Integrates $(x, \Delta)$ with $\dot x = \tilde f(x, t)$, $\dot\Delta = \nabla\cdot\tilde f(x, t)$ from
    $t_\epsilon$ to $T$ and returns $\log p_T(x(T)) + \Delta(T)$, per sample (see the module).

    Arguments:
        sde: the [`SDE`][scoresde.SDE].
        score: a differentiable score callable `score(x, t)` (a network, or an exact score).
        x: data at time $t_\epsilon$, `(B, ...)`; the computation runs on its device and dtype
            (float64 recommended for small-scale checks).
        divergence: `"exact"` (autograd, $D$ backward passes per evaluation: small $D$) or a
            [`Hutchinson`][scoresde.likelihood.Hutchinson] estimator (large $D$).
        solver: a `solvers` ODE solver; default `solvers.Dopri5(rtol=1e-5, atol=1e-5)`.
        steps: steps of a fixed-step solver, on a uniform grid (None for adaptive solvers).
        t_eps: the start time $t_\epsilon$ (default $10^{-5}T$ for VP-type SDEs, 0 for VE).
        prior_logp: $\log p_T$ as a callable `(x) -> (B,)`; default `sde.prior_logp`.
        generator: source of the Hutchinson probes.
        progress: show a progress bar.

    Returns:
        A [`LikelihoodResult`][scoresde.likelihood.LikelihoodResult] (log-density, standard
        error, latent, bits per dimension).

    Reference: Song et al., *Score-Based Generative Modeling through Stochastic Differential
    Equations*, ICLR 2021, appendix D.2; Chen et al., *Neural Ordinary Differential
    Equations*, NeurIPS 2018; Grathwohl et al., *FFJORD*, ICLR 2019.
    """
    check_sde("sde", sde)
    if not callable(score):
        raise TypeError(f"score: expected a callable score(x, t), got {type(score).__name__}")
    x = check_batched("x", x)
    _check_data(sde, x)
    if isinstance(divergence, str):
        if divergence != "exact":
            raise ValueError(f"divergence: expected 'exact' or a Hutchinson(...) estimator, got {divergence!r}")
        estimator = None
    elif isinstance(divergence, Hutchinson):
        estimator = divergence
    else:
        raise TypeError(f"divergence: expected 'exact' or a Hutchinson(...) estimator, got {divergence!r}")
    solver = solvers.Dopri5(rtol=1e-5, atol=1e-5) if solver is None else solver
    if not isinstance(solver, solvers.AbstractSolver) or solver.kind != "ode":
        raise TypeError(f"solver: expected a solvers ODE solver instance such as solvers.Dopri5(), got {solver!r}")
    if solver.adaptive:
        if steps is not None:
            raise ValueError(f"steps: {solver!r} is adaptive and chooses its own steps, got steps={steps}")
    elif steps is None:
        raise ValueError(f"steps: the fixed-step solver {solver!r} needs the number of steps, got None")
    else:
        steps = check_steps("steps", steps)
    if not isinstance(progress, bool):
        raise TypeError(f"progress: expected a bool, got {progress!r}")
    if t_eps is None:
        t_eps = default_t_end(sde, eps=1e-5)
    if isinstance(t_eps, bool) or not isinstance(t_eps, (int, float)) or not 0 <= t_eps < sde.T:
        raise ValueError(f"t_eps: expected a time in [0, T) = [0, {sde.T}), got {t_eps!r}")
    if prior_logp is not None and not callable(prior_logp):
        raise TypeError(f"prior_logp: expected a callable prior_logp(x) -> (B,), got {type(prior_logp).__name__}")

    shape = tuple(x.shape)
    probes = None
    if estimator is not None:
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator: it lives on {generator.device} but x is on {x.device}")
        probes = estimator.probes(shape, x.dtype, x.device, generator)
    flow = _AugmentedFlow(sde, score, shape, probes)
    K = 1 if probes is None else probes.shape[0]
    state0 = torch.cat([x.detach().reshape(shape[0], -1), x.new_zeros(shape[0], K)], dim=1)
    ts = [float(t_eps), float(sde.T)] if solver.adaptive else solvers.uniform_grid(float(t_eps), float(sde.T), steps)
    bar = _Progress(float(t_eps), float(sde.T), None if solver.adaptive else steps) if progress else None
    try:
        sol = solvers.integrate(flow, state0, ts, solver=solver, callback=bar)
    finally:
        if bar is not None:
            bar.close()

    latent = sol.x[:, : flow.dim].reshape(shape)
    delta = sol.x[:, flow.dim :]  # (B, K)
    prior = (sde.prior_logp if prior_logp is None else prior_logp)(latent)
    if not isinstance(prior, Tensor) or prior.shape != (shape[0],):
        raise ValueError(f"prior_logp: expected a tensor of shape ({shape[0]},), got {prior!r:.80}")
    estimates = prior[:, None] + delta
    log_prob = estimates.mean(1)
    std_error = estimates.std(1) / math.sqrt(K) if K > 1 else None
    return LikelihoodResult(
        log_prob=log_prob,
        std_error=std_error,
        prior_log_prob=prior,
        delta_log_prob=delta.mean(1),
        latent=latent,
        dim=flow.dim,
        nfe=flow.nfe,
        t_eps=float(t_eps),
    )
