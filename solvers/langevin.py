r"""Langevin Markov chain Monte Carlo from a score: ULA and MALA, batched.

Both discretise the overdamped Langevin diffusion $dx = \nabla \log p(x)\,dt + \sqrt2\,dW$,
whose stationary law is $p$, with step size $\epsilon$:

$$x' = x + \epsilon\, s(x) + \sqrt{2\epsilon}\,\xi,\qquad \xi \sim N(0, I),\quad s = \nabla \log p.$$

* **ULA** (unadjusted) takes every proposal: cheap and needs only the score, but its
  stationary law is biased by $O(\epsilon)$ (for $N(\mu, \sigma^2)$ its variance is
  $\sigma^2 / (1 - \epsilon / (2\sigma^2))$).
* **MALA** (Metropolis-adjusted) accepts the proposal $y$ with probability
  $\min(1, \frac{p(y)\,q(x \mid y)}{p(x)\,q(y \mid x)})$, $q(y \mid x) = N(y; x + \epsilon s(x), 2\epsilon I)$,
  so $p$ is exactly stationary; it needs $\log p$ up to a constant.

Chains are the batch: every sample is an independent chain, step sizes may differ per
chain (a `(B,)` tensor), and acceptance is decided per chain. The step functions
`ula_step` and `mala_step` are public so that annealed schemes (NCSN's annealed Langevin
dynamics) can drive them with a changing score and step size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from ._utils import FiniteMonitor, NonFiniteError, as_int, as_real, check_state, describe, per_sample
from .noise import NoiseSource, as_noise

__all__ = ["ULA", "MALA", "MALAStep", "LangevinResult", "langevin", "ula_step", "mala_step"]

ScoreFn = Callable[[Tensor], Tensor]
LogProbFn = Callable[[Tensor], Tensor]


def _random_source(noise: Any) -> NoiseSource:
    src = as_noise(noise)
    if type(src).standard_normal is NoiseSource.standard_normal:
        raise TypeError(f"noise: Langevin samplers need standard normals and uniforms: pass None, a torch.Generator, "
                        f"GeneratorNoise or SeededNoise, got {describe(noise)}")
    return src


def _sum_event(v: Tensor) -> Tensor:
    """Sum over all but the batch dimension: `(B, ...) -> (B,)`."""
    return v.flatten(1).sum(1) if v.ndim > 1 else v


def _check_score(s: Any, x: Tensor) -> Tensor:
    if not isinstance(s, Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, Tensor) else describe(s)
        raise ValueError(f"score(x): expected a tensor shaped like x, {tuple(x.shape)}, got {got}")
    return s


def _check_logp(lp: Any, x: Tensor) -> Tensor:
    if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
        got = tuple(lp.shape) if isinstance(lp, Tensor) else describe(lp)
        raise ValueError(f"log_prob(x): expected a tensor of shape ({x.shape[0]},), one value per sample, got {got}")
    return lp


def evaluate(score: ScoreFn | None, log_prob: LogProbFn | None, x: Tensor,
             need_log_prob: bool) -> tuple[Tensor, Tensor | None]:
    r"""The score $s(x)$ and, if needed, $\log p(x)$; the score by autograd when only `log_prob` is given."""
    if score is None:
        if log_prob is None:
            raise TypeError("score: expected a callable score(x) (or pass log_prob to differentiate), got None")
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            lp = _check_logp(log_prob(xr), x)
            s = torch.autograd.grad(lp.sum(), xr)[0]
        return s.detach(), lp.detach()
    s = _check_score(score(x), x)
    lp = _check_logp(log_prob(x), x) if (need_log_prob and log_prob is not None) else None
    return s, lp


def ula_step(score: ScoreFn, x: Tensor, step_size: float | Tensor, noise: Any = None, *,
             score_x: Tensor | None = None) -> Tensor:
    r"""One unadjusted Langevin step: $x' = x + \epsilon\, s(x) + \sqrt{2\epsilon}\,\xi$.

    Arguments:
        score: $s(x) = \nabla_x \log p(x)$, a callable returning a tensor shaped like x.
        x: the chains' states, `(B, ...)`.
        step_size: $\epsilon > 0$: a number or a `(B,)` tensor (one per chain).
        noise: None (global generator), a `torch.Generator`, `GeneratorNoise` or `SeededNoise`.
        score_x: $s(x)$ if already computed (skips the evaluation).

    Returns:
        The new states.

    Reference: G. O. Roberts & R. L. Tweedie, "Exponential convergence of Langevin
    distributions and their discrete approximations", Bernoulli 2(4), 341-363 (1996).
    """
    check_state("x", x)
    eps = per_sample("step_size", step_size, x, positive=True)
    src = _random_source(noise)
    s = _check_score(score(x), x) if score_x is None else score_x
    return _ula_move(x, s, eps, src)


def _ula_move(x: Tensor, s: Tensor, eps: float | Tensor, src: NoiseSource) -> Tensor:
    xi = src.standard_normal(x.shape, x.dtype, x.device)
    if isinstance(eps, float):
        return torch.add(x, s, alpha=eps).add_(xi, alpha=math.sqrt(2 * eps))
    return torch.addcmul(torch.addcmul(x, s, eps), xi, (2 * eps).sqrt())


class MALAStep(NamedTuple):
    """The outcome of one `mala_step`.

    Attributes:
        x: the new states (the proposal where accepted).
        score, log_prob: $s$ and $\\log p$ at the new states (pass them to the next step).
        accepted: `(B,)` booleans.
        log_accept_ratio: `(B,)` $\\log$ of the Metropolis-Hastings ratio (NaN proposals give NaN, rejected).
    """

    x: Tensor
    score: Tensor
    log_prob: Tensor
    accepted: Tensor
    log_accept_ratio: Tensor


def mala_step(score: ScoreFn | None, log_prob: LogProbFn, x: Tensor, step_size: float | Tensor,
              noise: Any = None, *, score_x: Tensor | None = None, log_prob_x: Tensor | None = None) -> MALAStep:
    r"""One Metropolis-adjusted Langevin step.

    Proposal $y = x + \epsilon s(x) + \sqrt{2\epsilon}\,\xi$; accepted when $\log u < \log\alpha$,
    $u \sim U(0, 1)$, with

    $$\log\alpha = \log p(y) - \log p(x) - \frac{\|x - y - \epsilon s(y)\|^2}{4\epsilon} + \frac{\|\xi\|^2}{2}.$$

    Arguments:
        score: $\nabla \log p$, or None to differentiate `log_prob` by autograd.
        log_prob: $\log p$ up to a constant, returning shape `(B,)`.
        x: the chains' states, `(B, ...)`.
        step_size: $\epsilon > 0$, a number or a `(B,)` tensor.
        noise: None, a `torch.Generator`, `GeneratorNoise` or `SeededNoise` (normals and uniforms).
        score_x, log_prob_x: $s(x)$ and $\log p(x)$ if known (from the previous `MALAStep`).

    Returns:
        A `MALAStep`.

    Reference: G. O. Roberts & R. L. Tweedie, "Exponential convergence of Langevin
    distributions and their discrete approximations", Bernoulli 2(4), 341-363 (1996).
    """
    check_state("x", x)
    if not callable(log_prob):
        raise TypeError(f"log_prob: MALA needs the log-density log_prob(x) -> (B,), got {describe(log_prob)}")
    eps = per_sample("step_size", step_size, x, positive=True)
    src = _random_source(noise)
    if score_x is None or log_prob_x is None:
        score_x, log_prob_x = evaluate(score, log_prob, x, True)
    return _mala_move(score, log_prob, x, score_x, log_prob_x, eps, src)


def _mala_move(score, log_prob, x: Tensor, score_x: Tensor, log_prob_x: Tensor, eps: float | Tensor,
               src: NoiseSource) -> MALAStep:
    xi = src.standard_normal(x.shape, x.dtype, x.device)
    if isinstance(eps, float):
        y = torch.add(x, score_x, alpha=eps).add_(xi, alpha=math.sqrt(2 * eps))
    else:
        y = torch.addcmul(torch.addcmul(x, score_x, eps), xi, (2 * eps).sqrt())
    score_y, log_prob_y = evaluate(score, log_prob, y, True)
    rev = x - y - (eps * score_y)
    eps_b = eps if isinstance(eps, float) else eps.reshape(-1)
    log_alpha = (log_prob_y - log_prob_x) - _sum_event(rev * rev) / (4 * eps_b) + 0.5 * _sum_event(xi * xi)
    u = src.uniform((x.shape[0],), log_alpha.dtype, x.device)
    accepted = torch.log(u) < log_alpha
    m = accepted.reshape((-1,) + (1,) * (x.ndim - 1))
    return MALAStep(torch.where(m, y, x), torch.where(m, score_y, score_x),
                    torch.where(accepted, log_prob_y, log_prob_x), accepted, log_alpha)


@dataclass
class LangevinResult:
    """The result of `solvers.langevin`.

    Attributes:
        x: the final states `(B, ...)`.
        samples: states saved every `save_every` steps after `burn_in`, `(S, B, ...)`, or None.
        acceptance_rate: `(B,)` fraction of accepted proposals per chain (ones for ULA).
        n_accepted: `(B,)` accepted proposals per chain.
        n_steps: steps taken.
        nfe: evaluations of the score (MALA: of score and log-density together).
    """

    x: Tensor
    samples: Tensor | None
    acceptance_rate: Tensor
    n_accepted: Tensor
    n_steps: int
    nfe: int


class ULA:
    r"""The unadjusted Langevin algorithm (see `ula_step`); biased by $O(\epsilon)$.

    Arguments:
        step_size: $\epsilon > 0$, a number or a `(B,)` tensor (one per chain).

    Reference: Roberts & Tweedie, Bernoulli 2(4), 341-363 (1996).
    """

    adjusted = False

    def __init__(self, step_size: float | Tensor):
        if isinstance(step_size, Tensor):
            if step_size.ndim > 1 or not bool((step_size > 0).all()):
                raise ValueError(f"step_size: expected a number > 0 or a (B,) tensor of them, got {describe(step_size)}")
        else:
            step_size = as_real("step_size", step_size, positive=True)
        self.step_size = step_size

    def __repr__(self):
        s = self.step_size if not isinstance(self.step_size, Tensor) else f"<{self.step_size.numel()} step sizes>"
        return f"{type(self).__name__}(step_size={s})"


class MALA(ULA):
    r"""The Metropolis-adjusted Langevin algorithm (see `mala_step`): exact stationary law.

    Arguments:
        step_size: $\epsilon > 0$, a number or a `(B,)` tensor (one per chain). For
            Gaussian-like targets in $d$ dimensions the optimal acceptance rate is about
            0.574, reached with $\epsilon \propto d^{-1/3}$ (Roberts & Rosenthal 1998).

    Reference: Roberts & Tweedie, Bernoulli 2(4), 341-363 (1996).
    """

    adjusted = True


def langevin(score: ScoreFn | None, x0: Tensor, n_steps: int, sampler: ULA, *, log_prob: LogProbFn | None = None,
             noise: Any = None, burn_in: int = 0, save_every: int | None = None,
             callback: Callable[[int, Tensor], Any] | None = None, progress: bool = False,
             check_finite: bool = True) -> LangevinResult:
    r"""Run `B` independent Langevin chains (ULA or MALA) for `n_steps` steps.

    Arguments:
        score: $\nabla \log p$, `score(x) -> Tensor` shaped like x; None to differentiate `log_prob`.
        x0: the initial states `(B, ...)`, one chain per sample.
        n_steps: steps per chain.
        sampler: `solvers.ULA(step_size)` or `solvers.MALA(step_size)`.
        log_prob: $\log p$ up to a constant, `(B,)`; required by MALA.
        noise: None (global generator), a `torch.Generator`, `GeneratorNoise` or `SeededNoise`
            (per-chain seeds: a chain's path does not depend on the batch).
        burn_in: steps before saving starts.
        save_every: save the states every this many steps after `burn_in` (None: save nothing).
        callback: `callback(step, x)` after every step.
        progress: show a tqdm progress bar.
        check_finite: raise `NonFiniteError` naming the first step where a chain became NaN/inf.

    Returns:
        A `LangevinResult` (final states, saved samples, per-chain acceptance rates).
    """
    check_state("x0", x0)
    n_steps = as_int("n_steps", n_steps, minimum=0)
    burn_in = as_int("burn_in", burn_in, minimum=0)
    if save_every is not None:
        save_every = as_int("save_every", save_every, minimum=1)
    if not isinstance(sampler, ULA):
        raise TypeError(f"sampler: expected solvers.ULA(step_size) or solvers.MALA(step_size), got {describe(sampler)}")
    if score is not None and not callable(score):
        raise TypeError(f"score: expected a callable score(x), got {describe(score)}")
    if log_prob is not None and not callable(log_prob):
        raise TypeError(f"log_prob: expected a callable log_prob(x) -> (B,), got {describe(log_prob)}")
    if sampler.adjusted and log_prob is None:
        raise TypeError(f"log_prob: {sampler!r} needs the log-density log_prob(x) for its accept/reject step, got None")
    if score is None and log_prob is None:
        raise TypeError("score: expected a callable score(x), or log_prob to differentiate, got neither")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable callback(step, x), got {describe(callback)}")
    eps = per_sample("sampler.step_size", sampler.step_size, x0, positive=True)
    src = _random_source(noise)

    x = x0
    s, lp = evaluate(score, log_prob, x, sampler.adjusted)
    nfe = 1
    n_acc = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
    samples = []
    monitor = FiniteMonitor(check_finite, x0.dtype)
    pbar = None
    if progress:
        from tqdm.auto import tqdm
        pbar = tqdm(total=n_steps, desc=type(sampler).__name__, leave=False)
    try:
        for i in range(n_steps):
            if sampler.adjusted:
                out = _mala_move(score, log_prob, x, s, lp, eps, src)
                x, s, lp = out.x, out.score, out.log_prob
                n_acc += out.accepted
                nfe += 1
            else:
                x = _ula_move(x, s, eps, src)
                if i + 1 < n_steps:
                    s, _ = evaluate(score, log_prob, x, False)
                    nfe += 1
                n_acc += 1
            monitor.record(x)
            if save_every is not None and i + 1 > burn_in and (i + 1 - burn_in) % save_every == 0:
                samples.append(x)
            if callback is not None:
                callback(i, x)
            if pbar is not None:
                pbar.update(1)
    finally:
        if pbar is not None:
            pbar.close()
    k = monitor.first_bad(x)
    if k is not None:
        raise NonFiniteError(f"a chain became non-finite (NaN or inf) at step {k}: the score returned non-finite "
                             f"values or step_size is too large for {type(sampler).__name__} (which diverges "
                             f"without a Metropolis correction)")
    rate = n_acc.to(torch.float64) / max(n_steps, 1)
    return LangevinResult(x=x, samples=torch.stack(samples) if samples else None, acceptance_rate=rate,
                          n_accepted=n_acc, n_steps=n_steps, nfe=nfe)
