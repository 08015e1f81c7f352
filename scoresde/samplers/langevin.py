r"""Annealed Langevin dynamics (NCSN) and NCSNv2's rules for its noise levels and step size.

Annealed Langevin dynamics runs Langevin MCMC on each noised marginal $p_{\sigma_i}$ in
turn, from the largest noise level to the smallest, each chain started where the last
one stopped (Song & Ermon 2019). NCSNv2 (Song & Ermon 2020) derives how to choose the
levels and the step size; its rules are the helpers below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import solvers
import torch
from torch import Tensor

from .._checks import check_batched, check_int, check_positive_finite, option
from .base import Sampler, SamplingContext

__all__ = ["AnnealedLangevin", "ncsn_sigma_max", "ncsn_ratio", "ncsn_levels", "ncsn_step_size"]


@dataclass(frozen=True)
class AnnealedLangevin(Sampler):
    r"""Annealed Langevin dynamics: $T$ Langevin steps at each noise level, largest first.

    The levels are the grid's times $t_0 = T, \dots, t_N$ ($N + 1$ levels; with the VE SDE and
    the default uniform grid they are NCSN's geometric $\sigma_i$). At level $i$ the step
    size is $\alpha_i = \epsilon\,\sigma_{t_i}^2/\sigma_{t_N}^2$ and, $T$ times,

    $$x \leftarrow x + \alpha_i\,\nabla\log p_{t_i}(x) + \sqrt{2\alpha_i}\,z, \qquad z \sim \mathcal N(0, I).$$

    This is the update of the authors' code and of NCSNv2; the NCSN paper writes it with
    $\alpha_i/2$ and $\sqrt{\alpha_i}$, i.e. with an $\epsilon$ twice as large. NCSNv2's final
    denoising step is `sample(..., denoise=True)`. Costs $(N + 1)\,T$ evaluations.

    Arguments:
        n_steps_each: Langevin steps per level $T \ge 1$ (100 in NCSN, 5 in NCSNv2 on CIFAR-10).
        step_lr: $\epsilon > 0$ (NCSN: 2e-5 with 10 levels; see
            [`ncsn_step_size`][scoresde.samplers.langevin.ncsn_step_size] for NCSNv2's rule).

    References: Song & Ermon, *Generative Modeling by Estimating Gradients of the Data
    Distribution*, NeurIPS 2019, Algorithm 1; Song & Ermon, *Improved Techniques for Training
    Score-Based Generative Models*, NeurIPS 2020.
    """

    n_steps_each: int = option(100, ge=1)
    step_lr: float = option(2e-5, gt=0.0)
    default_steps: ClassVar[int] = 9
    stochastic: ClassVar[bool] = True

    def evaluations(self, steps: int) -> int:
        return (steps + 1) * self.n_steps_each

    def check(self, sde, ts):
        sigma_last = sde.marginal(ts[-1:].detach().to("cpu", torch.float64))[1].item()
        if not sigma_last > 0:
            raise ValueError(
                "grid: annealed Langevin dynamics scales its steps by sigma_t^2 / sigma_end^2 and needs"
                f" sigma_end > 0 at the last time, got sigma = {sigma_last!r}; end the grid at t > 0"
            )
        # alpha_i / sigma_i^2 = eps / sigma_end^2 at every level. Where the noise dominates the data's
        # own spread (every direction on the largest levels, and across thin data at all levels) the
        # marginal is close to N(., sigma_i^2 I), on which a Langevin step alpha_i multiplies the
        # deviation by 1 - alpha_i / sigma_i^2: from alpha_i = 2 sigma_i^2 on it no longer shrinks.
        ratio = self.step_lr / sigma_last**2
        if ratio >= 2.0:
            raise ValueError(
                f"step_lr: {self.step_lr!r} is too large for this grid: every level's step is"
                f" step_lr * sigma_t^2 / sigma_end^2 = {ratio:.3g} sigma_t^2 (sigma_end = {sigma_last:.3g}), and steps"
                " of 2 sigma_t^2 or more diverge wherever the noise dominates the data's spread (on the"
                f" largest levels, everywhere); use step_lr < 2 sigma_end^2 = {2 * sigma_last**2:.3g} (NCSN: 2e-5 with"
                " sigma_end = 0.01, a ratio of 0.2; see ncsn_step_size) or end the grid at a larger t"
            )

    def run(self, ctx, x, report):
        sigmas = ctx.sigma.tolist()  # the levels on the host, read once
        for i in range(ctx.steps + 1):
            # alpha_i = eps sigma_i^2 / sigma_L^2
            step = self.step_lr * (sigmas[i] / sigmas[-1]) ** 2
            # T steps of x <- x + alpha_i s(x, sigma_i) + sqrt(2 alpha_i) z (in the coefficients' precision,
            # the state stored in its own dtype after each level)
            x = solvers.langevin(lambda x, i=i: ctx.score(x, i), x.to(ctx.work_dtype), self.n_steps_each,
                                 solvers.ULA(step), noise=ctx.noise, check_finite=False).x.to(ctx.dtype)
            if i > 0:
                report(i - 1, x, None)
        return x


def ncsn_sigma_max(data: Tensor, chunk: int = 1024) -> float:
    r"""NCSNv2's Technique 1: the largest noise level should be about the largest pairwise distance.

    Returns $\max_{i,j}\lVert x^{(i)} - x^{(j)}\rVert_2$ over the data (flattened per sample),
    computed in chunks so memory stays at `chunk` x B distances.

    Arguments:
        data: a batch `(B, ...)` of training data, $B \ge 2$.
        chunk: rows per distance block.

    Reference: Song & Ermon, *Improved Techniques for Training Score-Based Generative Models*,
    NeurIPS 2020, section 3.1, Technique 1.
    """
    data = check_batched("data", data)
    if data.shape[0] < 2:
        raise ValueError(f"data: expected at least 2 samples, got shape {tuple(data.shape)}")
    chunk = check_int("chunk", chunk)
    flat = data.reshape(data.shape[0], -1)
    best = flat.new_zeros(())
    for start in range(0, flat.shape[0], chunk):
        best = torch.maximum(best, torch.cdist(flat[start : start + chunk], flat).max())
    return best.item()


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def ncsn_ratio(dim: int, target: float = 0.5) -> float:
    r"""NCSNv2's Technique 2: the geometric ratio $\gamma = \sigma_{i-1}/\sigma_i$ of the noise levels.

    Solves $\Phi(\sqrt{2D}(\gamma - 1) + 3\gamma) - \Phi(\sqrt{2D}(\gamma - 1) - 3\gamma) = $ `target`
    ($\approx 0.5$ in the paper) for $\gamma > 1$, where $D \ge 5$ is the data dimension: samples
    perturbed at one level then have enough overlap with the next level's typical set (the
    rule is a high-dimensional one: for $\sqrt{2D} \le 3$ the overlap never falls to 0.5).
    (Choosing a different ratio can be reasonable; the paper's CIFAR-10 levels have
    $\gamma = 1.0376$, where the left side is 0.567.)

    Arguments:
        dim: the data dimension $D \ge 1$.
        target: the overlap in (0, 1), default 0.5.

    Reference: Song & Ermon, NeurIPS 2020, section 3.2, Technique 2.
    """
    dim = check_int("dim", dim)
    if 2 * dim <= 9:
        raise ValueError(
            f"dim: the rule needs sqrt(2D) > 3, i.e. D >= 5 (below, the overlap never falls to the target), got {dim}"
        )
    target = check_positive_finite("target", target)
    if target >= 1:
        raise ValueError(f"target: expected a value in (0, 1), got {target!r}")
    c = math.sqrt(2.0 * dim)

    def overlap(g: float) -> float:
        return _normal_cdf(c * (g - 1.0) + 3.0 * g) - _normal_cdf(c * (g - 1.0) - 3.0 * g)

    # The overlap decreases from Phi(3) - Phi(-3) at gamma = 1 to 0: bisect.
    lo, hi = 1.0, 2.0
    if overlap(lo) <= target:
        raise ValueError(f"target: expected a value below {overlap(lo):.4f} (the overlap at gamma = 1), got {target!r}")
    while overlap(hi) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if overlap(mid) > target else (lo, mid)
    return 0.5 * (lo + hi)


def ncsn_levels(sigma_min: float, sigma_max: float, dim: int, target: float = 0.5, T: float = 1.0):
    r"""Geometric noise levels from $\sigma_{\min}$ to $\sigma_{\max}$ with NCSNv2's ratio for dimension `dim`.

    $L = \lceil\log(\sigma_{\max}/\sigma_{\min})/\log\gamma\rceil + 1$ levels with $\gamma$ =
    [`ncsn_ratio`][scoresde.samplers.langevin.ncsn_ratio]`(dim, target)`; returns an
    [`NCSNSchedule`][scoresde.NCSNSchedule] (whose `to_sde()` is the matching `VESDE`).
    Take $\sigma_{\max}$ from [`ncsn_sigma_max`][scoresde.samplers.langevin.ncsn_sigma_max].
    """
    from ..chains import NCSNSchedule

    sigma_min = check_positive_finite("sigma_min", sigma_min)
    sigma_max = check_positive_finite("sigma_max", sigma_max)
    if sigma_max <= sigma_min:
        raise ValueError(f"sigma_max: expected a value > sigma_min = {sigma_min!r}, got {sigma_max!r}")
    gamma = ncsn_ratio(dim, target)
    L = math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma)) + 1
    return NCSNSchedule.geometric(sigma_min, sigma_max, L, T=T)


def _variance_ratio(eps: float, gamma: float, n_steps: int, sigma_min: float) -> float:
    # NCSNv2 Proposition 3: s_T^2 / sigma_i^2 after T steps from N(0, gamma^2 sigma_i^2 I)
    u = eps / sigma_min**2
    fixed = 2.0 / (2.0 - u)  # 2 eps / (sigma_L^2 - sigma_L^2 (1 - u)^2)
    return (1.0 - u) ** (2 * n_steps) * (gamma**2 - fixed) + fixed


def ncsn_step_size(ratio: float, n_steps_each: int, sigma_min: float) -> float:
    r"""NCSNv2's Technique 4: the step size $\epsilon$ that makes each level's chain end at the right variance.

    For data at one point, Langevin dynamics at level $\sigma_i$ (step $\alpha_i = \epsilon\sigma_i^2/\sigma_L^2$)
    started from the previous level's $\mathcal N(0, \gamma^2\sigma_i^2 I)$ has, after $T$ steps,
    variance $s_T^2$ with (Proposition 3)

    $$\frac{s_T^2}{\sigma_i^2} = \Big(1 - \frac{\epsilon}{\sigma_L^2}\Big)^{2T}\Big(\gamma^2 - \frac{2\epsilon}{\sigma_L^2 - \sigma_L^2(1 - \epsilon/\sigma_L^2)^2}\Big) + \frac{2\epsilon}{\sigma_L^2 - \sigma_L^2(1 - \epsilon/\sigma_L^2)^2},$$

    the same at every level. Returns the $\epsilon \in (0, \sigma_L^2)$ that brings this closest
    to 1 (the paper's rule; CIFAR-10's $\gamma = 1.0376$, $T = 5$, $\sigma_L = 0.01$ gives
    $6.2\times10^{-6}$).

    Arguments:
        ratio: the geometric ratio $\gamma > 1$ of the levels.
        n_steps_each: Langevin steps per level $T$.
        sigma_min: the smallest level $\sigma_L$.

    Reference: Song & Ermon, NeurIPS 2020, section 3.3, Proposition 3 and Technique 4.
    """
    ratio = check_positive_finite("ratio", ratio)
    if ratio <= 1:
        raise ValueError(f"ratio: expected the geometric ratio gamma > 1, got {ratio!r}")
    n_steps_each = check_int("n_steps_each", n_steps_each)
    sigma_min = check_positive_finite("sigma_min", sigma_min)

    def distance(log_u: float) -> float:
        return abs(_variance_ratio(math.exp(log_u) * sigma_min**2, ratio, n_steps_each, sigma_min) - 1.0)

    # Scan u = eps / sigma_L^2 on a log grid over (1e-10, 1), then refine by golden section.
    grid = [math.log(1e-10) + k * (-math.log(1e-10)) / 4000 for k in range(4000)]
    k = min(range(len(grid)), key=lambda j: distance(grid[j]))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    inv_phi = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a, b = hi - inv_phi * (hi - lo), lo + inv_phi * (hi - lo)
        lo, hi = (lo, b) if distance(a) < distance(b) else (a, hi)
    return math.exp(0.5 * (lo + hi)) * sigma_min**2
