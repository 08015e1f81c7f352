"""Defaults against defaults: `scoresde.sample` with no options vs the peers' default recipes.

Not a test: prints tables, saves a plot and JSON under --out. Every run starts from the same
prior draws x_T and uses the same exact score of a Gaussian mixture (`scoresde.analytic`),
so every difference below is the recipe's own. The recipes, at a budget of N score
evaluations (NFE):

* ours: `scoresde.sample(sde, exact.score, x_init=x_T, steps=N)`, nothing else (the default
  sampler, grid, end time and final step of `scoresde.samplers.defaults`);
* k-diffusion (`tests.peers.k_diffusion_sampling`, its `sampling.py` unchanged):
  `sample_euler`, `sample_heun`, `sample_lms` and `sample_dpmpp_2m` with their default
  options on `get_sigmas_karras(n, sigma_min, sigma_max)` (rho = 7, ending at sigma = 0), the
  denoiser being the exact posterior mean at the time whose sigma/alpha is sigma; sigma_min
  and sigma_max are the SDE's at t = 1e-3 (VP, sub-VP: the first step of a 1000-step chain, as
  k-diffusion's discrete wrappers) or 0 (VE) and at T. Euler, LMS and 2M take n = N steps (N
  evaluations), Heun n = (N + 1) // 2 (its last step into 0 is an Euler step: 2n - 1);
* diffusers' `DPMSolverMultistepScheduler`, `UniPCMultistepScheduler`,
  `EulerDiscreteScheduler` and `DDIMScheduler` with their default configurations (only
  `trained_betas` and, for DDIM, `clip_sample=False`, since the default clips to [-1, 1]),
  `set_timesteps(N)`. The chain is the one whose alphabar_k = 1 / (1 + sigma_hat(t_k)^2),
  t_k = (k + 1)/1000, sigma_hat = sigma_t/alpha_t: for the VP SDE its own alpha_t^2, for
  sub-VP and VE the VP chain of the same noise levels (the probability flow in
  x/alpha is the same ODE for all three), fed the exact eps at t_k.

Problems (data x0 ~ a Gaussian mixture, exact at every noise level):

* `narrow+wide` (2-D): three narrow components (std 0.05, weights 0.1, 0.2, 0.3) beside a wide
  one (std 1, weight 0.4);
* `many modes` (2-D): a 7 x 7 grid of 49 components (spacing 1, std 0.08, weights 0.5..1.5);
* `32-D`: 10 components with random means (0.6 N(0, I)), std 0.3, weights 1..10;
* `anisotropic` (8-D): one Gaussian with standard deviations log-spaced from 0.03 to 10
  (variances over five orders of magnitude).

Measures (lower is better), each computed on per-sample statistics so that the intervals
come from one bootstrap: `TV`, total variation between the share of samples assigned to each
component (the most likely one under the data) and the weights; `spread`, the within-mode
spread error, sum_k w_k mean_g |rho_kg - 1| with rho_kg the RMS standardised deviation of
the samples of component k in coordinate group g (the coordinates of equal std; one group for
an isotropic component), over samples within the 0.999 chi-square Mahalanobis radius
(corrected for that truncation); `off`, the share of samples farther from every component
than the radius that holds all but 1e-6 of its mass; `SW2`, sliced Wasserstein-2 distance to
as many fresh true samples (64 directions). The row `true samples` is each measure's
finite-sample floor (the same measure on other true samples). Intervals: 95% bootstrap
percentiles (200 resamples; for SW2, which needs a sort per resample, 20). Verdicts against the best peer default per measure: the
paired bootstrap (the same resampled indices of the same x_T for both) of the difference,
`win` if its 95% interval lies below 0, `loss` above, `tie` otherwise.

A `--candidates` section runs the recipes among which the default was chosen (samplers,
grids, end times and final steps) at NFE 5, 10, 20 and 50, and the exact probability flow from
the same draws as a reference (what an exact solver gives: a loss it shares is no recipe's
to remove); its table, with each recipe's losses per budget, is what
`scoresde/samplers/defaults.py` cites.

Usage:
    python benchmarks/bench_defaults.py [--quick] [--candidates] [--device cpu] [--out benchmarks/results]
    python benchmarks/bench_defaults.py --guided   # the guided-sampling table alone (seconds)

Full run with `--candidates` (6,000 samples, 12 problem x SDE pairs, NFE 5, 10, 20, 50, 8 peers,
11 candidates and the reference): 16 minutes on one CPU core (exact scores are cheap; the time is
the peers' loops and the bootstrap); without `--candidates` about half that; `--quick` (2,000
samples, NFE 10, 20): 1 to 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.peers (k-diffusion's sampling module)

import scoresde  # noqa: E402
from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE  # noqa: E402

N_TRAIN = 1000
T_PEER = 1e-3  # the chain's first step: the peers' smallest nonzero noise level on VP and sub-VP
N_PROJ = 64
N_BOOT = 200
N_BOOT_SW2 = 20  # resamples for SW2's interval (a sort each)


# ---------------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------------


def narrow_wide() -> GaussianMixture:
    means = torch.tensor([[-3.0, -1.5], [-3.0, 0.0], [-3.0, 1.5], [3.0, 0.0]], dtype=torch.float64)
    return GaussianMixture(means, torch.tensor([0.05, 0.05, 0.05, 1.0], dtype=torch.float64), [0.1, 0.2, 0.3, 0.4])


def many_modes() -> GaussianMixture:
    g = torch.arange(7, dtype=torch.float64) - 3.0
    means = torch.cartesian_prod(g, g)
    weights = 0.5 + torch.rand(49, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return GaussianMixture(means, 0.08, weights)


def high_dim() -> GaussianMixture:
    means = 0.6 * torch.randn(10, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return GaussianMixture(means, 0.3, list(range(1, 11)))


def anisotropic() -> GaussianMixture:
    stds = torch.logspace(math.log10(0.03), 1.0, 8, dtype=torch.float64)
    return GaussianMixture.gaussian(torch.zeros(8, dtype=torch.float64), stds)


PROBLEMS: dict[str, Callable[[], GaussianMixture]] = {
    "narrow+wide": narrow_wide, "many modes": many_modes, "32-D": high_dim, "anisotropic": anisotropic}
SDES = {"VP": VPSDE, "sub-VP": SubVPSDE, "VE": VESDE}


@dataclass
class Problem:
    name: str
    sde_name: str
    sde: object
    mixture: GaussianMixture
    exact: scoresde.analytic.DiffusedMixture
    projections: torch.Tensor
    groups: torch.Tensor  # (K, D) coordinate group of each coordinate, per component
    n_groups: int
    q_on: float
    q_off: float
    trunc: float  # E[z_j^2 | Mahalanobis^2 <= q_on] for true samples


def make_problem(name: str, sde_name: str) -> Problem:
    mixture, sde = PROBLEMS[name](), SDES[sde_name]()
    D = mixture.dim
    proj = torch.randn(D, N_PROJ, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)
    proj = proj / proj.norm(dim=0, keepdim=True)
    # coordinate groups: equal standard deviations within a component
    groups = torch.stack([torch.unique(s, return_inverse=True)[1] for s in mixture.stds])
    q_on = stats.chi2.ppf(0.999, D)
    trunc = stats.chi2.cdf(q_on, D + 2) / stats.chi2.cdf(q_on, D)
    return Problem(name, sde_name, sde, mixture, mixture.diffused(sde), proj, groups, int(groups.max()) + 1,
                   q_on, stats.chi2.isf(1e-6, D), trunc)


# ---------------------------------------------------------------------------------------------
# measures, from per-sample statistics (so that one bootstrap serves them all)
# ---------------------------------------------------------------------------------------------


def per_sample(p: Problem, x: torch.Tensor) -> dict:
    """Each sample's component, Mahalanobis flags, squared standardised deviations per group, projections."""
    x = x.double()
    mu, s, w = p.mixture.means, p.mixture.stds, p.mixture.weights
    z2 = ((x[:, None, :] - mu[None]) / s[None]).pow(2)  # (n, K, D)
    m2 = z2.sum(-1)
    loglik = w.log() - s.log().sum(-1) - 0.5 * m2
    k = loglik.argmax(1)
    zk = z2[torch.arange(x.shape[0]), k]  # (n, D)
    gk = p.groups[k]  # (n, D)
    zg = torch.zeros(x.shape[0], p.n_groups, dtype=x.dtype).scatter_add_(1, gk, zk)
    cnt = torch.zeros(x.shape[0], p.n_groups, dtype=x.dtype).scatter_add_(1, gk, torch.ones_like(zk))
    return dict(k=k, on=m2[torch.arange(x.shape[0]), k] <= p.q_on, off=(m2 > p.q_off).all(1), zg=zg, cnt=cnt,
                proj=(x @ p.projections).float())


def _features(p: Problem, st: dict) -> torch.Tensor:
    """(n, K + 2 K G + 1) per-sample indicators and sums whose (weighted) means give TV, spread and off."""
    n, K, G = st["k"].shape[0], p.mixture.K, p.n_groups
    onehot = torch.nn.functional.one_hot(st["k"], K).double()
    on = onehot * st["on"].double()[:, None]
    z = (on[:, :, None] * st["zg"][:, None, :]).reshape(n, K * G)
    c = (on[:, :, None] * st["cnt"][:, None, :]).reshape(n, K * G)
    return torch.cat([onehot, z, c, st["off"].double()[:, None]], 1)


def _from_sums(p: Problem, s: torch.Tensor) -> torch.Tensor:
    """TV, spread, off from the weighted feature means `s` (B, K + 2 K G + 1): (B, 3)."""
    K, G, w = p.mixture.K, p.n_groups, p.mixture.weights
    share = s[:, :K]
    zsum = s[:, K:K + K * G].reshape(-1, K, G)
    csum = s[:, K + K * G:K + 2 * K * G].reshape(-1, K, G)
    present = csum > 0
    rho = (zsum / csum.clamp(min=1e-300) / p.trunc).sqrt()
    err_k = torch.where(present, (rho - 1).abs(), torch.zeros_like(rho)).sum(2) / present.sum(2).clamp(min=1)
    wk = w * present.any(2)
    spread = (wk * err_k).sum(1) / wk.sum(1)
    tv = 0.5 * (share - w).abs().sum(1)
    return torch.stack([tv, spread, s[:, -1]], 1)


def _sw2(proj: torch.Tensor, fresh: torch.Tensor) -> float:
    return (proj.sort(0).values - fresh).pow(2).mean().sqrt().item()


def measures(p: Problem, st: dict, fresh: torch.Tensor) -> dict:
    """TV, spread, off, SW2 of the samples; `fresh`: sorted projections of as many true samples."""
    tv, spread, off = _from_sums(p, _features(p, st).mean(0, keepdim=True))[0].tolist()
    return dict(tv=tv, spread=spread, off=off, sw2=_sw2(st["proj"], fresh))


MEASURES = ("tv", "spread", "off", "sw2")
HEADERS = ("TV", "spread", "off", "SW2")


def bootstrap(p: Problem, stats_list: list[dict], fresh: torch.Tensor, n: int, seed: int = 11) -> torch.Tensor:
    """(len(stats_list), N_BOOT, 4) measures on the same resamples for every recipe (paired).

    TV, spread and off are weighted means of per-sample features, so all N_BOOT resamples are
    one product with the (N_BOOT, n) matrix of multinomial counts; SW2 needs a sort per
    resample, so it gets the first N_BOOT_SW2 of them, and its further entries repeat those."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (N_BOOT, n), generator=g)
    counts = torch.zeros(N_BOOT, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(N_BOOT, n,
                                                                                          dtype=torch.float64))
    out = torch.empty(len(stats_list), N_BOOT, len(MEASURES), dtype=torch.float64)
    for i, st in enumerate(stats_list):
        out[i, :, :3] = _from_sums(p, counts @ _features(p, st) / n)
        sw = torch.tensor([_sw2(st["proj"][idx[b]], fresh) for b in range(N_BOOT_SW2)], dtype=torch.float64)
        out[i, :, 3] = sw.repeat(N_BOOT // N_BOOT_SW2 + 1)[:N_BOOT]
    return out


# ---------------------------------------------------------------------------------------------
# recipes: (problem, x_T, nfe) -> samples at zero noise, with exactly `nfe` evaluations
# ---------------------------------------------------------------------------------------------


def sigma_hat(sde, t: float) -> float:
    alpha, sigma = sde.marginal(torch.tensor(float(t), dtype=torch.float64))
    return (sigma / alpha).item()


def t_at(sde, level: float) -> float:
    """The time where sigma_hat = `level`, not before the SDE's own end (VP: t = 1e-3)."""
    return max(scoresde.time_grids.t_at_noise_level(sde, level), scoresde.time_grids.default_t_end(sde))


def ours_default(p: Problem, x_T: torch.Tensor, nfe: int, score) -> torch.Tensor:
    return scoresde.sample(p.sde, score, x_init=x_T, steps=nfe)


def kd_recipe(name: str):
    def run(p: Problem, x_T: torch.Tensor, nfe: int, score) -> torch.Tensor:
        from tests.peers import k_diffusion_sampling

        K = k_diffusion_sampling()
        sde = p.sde
        t_min = T_PEER if not math.isfinite(sde.log_snr(torch.tensor(0.0, dtype=torch.float64)).item()) else 0.0
        s_min, s_max = sigma_hat(sde, t_min), sigma_hat(sde, sde.T)
        n = (nfe + 1) // 2 if name == "heun" else nfe
        sigmas = K.get_sigmas_karras(n, s_min, s_max, device=x_T.device).to(x_T.dtype)
        alpha_T = sde.marginal(torch.tensor(sde.T, dtype=x_T.dtype))[0]

        def denoiser(x_hat, sigma):
            t = sde.t_from_log_snr(-2.0 * torch.log(sigma.to(torch.float64))).clamp(0.0, sde.T).to(x_hat.dtype)
            alpha = sde.marginal(t)[0]
            x = alpha[:, None] * x_hat if alpha.ndim else alpha * x_hat
            return p.exact.denoiser(x, t.expand(x.shape[0]) if t.ndim == 0 else t)

        model = score.wrap(denoiser)
        fn = getattr(K, "sample_" + name)
        return fn(model, x_T / alpha_T, sigmas, disable=True)

    return run


def diffusers_recipe(cls_name: str, **config):
    def run(p: Problem, x_T: torch.Tensor, nfe: int, score) -> torch.Tensor:
        import diffusers

        sde = p.sde
        t_k = torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / N_TRAIN
        alpha_k, sigma_k = sde.marginal(t_k)
        acp = 1.0 / (1.0 + (sigma_k / alpha_k) ** 2)
        betas = scoresde.DDPMSchedule.from_alphas_cumprod(acp).betas.numpy()
        sched = getattr(diffusers, cls_name)(num_train_timesteps=N_TRAIN, trained_betas=betas, **config)
        sched.set_timesteps(nfe, device=x_T.device)
        alpha_T = sde.marginal(torch.tensor(sde.T, dtype=torch.float64))[0]
        x = (x_T * (acp[-1].sqrt() / alpha_T).to(x_T.dtype)) * sched.init_noise_sigma

        def eps_fn(x_vp, k):
            t = ((k.to(torch.float64) + 1) / N_TRAIN)
            a = (sde.marginal(t)[0] / acp[int(k)].sqrt()).to(x_vp.dtype)
            return p.exact.eps(a * x_vp, t.to(x_vp.dtype).expand(x_vp.shape[0]))

        eps_fn = score.wrap(eps_fn)
        for k in sched.timesteps:
            x = sched.step(eps_fn(sched.scale_model_input(x, k), k), k, x).prev_sample
        return x

    return run


class Budget:
    """Wraps the exact function handed to a recipe and counts its evaluations."""

    def __init__(self):
        self.calls = 0

    def wrap(self, fn):
        def counted(*args):
            self.calls += 1
            return fn(*args)

        return counted

    def __call__(self, x, t):  # our score
        self.calls += 1
        return self.exact(x, t)


PEERS = {
    "k-diffusion euler (Karras)": kd_recipe("euler"),
    "k-diffusion heun (Karras)": kd_recipe("heun"),
    "k-diffusion lms (Karras)": kd_recipe("lms"),
    "k-diffusion dpmpp_2m (Karras)": kd_recipe("dpmpp_2m"),
    "diffusers DPMSolverMultistep": diffusers_recipe("DPMSolverMultistepScheduler"),
    "diffusers UniPCMultistep": diffusers_recipe("UniPCMultistepScheduler"),
    "diffusers EulerDiscrete": diffusers_recipe("EulerDiscreteScheduler"),
    "diffusers DDIM": diffusers_recipe("DDIMScheduler", clip_sample=False),
}


def candidate(sampler, grid, t_end=None, denoise="flow"):
    """One of the recipes the default was chosen among: N - 1 steps to t_end, then the final step
    (N evaluations), or N steps when there is no final step (a grid into zero noise)."""

    def run(p: Problem, x_T: torch.Tensor, nfe: int, score) -> torch.Tensor:
        steps = nfe - 1 if denoise else nfe
        return scoresde.sample(p.sde, score, sampler=sampler, steps=steps, grid=grid,
                               t_end=t_end(p.sde, nfe) if callable(t_end) else t_end, x_init=x_T, denoise=denoise)

    return run


def candidates() -> dict:
    """The recipes the default was chosen among (`--candidates`), and the exact flow as a reference."""
    from scoresde import DPMSolverPP, UniPC
    from scoresde.samplers import DEIS
    from scoresde.time_grids import KarrasGrid, UniformLogSNR, UniformTime

    def sigma_end(s):
        return lambda sde, nfe: t_at(sde, s)

    budget = scoresde.samplers.defaults.default_t_end  # where sigma_hat = 0.3/N, within [0.01, 0.1]
    return {
        "UniPC-2 log-SNR, sigma 0.01, flow (previous default)": candidate(UniPC(order=2), UniformLogSNR(), sigma_end(0.01)),
        "2M log-SNR, sigma 0.05, flow": candidate(DPMSolverPP(), UniformLogSNR(), sigma_end(0.05)),
        "2M log-SNR, sigma 0.02, flow": candidate(DPMSolverPP(), UniformLogSNR(), sigma_end(0.02)),
        "2M log-SNR, sigma 0.3/N, flow (the default, spelt out)": candidate(DPMSolverPP(), UniformLogSNR(), budget),
        "2M log-SNR, t 1e-3, Tweedie": candidate(DPMSolverPP(), UniformLogSNR(), None, "tweedie"),
        "DEIS-3 log-SNR, sigma 0.3/N, flow": candidate(DEIS(), UniformLogSNR(), budget),
        "UniPC-2 log-SNR, sigma 0.05, flow": candidate(UniPC(order=2), UniformLogSNR(), sigma_end(0.05)),
        "UniPC-3 log-SNR, sigma 0.03, flow": candidate(UniPC(order=3), UniformLogSNR(), sigma_end(0.03)),
        "2M Karras, sigma 0.05, flow": candidate(DPMSolverPP(), KarrasGrid(), sigma_end(0.05)),
        "2M uniform t, sigma 0.05, flow": candidate(DPMSolverPP(), UniformTime(), sigma_end(0.05)),
        EXACT: exact_flow,
    }


EXACT = "exact flow (reference)"


def exact_flow(p: Problem, x_T: torch.Tensor, nfe: int, score) -> torch.Tensor:
    """The probability flow from the same x_T (300 steps of 2M in float64 to sigma_hat = 1e-3, then
    the flow's last step): what an exact solver gives on these draws, not a recipe (it does not use
    the budget's score, and its evaluations are not counted). Against 1500 steps its samples move
    by an RMS of 3e-4 to 1e-3 on 2,000 draws of the narrow+wide, 32-D and anisotropic problems
    (VP, VE); on narrow+wide under VE a few draws on a decision boundary change mode (RMS 0.04)."""
    return flow_from(p.sde, p.exact.score, x_T.double(), 300).to(x_T.dtype)


def flow_from(sde, score, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    """The probability flow of `score` from x_T: `steps` steps of 2M on the log-SNR grid to
    sigma_hat = 1e-3, then the flow's last step (the references of `--candidates`, `--guided` and
    `--pathwise`)."""
    from scoresde import DPMSolverPP
    from scoresde.time_grids import UniformLogSNR

    return scoresde.sample(sde, score, sampler=DPMSolverPP(), steps=steps, grid=UniformLogSNR(),
                           t_end=t_at(sde, 1e-3), x_init=x_T, denoise="flow")


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------


def run_problem(p: Problem, nfes: list[int], n: int, recipes: dict, device, dtype) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x_T = (torch.randn(n, p.mixture.dim, generator=g, dtype=torch.float64) * p.sde.prior_std).to(device, dtype)
    fresh = (p.mixture.sample(n, generator=g) @ p.projections).float().sort(0).values
    true = per_sample(p, p.mixture.sample(n, generator=g))
    rows = []
    for nfe in nfes:
        names, sts, failed = ["true samples"], [true], []
        nfe_used, secs = [0], [0.0]
        for name, recipe in recipes.items():
            budget = Budget()
            budget.exact = p.exact.score
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = recipe(p, x_T, nfe, budget)
            secs.append(time.perf_counter() - t0)
            nfe_used.append(budget.calls)
            if not bool(torch.isfinite(x).all()):  # a failure: listed, never the best
                print(f"# {name}: non-finite samples on {p.name}, {p.sde_name}, NFE {nfe}")
                failed.append(dict(problem=p.name, sde=p.sde_name, nfe=nfe, recipe=name, evaluations=budget.calls,
                                   seconds=secs.pop(), failed=True, boot=[[math.nan] * 4] * N_BOOT,
                                   **{k + s: math.nan for k in MEASURES for s in ("", "_lo", "_hi")}))
                nfe_used.pop()
                continue
            names.append(name)
            sts.append(per_sample(p, x.cpu()))
        boot = bootstrap(p, sts, fresh, n)
        rows += failed
        for i, name in enumerate(names):
            m = measures(p, sts[i], fresh)
            lo, hi = boot[i].quantile(0.025, 0), boot[i].quantile(0.975, 0)
            rows.append(dict(problem=p.name, sde=p.sde_name, nfe=nfe, recipe=name, evaluations=nfe_used[i],
                             seconds=secs[i], **m, **{f"{k}_lo": lo[j].item() for j, k in enumerate(MEASURES)},
                             **{f"{k}_hi": hi[j].item() for j, k in enumerate(MEASURES)},
                             boot=boot[i].tolist()))
    return rows


def verdicts(rows: list[dict], ours: str = "ours (default)") -> list[dict]:
    """Ours against the best peer default per (problem, SDE, NFE, measure): win / tie / loss."""
    out = []
    keys = sorted({(r["problem"], r["sde"], r["nfe"]) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    for key in keys:
        at = {r["recipe"]: r for r in rows if (r["problem"], r["sde"], r["nfe"]) == key}
        if ours not in at:
            continue
        o, floor = at[ours], at["true samples"]
        peers = [r for name, r in at.items() if name in PEERS and not r.get("failed")]
        for j, m in enumerate(MEASURES):
            if not peers:
                continue
            b = min(peers, key=lambda r: r[m])
            diff = torch.tensor(o["boot"])[:, j] - torch.tensor(b["boot"])[:, j]
            lo, hi = diff.quantile(0.025).item(), diff.quantile(0.975).item()
            verdict = "tie" if lo <= 0 <= hi else ("win" if hi < 0 else "loss")
            out.append(dict(problem=key[0], sde=key[1], nfe=key[2], measure=m, ours=o[m], peer=b["recipe"],
                            peer_value=b[m], floor=floor[m], diff_lo=lo, diff_hi=hi, verdict=verdict))
    return out


def fmt(v: float, m: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.2f}%" if m in ("spread", "off") else f"{v:.4f}"


def table(rows: list[dict]) -> str:
    lines = ["| problem | SDE | NFE | recipe | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 4) + "|"]
    for r in rows:
        cells = " | ".join(f"{fmt(r[m], m)} [{fmt(r[m + '_lo'], m)}, {fmt(r[m + '_hi'], m)}]" for m in MEASURES)
        lines.append(f"| {r['problem']} | {r['sde']} | {r['nfe']} | {r['recipe']} | {cells} |")
    return "\n".join(lines)


def verdict_table(vs: list[dict]) -> str:
    lines = ["| problem | SDE | NFE | measure | ours | best peer default | floor | ours - peer, 95% | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in vs:
        m = v["measure"]
        scale = 100 if m in ("spread", "off") else 1
        lines.append(f"| {v['problem']} | {v['sde']} | {v['nfe']} | {m} | {fmt(v['ours'], m)} | "
                     f"{fmt(v['peer_value'], m)} ({v['peer']}) | {fmt(v['floor'], m)} | "
                     f"[{scale * v['diff_lo']:+.4f}, {scale * v['diff_hi']:+.4f}] | {v['verdict']} |")
    return "\n".join(lines)


def compact(vs: list[dict]) -> str:
    """One line per problem and SDE: the verdicts on TV, spread, off and SW2 at each budget (W/T/L)."""
    nfes = sorted({v["nfe"] for v in vs})
    cases = list(dict.fromkeys((v["problem"], v["sde"]) for v in vs))
    lines = ["| problem | SDE | " + " | ".join(f"NFE {b}" for b in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for case in cases:
        cells = []
        for b in nfes:
            at = {v["measure"]: v["verdict"][0].upper() for v in vs if (v["problem"], v["sde"], v["nfe"]) == (*case, b)}
            cells.append(" ".join(at.get(m, "-") for m in MEASURES))
        lines.append(f"| {case[0]} | {case[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tally(vs: list[dict]) -> str:
    lines = ["| NFE | wins | ties | losses | losses at |", "|---|---|---|---|---|"]
    for nfe in sorted({v["nfe"] for v in vs}):
        at = [v for v in vs if v["nfe"] == nfe]
        c = {k: sum(v["verdict"] == k for v in at) for k in ("win", "tie", "loss")}
        where = "; ".join(f"{v['problem']} {v['sde']} {v['measure']}" for v in at if v["verdict"] == "loss")
        lines.append(f"| {nfe} | {c['win']} | {c['tie']} | {c['loss']} | {where or '-'} |")
    return "\n".join(lines)


def candidate_summary(rows: list[dict]) -> str:
    """Each of our recipes (and the exact flow) against the best peer default at each (problem, SDE,
    NFE, measure): the losses at each budget (the paired bootstrap of `verdicts`), the geometric mean
    over them of (ours + 1e-4) / (best peer + 1e-4) (1e-4 keeps shares of zero from dividing), how
    many exceed 1.1, and the worst."""
    keys = list(dict.fromkeys((r["problem"], r["sde"], r["nfe"]) for r in rows))
    nfes = sorted({k[2] for k in keys})
    ours = [name for name in dict.fromkeys(r["recipe"] for r in rows) if name not in PEERS and name != "true samples"]
    lines = ["| recipe | losses at NFE " + " / ".join(map(str, nfes)) + " | geometric mean of ratios | ratios > 1.1 | worst |",
             "|---|---|---|---|---|"]
    for name in ours:
        ratios = []
        for key in keys:
            at = {r["recipe"]: r for r in rows if (r["problem"], r["sde"], r["nfe"]) == key}
            peers = [r for n, r in at.items() if n in PEERS and not r.get("failed")]
            if name not in at or not peers or at[name].get("failed"):
                continue
            for m in MEASURES:
                best = min(r[m] for r in peers if not math.isnan(r[m]))
                ratios.append(((at[name][m] + 1e-4) / (best + 1e-4), key, m))
        if not ratios:
            continue
        vs = verdicts(rows, ours=name)
        losses = " / ".join(str(sum(v["verdict"] == "loss" for v in vs if v["nfe"] == b)) for b in nfes)
        gm = math.exp(sum(math.log(r) for r, _, _ in ratios if not math.isnan(r)) / len(ratios))
        worst = max((x for x in ratios if not math.isnan(x[0])), key=lambda x: x[0])
        lines.append(f"| {name} | {losses} | {gm:.3f} | {sum(r > 1.1 for r, _, _ in ratios)} of {len(ratios)} | "
                     f"{worst[0]:.1f} ({worst[1][0]}, {worst[1][1]}, NFE {worst[1][2]}, {worst[2]}) |")
    return "\n".join(lines)


def same_grid_and_end() -> dict:
    """Other multistep samplers in the default's place, on its grid, end and final step."""
    from scoresde import DPMSolverPP, UniPC
    from scoresde.samplers import DEIS

    return {"DEIS (order 3)": DEIS(), "UniPC-2": UniPC(order=2), "UniPC-3": UniPC(order=3),
            "3M": DPMSolverPP(order=3)}


def in_the_defaults_place(sde, score, sampler, nfe: int, x_T: torch.Tensor) -> torch.Tensor:
    """`sampler` on the default recipe's grid to its end for `nfe` evaluations, then its final step."""
    from scoresde.samplers import defaults

    return scoresde.sample(sde, score, sampler=sampler, steps=nfe - 1, grid=defaults.DEFAULT_GRID,
                           t_end=defaults.default_t_end(sde, nfe), x_init=x_T, denoise=defaults.DEFAULT_DENOISE)


def pathwise_table(nfes=(5, 10, 20, 30, 50), n: int = 2000) -> str:
    """Pathwise accuracy (`--pathwise`): on every problem and SDE, the RMS distance of each
    recipe's samples to the exact probability flow from the same draws (`exact_flow`), divided by
    the data's RMS norm; the geometric mean over the 12 problems and the largest. Unlike the
    distributional measures it has no sampling floor: it is the discretisation error itself."""
    recipes = {"ours (default)": None, **same_grid_and_end()}
    errors = {name: {b: [] for b in nfes} for name in recipes}
    for name in PROBLEMS:
        for sde_name in SDES:
            p = make_problem(name, sde_name)
            g = torch.Generator().manual_seed(0)
            x_T = torch.randn(n, p.mixture.dim, generator=g, dtype=torch.float64) * p.sde.prior_std
            ref = exact_flow(p, x_T, 0, p.exact.score)
            scale = p.mixture.sample(20_000, generator=torch.Generator().manual_seed(1)).pow(2).sum(1).mean().sqrt()
            for recipe, sampler in recipes.items():
                for b in nfes:
                    if sampler is None:
                        x = ours_default(p, x_T, b, p.exact.score)
                    else:
                        x = in_the_defaults_place(p.sde, p.exact.score, sampler, b, x_T)
                    errors[recipe][b].append(((x - ref).pow(2).sum(1).mean().sqrt() / scale).item())
    lines = ["| recipe | " + " | ".join(f"NFE {b}" for b in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for recipe, per in errors.items():
        cells = " | ".join(f"{math.exp(sum(map(math.log, v)) / len(v)):.4f} ({max(v):.3f})" for v in per.values())
        lines.append(f"| {recipe} | {cells} |")
    return "\n".join(lines)


def guided_table(nfes=(5, 10, 20, 30), scales=(3.0, 7.5), n: int = 2000) -> str:
    """Guided sampling (`--guided`): RMS distance of each recipe's samples to the guided probability
    flow from the same draws (400 steps of 2M in float64, the flow's last step), for the
    classifier-free guided score of the labelled 8-component ring (std 0.1) at scales 3 and 7.5.
    Our default against the same grid and end with the noise-prediction DEIS (order 3), UniPC-2,
    UniPC-3 and DPM-Solver++(3M) in its place: the guided score is far from a data distribution's,
    and the multistep methods' extrapolations behave differently on it."""
    from scoresde import guided_score

    mixture = GaussianMixture.ring(8, labels=[0, 1] * 4, std=0.1)
    others = same_grid_and_end()
    lines = ["| SDE | scale | recipe | " + " | ".join(f"NFE {b}" for b in nfes) + " |", "|---|---|---|" + "---|" * len(nfes)]
    for sde_name, cls in SDES.items():
        sde = cls()
        p = mixture.diffused(sde)
        for scale in scales:
            score = guided_score(p.score, p.conditional(1).score, scale=scale)
            x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sde.prior_std
            ref = flow_from(sde, score, x_T, 400)
            rows = {"ours (default)": [scoresde.sample(sde, score, x_init=x_T, steps=b) for b in nfes]}
            for name, sampler in others.items():
                rows[name] = [in_the_defaults_place(sde, score, sampler, b, x_T) for b in nfes]
            for name, xs in rows.items():
                cells = " | ".join(f"{(x - ref).pow(2).sum(1).mean().sqrt().item():.3f}" for x in xs)
                lines.append(f"| {sde_name} | {scale:g} | {name} | {cells} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys((r["problem"], r["sde"]) for r in rows))
    fig, axes = plt.subplots(len(cases), len(MEASURES), figsize=(4 * len(MEASURES), 2.8 * len(cases)), squeeze=False)
    for i, case in enumerate(cases):
        data = [r for r in rows if (r["problem"], r["sde"]) == case]
        for j, m in enumerate(MEASURES):
            ax = axes[i][j]
            for name in dict.fromkeys(r["recipe"] for r in data):
                pts = sorted((r["nfe"], max(r[m], 1e-6)) for r in data if r["recipe"] == name)
                style = dict(color="k", lw=2.5) if name.startswith("ours") else (
                    dict(color="0.6", ls=":") if name == "true samples" else dict(ls="--" if "diffusers" in name
                                                                                   else "-.", lw=1))
                ax.plot(*zip(*pts), marker="o", ms=3, label=name, **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{case[0]}, {case[1]}: {m}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 samples, NFE 10 and 20")
    ap.add_argument("--candidates", action="store_true", help="also run the recipes the default was chosen among")
    ap.add_argument("--guided", action="store_true",
                    help="only the guided-sampling table: our default against DEIS, UniPC and 3M on a CFG score")
    ap.add_argument("--pathwise", action="store_true",
                    help="only the pathwise table: distance to the exact flow from the same draws, same recipes")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--nfes", default=None, help="comma-separated budgets (default 5,10,20,50; quick: 10,20)")
    ap.add_argument("--problems", default=None, help="comma-separated problem names (default all)")
    ap.add_argument("--sdes", default="VP,sub-VP,VE")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.guided:
        print("## Guided sampling: RMS distance to the guided flow from the same draws\n")
        print(guided_table())
        return
    if args.pathwise:
        print("## Pathwise: RMS distance to the exact flow from the same draws / the data's RMS norm\n")
        print("geometric mean over the 12 problems (largest)\n")
        print(pathwise_table())
        return
    device, dtype = torch.device(args.device), torch.float32
    n = args.samples or (2000 if args.quick else 6000)
    nfes = [int(b) for b in args.nfes.split(",")] if args.nfes else ([10, 20] if args.quick else [5, 10, 20, 50])
    problems = args.problems.split(",") if args.problems else list(PROBLEMS)
    recipes = {"ours (default)": ours_default}
    recipes.update(candidates() if args.candidates else {})
    try:
        import diffusers

        peer_note = f"diffusers {diffusers.__version__}"
        recipes.update(PEERS)
    except ImportError:
        peer_note = "diffusers not installed: no peers"
    print(f"# bench_defaults: {platform.node()}, torch {torch.__version__}, {device}, float32, {n} samples, "
          f"NFE {nfes}; peers: {peer_note}, k-diffusion (tests.peers)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for name in problems:
        for sde_name in args.sdes.split(","):
            t0 = time.perf_counter()
            rows += run_problem(make_problem(name, sde_name), nfes, n, recipes, device, dtype)
            print(f"# {name}, {sde_name}: {time.perf_counter() - t0:.0f} s", flush=True)
    bad = [r for r in rows if r["recipe"] not in ("true samples", EXACT) and r["evaluations"] != r["nfe"]]
    for r in bad:
        print(f"# note: {r['recipe']} used {r['evaluations']} evaluations at NFE {r['nfe']}")
    print("\n## Every recipe (value [95% bootstrap interval])\n")
    print(table(rows))
    vs = verdicts(rows)
    print("\n## Ours by default against the best peer default (paired bootstrap of the difference)\n")
    print(verdict_table(vs))
    print("\n## Verdicts on TV, spread, off, SW2 (W win, T tie, L loss)\n")
    print(compact(vs))
    print("\n## Tally\n")
    print(tally(vs))
    print("\n## Our recipes against the best peer default (ratios of the measures)\n")
    print(candidate_summary(rows))
    print(f"\n# total {time.perf_counter() - t_all:.0f} s")
    plot(rows, args.out / "bench_defaults.png")
    for r in rows:
        r.pop("boot")
    (args.out / "bench_defaults.json").write_text(json.dumps({"rows": rows, "verdicts": vs}, indent=1))
    print(f"wrote {args.out / 'bench_defaults.png'} and {args.out / 'bench_defaults.json'}")


if __name__ == "__main__":
    main()
