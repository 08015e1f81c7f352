"""The continuous SDEs: moment equations, marginals against simulation, log-SNR, priors."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import scoresde
from scoresde import VESDE, VPSDE, SubVPSDE

from .conftest import make_sde, sde_names
from .forward import ForwardProblem


@given(name=sde_names, u=st.floats(0.02, 0.98))
def test_drift_and_diffusion_agree_with_marginal(name, u):
    """d/dt log alpha = f(t) and d/dt sigma^2 = 2 f sigma^2 + g^2, by autograd in t."""
    sde = make_sde(name)
    t = torch.tensor(u * sde.T, requires_grad=True)
    alpha, sigma = sde.marginal(t)
    if alpha.requires_grad:
        (dalpha,) = torch.autograd.grad(alpha, t, retain_graph=True)
    else:  # a constant alpha (VE) has derivative 0
        dalpha = torch.zeros(())
    (dvar,) = torch.autograd.grad(sigma**2, t)
    with torch.no_grad():
        f, g = sde.drift_coef(t), sde.diffusion(t)
        assert torch.allclose(dalpha, f * alpha, rtol=1e-9, atol=1e-12)
        assert torch.allclose(dvar, 2 * f * sigma**2 + g**2, rtol=1e-9, atol=1e-12)


@given(name=sde_names, u=st.floats(0.0, 1.0))
def test_log_snr_inverse_round_trip(name, u):
    sde = make_sde(name)
    t = torch.tensor(u * sde.T)
    lam = sde.log_snr(t)
    if math.isinf(lam.item()):  # VP at t = 0 (or below float64's resolution of alpha): back to 0
        assert u < 1e-12 and sde.t_from_log_snr(lam).item() == 0.0
        return
    alpha, sigma = sde.marginal(t)
    assert torch.allclose(lam, 2 * torch.log(alpha) - 2 * torch.log(sigma), rtol=1e-10, atol=1e-10)
    assert torch.allclose(sde.t_from_log_snr(lam), t, rtol=1e-8, atol=1e-9)


def test_log_snr_is_decreasing(sde):
    t = torch.linspace(0.01, 1, 200) * sde.T
    assert bool((sde.log_snr(t).diff() < 0).all())


def test_published_constants():
    """Song et al. 2021: beta(t) = 0.1 + 19.9 t, alpha_1 = exp(-(0.1 + 19.9 / 2) / 2); VE sigma(t) = 0.01 (5000)^t."""
    vp = VPSDE()
    assert vp.beta(0.0).item() == pytest.approx(0.1)
    assert vp.beta(1.0).item() == pytest.approx(20.0)
    assert vp.beta(0.5).item() == pytest.approx(10.05)
    a1, s1 = vp.marginal(1.0)
    assert a1.item() == pytest.approx(math.exp(-0.5 * (0.1 + 0.5 * 19.9)), rel=1e-12)
    assert s1.item() == pytest.approx(math.sqrt(1 - math.exp(-(0.1 + 0.5 * 19.9))), rel=1e-12)
    assert vp.diffusion(0.25).item() == pytest.approx(math.sqrt(0.1 + 0.25 * 19.9))
    sub = SubVPSDE()
    a, s = sub.marginal(0.3)
    B = 0.1 * 0.3 + 0.5 * 19.9 * 0.09
    assert s.item() == pytest.approx(1 - math.exp(-B), rel=1e-12)
    assert sub.diffusion(0.3).item() == pytest.approx(math.sqrt((0.1 + 0.3 * 19.9) * (1 - math.exp(-2 * B))), rel=1e-12)
    ve = VESDE()
    assert ve.marginal(0.4)[1].item() == pytest.approx(0.01 * 5000**0.4, rel=1e-12)
    assert ve.diffusion(0.4).item() == pytest.approx(0.01 * 5000**0.4 * math.sqrt(2 * math.log(5000)), rel=1e-12)
    # Nichol & Dhariwal's cosine: alphabar(u) = cos^2((u + s)/(1 + s) pi/2) / cos^2(s/(1 + s) pi/2).
    cos = VPSDE(schedule="cosine")
    u = 0.6 * 0.9946
    f = lambda v: math.cos((v + 0.008) / 1.008 * math.pi / 2) ** 2
    assert cos.marginal(0.6)[0].item() ** 2 == pytest.approx(f(u) / f(0), rel=1e-12)


def test_subvp_variance_is_below_vp():
    t = torch.linspace(0.01, 1, 50)
    assert bool((SubVPSDE().marginal(t)[1] ** 2 < VPSDE().marginal(t)[1] ** 2).all())


def test_vp_linear_T_rescales_time():
    """With horizon T the linear schedule runs Song's process on the clock t / T."""
    a, b = VPSDE(T=1.0), VPSDE(T=3.0)
    u = torch.linspace(0, 1, 11)
    for x, y in zip(a.marginal(u), b.marginal(3 * u)):
        assert torch.allclose(x, y, rtol=1e-12)


def _em_moments(sde, m0, v0, n_steps):
    """Exact mean and variance of the Euler-Maruyama chain of a linear SDE (a deterministic recursion)."""
    ts = torch.linspace(0, sde.T, n_steps + 1)
    m, v = m0, v0
    for t0, t1 in zip(ts[:-1], ts[1:]):
        dt = t1 - t0
        k = 1 + sde.drift_coef(t0) * dt
        m, v = k * m, k * k * v + sde.diffusion(t0) ** 2 * dt
    return m, v


def _start(sde, x0):
    """Start of the forward process: VE's time 0 is data perturbed with sigma_min."""
    _, s0 = sde.marginal(0.0)
    return x0, s0**2


def test_marginal_is_the_limit_of_the_discretised_sde(sde):
    """The EM chain's exact moments converge to marginal(T) at first order in the step.

    The interpolated schedule is left out: its beta jumps at every knot, where Euler's
    order-1 error expansion does not hold (the moment equations are checked for it above).
    """
    if "InterpolatedSchedule" in repr(sde):
        pytest.skip("piecewise-constant beta: no smooth error expansion")
    x0 = 1.7
    m0, v0 = _start(sde, torch.tensor(x0))
    alpha, sigma = sde.marginal(sde.T)
    errors = []
    for n in (200, 400, 800, 1600):
        m, v = _em_moments(sde, m0, v0, n)
        errors.append(abs(m - alpha * x0).item() + abs(v - sigma**2).item())
    rates = [math.log2(e0 / e1) for e0, e1 in zip(errors[:-1], errors[1:])]
    assert all(0.8 < r < 1.2 for r in rates), rates  # weak order 1 of Euler-Maruyama
    assert errors[-1] < 0.02 * (1 + sigma.item() ** 2)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve-small"])
def test_marginal_against_simulation(name):
    """Simulating the forward SDE (fine EM steps) matches the chain's exact moments statistically.

    n = 20000 paths; the sample mean has standard error sqrt(v / n) and the sample
    variance sqrt(2 / n) v; both are asserted within 4.5 standard errors (a two-sided
    false-alarm probability below 1e-5 each), against the EM chain's exact moments, which
    the test above ties to `marginal`.
    """
    sde = make_sde(name)
    n, steps, x0 = 20000, 400, 1.3
    gen = torch.Generator().manual_seed(1234)
    m0, v0 = _start(sde, torch.tensor(x0))
    x = x0 + v0.sqrt() * torch.randn(n, 1, generator=gen)
    problem = ForwardProblem(sde)
    ts = torch.linspace(0, sde.T, steps + 1)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        dt = t1 - t0
        tb = t0.expand(n)
        x = x + problem.drift(x, tb) * dt + problem.diffusion(x, tb) * dt.sqrt() * torch.randn(n, 1, generator=gen)
    m, v = _em_moments(sde, m0, v0, steps)
    assert abs(x.mean().item() - m.item()) < 4.5 * math.sqrt(v.item() / n)
    assert abs(x.var().item() - v.item()) < 4.5 * math.sqrt(2 / n) * v.item()
    alpha, sigma = sde.marginal(sde.T)  # and the closed form, within the step's bias
    assert abs(x.mean().item() - alpha.item() * x0) < 4.5 * math.sqrt(v.item() / n) + abs(m - alpha * x0).item()


def test_perturb_and_shapes(sde):
    x0 = torch.randn(3, 2, 4, 4)
    eps = torch.randn_like(x0)
    t = torch.tensor([0.1, 0.5, 0.9]) * sde.T
    xt = sde.perturb(x0, t, eps)
    alpha, sigma = sde.marginal(t)
    for i in range(3):
        assert torch.allclose(xt[i], alpha[i] * x0[i] + sigma[i] * eps[i])
    assert sde.drift(x0, t).shape == x0.shape
    scalar = sde.perturb(x0, 0.5 * sde.T, eps)
    assert torch.allclose(scalar, alpha[1] * x0 + sigma[1] * eps)


def test_prior(sde):
    gen = torch.Generator().manual_seed(0)
    x = sde.prior_sample((4000, 3), generator=gen)
    assert x.shape == (4000, 3) and x.dtype == torch.float64
    assert abs(x.std().item() / sde.prior_std - 1) < 4.5 * math.sqrt(0.5 / x.numel())
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(x[:5]).sum(-1)
    assert torch.allclose(sde.prior_logp(x[:5]), ref)


def test_reverse_sde_and_probability_flow(sde):
    """Reverse drift f x - g^2 s, probability-flow drift f x - g^2 s / 2."""
    x = torch.randn(5, 3)
    t = torch.full((5,), 0.4 * sde.T)
    score = lambda x, t: -x  # any callable
    rev, ode = sde.reverse(score), sde.reverse(score, probability_flow=True)
    f, g = sde.drift_coef(t)[:, None], sde.diffusion(t)[:, None]
    assert torch.allclose(rev.drift(x, t), f * x + g**2 * x)
    assert torch.allclose(rev.diffusion(x, t), g.expand_as(x))
    assert torch.allclose(ode.vector_field(x, t), f * x + 0.5 * g**2 * x)
    assert torch.equal(ode.diffusion(x, t), torch.zeros_like(x))


def test_dtype_follows_input():
    sde = VPSDE()
    x = torch.randn(4, 2, dtype=torch.float32)
    assert sde.drift(x, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)).dtype == torch.float32
    assert sde.perturb(x, 0.5).dtype == torch.float32
    assert sde.marginal(torch.tensor(0.5, dtype=torch.float32))[0].dtype == torch.float32


def test_equality_and_repr():
    assert VPSDE() == VPSDE(0.1, 20.0, 1.0)
    assert VPSDE() != SubVPSDE()
    assert VESDE(0.01, 50) != VESDE(0.01, 60)
    assert "beta_max=20.0" in repr(VPSDE())


@pytest.mark.cuda
def test_cuda_keeps_device():
    sde = VPSDE()
    x = torch.randn(8, 3, device="cuda")
    t = torch.rand(8, device="cuda")
    assert sde.perturb(x, t).device.type == "cuda"
    assert sde.marginal(t)[0].device.type == "cuda"
    assert sde.reverse(lambda x, t: -x).drift(x, t).device.type == "cuda"
    assert sde.prior_sample((2, 3), device="cuda").device.type == "cuda"


# ---------------------------------------------------------------------- a new SDE: the protocol only
class _ConstantBetaVP(scoresde.SDE):
    """The VP SDE with beta = 1 written as a user would: the five coefficient methods and the prior,
    no stubs, no checks (alpha = e^{-t/2}, sigma^2 = 1 - e^{-t}, log-SNR = -t - log(1 - e^{-t}))."""

    T = 1.0
    prior_std = 1.0

    def drift_coef(self, t):
        return -0.5 * torch.ones_like(t)

    def diffusion(self, t):
        return torch.ones_like(t)

    def marginal(self, t):
        return torch.exp(-0.5 * t), torch.sqrt(-torch.expm1(-t))

    def log_snr(self, t):
        return -t - torch.log(-torch.expm1(-t))

    def t_from_log_snr(self, log_snr):
        return torch.nn.functional.softplus(-log_snr)  # e^{-t} = sigmoid(log_snr)


def test_a_new_sde_needs_only_the_protocol():
    """A subclass with the protocol alone takes numbers, compares by its parameters, and samples
    exactly as the built-in VPSDE with the same (constant) beta, through the same entry point."""
    toy, ref = _ConstantBetaVP(), VPSDE(beta_min=1.0, beta_max=1.0)
    alpha, sigma = toy.marginal(0.3)  # a number becomes a tensor
    torch.testing.assert_close((alpha, sigma), ref.marginal(torch.tensor(0.3)))
    torch.testing.assert_close(toy.t_from_log_snr(toy.log_snr(0.3)), torch.tensor(0.3))
    assert toy == _ConstantBetaVP() and repr(toy) == "_ConstantBetaVP()"
    mix = scoresde.GaussianMixture(torch.tensor([[-1.0], [1.5]], dtype=torch.float64), torch.full((2, 1), 0.3, dtype=torch.float64))
    xs = [scoresde.sample(s, mix.diffused(s).score, (64, 1), steps=10, generator=0, dtype=torch.float64) for s in (toy, ref)]
    torch.testing.assert_close(xs[0], xs[1])
    with pytest.raises(ValueError, match=r"t: expected times in \[0, T\] = \[0, 1.0\], got 1.5"):
        toy.perturb(torch.zeros(2, 1), 1.5)  # checked at the entry point
