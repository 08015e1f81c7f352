"""Probability-flow likelihoods against the mixture's exact log-density; bits per dimension and dequantisation."""

import math

import pytest
import solvers
import torch

import scoresde
from scoresde import VPSDE, GaussianMixture, log_likelihood
from scoresde.likelihood import Hutchinson, bits_per_dim, dequantize
from scoresde.samplers import ProbabilityFlowSampler

from ..conftest import devices
from .conftest import ring

B = 32


def _data(mixture, n=B, seed=0):
    return mixture.sample(n, generator=torch.Generator().manual_seed(seed))


def _prior(sde, exact):
    """The exact log p_T for variance-exploding processes (alpha_T = 1: VE, EDM), whose N(0, sigma_max^2)
    prior ignores the data's mean; the SDE's prior otherwise."""
    alpha_T = float(sde.marginal(torch.tensor(float(sde.T), dtype=torch.float64))[0])
    return (lambda z: exact.log_prob(z, sde.T)) if alpha_T == 1.0 else None


def test_exact_divergence_matches_log_density(sde):
    """Within 0.01 nats per dimension of log p_{t_eps}(x), for every sample (Dormand-Prince, rtol = atol = 1e-5)."""
    mixture = ring()
    exact = mixture.diffused(sde)
    x = _data(mixture)
    res = log_likelihood(sde, exact.score, x, prior_logp=_prior(sde, exact))
    err = (res.log_prob - exact.log_prob(x, res.t_eps)).abs() / res.dim
    assert err.max() < 0.01, f"max error {err.max().item():.4g} nats/dim"
    assert res.std_error is None and res.latent.shape == x.shape and res.nfe > 10
    torch.testing.assert_close(res.log_prob, res.prior_log_prob + res.delta_log_prob)


def test_exact_divergence_in_higher_dimension():
    """The 32-D ring (divergence over 32 coordinates, one batched backward pass each evaluation)."""
    sde = VPSDE()
    mixture = ring(dim=32)
    exact = mixture.diffused(sde)
    x = _data(mixture, n=8)
    res = log_likelihood(sde, exact.score, x)
    err = (res.log_prob - exact.log_prob(x, res.t_eps)).abs() / 32
    assert err.max() < 0.01, err


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_is_within_its_standard_error(sde, distribution):
    """Unbiased with a calibrated standard error: the batch's total error is within 3 of its standard errors.

    With K = 16 probes each sample's error over its standard error is close to Student's t
    with 15 degrees of freedom; the sum over the batch divided by the root of the summed
    squared standard errors is close to N(0, 1). Both are checked at 3 (and at least 90% of the
    samples individually, P(|t_15| > 3) = 0.009).
    """
    mixture = ring()
    exact = mixture.diffused(sde)
    x = _data(mixture, n=48)
    res = log_likelihood(sde, exact.score, x, divergence=Hutchinson(16, distribution),
                         generator=torch.Generator().manual_seed(0), prior_logp=_prior(sde, exact))
    err = res.log_prob - exact.log_prob(x, res.t_eps)
    z = err / res.std_error
    total = err.sum() / res.std_error.pow(2).sum().sqrt()
    assert abs(total) < 3, f"batch error {total.item():.2f} standard errors"
    assert (z.abs() < 3).double().mean() >= 0.9, z
    assert bool((res.std_error > 0).all())


def test_hutchinson_with_one_probe_has_no_standard_error():
    sde = VPSDE()
    exact = ring().diffused(sde)
    res = log_likelihood(sde, exact.score, _data(ring(), n=4), divergence=Hutchinson(1))
    assert res.std_error is None and res.log_prob.shape == (4,)


def test_fixed_step_solver_and_latent_round_trip():
    """RK4 on 200 steps agrees with Dopri5; decoding the latent with the probability flow returns x."""
    sde = VPSDE()
    mixture = GaussianMixture.ring(4, radius=2.0, std=0.5)
    exact = mixture.diffused(sde)
    x = _data(mixture, n=8)
    adaptive = log_likelihood(sde, exact.score, x, solver=solvers.Dopri5(1e-7, 1e-7))
    fixed = log_likelihood(sde, exact.score, x, solver=solvers.RK4(), steps=200)
    torch.testing.assert_close(fixed.log_prob, adaptive.log_prob, rtol=0, atol=2e-3)
    back = scoresde.sample(sde, exact.score, sampler=ProbabilityFlowSampler(solvers.Dopri5(1e-7, 1e-7)),
                           x_init=adaptive.latent, t_end=adaptive.t_eps)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-4)


@pytest.mark.parametrize("device", devices())
def test_runs_on_the_data_device_in_float32(device):
    sde = VPSDE()
    mixture = GaussianMixture.ring(4, radius=2.0, std=0.5, dtype=torch.float32)
    exact = mixture.diffused(sde)
    x = _data(mixture, n=8).to(device)
    res = log_likelihood(sde, exact.score, x, solver=solvers.Dopri5(1e-4, 1e-4))
    assert res.log_prob.device.type == device and res.log_prob.dtype == torch.float32
    assert ((res.log_prob - exact.log_prob(x, res.t_eps)).abs() / 2).max() < 0.01


# ---------------------------------------------------------------------- bits per dimension
def test_bits_per_dim_of_a_uniform_density_is_the_bit_depth():
    """Data uniform on [low, high]^D: log p = -D log(high - low), so the discrete bits per dimension are n_bits."""
    D = 3 * 4 * 4
    for low, high in [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)]:
        log_p = torch.full((5,), -D * math.log(high - low))
        torch.testing.assert_close(bits_per_dim(log_p, D, n_bits=8, data_range=(low, high)), torch.full((5,), 8.0))
    log_p = torch.tensor([-10.0])
    torch.testing.assert_close(bits_per_dim(log_p, 4), torch.tensor([10 / (4 * math.log(2))]))
    # [-1, 1] adds log2(256 / 2) = 7 bits to the continuous value: score_sde's "offset"
    torch.testing.assert_close(bits_per_dim(log_p, 4, n_bits=8) - bits_per_dim(log_p, 4), torch.tensor([7.0]))


def test_likelihood_result_bits_per_dim():
    sde = VPSDE()
    exact = ring().diffused(sde)
    res = log_likelihood(sde, exact.score, _data(ring(), n=2))
    torch.testing.assert_close(res.bits_per_dim(), -res.log_prob / (2 * math.log(2)))


def test_dequantize_fills_each_bin():
    k = torch.arange(256, dtype=torch.uint8).repeat(200)
    x = dequantize(k, generator=torch.Generator().manual_seed(0))
    w = 2 / 256
    lower = -1 + k.double() * w
    assert bool(((x >= lower) & (x < lower + w)).all())
    # the offsets within the bins are uniform: mean 1/2, variance 1/12 (SE from 51200 draws)
    u = (x - lower) / w
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.numel())
    assert abs(u.var() - 1 / 12) < 4 * math.sqrt(1 / 180 / u.numel())
    y = dequantize(torch.tensor([0, 15]), n_bits=4, data_range=(0.0, 1.0), generator=torch.Generator().manual_seed(1))
    assert 0 <= y[0] < 1 / 16 and 15 / 16 <= y[1] < 1


# ---------------------------------------------------------------------- bad input
def _lik(**kw):
    sde = VPSDE()
    exact = ring().diffused(sde)
    args = dict(sde=sde, score=exact.score, x=_data(ring(), n=2))
    args.update(kw)
    return log_likelihood(**args)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: _lik(divergence="hutchinson"), ValueError, r"divergence: expected 'exact' or a Hutchinson"),
        (lambda: _lik(divergence=3), TypeError, r"divergence: expected 'exact' or a Hutchinson"),
        (lambda: Hutchinson(0), ValueError, r"n_probes: expected an int >= 1, got 0"),
        (lambda: Hutchinson(distribution="uniform"), ValueError, r"distribution: expected 'rademacher' or 'gaussian'"),
        (lambda: _lik(solver=solvers.EulerMaruyama()), TypeError, r"solver: expected a solvers ODE solver"),
        (lambda: _lik(solver=solvers.RK4()), ValueError, r"steps: the fixed-step solver RK4\(\) needs"),
        (lambda: _lik(steps=10), ValueError, r"steps: Dopri5.* is adaptive"),
        (lambda: _lik(t_eps=1.0), ValueError, r"t_eps: expected a time in \[0, T\)"),
        (lambda: _lik(x=torch.zeros(3, dtype=torch.long)), TypeError, r"x: expected a real floating-point tensor"),
        (lambda: _lik(score=lambda x, t: x.detach()), ValueError, r"score: its output does not depend on x"),
        (lambda: _lik(score=lambda x, t: x[:, :1]), ValueError, r"score: expected an output shaped like x"),
        (lambda: _lik(prior_logp=lambda z: z), ValueError, r"prior_logp: expected a tensor of shape \(2,\)"),
        (lambda: bits_per_dim(torch.zeros(2), 0), ValueError, r"dim: expected an int >= 1, got 0"),
        (lambda: bits_per_dim(torch.zeros(2), 4, n_bits=8, data_range=(1, 1)), ValueError, r"data_range"),
        (lambda: dequantize(torch.rand(3)), TypeError, r"values: expected an integer tensor"),
        (lambda: dequantize(torch.tensor([0, 256])), ValueError, r"values: expected integers in \[0, 255\]"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
