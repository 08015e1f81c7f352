"""Samplers measured against exact scores (not a test: prints tables, saves a plot and JSON).

The data is a ring of 8 narrow Gaussian components (radius 4, std 0.1, weights
proportional to 1..8) in 2 and in 32 dimensions, diffused by the VP SDE of Song et al.
(beta from 0.1 to 20). Its noised scores are exact (`scoresde.analytic`), so every error
below is the sampler's own. For each sampler and budget of score evaluations (NFE):

* `TV`: total variation between the share of samples nearest each mode and the weights;
* `std err`: relative error of the within-mode standard deviation (samples within the
  0.999 chi-square radius of their mode; the truncation is accounted for);
* `off`: share of samples off every mode: farther from each than the radius that holds all
  but 1e-6 of a component's mass (so 0.0001% for true samples, and a sampler whose modes
  are too narrow gains nothing here; they show in `std err`);
* `SW2`: sliced Wasserstein-2 distance to as many fresh true samples (256 directions; the
  `true samples` row is the floor set by the sample size);
* `ODE rms`, `ODE med`, `mode miss` (deterministic samplers): the RMS and the median
  distance to a Dormand-Prince solve (rtol = atol = 1e-8, float64) of the same
  probability-flow ODE from the same x_T, followed by the same final denoising, and the
  share of samples that end nearest a different mode than the reference (the RMS is
  dominated by these: adjacent modes are 3.06 apart).

Peers: diffusers' DDPM, DDIM, DPMSolverMultistep and UniPC schedulers (if diffusers is
installed) on the same exact noise prediction. They are given betas whose cumulative
products are exactly the SDE's alpha_t^2 at t_k = (k + 1)/1000, so that the 1000-step
chain and the continuous SDE share their marginals at every step; `clip_sample` is off
(it would clip the ring, of radius 4, to [-1, 1]). Our samplers end at t = 1e-3 (the
chain's first step) and finish with Tweedie's denoiser there, one more evaluation counted
in the NFE; the rows marked "to 0" step into t = 0 instead, whose first-order last step is
the denoiser at the last evaluated time with no extra evaluation (the peers' last step to
sigma = 0 is the same). Rows marked "flow end" take the probability flow's own last step
instead of Tweedie's, (x / alpha + Tweedie) / 2 (`sample(..., denoise="flow")`: the flow into
zero noise with the score held fixed, which keeps the spread that Tweedie's posterior mean
removes, sigma_hat^2 / 2 s^2 = 0.5% of each component's standard deviation here); their ODE
distances are to the reference followed by the same step ("exact probability flow, flow end").

Rows marked "fitted grid" run on a grid fitted by `scoresde.samplers.fit_grid` to the same exact
score on 4000 other prior draws (the pilot; at NFE 5, 10 and 20), minimising their RMS
distance to the exact flow; the fit's own time is reported apart from the sampling time.
The row "UniPC-3 (fitted grid to t = 1/NFE)" (NFE 10 and 20) has the structure of the rows "to 0":
its last evaluation is at t = 1/NFE, where the uniform grid into 0 takes its own, followed
by Tweedie's step there; its grid is fitted to end there (against a solve ending the same
way), on 40,000 other prior draws, so that the rare samples the grid sends to another mode
than the exact flow are seen in the fit. Every evaluation then goes to the noise levels
where the modes are decided, none to the detail within a mode.
The row "diffusers DPMSolverMultistep 3 (our fitted grid)" runs diffusers' third-order
scheduler on the grid fitted for our 3M (not counted among diffusers' best, since the grid
is ours). The "exact probability flow" row is the reference solve itself: what a deterministic
sampler without error would score on the distribution measures from this x_T.

Mode misses are rare at 20 evaluations (a few of the 20,000 samples, too few to tell samplers
apart), so a second section counts them again, for every deterministic sampler at NFE 10 and
20, on 100,000 further prior draws (another seed; `--rare`) against a reference solve from
those draws: each count with its exact 95% Poisson interval, and our best against diffusers'
best by McNemar's exact test on the same draws (the samples missed by one and not the other),
and the count of samples off every mode (0.1 expected of 100,000 true samples).

A last section checks the probability-flow likelihood against the exact log-density:
exact divergence with the N(0, I) prior (whose mismatch with p_T is part of the error) and
with the exact p_T (the ODE's error alone), and Hutchinson's estimate with 16 Rademacher
probes against its reported standard error.

Usage:
    python benchmarks/bench_samplers.py [--quick] [--device cpu|cuda] [--out benchmarks/results]
                                        [--only "UniPC,diffusers"] [--no-likelihood] [--rare N]
                                        [--dims 2,32] [--nfes 5,10,20,50,100]

The full run (20,000 samples and 100,000 further draws, both dimensions) takes about 80
minutes on one CPU core, most of it in the exact 32-D mixture score and the grid fits;
`--quick` (2,000 samples, 4,000 further draws, the decision grids fitted on the ordinary
4,000-draw pilot) about 15 minutes, most of it the 32-D grid fits.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from scipy import stats

import scoresde
import solvers
from scoresde import (
    DDIM,
    VPSDE,
    Ancestral,
    DPMSolverPP,
    EDMHeun,
    GaussianMixture,
    LangevinCorrector,
    PredictorCorrector,
    UniPC,
)
from scoresde.time_grids import KarrasGrid, UniformLogSNR, UniformTime
from scoresde.likelihood import Hutchinson
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler

T_END = 1e-3
N_TRAIN = 1000  # the peers' discrete chain


# ---------------------------------------------------------------------------------------------
# problem and metrics
# ---------------------------------------------------------------------------------------------


@dataclass
class Problem:
    dim: int
    sde: VPSDE
    mixture: GaussianMixture
    exact: scoresde.analytic.DiffusedMixture
    std: float
    radius2: float  # squared "on-mode" radius: std^2 * chi2_{0.999}(dim)
    radius2_off: float  # squared "off every mode" radius: std^2 * chi2_{1 - 1e-6}(dim)
    expected_var: float  # E||x - mu||^2 / dim inside that radius, for true samples
    projections: torch.Tensor
    pilot: torch.Tensor | None = None  # prior draws the fitted grids are fitted on (not the benchmark's x_T)
    pilot_ref: torch.Tensor | None = None  # their exact probability flow
    fitted: dict = field(default_factory=dict)  # sampler name -> budget -> the fitted grid and the fit's time
    decision_pilot: int | None = None  # prior draws the decision grids are fitted on (default DECISION_PILOT)


def make_problem(dim: int, device: torch.device) -> Problem:
    sde = VPSDE()
    std = 0.1
    mixture = GaussianMixture.ring(8, radius=4.0, std=std, dim=dim, weights=list(range(1, 9)))
    q = stats.chi2.ppf(0.999, dim)
    expected_var = std**2 * stats.chi2.cdf(q, dim + 2) / stats.chi2.cdf(q, dim)
    g = torch.Generator().manual_seed(1234)
    proj = torch.randn(dim, 256, generator=g, dtype=torch.float64)
    proj = (proj / proj.norm(dim=0, keepdim=True)).to(device)
    q_off = stats.chi2.isf(1e-6, dim)
    return Problem(dim, sde, mixture, mixture.diffused(sde), std, std**2 * q, std**2 * q_off, expected_var, proj)


def sorted_projections(p: Problem, x: torch.Tensor) -> torch.Tensor:
    return (x.double() @ p.projections).sort(0).values


def metrics(p: Problem, x: torch.Tensor, fresh: torch.Tensor, ref: torch.Tensor | None) -> dict:
    """The measures of the module docstring; `fresh` holds the sorted projections of true samples."""
    x = x.double()
    means = p.mixture.means.to(x)
    d2 = torch.cdist(x, means).pow(2)
    dist2, mode = d2.min(1)
    n = x.shape[0]
    share = torch.bincount(mode, minlength=p.mixture.K).double() / n
    on = dist2 <= p.radius2
    within = (dist2[on].mean() / p.dim / p.expected_var).sqrt().item() - 1 if bool(on.any()) else math.nan
    out = {
        "tv": 0.5 * (share - p.mixture.weights.to(share)).abs().sum().item(),
        "std_err": abs(within),
        "off": (dist2 > p.radius2_off).double().mean().item(),
        "sw2": (sorted_projections(p, x) - fresh).pow(2).mean().sqrt().item(),
        "ode_rms": math.nan,
        "ode_med": math.nan,
        "mode_miss": math.nan,
    }
    if ref is not None:
        ref = ref.double()
        dist = (x - ref).norm(dim=1)
        out["ode_rms"] = dist.pow(2).mean().sqrt().item()
        out["ode_med"] = dist.median().item()
        out["mode_miss"] = (torch.cdist(ref, means).argmin(1) != mode).double().mean().item()
    return out


# ---------------------------------------------------------------------------------------------
# samplers: each entry makes samples from x_T with a seed, using at most `nfe` evaluations
# ---------------------------------------------------------------------------------------------


@dataclass
class Entry:
    name: str
    group: str  # "ours", "diffusers", or "hybrid" (a diffusers scheduler on a grid of ours)
    deterministic: bool
    run: Callable[[torch.Tensor, int], torch.Tensor]  # (x_T, seed) -> samples
    nfe: int
    flow_end: bool = False  # ends with the flow's last step (denoise="flow"): compared with the reference's
    fit: dict = field(default_factory=dict)  # a fitted grid and the fit's time, once run


FIT_NFES = (5, 10, 20)  # budgets at which fitted grids are fitted (their cost grows with the steps)
PILOT = 4000  # pilot draws per fit
#: the grid fitted to end where the uniform grid into t = 0 takes its last evaluation (t = T / NFE, then
#: Tweedie's step there, as that grid's last step into 0 is): every evaluation goes to the noise levels
#: where the modes are decided. The rare flips it minimises need a larger pilot (another seed).
DECISION = "UniPC-3 (fitted grid to t = 1/NFE)"
DECISION_NFES = (10, 20)
DECISION_PILOT = 40000  # --quick: PILOT
FITTED_3M = "DPM-Solver++ 3M (fitted grid)"
#: mode misses are rare at 20 evaluations (a few of 20,000 samples): they are counted again on more draws
RARE_NFES = (10, 20)
RARE_DRAWS = 100_000
RARE_SEED = 7


def fit_once(p: Problem, cache: dict, sampler, steps: int, dtype: torch.dtype, t_end: float | None = None):
    """The grid fitted for `sampler` on the pilot draws, fitted on first use and kept in `cache`;
    with `t_end`, a grid ending there, fitted on the larger decision pilot (its reference solved by
    `fit_grid`; the solve is part of the fit's time)."""
    if "grid" not in cache:
        t0 = time.perf_counter()
        if t_end is None:
            cache["grid"] = scoresde.samplers.fit_grid(p.sde, p.exact.score, sampler, steps, p.pilot.to(dtype),
                                              reference=p.pilot_ref)
        else:
            size = p.decision_pilot or DECISION_PILOT
            pilot = torch.randn(size, p.dim, generator=torch.Generator().manual_seed(98),
                                dtype=torch.float64).to(p.pilot.device)
            cache["grid"] = scoresde.samplers.fit_grid(p.sde, p.exact.score, sampler, steps, pilot.to(dtype), t_end=t_end)
        cache["seconds"] = time.perf_counter() - t0
    return cache["grid"]


def ours(p: Problem, nfe: int, dtype: torch.dtype = torch.float32) -> list[Entry]:
    """Our samplers with a budget of `nfe` evaluations, the last one the final Tweedie denoising."""
    sde, score = p.sde, p.exact.score

    def entry(name, sampler, steps, grid, deterministic, t_end=T_END, end="tweedie"):
        """Steps to t_end then the final step `end` (Tweedie's or the flow's, one more evaluation),
        or, with t_end = 0, steps into zero noise."""
        if steps < 1:
            return None
        denoise = end if t_end > 0 else False

        def run(x_T, seed):
            g = torch.Generator(device=x_T.device).manual_seed(seed)
            return scoresde.sample(sde, score, sampler=sampler, steps=steps, grid=grid, t_end=t_end,
                                   x_init=x_T, generator=g, denoise=denoise)

        return Entry(name, "ours", deterministic, run, sampler.evaluations(steps) + int(bool(denoise)),
                     flow_end=denoise == "flow")

    def fitted(name, sampler, steps, t_end=None):
        """A grid fitted on the pilot draws (once, on first use; the fit's time is reported apart)."""
        if nfe not in FIT_NFES or p.pilot is None or steps < 2:
            return None
        cache = p.fitted.setdefault(name, {}).setdefault(nfe, {})

        def run(x_T, seed):
            grid = fit_once(p, cache, sampler, steps, dtype, t_end)
            return scoresde.sample(sde, score, sampler=sampler, steps=steps, grid=grid, x_init=x_T, denoise=True)

        return Entry(name, "ours", True, run, sampler.evaluations(steps) + 1, fit=cache)

    heun_steps = (nfe - 1) // 2
    entries = [
        entry("DDIM (uniform t)", DDIM(), nfe - 1, UniformTime(), True),
        entry("EDM Heun (Karras)", EDMHeun(), heun_steps, KarrasGrid(), True),
        entry("DPM-Solver++ 2M (uniform t)", DPMSolverPP(order=2), nfe - 1, UniformTime(), True),
        entry("DPM-Solver++ 2M (log-SNR)", DPMSolverPP(order=2), nfe - 1, UniformLogSNR(), True),
        entry("DPM-Solver++ 2M (log-SNR, flow end)", DPMSolverPP(order=2), nfe - 1, UniformLogSNR(), True,
              end="flow"),
        entry("DPM-Solver++ 3M (log-SNR)", DPMSolverPP(order=3), nfe - 1, UniformLogSNR(), True),
        entry("DPM-Solver++ 3M (Karras)", DPMSolverPP(order=3), nfe - 1, KarrasGrid(), True),
        entry("DPM-Solver++ 2M (uniform t to 0)", DPMSolverPP(order=2), nfe, UniformTime(), True, t_end=0.0),
        entry("DPM-Solver++ 3M (uniform t to 0)", DPMSolverPP(order=3), nfe, UniformTime(), True, t_end=0.0),
        entry("DPM-Solver++ 3M, half D2 (uniform t to 0)", DPMSolverPP(order=3, d2="half"), nfe, UniformTime(), True,
              t_end=0.0),
        entry("DPM-Solver++ 3M (uniform t)", DPMSolverPP(order=3), nfe - 1, UniformTime(), True),
        entry("UniPC-3 (uniform t to 0)", UniPC(order=3), nfe, UniformTime(), True, t_end=0.0),
        entry("UniPC-2 (uniform t)", UniPC(order=2), nfe - 1, UniformTime(), True),
        entry("UniPC-2 (uniform t to 0)", UniPC(order=2), nfe, UniformTime(), True, t_end=0.0),
        entry("UniPC-2 (log-SNR)", UniPC(order=2), nfe - 1, UniformLogSNR(), True),
        entry("UniPC-2 (log-SNR, flow end)", UniPC(order=2), nfe - 1, UniformLogSNR(), True, end="flow"),
        entry("UniPC-3 (log-SNR)", UniPC(order=3), nfe - 1, UniformLogSNR(), True),
        fitted(FITTED_3M, DPMSolverPP(order=3), nfe - 1),
        fitted("UniPC-2 (fitted grid)", UniPC(order=2), nfe - 1),
        fitted("UniPC-3 (fitted grid)", UniPC(order=3), nfe - 1),
        fitted(DECISION, UniPC(order=3), nfe - 1, t_end=p.sde.T / nfe) if nfe in DECISION_NFES else None,
        entry("Euler-Maruyama (uniform t)", ReverseSDESampler(), nfe - 1, UniformTime(), False),
        entry("Ancestral (uniform t)", Ancestral(), nfe - 1, UniformTime(), False),
        entry("Ancestral (log-SNR)", Ancestral(), nfe - 1, UniformLogSNR(), False),
        entry("SDE-DPM-Solver++ 2M (uniform t)", DPMSolverPP(order=2, eta=1.0), nfe - 1, UniformTime(), False),
        entry("SDE-DPM-Solver++ 2M (log-SNR)", DPMSolverPP(order=2, eta=1.0), nfe - 1, UniformLogSNR(), False),
        entry("SDE-DPM-Solver++ 2M (log-SNR, flow end)", DPMSolverPP(order=2, eta=1.0), nfe - 1, UniformLogSNR(),
              False, end="flow"),
        entry("SDE-DPM-Solver++ 3M (log-SNR)", DPMSolverPP(order=3, eta=1.0), nfe - 1, UniformLogSNR(), False),
        entry("PC, noise norms (uniform t)", PredictorCorrector(corrector=LangevinCorrector(norms="noise")),
              heun_steps, UniformTime(), False),
        entry("EDM Heun + churn 40 (Karras)", EDMHeun(churn=40.0), heun_steps, KarrasGrid(), False),
    ]
    return [e for e in entries if e is not None]


def peers(p: Problem, nfe: int, dtype: torch.dtype = torch.float32) -> list[Entry]:
    """diffusers' schedulers on the exact eps, with betas matching the SDE's marginals at t_k = (k+1)/N."""
    try:
        import diffusers
    except ImportError:
        return []
    sde, exact = p.sde, p.exact
    t_k = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
    alphas_cumprod = sde.marginal(t_k)[0] ** 2
    betas = scoresde.DDPMSchedule.from_alphas_cumprod(alphas_cumprod).betas.numpy()

    def entry(name, cls, deterministic, timesteps=None, **config):
        if timesteps is not None and (nfe not in FIT_NFES or p.pilot is None):
            return None

        def run(x_T, seed):
            sched = cls(num_train_timesteps=N_TRAIN, trained_betas=betas, **config)
            if timesteps is None:
                sched.set_timesteps(nfe, device=x_T.device)
            else:  # the chain steps k = t N - 1 nearest to the times of a grid of ours
                ts = timesteps()
                sched.set_timesteps(timesteps=[round(t * N_TRAIN) - 1 for t in ts.tolist()], device=x_T.device)
            g = torch.Generator(device=x_T.device).manual_seed(seed)
            x = x_T * sched.init_noise_sigma
            for k in sched.timesteps:
                t = (k.to(torch.float64) + 1) / N_TRAIN
                eps = exact.eps(x, t.to(device=x.device, dtype=x.dtype).expand(x.shape[0]))
                kw = {"generator": g} if not deterministic else {}
                x = sched.step(eps, k, x, **kw).prev_sample
            return x

        # on a grid of ours it is not diffusers as shipped: listed, but not among diffusers' best
        return Entry(name, "diffusers" if timesteps is None else "hybrid", deterministic, run, nfe)

    S = diffusers
    entries = [
        entry("diffusers DDPM", S.DDPMScheduler, False, clip_sample=False),
        entry("diffusers DDIM", S.DDIMScheduler, True, clip_sample=False),
        entry("diffusers DDIM (trailing)", S.DDIMScheduler, True, clip_sample=False, timestep_spacing="trailing"),
        entry("diffusers DPMSolverMultistep", S.DPMSolverMultistepScheduler, True),
        entry("diffusers DPMSolverMultistep 3", S.DPMSolverMultistepScheduler, True, solver_order=3),
        entry("diffusers DPMSolverMultistep (Karras)", S.DPMSolverMultistepScheduler, True, use_karras_sigmas=True),
        entry("diffusers DPMSolverMultistep (log-SNR)", S.DPMSolverMultistepScheduler, True, use_lu_lambdas=True),
        entry("diffusers DPMSolverMultistep 3 (log-SNR)", S.DPMSolverMultistepScheduler, True, solver_order=3,
              use_lu_lambdas=True),
        entry("diffusers UniPC", S.UniPCMultistepScheduler, True),
        entry("diffusers UniPC 3", S.UniPCMultistepScheduler, True, solver_order=3),
        # diffusers' 3M on the grid fitted for our 3M: what the grid gives without our order rules
        entry("diffusers DPMSolverMultistep 3 (our fitted grid)", S.DPMSolverMultistepScheduler, True,
              timesteps=lambda: fit_once(p, p.fitted.setdefault(FITTED_3M, {}).setdefault(nfe, {}),
                                         DPMSolverPP(order=3), nfe - 1, dtype).times,
              solver_order=3),
    ]
    return [e for e in entries if e is not None]


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------


def reference(p: Problem, x_T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The probability-flow ODE from x_T to t = 1e-3 by Dormand-Prince at 1e-8 (float64), then
    Tweedie's final step, and, from the same solve, the flow's final step (x / alpha + Tweedie) / 2."""
    seen = []
    tweedie = scoresde.sample(p.sde, p.exact.score, sampler=ProbabilityFlowSampler(solvers.Dopri5(1e-8, 1e-8)),
                              x_init=x_T.double(), t_end=T_END, denoise=True, callback=seen.append)
    alpha, _ = p.sde.marginal(seen[-1].t_next)
    return tweedie, 0.5 * (seen[-1].x / alpha + tweedie)


def run_dim(dim: int, nfes: list[int], n: int, device: torch.device, dtype: torch.dtype,
            only: list[str] | None = None, n_rare: int = 0,
            decision_pilot: int = DECISION_PILOT) -> tuple[list[dict], list[dict]]:
    """The rows of every sampler at every budget, and the mode-miss counts on `n_rare` further draws."""
    p = make_problem(dim, device)
    p.decision_pilot = decision_pilot
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, dim, generator=g, dtype=torch.float64).to(device)
    fresh = sorted_projections(p, p.mixture.sample(n, generator=g).to(device))
    fresh2 = p.mixture.sample(n, generator=g).to(device)
    ref, ref_flow = reference(p, x_T)
    p.pilot = torch.randn(PILOT, dim, generator=torch.Generator().manual_seed(99), dtype=torch.float64).to(device)
    p.pilot_ref = reference(p, p.pilot)[0]
    rows = [dict(dim=dim, sampler="true samples", group="reference", nfe=0, deterministic=False, seconds=0.0,
                 **metrics(p, fresh2, fresh, None)),
            dict(dim=dim, sampler="exact probability flow", group="reference", nfe=0, deterministic=False,
                 seconds=0.0, **metrics(p, ref, fresh, None)),
            dict(dim=dim, sampler="exact probability flow, flow end", group="reference", nfe=0,
                 deterministic=False, seconds=0.0, **metrics(p, ref_flow, fresh, None))]
    for nfe in nfes:
        for e in ours(p, nfe, dtype) + peers(p, nfe, dtype):
            if only and not any(pattern in e.name for pattern in only):
                continue
            t0 = time.perf_counter()
            x = e.run(x_T.to(dtype), 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            m = metrics(p, x, fresh, (ref_flow if e.flow_end else ref) if e.deterministic else None)
            fit = e.fit
            if fit:
                seconds -= fit["seconds"]
            rows.append(dict(dim=dim, sampler=e.name, group=e.group, nfe=e.nfe, budget=nfe,
                             deterministic=e.deterministic, seconds=seconds, fit_seconds=fit.get("seconds"),
                             fit_evaluations=fit["grid"].evaluations if fit else None,
                             grid=fit["grid"].times.tolist() if fit else None, **m))
    return rows, rare_rows(p, [b for b in RARE_NFES if b in nfes], n_rare, dtype, only)


def rare_rows(p: Problem, nfes: list[int], n: int, dtype: torch.dtype, only: list[str] | None) -> list[dict]:
    """Mode misses of every deterministic sampler on `n` further prior draws (another seed than the
    main draws and the pilots), against a reference solve from them; each row keeps the indices of
    the missed samples, so that two samplers can be compared on the same draws (McNemar), and
    counts the samples off every mode (the `off` radius; true samples: n * 1e-6 expected)."""
    if n <= 0 or not nfes:
        return []
    x_T = torch.randn(n, p.dim, generator=torch.Generator().manual_seed(RARE_SEED), dtype=torch.float64)
    x_T = x_T.to(p.projections.device)
    refs = reference(p, x_T)
    means = p.mixture.means.to(x_T)
    ref_mode = [torch.cdist(r, means).argmin(1) for r in refs]  # Tweedie's end, the flow's end
    rows = []
    for nfe in nfes:
        for e in ours(p, nfe, dtype) + peers(p, nfe, dtype):
            if not e.deterministic or (only and not any(pattern in e.name for pattern in only)):
                continue
            x = e.run(x_T.to(dtype), 1).double()
            dist2, mode = torch.cdist(x, means).pow(2).min(1)
            missed = mode != ref_mode[int(e.flow_end)]
            rows.append(dict(dim=p.dim, sampler=e.name, group=e.group, nfe=e.nfe, budget=nfe, draws=n,
                             misses=int(missed.sum()), missed=missed.nonzero().flatten().tolist(),
                             off=int((dist2 > p.radius2_off).sum())))
    return rows


def mcnemar(a: dict, b: dict) -> tuple[int, int, float]:
    """Samples missed by `a` only and by `b` only (the same draws), and the exact two-sided p-value
    of McNemar's test: under "equally good", each discordant draw is either's with probability 1/2."""
    only_a, only_b = len(set(a["missed"]) - set(b["missed"])), len(set(b["missed"]) - set(a["missed"]))
    p = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return only_a, only_b, p


def poisson_interval(k: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood) interval for the mean of a Poisson count k."""
    a = 1 - level
    lo = stats.chi2.ppf(a / 2, 2 * k) / 2 if k else 0.0
    return lo, stats.chi2.ppf(1 - a / 2, 2 * k + 2) / 2


def rare_table(rows: list[dict]) -> str:
    """Every sampler's misses with its 95% interval, and our best against diffusers' best."""
    lines = ["| dim | NFE | sampler | misses | share | 95% interval | off |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = poisson_interval(r["misses"])
        n = r["draws"]
        lines.append(f"| {r['dim']} | {r['nfe']} | {r['sampler']} | {r['misses']} | {100 * r['misses'] / n:.3f}% | "
                     f"{100 * lo / n:.3f}-{100 * hi / n:.3f}% | {r['off']} |")
    lines += ["", "| dim | budget | ours, best | diffusers, best | missed by ours only | by diffusers' only |"
              " McNemar p |", "|---|---|---|---|---|---|---|"]
    for dim in sorted({r["dim"] for r in rows}):
        for nfe in sorted({r["budget"] for r in rows}):
            at = [r for r in rows if r["dim"] == dim and r["budget"] == nfe]
            o = min((r for r in at if r["group"] == "ours"), key=lambda r: r["misses"], default=None)
            d = min((r for r in at if r["group"] == "diffusers"), key=lambda r: r["misses"], default=None)
            if o is None or d is None:
                continue
            only_o, only_d, pval = mcnemar(o, d)
            lines.append(f"| {dim} | {nfe} | {o['misses']} ({o['sampler']}) | {d['misses']} ({d['sampler']}) | "
                         f"{only_o} | {only_d} | {pval:.2g} |")
    return "\n".join(lines)


def likelihood_rows(device: torch.device, n: int) -> list[dict]:
    rows = []
    for dim in (2, 32):
        p = make_problem(dim, device)
        x = p.mixture.sample(n, generator=torch.Generator().manual_seed(5)).to(device)
        exact_prior = lambda z: p.exact.log_prob(z, p.sde.T)  # noqa: E731
        cases = (("exact", "exact", None), ("exact, exact p_T", "exact", exact_prior),
                 ("Hutchinson x16", Hutchinson(16), None),
                 ("Hutchinson x16, Gaussian", Hutchinson(16, distribution="gaussian"), None))
        for name, div, prior in cases:
            t0 = time.perf_counter()
            res = scoresde.log_likelihood(p.sde, p.exact.score, x, divergence=div, prior_logp=prior,
                                          generator=torch.Generator(device=device).manual_seed(0))
            seconds = time.perf_counter() - t0
            err = res.log_prob - p.exact.log_prob(x, res.t_eps)
            # The prior's own error at the latent, log N(z; 0, I) - log p_T(z): zero with the exact p_T.
            prior_gap = res.prior_log_prob - p.exact.log_prob(res.latent, p.sde.T)
            row = dict(dim=dim, divergence=name, nfe=res.nfe, seconds=seconds,
                       max_err_per_dim=(err.abs().max() / dim).item(),
                       mean_err_per_dim=(err.abs().mean() / dim).item(),
                       max_prior_gap_per_dim=(prior_gap.abs().max() / dim).item(),
                       max_ode_err_per_dim=((err - prior_gap).abs().max() / dim).item(),
                       mean_bpd=res.bits_per_dim().mean().item())
            if res.std_error is not None:
                z = err / res.std_error
                row.update(mean_se=res.std_error.mean().item(), max_abs_z=z.abs().max().item(),
                           batch_z=(err.sum() / res.std_error.pow(2).sum().sqrt()).item(),
                           within_3se=(z.abs() < 3).double().mean().item())
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def fmt(v: float, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.4f}"


METRICS = ("tv", "std_err", "off", "sw2", "ode_rms", "ode_med", "mode_miss")
PERCENT = ("std_err", "off", "mode_miss")
HEADERS = ("TV", "std err", "off", "SW2", "ODE rms", "ODE med", "mode miss")


def table(rows: list[dict]) -> str:
    lines = ["| sampler | NFE | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 2) + "|"]
    for r in rows:
        cells = " | ".join(fmt(r[k], k in PERCENT) for k in METRICS)
        lines.append(f"| {r['sampler']} | {r['nfe']} | {cells} |")
    return "\n".join(lines)


def best(rows: list[dict], key: str) -> dict | None:
    valid = [r for r in rows if not math.isnan(r[key])]
    return min(valid, key=lambda r: r[key]) if valid else None


def summary(rows: list[dict], budgets: list[int]) -> str:
    """At each budget: our best deterministic vs diffusers' best; our best stochastic vs diffusers' DDPM."""
    lines = ["| dim | NFE | measure | ours, deterministic | diffusers, deterministic | ours, stochastic | diffusers DDPM |",
             "|---|---|---|---|---|---|---|"]
    for dim in sorted({r["dim"] for r in rows}):
        for nfe in budgets:
            at = [r for r in rows if r["dim"] == dim and r.get("budget") == nfe]
            groups = {
                "od": [r for r in at if r["group"] == "ours" and r["deterministic"]],
                "dd": [r for r in at if r["group"] == "diffusers" and r["deterministic"]],
                "os": [r for r in at if r["group"] == "ours" and not r["deterministic"]],
                "ds": [r for r in at if r["sampler"] == "diffusers DDPM"],
            }
            for key in METRICS:
                cells = []
                for gname in ("od", "dd", "os", "ds"):
                    b = best(groups[gname], key)
                    cells.append("-" if b is None else f"{fmt(b[key], key in PERCENT)} ({b['sampler']})")
                lines.append(f"| {dim} | {nfe} | {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["dim"] for r in rows})
    fig, axes = plt.subplots(len(dims), len(METRICS), figsize=(4.2 * len(METRICS), 3.6 * len(dims)), squeeze=False)
    for i, dim in enumerate(dims):
        data = [r for r in rows if r["dim"] == dim and r["group"] != "reference"]
        names = list(dict.fromkeys(r["sampler"] for r in data))
        for j, key in enumerate(METRICS):
            ax = axes[i][j]
            for name in names:
                pts = sorted((r["nfe"], r[key]) for r in data if r["sampler"] == name and r[key] > 0)
                if pts:
                    style = "--" if name.startswith("diffusers") else "-"
                    ax.plot(*zip(*pts), style, marker="o", ms=3, label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{dim}-D: {key}")
            ax.set_xlabel("NFE")
    handles, labels = axes[0][0].get_legend_handles_labels()  # the TV panel has every sampler
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 samples, NFE 10 and 20 only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--samples", type=int, default=None, help="samples per run (default 20,000; quick: 2,000)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--only", default=None,
                    help="comma-separated substrings: run only the samplers whose names contain one")
    ap.add_argument("--no-likelihood", action="store_true", help="skip the likelihood section")
    ap.add_argument("--rare", type=int, default=None,
                    help="further prior draws on which the mode misses at NFE 10 and 20 are counted "
                         f"(default {RARE_DRAWS:,}; quick: 4,000; 0 skips)")
    ap.add_argument("--dims", default="2,32", help="comma-separated dimensions of the ring (default 2,32)")
    ap.add_argument("--nfes", default=None,
                    help="comma-separated budgets (default 5,10,20,50,100; quick: 10,20)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: on shared machines more threads only add contention)")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    nfes = [10, 20] if args.quick else [5, 10, 20, 50, 100]
    try:
        dims = [int(d) for d in args.dims.split(",")]
        nfes = nfes if args.nfes is None else [int(b) for b in args.nfes.split(",")]
    except ValueError:
        ap.error(f"--dims, --nfes: expected comma-separated integers, got --dims {args.dims!r} --nfes {args.nfes!r}")
    if any(d < 2 for d in dims):
        ap.error(f"--dims: the ring needs at least 2 dimensions, got {args.dims!r}")
    if any(b < 2 for b in nfes):
        ap.error(f"--nfes: expected budgets of at least 2 evaluations, got {args.nfes!r}")
    n = args.samples or (2000 if args.quick else 20000)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(True)

    print(f"# bench_samplers: {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__},"
          f" device {device}, {args.dtype}, {n} samples, NFE {nfes}")
    try:
        import diffusers

        print(f"# peers: diffusers {diffusers.__version__}")
    except ImportError:
        print("# peers: diffusers not installed (pip install diffusers); only our samplers run")
    n_rare = args.rare if args.rare is not None else (4000 if args.quick else RARE_DRAWS)
    rows, rare = [], []
    for dim in dims:
        t0 = time.perf_counter()
        dim_rows, dim_rare = run_dim(dim, nfes, n, device, dtype, args.only.split(",") if args.only else None,
                                     n_rare, PILOT if args.quick else DECISION_PILOT)  # quick: a rougher fit
        rows, rare = rows + dim_rows, rare + dim_rare
        print(f"\n## {dim}-D ring ({time.perf_counter() - t0:.0f} s)\n")
        print(table(dim_rows))
    budgets = [b for b in (10, 20) if b in nfes]
    print("\n## Best at equal NFE (lower is better)\n")
    print(summary(rows, budgets))
    if rare:
        print(f"\n## Mode misses on {n_rare:,} further draws (deterministic samplers; lower is better)\n")
        print(rare_table(rare))

    lik = [] if args.no_likelihood else likelihood_rows(device, 256 if not args.quick else 64)
    print("\n## Probability-flow likelihood vs the exact log-density (Dopri5, rtol = atol = 1e-5)\n")
    print("| dim | divergence | NFE | seconds | max error (nats/dim) | mean error | max prior gap | max error less"
          " the prior gap | mean SE | batch z | share within 3 SE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in lik:
        print(f"| {r['dim']} | {r['divergence']} | {r['nfe']} | {r['seconds']:.2f} | {r['max_err_per_dim']:.5f} | "
              f"{r['mean_err_per_dim']:.5f} | {r['max_prior_gap_per_dim']:.5f} | {r['max_ode_err_per_dim']:.5f} | "
              f"{fmt(r.get('mean_se', math.nan))} | {fmt(r.get('batch_z', math.nan))} | "
              f"{fmt(r.get('within_3se', math.nan), True)} |")

    plot(rows, args.out / "bench_samplers.png")
    (args.out / "bench_samplers.json").write_text(json.dumps({"rows": rows, "rare": rare, "likelihood": lik}, indent=1))
    print(f"\nwrote {args.out / 'bench_samplers.png'} and {args.out / 'bench_samplers.json'}")


if __name__ == "__main__":
    main()
