"""Langevin MCMC: stationary moments of a Gaussian target, acceptance rates, per-chain step sizes.

Each chain is one sample of the batch and chains are independent, so the final states are
(approximately, after burn-in) i.i.d. draws from the chain's stationary law: tolerances come
from the sample size without any autocorrelation correction. A mean test uses 4.5 standard
errors sqrt(v / n); a variance test 4.5 standard errors v sqrt(2 / (n - 1)) (a false alarm
probability below 1e-5 per check; the seeds are fixed anyway, so the tests are deterministic).
"""

import math

import pytest
import torch

import solvers
from solvers.testing import GaussianTarget

F64 = torch.float64
TARGET = GaussianTarget(torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 1.5], dtype=F64))


def _check_moments(x, mean, var):
    n = x.shape[0]
    m, v = x.mean(0), x.var(0)
    assert ((m - mean).abs() < 4.5 * (var / n).sqrt()).all(), (m, mean)
    assert ((v - var).abs() < 4.5 * var * math.sqrt(2 / (n - 1))).all(), (v, var)


def test_ula_converges_to_its_biased_stationary_law():
    """ULA with step eps on N(mu, s^2) is stationary at N(mu, s^2 / (1 - eps / (2 s^2))): the test
    recovers that variance, and has the power to tell it from the target's (the bias is > 10 sd)."""
    n, eps = 8000, 0.1
    x0 = torch.zeros(n, 2, dtype=F64)
    res = solvers.langevin(TARGET.score, x0, 400, solvers.ULA(eps), noise=torch.Generator().manual_seed(0))
    biased = TARGET.ula_variance(eps)
    _check_moments(res.x, TARGET.mean, biased)
    assert (biased[0] - TARGET.std[0] ** 2) > 10 * biased[0] * math.sqrt(2 / (n - 1))
    assert torch.equal(res.acceptance_rate, torch.ones(n, dtype=F64))
    assert res.nfe == 400


def test_mala_is_exact_and_reports_acceptance():
    """MALA with the same step has the target's exact moments; acceptance rates are reported per
    chain, lie in (0, 1), and fall as the step size grows."""
    n = 8000
    x0 = torch.zeros(n, 2, dtype=F64)
    res = solvers.langevin(TARGET.score, x0, 400, solvers.MALA(0.1), log_prob=TARGET.log_prob,
                           noise=torch.Generator().manual_seed(1))
    _check_moments(res.x, TARGET.mean, TARGET.std ** 2)
    rate = res.acceptance_rate.mean().item()
    assert 0.5 < rate < 1.0
    big = solvers.langevin(TARGET.score, x0[:500], 100, solvers.MALA(0.8), log_prob=TARGET.log_prob,
                           noise=torch.Generator().manual_seed(2))
    assert big.acceptance_rate.mean().item() < rate
    assert res.acceptance_rate.shape == (n,) and res.n_accepted.dtype == torch.long


def test_per_chain_step_sizes():
    """A (B,) tensor of step sizes: each group of ULA chains reaches its own biased variance."""
    n = 12000
    eps = torch.tensor([0.02, 0.2], dtype=F64).repeat(n // 2)
    x0 = TARGET.mean.expand(n, 2).clone()
    res = solvers.langevin(TARGET.score, x0, 300, solvers.ULA(eps), noise=solvers.SeededNoise(3))
    for k, e in enumerate((0.02, 0.2)):
        _check_moments(res.x[k::2], TARGET.mean, TARGET.ula_variance(e))


def test_mala_with_log_prob_only_uses_autograd_score():
    """Without a score, MALA differentiates log_prob: the same chains as with the analytic score."""
    x0 = torch.zeros(64, 2, dtype=F64)
    a = solvers.langevin(TARGET.score, x0, 50, solvers.MALA(0.2), log_prob=TARGET.log_prob, noise=solvers.SeededNoise(1))
    b = solvers.langevin(None, x0, 50, solvers.MALA(0.2), log_prob=TARGET.log_prob, noise=solvers.SeededNoise(1))
    torch.testing.assert_close(a.x, b.x)
    assert torch.equal(a.n_accepted, b.n_accepted)


def test_step_functions_for_annealed_schemes():
    """ula_step / mala_step are usable from outside: a loop of mala_step calls (carrying score and
    log-density) equals `langevin` with the same noise."""
    x0 = torch.zeros(32, 2, dtype=F64)
    ref = solvers.langevin(TARGET.score, x0, 20, solvers.MALA(0.3), log_prob=TARGET.log_prob,
                           noise=solvers.SeededNoise(5))
    noise = solvers.SeededNoise(5)
    x = x0
    s, lp = TARGET.score(x), TARGET.log_prob(x)
    acc = torch.zeros(32, dtype=torch.long)
    for _ in range(20):
        out = solvers.mala_step(TARGET.score, TARGET.log_prob, x, 0.3, noise, score_x=s, log_prob_x=lp)
        x, s, lp = out.x, out.score, out.log_prob
        acc += out.accepted
    torch.testing.assert_close(x, ref.x)
    assert torch.equal(acc, ref.n_accepted)
    y = solvers.ula_step(TARGET.score, x0, torch.full((32,), 0.1, dtype=F64), torch.Generator().manual_seed(0))
    assert y.shape == x0.shape


def test_chains_are_batch_invariant_with_per_chain_seeds():
    seeds = [11, 12, 13, 14]
    x0 = torch.zeros(4, 2, dtype=F64)
    full = solvers.langevin(TARGET.score, x0, 30, solvers.MALA(0.3), log_prob=TARGET.log_prob,
                            noise=solvers.SeededNoise(seeds)).x
    part = solvers.langevin(TARGET.score, x0[[2, 0]], 30, solvers.MALA(0.3), log_prob=TARGET.log_prob,
                            noise=solvers.SeededNoise([13, 11])).x
    torch.testing.assert_close(part, full[[2, 0]], rtol=0, atol=0)


def test_samples_saving_and_callback():
    seen = []
    res = solvers.langevin(TARGET.score, torch.zeros(3, 2), 10, solvers.ULA(0.1), burn_in=4, save_every=2,
                           callback=lambda i, x: seen.append(i))
    assert res.samples.shape == (3, 3, 2)
    assert seen == list(range(10))


def test_divergent_ula_raises_with_step():
    """ULA with too large a step diverges; the error names the first non-finite step."""
    with pytest.raises(solvers.NonFiniteError, match="step"):
        solvers.langevin(TARGET.score, torch.zeros(4, 2), 2000, solvers.ULA(5.0), noise=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("call,match", [
    (lambda: solvers.langevin(TARGET.score, torch.zeros(2, 2), 5, solvers.MALA(0.1)), "log_prob"),
    (lambda: solvers.ULA(0.0), "step_size"),
    (lambda: solvers.ULA(-1.0), "step_size"),
    (lambda: solvers.langevin(TARGET.score, torch.zeros(2, 2), 5, solvers.ULA(torch.ones(3))), "step_size"),
    (lambda: solvers.langevin(lambda x: x[:, :1], torch.zeros(2, 2), 5, solvers.ULA(0.1)), "score"),
    (lambda: solvers.langevin(TARGET.score, torch.zeros(2, 2), -1, solvers.ULA(0.1)), "n_steps"),
    (lambda: solvers.langevin(TARGET.score, torch.zeros(2, 2), 5, "ula"), "sampler"),
    (lambda: solvers.langevin(TARGET.score, torch.zeros(2, 2), 5, solvers.ULA(0.1),
                              noise=solvers.BrownianTree(0, 1)), "noise"),
    (lambda: solvers.mala_step(TARGET.score, lambda x: x.sum(), torch.zeros(2, 2), 0.1), "log_prob"),
])
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
