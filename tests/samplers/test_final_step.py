"""The final step into zero noise: Tweedie's posterior mean against the probability flow's own
last step, on a Gaussian (closed-form flow) and on the ring (a tight solve into t = 0)."""

import math

import pytest
import solvers
import torch

import scoresde
from scoresde import (LMS, DDIM, Ancestral, DPMSolverPP, EDMHeun, GaussianMixture, LangevinCorrector,
                      PredictorCorrector, ReverseDiffusion)
from scoresde.samplers import ProbabilityFlowSampler, ReverseSDESampler, defaults

from ..conftest import devices
from .conftest import SDES, ring

TIGHT = ProbabilityFlowSampler(solvers.Dopri5(1e-11, 1e-11))


def t_at(sde, sigma_hat: float) -> float:
    """The time at which the noise-to-signal ratio sigma_t / alpha_t is `sigma_hat`."""
    return sde.t_from_log_snr(-2.0 * math.log(sigma_hat)).item()


def test_gaussian_flow_end_is_exact_to_second_order(sde):
    """Data N(mu, s^2 I), ended at sigma_hat^2 = r s^2 with r = 0.04. From there the exact flow
    into zero noise is mu + sqrt(c) (x_hat - mu), c = 1/(1 + r); the flow end gives (1 + c)/2
    times x_hat - mu (error r^2/8 to leading order) and Tweedie's c times it (error r/2)."""
    s, r = 0.2, 0.04
    mu = torch.tensor([1.0, -2.0])
    exact = GaussianMixture.gaussian(mu, s).diffused(sde)
    t0, t1 = t_at(sde, 1.0), t_at(sde, math.sqrt(r) * s)
    x = exact.sample(64, t0, generator=torch.Generator().manual_seed(0))
    alpha, sigma = sde.marginal(t0)
    x_hat, sigma_hat = x / alpha, sigma / alpha
    truth = mu + s / torch.sqrt(s**2 + sigma_hat**2) * (x_hat - mu)  # the flow from t0 into zero noise

    def relative_error(denoise):
        y = scoresde.sample(sde, exact.score, sampler=TIGHT, grid=torch.tensor([t0, t1]), x_init=x, denoise=denoise)
        return (y - truth).norm(dim=1) / (truth - mu).norm(dim=1)

    c = 1.0 / (1.0 + r)
    flow, tweedie = relative_error("flow"), relative_error(True)
    torch.testing.assert_close(flow, torch.full_like(flow, (1 + c) / 2 / math.sqrt(c) - 1), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(tweedie, torch.full_like(tweedie, 1 - math.sqrt(c)), rtol=1e-5, atol=1e-9)
    assert flow.max() < r**2 / 8 and tweedie.min() > 0.45 * r


@pytest.mark.parametrize("name", ["vp", "subvp"])  # sigma(0) = 0 (the VE SDE keeps sigma_min at t = 0)
def test_flow_end_error_is_fourth_order_in_the_remaining_noise(name):
    """On the ring (not Gaussian, but smooth on the scale of the remaining noise) the flow end's
    distance to a tight solve into t = 0 falls 16-fold when sigma_hat halves, Tweedie's 4-fold."""
    sde = SDES[name]()
    exact = ring().diffused(sde)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    errors = {}
    for sigma_hat in (0.05, 0.025):
        t_end = t_at(sde, sigma_hat)
        end = dict(sampler=TIGHT, grid=torch.tensor([sde.T, t_end]), x_init=x_T)
        x_end = scoresde.sample(sde, exact.score, denoise=False, **end)
        x_0 = scoresde.sample(sde, exact.score, sampler=TIGHT, grid=torch.tensor([t_end, 0.0]), x_init=x_end,
                              denoise=False)
        for how in ("flow", "tweedie"):
            y = scoresde.sample(sde, exact.score, denoise=how, **end)
            errors[how, sigma_hat] = (y - x_0).pow(2).sum(1).mean().sqrt().item()
    assert 12.0 < errors["flow", 0.05] / errors["flow", 0.025] < 20.0
    assert 3.5 < errors["tweedie", 0.05] / errors["tweedie", 0.025] < 4.5
    assert errors["flow", 0.05] < errors["tweedie", 0.05] / 20


@pytest.mark.parametrize("sampler", [DDIM(), DPMSolverPP(order=2)], ids=repr)
def test_flow_end_is_the_midpoint_of_the_state_and_its_denoised_estimate(sde, sampler):
    exact = ring().diffused(sde)
    kw = dict(shape=(5, 2), sampler=sampler, steps=6, generator=0)
    t_end = scoresde.time_grids.default_t_end(sde)
    alpha, _ = sde.marginal(t_end)
    seen_flow, seen_tweedie = [], []
    y = scoresde.sample(sde, exact.score, denoise="flow", callback=seen_flow.append, **kw)
    z = scoresde.sample(sde, exact.score, denoise=True, callback=seen_tweedie.append, **kw)
    x_end = seen_flow[-1].x
    # either final step counts alike in the multistep order rules: the same state at t_end
    torch.testing.assert_close(x_end, seen_tweedie[-1].x, rtol=0, atol=0)
    denoised = exact.denoiser(x_end, t_end)
    torch.testing.assert_close(z, denoised, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, 0.5 * (x_end / alpha + denoised), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scoresde.sample(sde, exact.score, denoise="tweedie", **kw), z, rtol=0, atol=0)


def test_flow_end_into_a_noise_free_grid_end_changes_nothing():
    sde = SDES["vp"]()
    exact = ring().diffused(sde)
    kw = dict(shape=(5, 2), sampler=DPMSolverPP(), steps=6, grid=scoresde.time_grids.UniformTime(), t_end=0.0, generator=0)
    torch.testing.assert_close(scoresde.sample(sde, exact.score, denoise="flow", **kw),
                               scoresde.sample(sde, exact.score, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", devices())
def test_flow_end_on_the_state_device(device):
    """float32 on the device, against the same run in float64 on the CPU."""
    sde = SDES["vp"]()
    exact = ring().diffused(sde)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    kw = dict(sampler=DPMSolverPP(order=2), steps=9, denoise="flow")
    y = scoresde.sample(sde, exact.score, x_init=x_T.to(device, torch.float32), **kw)
    assert y.device.type == device and y.dtype == torch.float32
    torch.testing.assert_close(y.cpu().double(), scoresde.sample(sde, exact.score, x_init=x_T, **kw),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("denoise, exc", [("median", ValueError), (1, TypeError), ("Flow", ValueError)])
def test_bad_denoise(denoise, exc):
    sde = SDES["vp"]()
    with pytest.raises(exc, match=rf"denoise: expected a bool, 'tweedie' or 'flow', got {denoise!r}"):
        scoresde.sample(sde, ring().diffused(sde).score, (2, 2), DDIM(), steps=2, denoise=denoise)


# ---------------------------------------------------------------------- the final step left out
EXPLICIT = [DDIM(), DPMSolverPP(order=3), EDMHeun(), LMS(), DDIM(eta=1.0), Ancestral(), ReverseSDESampler(),
            PredictorCorrector(ReverseDiffusion(), LangevinCorrector(snr=0.1)), EDMHeun(churn=5.0)]


def _counted(score):
    """The score, and a list that grows by one at each of its evaluations."""
    calls = []
    return (lambda x, t: calls.append(None) or score(x, t)), calls


@pytest.mark.parametrize("sampler", EXPLICIT, ids=repr)
def test_an_explicit_sampler_ends_at_zero_noise_with_the_default_final_step(sde, sampler):
    """Left out, `denoise` is the default recipe's final step after any sampler whose grid ends
    with noise left: the same samples as `denoise="flow"`, one evaluation beyond the sampler's
    own; `denoise=False` stops at t_end."""
    exact = ring().diffused(sde)
    kw = dict(shape=(16, 2), sampler=sampler, steps=5, generator=0)
    counted, calls = _counted(exact.score)
    left_out = scoresde.sample(sde, counted, **kw)
    assert len(calls) == sampler.evaluations(5) + 1
    torch.testing.assert_close(left_out, scoresde.sample(sde, exact.score, denoise=defaults.DEFAULT_DENOISE, **kw),
                               rtol=0, atol=0)
    counted, calls = _counted(exact.score)
    stopped = scoresde.sample(sde, counted, denoise=False, **kw)
    assert len(calls) == sampler.evaluations(5)
    assert (left_out - stopped).abs().max() > 1e-4


def test_no_final_step_where_the_run_already_ends_at_zero_noise():
    """A VP grid to t = 0, and LMS / EDMHeun with `to_zero=True`, reach zero noise themselves."""
    vp, ve = SDES["vp"](), SDES["ve"]()
    for sde, sampler, options in [(vp, DPMSolverPP(), dict(grid=scoresde.time_grids.UniformTime(), t_end=0.0)),
                                  (ve, LMS(to_zero=True), {}), (ve, EDMHeun(to_zero=True), {})]:
        exact = ring().diffused(sde)
        counted, calls = _counted(exact.score)
        kw = dict(shape=(16, 2), sampler=sampler, steps=5, generator=0, **options)
        x = scoresde.sample(sde, counted, **kw)
        assert len(calls) == sampler.evaluations(5), sampler
        torch.testing.assert_close(x, scoresde.sample(sde, exact.score, denoise=False, **kw), rtol=0, atol=0)


def test_an_explicit_sampler_returns_the_data_spread():
    """N(0, s^2) data with s = 0.02, twice the noise VP leaves at t = 1e-3 (sigma_hat = 0.0105):
    a tight probability-flow solve stops with a spread of sqrt(s^2 + sigma_hat^2), 12.9% too
    wide, and ends with the data's (the flow's step is off by (1 + c)/2 sqrt(c) - 1 = 0.7% with
    c = 1/(1 + sigma_hat^2/s^2)); the tolerance is 4 standard errors of a spread estimated from n = 8000 draws in 2 dimensions,
    4 / sqrt(2 n d) = 2.2%."""
    sde, s, n = SDES["vp"](), 0.02, 8000
    exact = GaussianMixture.gaussian(torch.zeros(2), s).diffused(sde)
    kw = dict(shape=(n, 2), sampler=TIGHT, generator=0)
    tol = 4 / math.sqrt(2 * n * 2)
    alpha, sigma = sde.marginal(torch.tensor(scoresde.time_grids.default_t_end(sde)))
    wide = math.sqrt(s**2 + (sigma / alpha).item() ** 2) / s - 1
    assert wide > 2 * tol
    spread = scoresde.sample(sde, exact.score, **kw).std().item() / s - 1
    stopped = scoresde.sample(sde, exact.score, denoise=False, **kw).std().item() / s - 1
    assert abs(spread) < tol, spread
    assert abs(stopped - wide) < tol, (stopped, wide)
