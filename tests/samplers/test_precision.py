r"""Every sampler with the state in float16 and bfloat16, against the same run in float64.

The problem: the VP SDE (the VE SDE for annealed Langevin dynamics) and the exact score of
eight 0.25-wide modes on a circle of radius $R = 4$, 2,000 samples, the same prior draw and the
same noise seed in each precision, and a final denoising step. The score itself is evaluated
in the state's dtype (as a half-precision network would be); the sampler keeps its grid and
coefficients in float32 and rounds the state once per step.

Tolerances, from the unit roundoff $u$ of the dtype ($2^{-11}$ for float16, $2^{-8}$ for
bfloat16) and the size $R$ of the state:

* per sample, the run tracks the float64 one: its median distance is within $4uR$, the size of
  a few last roundings of a state of size $R$ (measured 0.5-1.3 $uR$: roundings earlier in the
  run are damped by the flow's contraction onto the modes);
* a sample changes mode only if rounding moves its trajectory across a decision boundary, so the
  changed share, and with it the total variation between the mode weights, is $O(u)$: at most
  $16u$ changed and $8u$ in total variation (measured at most $6u$ and $4u$), each plus 4.5
  standard errors of a count of that rate among the $B$ samples, $4.5\sqrt{p/B}$ (which samples
  sit near a boundary depends on the noise stream: these counts are a few to a dozen samples);
* the within-mode spread, which absorbs the variance every rounding adds ($\approx(uR)^2/3$ per
  rounding against $0.25^2$), is within $16u$ relative (measured at most $10u$; before the steps
  computed in float32, the stochastic samplers' bfloat16 spreads grew by 2-4% at 20 steps and by
  65-71% at 1000).
"""

import math

import pytest
import solvers
import torch

import scoresde
from scoresde import (
    DDIM,
    LMS,
    VESDE,
    VPSDE,
    Ancestral,
    AnnealedLangevin,
    DPMSolverPP,
    EDMHeun,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    UniPC,
)
from scoresde.samplers import (
    DEIS,
    IPNDM,
    DPMSolverAdaptive,
    DPMSolverPPSDE,
    DPMSolverSinglestep,
    PNDM,
    ProbabilityFlowSampler,
    ReverseSDESampler,
    SASolver,
)

from .conftest import ring

B = 2000
R = 4.0
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}

# (sampler, steps): every sampler exported by scoresde.samplers, stochastic ones included
SAMPLERS = [
    (DDIM(), 20),
    (DDIM(eta=1.0), 40),
    (EDMHeun(), 10),
    (EDMHeun(churn=10.0), 10),
    (DPMSolverPP(), 20),
    (DPMSolverPP(order=3), 20),
    (DPMSolverPP(eta=1.0), 20),
    (UniPC(), 20),
    (UniPC(order=3), 20),
    (ReverseDiffusion(), 50),
    (Ancestral(), 50),
    (PredictorCorrector(corrector=LangevinCorrector(norms="noise")), 25),
    (ReverseSDESampler(), 50),
    (ProbabilityFlowSampler(), 20),
    (ProbabilityFlowSampler(solvers.Dopri5(1e-3, 1e-3)), None),
    (AnnealedLangevin(n_steps_each=3), 10),
    (DPMSolverSinglestep(order=3), 20),
    (DEIS(), 20),
    (IPNDM(), 20),
    (DPMSolverPPSDE(), 10),
    (SASolver(), 20),
    (SASolver(3, 3, tau=0.0), 20),
    (DPMSolverAdaptive(), None),
    (PNDM(), 20),
    (LMS(), 20),
    (DPMSolverAdaptive(order=2, eta=1.0), None),
]


def _modes_and_spread(x, means):
    x = x.double()
    k = torch.cdist(x, means).argmin(1)
    weights = torch.bincount(k, minlength=means.shape[0]).double() / x.shape[0]
    spread = (x - means[k]).pow(2).sum(1).mean().div(2).sqrt().item()
    return k, weights, spread


def _rate_bound(p: float) -> float:
    """A share of at most p among B samples, plus 4.5 standard errors of its count, sqrt(p / B)."""
    return p + 4.5 * math.sqrt(p / B)


@pytest.fixture(scope="module", params=range(len(SAMPLERS)), ids=[repr(s) for s, _ in SAMPLERS])
def float64_run(request):
    sampler, steps = SAMPLERS[request.param]
    sde = VESDE(sigma_min=0.01, sigma_max=20.0) if isinstance(sampler, AnnealedLangevin) else VPSDE()
    mixture = ring()
    score = mixture.diffused(sde).score
    kw = dict(sampler=sampler, steps=steps, generator=3, denoise=True)
    ref = scoresde.sample(sde, score, (B, 2), dtype=torch.float64, **kw)
    return sde, score, kw, mixture.means, ref


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_state_tracks_float64(float64_run, dtype):
    sde, score, kw, means, ref = float64_run
    u = UNIT_ROUNDOFF[dtype]
    x = scoresde.sample(sde, score, (B, 2), dtype=dtype, **kw)
    assert x.dtype == dtype and bool(torch.isfinite(x).all())
    k_ref, w_ref, spread_ref = _modes_and_spread(ref, means)
    k, w, spread = _modes_and_spread(x, means)
    distance = (x.double() - ref).norm(dim=1).median().item()
    assert distance <= 4 * u * R, f"median distance to the float64 run {distance:.3g} > 4uR = {4 * u * R:.3g}"
    changed = (k != k_ref).double().mean().item()
    allowed = _rate_bound(16 * u)
    assert changed <= allowed, f"{changed:.4f} of the samples changed mode (> 16u + 4.5 SE = {allowed:.4f})"
    tv = 0.5 * (w - w_ref).abs().sum().item()
    allowed = _rate_bound(8 * u)
    assert tv <= allowed, f"mode-weight total variation {tv:.4f} > 8u + 4.5 SE = {allowed:.4f}"
    assert abs(spread / spread_ref - 1) <= 16 * u, f"within-mode spread {spread:.4f} vs {spread_ref:.4f} (> 16u relative)"


def test_unipc_solves_its_small_system_in_float32():
    """UniPC's order-3 coefficients come from a 2x2 or 3x3 solve, which has no float16/bfloat16 kernel."""
    sampler = UniPC(order=3)
    R_ = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.bfloat16)
    b = torch.tensor([0.5, 0.25], dtype=torch.bfloat16)
    solution = sampler._solve(R_, b)
    assert solution.dtype == torch.bfloat16
    torch.testing.assert_close(solution.float(), torch.tensor([0.125, 0.375], dtype=torch.float32), rtol=0, atol=2e-3)


def test_the_score_receives_the_state_dtype_and_coefficients_are_float32():
    """A half-precision network sees half-precision inputs; the grid it is called at is the float32 grid."""
    sde = VPSDE()
    seen = []

    def score(x, t):
        seen.append((x.dtype, t.dtype))
        return -x

    for sampler in (DPMSolverPP(), DPMSolverPPSDE(), ProbabilityFlowSampler()):
        seen.clear()
        x = scoresde.sample(sde, score, (8, 2), sampler=sampler, steps=4, dtype=torch.bfloat16, generator=0, denoise=True)
        assert x.dtype == torch.bfloat16
        assert seen and all(s == (torch.bfloat16, torch.float32) for s in seen), (sampler, set(seen))
