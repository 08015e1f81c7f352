"""The examples' 2-D toy data and their noise floor: i.i.d. draws, so that a perfect model reaches the floor."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import _common as C  # noqa: E402


def test_two_moons_is_the_moons_distribution():
    n = 40_000
    x = C.two_moons(n, 0.0, np.random.default_rng(0))
    upper = np.abs(np.hypot(x[:, 0], x[:, 1]) - 1.0) < 1e-12
    lower = np.abs(np.hypot(x[:, 0] - 1.0, x[:, 1] - 0.5) - 1.0) < 1e-12
    assert np.all(upper ^ lower)  # without noise every point is on exactly one half circle
    assert np.all(x[upper, 1] >= 0) and np.all(x[lower, 1] <= 0.5)
    # each moon with probability 1/2 (binomial, 4 standard errors), angles uniform on [0, pi]
    assert abs(upper.mean() - 0.5) < 4 * math.sqrt(0.25 / n)
    theta_up = np.arctan2(x[upper, 1], x[upper, 0])
    theta_low = np.arctan2(0.5 - x[lower, 1], 1.0 - x[lower, 0])
    for theta in (theta_up, theta_low):
        assert stats.kstest(theta / math.pi, "uniform").pvalue > 1e-3
    # independent draws: the share on the upper moon varies across small sets like a binomial
    # (scikit-learn's stratified make_moons would give exactly 1/2 every time)
    m, k = 100, 400
    draws = [C.two_moons(m, 0.0, np.random.default_rng(10 + j)) for j in range(k)]
    shares = np.array([(np.abs(np.hypot(d[:, 0], d[:, 1]) - 1.0) < 1e-12).mean() for d in draws])
    ratio = shares.var(ddof=1) / (0.25 / m)  # (k - 1) ratio ~ chi-square with k - 1 degrees of freedom
    assert stats.chi2.ppf(1e-4, k - 1) < (k - 1) * ratio < stats.chi2.ppf(1 - 1e-4, k - 1)
    # the noise is N(0, noise^2) per coordinate around the same points
    y = C.two_moons(n, 0.05, np.random.default_rng(0))
    resid = (y - x).ravel()
    assert abs(resid.std() - 0.05) < 4 * 0.05 / math.sqrt(2 * resid.size)


def test_moons_match_make_moons_in_distribution():
    """Our i.i.d. moons and scikit-learn's stratified ones are the same distribution (sliced W2 near zero)."""
    from sklearn.datasets import make_moons

    a = torch.tensor(C.two_moons(10_000, 0.05, np.random.default_rng(1)))
    b = torch.tensor(make_moons(10_000, noise=0.05, random_state=1)[0])
    c = torch.tensor(C.two_moons(10_000, 0.05, np.random.default_rng(2)))
    # the distance to make_moons is no larger than between two of our own i.i.d. sets, up to noise:
    # the sliced W2 of two independent sets varies by about 15% (standard deviation of the five
    # pairs in the training benchmark), so 1.5 is three of those above
    assert C.sliced_w2(a, b, 64) < 1.5 * C.sliced_w2(a, c, 64)


def test_fresh_iid_draws_score_the_noise_floor():
    """A perfect model (fresh draws) scores the floor; stratified make_moons sets sit far below it."""
    from sklearn.datasets import make_moons

    held = C.HeldOut("moons", 2000, seed=0, pairs=5, n_proj=64)
    fresh = [held.distance(C.toy_data("moons", 2000, seed=50 + k)) for k in range(5)]
    # both are means of 5 distances with the spread floor_std: the difference has SE floor_std sqrt(2/5)
    assert abs(np.mean(fresh) - held.floor) < 4 * held.floor_std * math.sqrt(2 / 5)
    strat = [C.sliced_w2(torch.tensor(make_moons(2000, noise=0.05, random_state=2 * k)[0]),
                         torch.tensor(make_moons(2000, noise=0.05, random_state=2 * k + 1)[0]), 64) for k in range(5)]
    raw_floor = [C.sliced_w2(torch.tensor(C.two_moons(2000, 0.05, np.random.default_rng(2 * k))),
                             torch.tensor(C.two_moons(2000, 0.05, np.random.default_rng(2 * k + 1))), 64) for k in range(5)]
    assert np.mean(strat) < 0.5 * np.mean(raw_floor)


@pytest.mark.parametrize("name", C.TOY_SETS)
def test_toy_data_is_standardised_and_seeded(name):
    x = C.toy_data(name, 20_000, seed=3)
    assert x.dtype == torch.float32 and x.shape == (20_000, 2)
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=0.05)
    assert torch.allclose(x.std(0), torch.ones(2), atol=0.05)
    assert torch.equal(x, C.toy_data(name, 20_000, seed=3))
    assert not torch.equal(x, C.toy_data(name, 20_000, seed=4))
