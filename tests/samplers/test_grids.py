"""Time grids: endpoints, monotonicity, and the quantity each one spaces evenly."""

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, SubVPSDE
from scoresde.time_grids import KarrasGrid, UniformLogSNR, UniformTime
from scoresde.time_grids import check_grid, default_t_end


@pytest.mark.parametrize("grid", [UniformTime(), KarrasGrid(), KarrasGrid(rho=3.0), UniformLogSNR()], ids=repr)
def test_endpoints_and_monotone(sde, grid):
    ts = grid(sde, 25)
    assert ts.shape == (26,) and ts.dtype == torch.float64
    assert ts[0].item() == sde.T and ts[-1].item() == default_t_end(sde)
    assert bool((ts.diff() < 0).all())


def test_default_end_time():
    assert default_t_end(VPSDE()) == pytest.approx(1e-3)
    assert default_t_end(SubVPSDE(T=2.0)) == pytest.approx(2e-3)
    assert default_t_end(VESDE()) == 0.0
    assert default_t_end(VPSDE(), eps=1e-5) == pytest.approx(1e-5)


def test_uniform_time_on_ve_is_ncsn_geometric():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    ts = UniformTime()(sde, 9)
    torch.testing.assert_close(sde.sigma(ts).flip(0), sde.discretize(10).sigmas, rtol=1e-12, atol=0)


def test_karras_spacing(sde):
    """sigma_hat^(1/rho) is evenly spaced between its values at T and t_end (Karras et al. eq. 5)."""
    rho = 7.0
    ts = KarrasGrid(rho)(sde, 18, t_end=1e-3)
    sigma_hat = torch.exp(-0.5 * sde.log_snr(ts))
    u = sigma_hat ** (1 / rho)
    torch.testing.assert_close(u.diff(), torch.full((18,), (u[-1] - u[0]).item() / 18), rtol=1e-8, atol=1e-12)


def test_karras_on_ve_matches_edm_formula():
    """VE: sigma_hat = sigma, so the grid's sigmas are EDM's published formula."""
    sde = VESDE(sigma_min=0.002, sigma_max=80.0)
    ts = KarrasGrid(7.0)(sde, 17)
    i = torch.arange(18, dtype=torch.float64)
    edm = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(sde.sigma(ts), edm, rtol=1e-10, atol=1e-12)


def test_log_snr_spacing(sde):
    ts = UniformLogSNR()(sde, 30, t_end=1e-3)
    lam = sde.log_snr(ts)
    torch.testing.assert_close(lam.diff(), torch.full((30,), (lam[-1] - lam[0]).item() / 30), rtol=1e-8, atol=1e-10)


def test_device_and_dtype():
    ts = UniformLogSNR()(VPSDE(), 4, dtype=torch.float32)
    assert ts.dtype == torch.float32


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: UniformTime()(VPSDE(), 0), ValueError, r"steps: expected an int >= 1, got 0"),
        (lambda: UniformTime()(VPSDE(), 5, t_end=1.0), ValueError, r"t_end: expected a time in \[0, T\) = \[0, 1.0\), got 1.0"),
        (lambda: UniformTime()(VPSDE(), 5, t_end="0"), TypeError, r"t_end: expected a real number"),
        (lambda: KarrasGrid(rho=0.0), ValueError, r"rho: expected a finite number > 0, got 0.0"),
        (lambda: KarrasGrid()(VPSDE(), 5, t_end=0.0), ValueError, r"t_end: the Karras grid needs a positive noise level"),
        (lambda: UniformLogSNR()(SubVPSDE(), 5, t_end=0.0), ValueError, r"t_end: the uniform log-SNR grid needs"),
        (lambda: check_grid("grid", [1.0, 0.5], 1.0), TypeError, r"grid: expected a TimeGrid or a 1-D tensor"),
        (lambda: check_grid("grid", torch.tensor([1, 0]), 1.0), TypeError, r"grid: expected a floating-point tensor"),
        (lambda: check_grid("grid", torch.tensor([0.5]), 1.0), ValueError, r"at least 2 times"),
        (lambda: check_grid("grid", torch.tensor([1.0, math.nan]), 1.0), ValueError, r"expected finite times"),
        (lambda: check_grid("grid", torch.tensor([0.5, -0.1]), 1.0), ValueError, r"expected times in \[0, T\]"),
    ],
)
def test_bad_grids(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
