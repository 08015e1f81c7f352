"""Imputation as a sampler wrapper: every sampler, seeds as in sample(), exact conditionals, RePaint.

The exact conditional of a Gaussian mixture with isotropic components N(m_k, s_k^2 I) given
the coordinates A, x_A = a, is again a mixture: weights w_k N(a; m_kA, s_k^2 I) / Z and
components N(m_kB, s_k^2 I) in the other coordinates (closed form, computed below).
Mode weights are compared with a chi-square test at level 1e-3 (fixed seeds: deterministic).
"""

import math

import pytest
import solvers
import torch
from scipy.stats import chi2

import scoresde
from scoresde import VPSDE, GaussianMixture, impute
from scoresde.samplers import (
    DDIM,
    Ancestral,
    AnnealedLangevin,
    DPMSolverPP,
    EDMHeun,
    Imputation,
    LangevinCorrector,
    PredictorCorrector,
    ProbabilityFlowSampler,
    ReverseDiffusion,
    ReverseSDESampler,
    UniPC,
    repaint_schedule,
)

from .conftest import SDES

WEIGHTS = [1.0, 2.0, 3.0, 4.0]


def independent_ring() -> GaussianMixture:
    """A ring in coordinates (0, 1) times an independent coordinate 2 (the same N(0, 0.3^2) in every
    component): observing coordinate 2 says nothing about the others, and replacement is exact."""
    return GaussianMixture.ring(4, radius=3.0, std=0.3, dim=3, weights=WEIGHTS)


def exact_conditional_weights(mix: GaussianMixture, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Posterior component weights given x_A = known[A]: w_k N(known_A; m_kA, s_k^2 I) normalised."""
    a = known[mask]
    means, var = mix.means[:, mask], mix.stds[:, mask] ** 2
    logw = torch.log(mix.weights) - (0.5 * (a - means) ** 2 / var + 0.5 * torch.log(2 * math.pi * var)).sum(-1)
    return torch.softmax(logw, 0)


def assert_mode_weights(k, expected, level=1e-3):
    n = k.numel()
    counts = torch.bincount(k, minlength=len(expected)).double()
    expected = torch.as_tensor(expected, dtype=torch.float64) * n
    stat = ((counts - expected) ** 2 / expected).sum().item()
    bound = chi2.ppf(1 - level, len(expected) - 1)
    assert stat < bound, f"counts {counts.tolist()} vs expected {expected.tolist()}: chi2 = {stat:.2f} >= {bound:.2f}"


SAMPLERS = {
    "ancestral": (Ancestral(), 100),
    "ancestral-transition": (Ancestral(variance="transition"), 100),
    "reverse-diffusion": (ReverseDiffusion(), 200),
    "euler-maruyama": (ReverseSDESampler(), 200),
    "stochastic-heun": (ReverseSDESampler(solvers.StochasticHeun()), 100),
    "flow-heun": (ProbabilityFlowSampler(), 50),
    "ddim": (DDIM(), 50),
    "ddim-eta1": (DDIM(eta=1.0), 100),
    "edm": (EDMHeun(), 30),
    "edm-churn": (EDMHeun(churn=10.0), 30),
    "dpmpp-2m": (DPMSolverPP(), 30),
    "dpmpp-3m": (DPMSolverPP(order=3), 30),
    "dpmpp-sde": (DPMSolverPP(eta=1.0), 60),
    "unipc": (UniPC(), 30),
    "pc": (PredictorCorrector(Ancestral(), LangevinCorrector(norms="noise")), 100),
    # corrector-only sampling mixes slowly: with 2 steps per level it misses the weights unwrapped too
    "corrector-only": (PredictorCorrector(None, LangevinCorrector(norms="noise", n_steps=5)), 100),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_wrapped_samples_the_exact_conditional_of_independent_coordinates(name):
    """Every stepping sampler, wrapped: the known coordinate is exact at the end and the unknown ones
    have the exact conditional's mode weights (here the prior's, 1:2:3:4; n = 2000)."""
    sampler, steps = SAMPLERS[name]
    mix, sde, n = independent_ring(), VPSDE(), 2000
    x_known = torch.full((n, 3), float("nan"))
    x_known[:, 2] = 0.25
    mask = torch.tensor([False, False, True])
    x = impute(sde, mix.diffused(sde).score, x_known, mask, sampler, steps, generator=1)
    assert torch.equal(x[:, 2], x_known[:, 2]) and torch.isfinite(x).all()
    expected = exact_conditional_weights(mix, x_known[0], mask)
    torch.testing.assert_close(expected, mix.weights)  # independence: the conditional keeps the prior weights
    assert_mode_weights(torch.cdist(x, mix.means).argmin(1), expected.tolist())


def test_samplers_without_a_per_step_method_are_refused_clearly():
    x_known, mask = torch.zeros(4, 2), torch.tensor([True, False])
    with pytest.raises(TypeError, match=r"sampler: AnnealedLangevin runs its own loop .* PredictorCorrector\(None"):
        Imputation(AnnealedLangevin(), x_known, mask)
    with pytest.raises(TypeError, match=r"sampler: .* is adaptive .* fixed-step solver"):
        Imputation(ProbabilityFlowSampler(solvers.Dopri5()), x_known, mask)
    with pytest.raises(TypeError, match=r"sampler: an Imputation cannot wrap another Imputation"):
        Imputation(Imputation(DDIM(), x_known, mask), x_known, mask)


@pytest.mark.parametrize("sde_name", sorted(SDES))
@pytest.mark.parametrize("sampler", [Ancestral(), DPMSolverPP(eta=1.0), PredictorCorrector(Ancestral(), LangevinCorrector())],
                         ids=["ancestral", "dpmpp-sde", "pc"])
def test_a_sample_does_not_depend_on_its_batch_with_per_sample_seeds(sde_name, sampler):
    """With one seed per sample (exact score and counter-based noise), sample b is the same in a
    batch of 3 and a batch of 7, RePaint's resampling included."""
    sde, mix = SDES[sde_name](), independent_ring()
    x_known = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([True, False, False])
    seeds = [11, 5, 2 ** 64 - 1, 7, 3, 9, 8]
    kw = dict(generator=seeds, jump_length=3, resample=2)
    big = impute(sde, mix.diffused(sde).score, x_known, mask, sampler, 12, **kw)
    kw["generator"] = seeds[:3]
    small = impute(sde, mix.diffused(sde).score, x_known[:3], mask, sampler, 12, **kw)
    torch.testing.assert_close(small, big[:3], rtol=0, atol=1e-12)
    # per-sample generators are invariant too
    gens = lambda k: [torch.Generator().manual_seed(s) for s in range(k)]  # noqa: E731
    a = impute(sde, mix.diffused(sde).score, x_known, mask, sampler, 12, generator=gens(7))
    b = impute(sde, mix.diffused(sde).score, x_known[:2], mask, sampler, 12, generator=gens(2))
    torch.testing.assert_close(b, a[:2], rtol=0, atol=1e-12)


def test_seeds_mean_what_they_mean_for_sample():
    """An int seed, a torch.Generator and a noise source reproduce; an empty mask is plain sampling:
    impute with nothing known equals sample() with the same seed, step for step."""
    sde, mix = VPSDE(), independent_ring()
    score = mix.diffused(sde).score
    x_known, none = torch.zeros(5, 3), torch.zeros(3, dtype=torch.bool)
    a = impute(sde, score, x_known, none, DDIM(eta=1.0), 10, generator=4)
    assert torch.equal(a, impute(sde, score, x_known, none, DDIM(eta=1.0), 10, generator=4))
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    assert torch.equal(impute(sde, score, x_known, none, DDIM(eta=1.0), 10, generator=g()),
                       impute(sde, score, x_known, none, DDIM(eta=1.0), 10, generator=g()))
    # with nothing known the replacement only consumes noise draws; the ODE sampler is then sample() itself
    x = impute(sde, score, x_known, none, DPMSolverPP(), 10, generator=4, denoise=True)
    y = scoresde.sample(sde, score, (5, 3), DPMSolverPP(), 10, generator=4, denoise=True)
    torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_known_part_exact_after_denoising_and_callbacks_progress_nan_reporting():
    sde, mix = VPSDE(), independent_ring()
    x_known = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.tensor([[True, False, True]])
    seen = []
    x = impute(sde, mix.diffused(sde).score, x_known, mask, DPMSolverPP(), 8, generator=0, denoise=True,
               callback=lambda info: seen.append((info.step, info.x[:, 0].clone())), jump_length=2, resample=3)
    assert torch.equal(x[:, [0, 2]], x_known[:, [0, 2]])
    moves = Imputation(DPMSolverPP(), x_known, mask, jump_length=2, resample=3).moves(8)
    assert len(seen) == moves == 8 + 2 * 2 * 3  # 3 jump points (levels 0, 2, 4), r - 1 = 2 redos of 2 steps
    # during the run the known part is a draw of its marginal, not the observation
    assert not torch.equal(seen[0][1], x_known[:, 0])
    # NaN known data, a NaN score: reported clearly
    bad = x_known.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x_known: 1 known values \(where mask is True\) are NaN or inf"):
        impute(sde, mix.diffused(sde).score, bad, mask, DDIM(), 4)
    bad[2, 0], bad[2, 1] = 0.0, float("nan")  # off the mask: ignored
    assert torch.isfinite(impute(sde, mix.diffused(sde).score, bad, mask, DDIM(), 4)).all()
    nan_score = lambda x, t: torch.where(t[:, None] < 0.5, float("nan"), -x)  # noqa: E731
    with pytest.raises(solvers.NonFiniteError, match=r"score: returned a non-finite value .* at t = 0\.4"):
        impute(sde, nan_score, x_known, mask, DDIM(), 10, t_end=0.001)


def test_device_and_dtype_follow_x_known_and_mismatches_are_refused():
    sde, mix = VPSDE(), independent_ring()
    x_known = torch.zeros(4, 3, dtype=torch.float32)
    x = impute(sde, mix.diffused(sde).score, x_known, torch.tensor([True, False, False]), DDIM(), 4, generator=0)
    assert x.dtype == torch.float32
    with pytest.raises(ValueError, match=r"x_known: it is torch.float32 on cpu but the state is torch.float64 on cpu"):
        scoresde.sample(sde, mix.diffused(sde).score, (4, 3), Imputation(DDIM(), x_known, torch.tensor([True, False, False])),
                        4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x_known: expected the shape of the state, \(5, 3\), got \(4, 3\)"):
        scoresde.sample(sde, mix.diffused(sde).score, (5, 3), Imputation(DDIM(), x_known, torch.tensor([True, False, False])),
                        4, dtype=torch.float32)


# ---------------------------------------------------------------------- correlated case and RePaint
def two_modes():
    """Modes (-2, -2) and (2, 2), weights 0.7 / 0.3, std 0.4; observing x_0 = 1 makes mode 2 certain
    (exact posterior weight 1 - 3e-11), which replacement alone misses (it commits to a mode
    before the observation is informative and keeps about the prior's 0.7 / 0.3)."""
    return GaussianMixture(torch.tensor([[-2.0, -2.0], [2.0, 2.0]]), 0.4, weights=[0.7, 0.3])


def test_repaint_resampling_brings_imputation_to_the_exact_conditional():
    """At equal grid steps (50), RePaint's j = r = 10 cuts the mode error from ~0.25 (replacement) to
    under 0.03, and replacement at 5x the steps (about RePaint's evaluations) stays biased: the bias is
    the method's, not the discretisation's. Within the found mode the conditional is N(2, 0.4^2):
    its mean within 4.5 standard errors (n = 2000)."""
    mix, sde, n = two_modes(), VPSDE(), 2000
    exact = mix.diffused(sde)
    x_known = torch.zeros(n, 2)
    x_known[:, 0] = 1.0
    mask = torch.tensor([True, False])
    w = exact_conditional_weights(mix, x_known[0], mask)
    assert w[1] > 1 - 1e-10
    err = {}
    for key, steps, j, r in (("plain", 50, 1, 1), ("plain-250", 250, 1, 1), ("repaint", 50, 10, 10)):
        x = impute(sde, exact.score, x_known, mask, Ancestral(), steps, generator=0, jump_length=j, resample=r)
        assert torch.equal(x[:, 0], x_known[:, 0])
        err[key] = (x[:, 1] < 0).double().mean().item()
        if key == "repaint":
            found = x[x[:, 1] > 0, 1]
            se = 0.4 / math.sqrt(found.numel())
            assert abs(found.mean().item() - 2.0) < 4.5 * se
            # (the spread is the sampler's own: 50 ancestral steps narrow N(2, 0.4^2) to a std of 0.35
            # without any imputation, so it is not compared with the exact 0.4 here)
    assert err["plain"] > 0.15 and err["plain-250"] > 0.15, err
    assert err["repaint"] < 0.03, err
    evals = Imputation(Ancestral(), x_known, mask, jump_length=10, resample=10).evaluations(50)
    assert evals == 50 + 9 * 10 * 4  # levels 0, 10, 20, 30 below N - j = 40, each redone 9 times


def test_repaint_with_a_multistep_sampler_restarts_its_history():
    """DPM-Solver++(3M) with RePaint: the history restarts after each jump (no stale extrapolation),
    the known part is exact, and the mode error drops as it does for ancestral sampling."""
    mix, sde, n = two_modes(), VPSDE(), 2000
    x_known = torch.zeros(n, 2)
    x_known[:, 0] = 1.0
    mask = torch.tensor([True, False])
    errs = []
    for r in (1, 10):
        x = impute(sde, mix.diffused(sde).score, x_known, mask, DPMSolverPP(order=3, eta=1.0), 50, generator=0,
                   jump_length=10, resample=r)
        assert torch.equal(x[:, 0], x_known[:, 0]) and torch.isfinite(x).all()
        errs.append((x[:, 1] < 0).double().mean().item())
    assert errs[0] > 0.15 and errs[1] < 0.5 * errs[0], errs


def paper_schedule(t_T, jump_length, jump_n_sample):
    """Lugmayr et al.'s `get_schedule_jump` (RePaint repository, guided_diffusion/scheduler.py) with
    n_sample = 1 and the second and third jump levels off (their defaults), copied verbatim in logic."""
    jumps = {}
    for j in range(0, t_T - jump_length, jump_length):
        jumps[j] = jump_n_sample - 1
    t = t_T
    ts = []
    while t >= 1:
        t = t - 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] = jumps[t] - 1
            for _ in range(jump_length):
                t = t + 1
                ts.append(t)
    ts.append(-1)
    return ts


@pytest.mark.parametrize("steps,j,r", [(250, 10, 10), (50, 10, 10), (20, 5, 3), (7, 3, 2), (10, 1, 1), (5, 10, 10)])
def test_repaint_schedule_is_the_published_one(steps, j, r):
    levels = [steps - 1 - i for i in repaint_schedule(steps, j, r)]
    assert levels == paper_schedule(steps, j, r)
    assert repaint_schedule(steps, j, r)[0] == 0 and repaint_schedule(steps, j, r)[-1] == steps
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.RePaintScheduler(num_train_timesteps=steps)
    sched.set_timesteps(steps, jump_length=j, jump_n_sample=r)
    assert levels == sched.timesteps.tolist() + [-1]


def test_repaint_schedule_arithmetic():
    """The paper's 250 steps, j = r = 10: 24 jump levels (0, 10, ..., 230), 9 redos of 10 steps each."""
    s = repaint_schedule(250, 10, 10)
    moves = list(zip(s[:-1], s[1:]))
    down = sum(b == a + 1 for a, b in moves)
    up = sum(b == a - 1 for a, b in moves)
    assert all(abs(b - a) == 1 for a, b in moves)
    assert up == 24 * 9 * 10 and down == 250 + up
    assert repaint_schedule(10, 1, 1) == list(range(11))
