"""The sampling entry point: determinism, batch-size invariance, callbacks, devices, and bad input."""

import pytest
import solvers
import torch

import scoresde
from scoresde import (
    DDIM,
    VPSDE,
    Ancestral,
    AnnealedLangevin,
    DPMSolverPP,
    EDMHeun,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
    ScoreModel,
    UniPC,
)
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler

from ..conftest import devices
from .conftest import ring

STOCHASTIC = [
    ReverseSDESampler(),
    ReverseSDESampler(solvers.SRA1()),
    ReverseDiffusion(),
    Ancestral(),
    PredictorCorrector(),
    DDIM(eta=0.7),
    EDMHeun(churn=10.0),
    DPMSolverPP(order=3, eta=1.0),
    # step_lr / sigma_end^2 below 2 for every SDE here (sub-VP ends at sigma = 1.1e-4: 0.17)
    AnnealedLangevin(n_steps_each=3, step_lr=2e-9),
]
DETERMINISTIC = [DDIM(), EDMHeun(), DPMSolverPP(order=3), UniPC(), ProbabilityFlowSampler()]


@pytest.fixture
def exact(sde):
    return ring().diffused(sde)


@pytest.mark.parametrize("sampler", STOCHASTIC + DETERMINISTIC, ids=repr)
def test_same_seed_same_samples(sde, exact, sampler):
    a = scoresde.sample(sde, exact.score, (6, 2), sampler, steps=8, generator=torch.Generator().manual_seed(3))
    b = scoresde.sample(sde, exact.score, (6, 2), sampler, steps=8, generator=torch.Generator().manual_seed(3))
    c = scoresde.sample(sde, exact.score, (6, 2), sampler, steps=8, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("sampler", STOCHASTIC + [DPMSolverPP()], ids=repr)
@pytest.mark.parametrize("kind", ["seeds", "generators", "int"])
def test_sample_does_not_depend_on_its_batch(sde, exact, sampler, kind):
    """With per-sample seeds (or generators, or one int seed) the first 3 samples of a batch of 3 and of 7 agree."""

    def noise(n):
        if kind == "seeds":
            return [100 + b for b in range(n)]
        if kind == "generators":
            return [torch.Generator().manual_seed(100 + b) for b in range(n)]
        return 7

    small = scoresde.sample(sde, exact.score, (3, 2), sampler, steps=6, generator=noise(3))
    large = scoresde.sample(sde, exact.score, (7, 2), sampler, steps=6, generator=noise(7))
    torch.testing.assert_close(small, large[:3], rtol=1e-12, atol=1e-12)


def test_batch_mean_would_break_invariance(exact):
    """The check above has power: one generator shared by the batch gives different first samples."""
    sde = exact.sde
    small = scoresde.sample(sde, exact.score, (3, 2), Ancestral(), steps=6, generator=torch.Generator().manual_seed(0))
    large = scoresde.sample(sde, exact.score, (7, 2), Ancestral(), steps=6, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(small, large[:3])


def test_callback_and_progress(sde, exact):
    seen = []
    steps = 7
    x = scoresde.sample(sde, exact.score, (5, 2), DPMSolverPP(), steps=steps, generator=0, callback=seen.append,
                        progress=True, denoise=False)
    assert [info.step for info in seen] == list(range(steps))
    assert all(info.t_next < info.t_cur for info in seen)
    assert [info.nfe for info in seen] == list(range(1, steps + 1))
    assert all(info.denoised is not None and info.denoised.shape == (5, 2) for info in seen)
    torch.testing.assert_close(seen[-1].x, x)


def test_adaptive_probability_flow_reports_its_steps(exact):
    seen = []
    sde = exact.sde
    scoresde.sample(sde, exact.score, (5, 2), ProbabilityFlowSampler(solvers.Dopri5(1e-4, 1e-4)), generator=0,
                    callback=seen.append)
    assert len(seen) > 3 and seen[-1].t_next == pytest.approx(scoresde.time_grids.default_t_end(sde))
    assert seen[-1].nfe > len(seen)


def test_denoise_is_tweedie_at_t_end(sde, exact):
    kw = dict(shape=(5, 2), sampler=DDIM(), steps=10, generator=0)
    x = scoresde.sample(sde, exact.score, denoise=False, **kw)
    x0 = scoresde.sample(sde, exact.score, denoise=True, **kw)
    t_end = scoresde.time_grids.default_t_end(sde)
    torch.testing.assert_close(x0, exact.denoiser(x, t_end), rtol=1e-10, atol=1e-10)


def test_evaluations_match_the_count(sde, exact):
    for sampler in STOCHASTIC + DETERMINISTIC:
        seen = []
        scoresde.sample(sde, exact.score, (2, 2), sampler, steps=5, generator=0, callback=seen.append)
        assert seen[-1].nfe == sampler.evaluations(5), sampler


def test_score_model_drives_the_samplers(exact):
    """An eps-predicting ScoreModel of the exact eps gives the samples of the exact score."""
    sde = exact.sde
    model = ScoreModel(lambda x, t: exact.eps(x, t), sde, prediction="eps")
    a = scoresde.sample(sde, model, (6, 2), UniPC(), steps=10, generator=0)
    b = scoresde.sample(sde, exact.score, (6, 2), UniPC(), steps=10, generator=0)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", devices())
def test_device_and_dtype_follow_the_request(device):
    sde = VPSDE()
    mix = ring()
    exact = mix.diffused(sde)
    for dtype in (torch.float32, torch.float64):
        g = torch.Generator(device=device).manual_seed(0)
        x = scoresde.sample(sde, exact.score, (4, 2), DPMSolverPP(), steps=5, generator=g, device=device, dtype=dtype)
        assert x.device.type == device and x.dtype == dtype
        x_init = torch.randn(4, 2, dtype=dtype, device=device)
        y = scoresde.sample(sde, exact.score, sampler=EDMHeun(churn=5.0), steps=5, x_init=x_init, generator=[1, 2, 3, 4])
        assert y.device.type == device and y.dtype == dtype


def test_explicit_grid(exact):
    sde = exact.sde
    ts = sde.T * torch.tensor([1.0, 0.5, 0.2, 0.05, 0.01])  # any horizon T
    seen = []
    scoresde.sample(sde, exact.score, (3, 2), DDIM(), grid=ts, generator=0, callback=seen.append)
    assert [info.t_next.item() for info in seen] == pytest.approx(ts[1:].tolist())


# ---------------------------------------------------------------------- bad input
def _run(**kw):
    sde = VPSDE()
    exact = ring().diffused(sde)
    args = dict(sde=sde, score=exact.score, shape=(4, 2), sampler=DDIM(), steps=3, generator=0)
    args.update(kw)
    return scoresde.sample(**args)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: DDIM(etta=0.5), TypeError, "etta"),
        (lambda: DDIM(eta=2.0), ValueError, r"eta: expected a finite number in \[0, 1\], got 2.0"),
        (lambda: DPMSolverPP(order=4), ValueError, r"order: expected one of \(1, 2, 3\), got 4"),
        (lambda: DPMSolverPP(eta=-0.1), ValueError, r"eta: expected a finite number in \[0, 1\], got -0.1"),
        (lambda: DPMSolverPP(order=3, d2="full"), ValueError, r"d2: expected one of \('taylor', 'half'\), got 'full'"),
        (lambda: UniPC(variant="bh3"), ValueError, r"variant: expected one of \('bh1', 'bh2'\), got 'bh3'"),
        (lambda: Ancestral(variance="learned"), ValueError, r"variance: expected one of \('posterior', 'transition'\)"),
        (lambda: LangevinCorrector(snr=0.0), ValueError, r"snr: expected a finite number > 0, got 0.0"),
        (lambda: LangevinCorrector(norms="mean"), ValueError, r"norms: expected one of \('sample', 'noise', 'batch'\), got 'mean'"),
        (lambda: PredictorCorrector(predictor=None, corrector=None), ValueError, "at least one"),
        (lambda: PredictorCorrector(predictor=solvers.Heun()), TypeError, "predictor: expected a sampler"),
        (lambda: EDMHeun(churn=-1.0), ValueError, r"churn: expected a number >= 0, got -1.0"),
        (lambda: AnnealedLangevin(n_steps_each=0), ValueError, r"n_steps_each: expected an int >= 1, got 0"),
        (lambda: ReverseSDESampler(solvers.Heun()), TypeError, "needs a solvers SDE solver"),
        (lambda: ProbabilityFlowSampler(solvers.EulerMaruyama()), TypeError, "needs a solvers ODE solver"),
        (lambda: ProbabilityFlowSampler(solvers.Heun), TypeError, "pass an instance"),
    ],
)
def test_bad_sampler_options(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(steps=0), ValueError, r"steps: expected an int >= 1, got 0"),
        (dict(steps=2.5), TypeError, r"steps: expected an int, got 2.5"),
        (dict(sampler="ddim"), TypeError, r"sampler: expected a sampler instance .* got 'ddim'"),
        (dict(sampler=DDIM), TypeError, r"sampler: expected a sampler instance"),
        (dict(sde="vp"), TypeError, r"sde: expected a scoresde.SDE"),
        (dict(score=None), TypeError, r"score: expected a callable"),
        (dict(shape=(0, 2)), ValueError, r"shape: expected a non-empty sequence of positive ints, got \(0, 2\)"),
        (dict(shape=None), ValueError, r"shape: expected the batch shape"),
        (dict(shape=DDIM()), TypeError, r"shape: expected the batch shape \(B, ...\), got the sampler DDIM.*sampler=\.\.\."),
        (dict(grid=torch.tensor([1.0, 0.5, 0.7]), steps=None), ValueError, r"grid: expected strictly decreasing"),
        (dict(grid=torch.tensor([2.0, 0.5]), steps=None), ValueError, r"grid: expected times in \[0, T\]"),
        (dict(grid=torch.tensor([1.0, 0.5]), steps=3), ValueError, r"steps: the grid has 1 steps, got steps=3"),
        (dict(grid="karras"), TypeError, r"grid: expected a TimeGrid"),
        (dict(t_end=1.5), ValueError, r"t_end: expected a time in \[0, T\)"),
        (dict(generator=[1, 2]), ValueError, r"generator: got 2 per-sample seeds for a batch of 4"),
        (dict(generator=[torch.Generator()] * 3), ValueError, r"generator: got 3 per-sample generators"),
        (dict(generator="seed"), TypeError, r"generator: expected None, a torch.Generator"),
        (dict(x_init=torch.zeros(3, 2)), ValueError, r"shape: expected the shape of x_init, \(3, 2\)"),
        (dict(denoise=1), TypeError, r"denoise: expected a bool"),
        (dict(callback=3), TypeError, r"callback: expected a callable"),
        (dict(sampler=ProbabilityFlowSampler(solvers.Dopri5()), steps=10), ValueError, r"steps: .* is adaptive"),
    ],
)
def test_bad_arguments(kw, exc, match):
    with pytest.raises(exc, match=match):
        _run(**kw)


def test_unknown_keyword_is_rejected():
    with pytest.raises(TypeError, match="stepz"):
        _run(stepz=10)


def test_score_with_wrong_shape():
    with pytest.raises(ValueError, match=r"score: expected an output shaped like x, \(4, 2\), got \(4,\)"):
        _run(score=lambda x, t: x.sum(1))
    with pytest.raises(ValueError, match=r"score: expected an output shaped like x, \(4, 2\), got float"):
        _run(score=lambda x, t: 1.0)


@pytest.mark.parametrize("sampler", [DDIM(), Ancestral(), ReverseSDESampler(), ProbabilityFlowSampler(), UniPC()], ids=repr)
def test_score_returning_nan_is_reported_with_its_time(sampler):
    def score(x, t):
        out = -x
        return torch.where(t[:, None] < 0.5, torch.full_like(out, float("nan")), out)

    with pytest.raises(ValueError, match=r"score: returned a non-finite value \(NaN or inf\) at t = 0\.4"):
        _run(score=score, sampler=sampler, steps=10, grid=scoresde.time_grids.UniformTime())


def test_diverging_sampler_is_reported():
    """A score of the wrong sign (pushing away from the data) makes a float32 state overflow: the error says so."""
    with pytest.raises(ValueError, match=r"max \|x\| = (inf|nan|\d\.\d+e\+\d\d)"):
        _run(score=lambda x, t: 1e3 * x, steps=50, dtype=torch.float32)


def test_langevin_step_beyond_the_stable_size_is_refused():
    """step_lr / sigma_end^2 is every level's step in units of its variance; from 2 on, the chain
    diverges on the largest levels. Refused before sampling, with the bound; just below it, it runs."""
    msg = (r"step_lr: 10.0 is too large for this grid: .* = 9.1e\+04 sigma_t\^2 \(sigma_end = 0.0105\).*"
           r"use step_lr < 2 sigma_end\^2 = 0.00022")
    with pytest.raises(ValueError, match=msg):
        _run(sampler=AnnealedLangevin(n_steps_each=50, step_lr=10.0), steps=3)
    x = _run(sampler=AnnealedLangevin(n_steps_each=50, step_lr=1.9e-4), steps=3)
    assert x.norm(dim=1).max() < 6.0  # on the ring of radius 4


def test_log_snr_grid_needs_a_positive_noise_level_at_its_end():
    with pytest.raises(ValueError, match=r"t_end: the uniform log-SNR grid needs a finite log-SNR"):
        _run(sampler=DPMSolverPP(), t_end=0.0)


@pytest.mark.parametrize(
    "sampler", [DDIM(), EDMHeun(), DPMSolverPP(order=3), DPMSolverPP(order=3, eta=1.0), UniPC(), Ancestral()], ids=repr
)
def test_last_step_into_zero_noise_is_the_denoiser(sampler):
    """A VP grid ending at t = 0 (sigma = 0): the last step returns Tweedie's x0 of the last evaluation,
    on long grids too (where the multistep methods otherwise keep their full order)."""
    sde = VPSDE()
    exact = ring().diffused(sde)
    ts = scoresde.time_grids.UniformTime()(sde, 20, t_end=0.0)
    seen = []
    x = scoresde.sample(sde, exact.score, (6, 2), sampler, grid=ts, generator=0, callback=seen.append)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, seen[-1].denoised if seen[-1].denoised is not None else x)


def test_brownian_tree_drives_the_reverse_sde():
    """One Brownian path at two resolutions gives nearby samples (strong convergence); another path does not."""
    sde = VPSDE()
    exact = ring().diffused(sde)
    x_T = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(0))

    def run(tree, steps):
        return scoresde.sample(sde, exact.score, sampler=ReverseSDESampler(), steps=steps, x_init=x_T, generator=tree,
                               t_end=0.05)

    tree = solvers.BrownianTree(0.0, 1.0, seed=[1, 2, 3, 4])
    coarse, fine = run(tree, 100), run(tree, 200)
    other = run(solvers.BrownianTree(0.0, 1.0, seed=[5, 6, 7, 8]), 200)
    assert (coarse - fine).norm() < 0.2 * (other - fine).norm()
    with pytest.raises(TypeError, match=r"generator: .*BrownianTree.* gives Brownian increments only; pass the prior"):
        scoresde.sample(sde, exact.score, (4, 2), ReverseSDESampler(), steps=10, generator=tree)
