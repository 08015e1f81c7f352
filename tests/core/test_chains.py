"""Discrete chains (DDPM, NCSN) and their exact conversions to and from the SDEs."""

import math

import numpy as np
import pytest
import torch

from scoresde import VESDE, VPSDE, DDPMSchedule, NCSNSchedule, SubVPSDE
from scoresde.vp_schedules import InterpolatedSchedule


def test_vp_discretize_is_ho_et_al():
    """VPSDE(0.1, 20).discretize(1000): betas linspace(1e-4, 0.02, 1000) (Ho et al. 2020, sec. 4)."""
    sched = VPSDE(0.1, 20.0).discretize(1000)
    assert torch.equal(sched.betas, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    ref = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    assert np.allclose(sched.alphas_cumprod.numpy(), ref, rtol=1e-12)
    # sqrt(alphabar_T) = 0.00635: the prior mismatch Ho et al. report as negligible.
    assert sched.sqrt_alphas_cumprod[-1].item() == pytest.approx(math.sqrt(ref[-1]), rel=1e-12)
    assert sched.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)
    assert sched == DDPMSchedule.linear(1000)


def test_ddpm_cosine_matches_nichol_dhariwal():
    """beta_i = min(1 - abar((i+1)/N) / abar(i/N), 0.999), abar(u) = cos^2((u + s)/(1 + s) pi/2)."""
    N, s = 1000, 0.008
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    ref = [min(1 - f((i + 1) / N) / f(i / N), 0.999) for i in range(N)]
    sched = DDPMSchedule.cosine(N)
    assert np.allclose(sched.betas.numpy(), ref, rtol=1e-12, atol=0)
    assert sched.betas[-1].item() == 0.999


def test_ddpm_posterior_is_bayes_rule():
    """q(x_{i-1} | x_i, x0) from the Gaussian product q(x_i | x_{i-1}) q(x_{i-1} | x0)."""
    sched = DDPMSchedule.linear(50)
    x0, xt = torch.randn(50, 3), torch.randn(50, 3)
    idx = torch.arange(50)
    mean, var = sched.posterior(x0, xt, idx)
    a, b = sched.alphas[:, None], sched.betas[:, None]
    abar_prev = sched.alphas_cumprod_prev[:, None]
    precision = a / b + 1 / (1 - abar_prev)
    ref_var = 1 / precision
    ref_mean = ref_var * (a.sqrt() * xt / b + abar_prev.sqrt() * x0 / (1 - abar_prev))
    # Step 0 has a deterministic predecessor (x_{-1} = x0): variance 0, mean x0.
    assert torch.allclose(mean[1:], ref_mean[1:], rtol=1e-10)
    assert torch.allclose(var[1:], ref_var[1:, 0], rtol=1e-10)
    assert torch.allclose(mean[0], x0[0]) and var[0].item() == 0.0
    assert sched.posterior_log_variance_clipped[0] == sched.posterior_log_variance_clipped[1]


@pytest.mark.parametrize("t", [0.1, 0.37, 0.8, 1.0])
def test_ddpm_converges_to_vp_sde(t):
    """log alphas_cumprod of discretize(N) at the step of time t -> -int_0^t beta, at order 1/N.

    Each 4x refinement must cut the log error by a factor in [3.5, 4.5] (first order), and
    at N = 16000 it is below 5e-3 (the constant is about 70 t^2 / N for Song's betas).
    """
    sde = VPSDE()
    exact = 2 * math.log(sde.marginal(t)[0].item())
    errors = []
    for N in (1000, 4000, 16000):
        sched = sde.discretize(N)
        i = round(t * N) - 1
        errors.append(abs(math.log(sched.alphas_cumprod[i].item()) - exact))
    for e0, e1 in zip(errors[:-1], errors[1:]):
        assert 3.5 < e0 / e1 < 4.5, errors
    assert errors[-1] < 5e-3


@pytest.mark.parametrize(
    "sde",
    [VPSDE(), VPSDE(0.5, 8.0, T=2.0), VPSDE(schedule="cosine"), SubVPSDE(), SubVPSDE(schedule="cosine")],
    ids=repr,
)
def test_vp_round_trip(sde):
    sched = sde.discretize(100)
    assert sched.to_sde() == sde
    assert sched.to_sde().discretize(100) == sched


def test_nonlinear_chain_discretize_is_exact_at_the_steps():
    """Any chain -> interpolated VPSDE: marginals at t_i = (i+1)T/N equal the chain's, and back."""
    sched = DDPMSchedule.cosine(300)
    sde = sched.to_sde()
    assert isinstance(sde.schedule, InterpolatedSchedule)
    t = sched.t_of_index(torch.arange(300))
    alpha, sigma = sde.marginal(t)
    assert torch.allclose(alpha**2, sched.alphas_cumprod, rtol=1e-12)
    assert torch.allclose(sigma**2, 1 - sched.alphas_cumprod, rtol=1e-10)
    assert torch.allclose(sde.discretize(300).betas, sched.betas, rtol=1e-9, atol=1e-15)


def test_from_alphas_cumprod_and_diffusers_style_float32_betas():
    betas32 = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2  # "scaled_linear"
    sched = DDPMSchedule(betas32)
    again = DDPMSchedule.from_alphas_cumprod(sched.alphas_cumprod)
    assert torch.allclose(again.betas, sched.betas, rtol=1e-9)
    assert not sched.is_linear()
    assert isinstance(sched.to_sde().schedule, InterpolatedSchedule)
    lin32 = DDPMSchedule(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32))
    assert lin32.is_linear() and lin32.to_sde().beta_max == pytest.approx(20.0, rel=1e-6)


def test_index_time_maps_are_inverse():
    sched = VPSDE().discretize(1000)
    i = torch.arange(1000)
    assert torch.allclose(sched.index_of_t(sched.t_of_index(i)), i.double())
    ncsn = VESDE().discretize(10)
    assert torch.allclose(ncsn.index_of_t(ncsn.t_of_index(torch.arange(10))), torch.arange(10).double())


def test_ncsn_levels_are_the_ve_sde():
    """NCSN levels sigma_i = sigma(i T/(L-1)); Song & Ermon's 10 levels from 1 to 0.01."""
    sde = VESDE(0.01, 50.0)
    ncsn = sde.discretize(232)  # NCSNv2's CIFAR-10 setting (Song & Ermon 2020)
    t = ncsn.t_of_index(torch.arange(232))
    assert torch.allclose(ncsn.sigmas, sde.marginal(t)[1], rtol=1e-12)
    assert ncsn.to_sde() == sde and ncsn.to_sde().discretize(232) == ncsn
    paper = NCSNSchedule.geometric(0.01, 1.0, 10)
    assert np.allclose(paper.sigmas.numpy(), np.geomspace(0.01, 1.0, 10), rtol=1e-12)
    assert paper.ratio == pytest.approx(100 ** (1 / 9))


def test_ncsn_non_geometric_has_no_ve_sde():
    with pytest.raises(ValueError, match="geometric"):
        NCSNSchedule([0.1, 0.2, 0.5, 1.0]).to_sde()


def test_q_sample_and_perturb():
    sched = VPSDE().discretize(100)
    x0, eps = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    idx = torch.tensor([0, 10, 50, 99])
    xt = sched.q_sample(x0, idx, eps)
    a, s = sched.sqrt_alphas_cumprod[idx], sched.sqrt_one_minus_alphas_cumprod[idx]
    assert torch.allclose(xt, a[:, None, None] * x0 + s[:, None, None] * eps)
    ncsn = VESDE().discretize(10)
    assert torch.allclose(ncsn.perturb(x0, idx % 10, eps), x0 + ncsn.sigmas[idx % 10][:, None, None] * eps)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: DDPMSchedule([0.1, 1.5]), "betas"),
        (lambda: DDPMSchedule([0.1, float("nan")]), "betas"),
        (lambda: DDPMSchedule(torch.tensor([1, 2])), "betas"),
        (lambda: DDPMSchedule.from_alphas_cumprod([0.9, 0.95]), "alphas_cumprod"),
        (lambda: NCSNSchedule([1.0, 0.5]), "sigmas"),
        (lambda: NCSNSchedule.geometric(1.0, 0.1, 10), "sigma_max"),
        (lambda: VPSDE().discretize(0), "N"),
        (lambda: VPSDE().discretize(20), r"N: expected more steps than beta_max = 20.0"),
        (lambda: VESDE().discretize(1), "N"),
        (lambda: DDPMSchedule.linear(10).marginal(torch.tensor([10])), "index"),
        (lambda: DDPMSchedule.linear(10).marginal(torch.tensor([1.0])), "index"),
        (lambda: DDPMSchedule.linear(10).to_sde("spline"), "kind"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
