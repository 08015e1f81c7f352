"""Annealed Langevin dynamics against the exact law of ULA on a Gaussian; NCSNv2's rules against its published settings."""

import math

import pytest
import torch
from scipy import stats

import scoresde
from scoresde import VESDE, AnnealedLangevin, GaussianMixture
from scoresde.samplers import ncsn_levels, ncsn_ratio, ncsn_sigma_max, ncsn_step_size


def test_annealed_langevin_reaches_ulas_stationary_law():
    r"""On N(mu, s^2 I) the last level's chain (step eps) is ULA on N(mu, v), v = s^2 + sigma_L^2, whose
    stationary law is N(mu, v / (1 - eps / (2v))): here 11% wider than v, far outside the
    test's resolution (4 standard errors of a variance from n = 10000 draws: 5.7%). The
    final denoising maps it to N(mu, var (s^2/v)^2).
    """
    n, s, sigma_min = 10000, 0.1, 0.1
    mean = torch.tensor([1.0, -1.0])
    sde = VESDE(sigma_min=sigma_min, sigma_max=3.0)
    exact = GaussianMixture.gaussian(mean, torch.full((2,), s)).diffused(sde)
    eps = 0.004
    sampler = AnnealedLangevin(n_steps_each=100, step_lr=eps)
    kw = dict(shape=(n, 2), sampler=sampler, steps=9, generator=torch.Generator().manual_seed(0))
    x = scoresde.sample(sde, exact.score, denoise=False, **kw)
    v = s**2 + sigma_min**2
    var = v / (1 - eps / (2 * v))
    assert ((x.mean(0) - mean) / math.sqrt(var / n)).abs().max() < 4
    assert ((x.var(0) / var - 1) / math.sqrt(2 / (n - 1))).abs().max() < 4
    x0 = scoresde.sample(sde, exact.score, denoise=True, **kw)
    var0 = var * (s**2 / v) ** 2
    assert ((x0.var(0) / var0 - 1) / math.sqrt(2 / (n - 1))).abs().max() < 4


def test_sigma_max_is_the_largest_pairwise_distance():
    data = torch.randn(50, 3, 4, generator=torch.Generator().manual_seed(0))
    assert ncsn_sigma_max(data, chunk=7) == pytest.approx(torch.pdist(data.flatten(1)).max().item(), rel=1e-12)


@pytest.mark.parametrize("dim", [5, 784, 3072, 12288])
def test_ratio_solves_the_overlap_equation(dim):
    """Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 1/2 (Technique 2)."""
    g = ncsn_ratio(dim)
    c = math.sqrt(2 * dim) * (g - 1)
    assert stats.norm.cdf(c + 3 * g) - stats.norm.cdf(c - 3 * g) == pytest.approx(0.5, abs=1e-9)
    assert ncsn_ratio(dim, target=0.6) < g  # more overlap, closer levels


def test_levels_for_cifar10():
    """D = 3072 from 50 to 0.01: the rule gives 220 levels (NCSNv2 used 232, ratio 1.0376, overlap 0.567)."""
    levels = ncsn_levels(0.01, 50.0, 3072)
    assert levels.L == 220 and levels.is_geometric()
    assert levels.sigmas[0].item() == pytest.approx(0.01) and levels.sigmas[-1].item() == pytest.approx(50.0)
    assert levels.ratio <= ncsn_ratio(3072)


@pytest.mark.parametrize(
    "sigma_max, L, n_steps, published",
    [(50.0, 232, 5, 6.2e-6), (90.0, 500, 5, 3.3e-6)],  # NCSNv2's CIFAR-10 and CelebA configurations
)
def test_step_size_reproduces_ncsnv2(sigma_max, L, n_steps, published):
    """Technique 4 with the published levels and steps per level gives the published step size (2 digits)."""
    ratio = (sigma_max / 0.01) ** (1 / (L - 1))
    assert ncsn_step_size(ratio, n_steps, 0.01) == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: ncsn_sigma_max(torch.zeros(1, 3)), ValueError, r"data: expected at least 2 samples"),
        (lambda: ncsn_ratio(0), ValueError, r"dim: expected an int >= 1, got 0"),
        (lambda: ncsn_ratio(4), ValueError, r"dim: the rule needs sqrt\(2D\) > 3, i.e. D >= 5"),
        (lambda: ncsn_ratio(10, target=1.0), ValueError, r"target: expected a value in \(0, 1\)"),
        (lambda: ncsn_levels(1.0, 0.5, 10), ValueError, r"sigma_max: expected a value > sigma_min"),
        (lambda: ncsn_step_size(0.9, 5, 0.01), ValueError, r"ratio: expected the geometric ratio gamma > 1"),
        (lambda: ncsn_step_size(1.1, 0, 0.01), ValueError, r"n_steps_each: expected an int >= 1"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
