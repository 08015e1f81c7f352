"""Exact-score samplers reproduce known distributions: a Gaussian's moments, a mixture's mode weights.

Each test starts from the exact marginal at T (so the prior's mismatch with p_T, which a
deterministic sampler never forgets, does not enter) and compares the samples at t_end
with the exact marginal p_{t_end}. Tolerances come from the sample size n: a z-score of
at most 4 for each mean (SE s/sqrt(n)) and each variance ratio (SE sqrt(2/(n-1)) for
Gaussian data), and a chi-square test of the mode counts at level 1e-3. Step counts are
chosen so that each sampler's discretisation error is below these resolutions; a wrong
coefficient in a step shifts a moment by many standard errors.
"""

import math

import pytest
import solvers
import torch
from scipy import stats

import scoresde
from scoresde import (
    DDIM,
    Ancestral,
    DPMSolverPP,
    EDMHeun,
    GaussianMixture,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    UniPC,
)
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler
from scoresde.time_grids import default_t_end

from .conftest import SDES, ring

Z = 4.0
GEN = lambda: torch.Generator().manual_seed(1)  # noqa: E731
MEAN = torch.tensor([1.0, -1.0, 2.0])
STD = torch.tensor([0.3, 1.0, 0.5])

# (sampler, steps, SDEs): the generic samplers run every SDE; variants of the same step
# formula run the VP SDE only, to keep the suite fast.
ALL = ("vp", "subvp", "ve")
SAMPLERS = [
    (ReverseSDESampler(), 200, ALL),
    (Ancestral(), 400, ALL),
    (PredictorCorrector(corrector=LangevinCorrector(norms="noise")), 200, ALL),
    (EDMHeun(), 60, ALL),
    (DPMSolverPP(order=3), 60, ALL),
    (UniPC(order=2), 60, ALL),
    (ReverseSDESampler(solvers.SRA1()), 100, ("vp",)),
    (ReverseDiffusion(), 400, ("vp",)),
    (DDIM(eta=0.5), 300, ("vp",)),
    (DDIM(), 400, ("vp",)),
    (EDMHeun(churn=30.0), 100, ("vp",)),
    (DPMSolverPP(order=2), 60, ("vp",)),
    (DPMSolverPP(order=2, eta=1.0), 200, ("ve",)),
    (DPMSolverPP(order=3, eta=0.5), 200, ("subvp",)),
    (ProbabilityFlowSampler(solvers.Dopri5(rtol=1e-6, atol=1e-6)), None, ("vp",)),
]


def _cases(samplers):
    return [(name, sampler, steps) for sampler, steps, names in samplers for name in names]


def _id(v):
    return v if isinstance(v, str) else str(v) if isinstance(v, int) else repr(v)


@pytest.mark.parametrize("sde_name, sampler, steps", _cases(SAMPLERS), ids=_id)
def test_gaussian_moments(sde_name, sampler, steps):
    n = 8000
    sde = SDES[sde_name]()
    exact = GaussianMixture.gaussian(MEAN, STD).diffused(sde)
    x_T = exact.sample(n, sde.T, generator=torch.Generator().manual_seed(0))
    x = scoresde.sample(sde, exact.score, sampler=sampler, steps=steps, x_init=x_T, generator=GEN())
    alpha, sigma = sde.marginal(default_t_end(sde))
    mean, var = alpha * MEAN, alpha**2 * STD**2 + sigma**2
    z_mean = (x.mean(0) - mean) / (var / n).sqrt()
    z_var = (x.var(0) / var - 1) / math.sqrt(2 / (n - 1))
    z_corr = (torch.corrcoef(x.T) - torch.eye(3)) * math.sqrt(n)
    assert z_mean.abs().max() < Z, f"mean off by {z_mean.tolist()} standard errors"
    assert z_var.abs().max() < Z, f"variance off by {z_var.tolist()} standard errors"
    assert z_corr.abs().max() < Z, f"correlation off by {z_corr.abs().max().item():.2f} standard errors"


MIXTURE_SAMPLERS = [
    (ReverseSDESampler(), 300, ALL),
    (EDMHeun(), 100, ALL),
    (DPMSolverPP(order=3), 100, ALL),
    (Ancestral(), 800, ("vp",)),
    (PredictorCorrector(corrector=LangevinCorrector(norms="noise")), 300, ("ve",)),
    (DDIM(), 200, ("subvp",)),
    (UniPC(order=2), 100, ("vp",)),
]


@pytest.mark.parametrize("sde_name, sampler, steps", _cases(MIXTURE_SAMPLERS), ids=_id)
def test_mixture_mode_weights(sde_name, sampler, steps):
    """Mode counts pass a chi-square test against the weights; within-mode spread matches the component's."""
    n = 4000
    sde = SDES[sde_name]()
    mixture = ring()
    exact = mixture.diffused(sde)
    x_T = exact.sample(n, sde.T, generator=torch.Generator().manual_seed(0))
    x = scoresde.sample(sde, exact.score, sampler=sampler, steps=steps, x_init=x_T, generator=GEN(), denoise=True)
    mode = torch.cdist(x, mixture.means).argmin(1)
    counts = torch.bincount(mode, minlength=mixture.K).double()
    p_value = stats.chisquare(counts.numpy(), (n * mixture.weights).numpy()).pvalue
    assert p_value > 1e-3, f"mode counts {counts.tolist()} vs expected {(n * mixture.weights).tolist()}"
    # Tweedie-denoised samples of a component N(mu, s^2 I) have per-coordinate variance
    # s^2 * s^2 alpha^2 / (s^2 alpha^2 + sigma^2) at t_end; pooled over 2n coordinates.
    alpha, sigma = sde.marginal(default_t_end(sde))
    s2 = mixture.stds[0, 0].item() ** 2
    var = s2 * s2 * alpha**2 / (s2 * alpha**2 + sigma**2)
    resid = x - mixture.means[mode]
    ratio = resid.pow(2).mean() / var
    assert abs(ratio - 1) < Z * math.sqrt(2 / (2 * n)), f"within-mode variance ratio {ratio.item():.4f}"
