"""The eps/score/x0/v identities and Tweedie's formula, on analytic mixtures (property tests)."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scoresde import GaussianMixture, ScoreModel, VPSDE
from scoresde.parameterization import PREDICTIONS, convert, score_to_x0
from scoresde.parameterization import eps_to_v, v_to_x0, x0_to_v

from .conftest import make_sde, sde_names

times = st.floats(0.02, 1.0)
seeds = st.integers(0, 2**31 - 1)


def _mixture(seed, dim=3, K=4):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(K, dim, generator=g)
    stds = 0.2 + torch.rand(K, dim, generator=g)
    weights = 0.1 + torch.rand(K, generator=g)
    return GaussianMixture(means, stds, weights, labels=torch.arange(K) % 2)


@given(name=sde_names, u=times, seed=seeds, source=st.sampled_from(PREDICTIONS), target=st.sampled_from(PREDICTIONS))
def test_conversions_round_trip(name, u, seed, source, target):
    """source -> target -> source is the identity, for every pair, SDE and time."""
    sde = make_sde(name)
    g = torch.Generator().manual_seed(seed)
    t = torch.full((5,), u * sde.T)
    alpha, sigma = sde.marginal(t)
    x_t, value = torch.randn(5, 2, 3, generator=g), torch.randn(5, 2, 3, generator=g)
    there = convert(value, x_t, alpha, sigma, source=source, target=target)
    back = convert(there, x_t, alpha, sigma, source=target, target=source)
    assert torch.allclose(back, value, rtol=1e-8, atol=1e-8)


@given(name=sde_names, u=times, seed=seeds)
def test_conversions_agree_with_the_forward_draw(name, u, seed):
    """From x_t = alpha x0 + sigma eps: score = -eps/sigma, x0 back, v = alpha eps - sigma x0."""
    sde = make_sde(name)
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    t = torch.rand(6, generator=g) * 0.98 * sde.T + 0.02 * sde.T
    x_t = sde.perturb(x0, t, eps)
    alpha, sigma = sde.marginal(t)
    a, s = alpha[:, None], sigma[:, None]
    v = a * eps - s * x0
    assert torch.allclose(convert(eps, x_t, alpha, sigma, source="eps", target="score"), -eps / s)
    assert torch.allclose(convert(eps, x_t, alpha, sigma, source="eps", target="x0"), x0, atol=1e-8)
    assert torch.allclose(eps_to_v(eps, x_t, alpha, sigma), v, atol=1e-8)
    assert torch.allclose(x0_to_v(x0, x_t, alpha, sigma), v, atol=1e-8)
    assert torch.allclose(v_to_x0(v, x_t, alpha, sigma), x0, atol=1e-8)
    assert torch.allclose(convert(v, x_t, alpha, sigma, source="v", target="eps"), eps, atol=1e-8)


@given(name=sde_names, u=times, seed=seeds)
def test_tweedie_formula_is_the_posterior_mean(name, u, seed):
    """E[x0 | x_t] of the mixture (from component posteriors) = (x_t + sigma^2 score) / alpha."""
    sde = make_sde(name)
    exact = _mixture(seed).diffused(sde)
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.full((8,), u * sde.T)
    x_t = exact.sample(8, t, generator=g)
    alpha, sigma = sde.marginal(t)
    tweedie = score_to_x0(exact.score(x_t, t), x_t, alpha, sigma)
    assert torch.allclose(tweedie, exact.denoiser(x_t, t), rtol=1e-8, atol=1e-8 * sde.prior_std)
    # and E[eps | x_t] = -sigma * score
    assert torch.allclose(exact.eps(x_t, t), -sigma[:, None] * exact.score(x_t, t), rtol=1e-7, atol=1e-7)


@given(name=sde_names, u=times, seed=seeds)
def test_score_is_the_gradient_of_the_log_density(name, u, seed):
    sde = make_sde(name)
    exact = _mixture(seed).diffused(sde)
    t = torch.full((5,), u * sde.T)
    x = exact.sample(5, t, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    (grad,) = torch.autograd.grad(exact.log_prob(x, t).sum(), x)
    assert torch.allclose(grad, exact.score(x.detach(), t), rtol=1e-8, atol=1e-10)


def test_data_log_density_is_normalised():
    """The 1-D mixture density integrates to 1 (trapezoid on a wide grid)."""
    mix = GaussianMixture(torch.tensor([[-2.0], [1.0], [4.0]]), torch.tensor([0.5, 1.0, 0.3]), [0.2, 0.5, 0.3])
    x = torch.linspace(-12, 14, 20001)[:, None]
    for alpha, sigma in [(1.0, 0.0), (0.6, 0.8)]:
        p = mix.log_prob(x, alpha, sigma).exp()
        assert torch.trapezoid(p, x[:, 0]).item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve-small"])
def test_noise_posterior_mean_by_monte_carlo(name):
    """E[eps | x_t] = -sigma_t grad log p_t(x_t), by self-normalised importance sampling.

    Draw x0_i from the data and weight by w_i = N(x_t; alpha x0_i, sigma^2): the weighted
    mean of eps_i = (x_t - alpha x0_i)/sigma estimates E[eps | x_t]. Its standard error is
    the delta-method sqrt(sum w_i^2 (eps_i - est)^2) / sum w_i; we assert within 5 of them
    (and the effective sample size is checked to be large, so the estimate is reliable).
    """
    sde = make_sde(name)
    mix = GaussianMixture(torch.tensor([[-1.5], [0.5], [2.0]]), torch.tensor([0.4, 0.3, 0.6]), [0.3, 0.3, 0.4])
    exact = mix.diffused(sde)
    g = torch.Generator().manual_seed(7)
    n = 400_000
    x0 = mix.sample(n, generator=g)
    for u in (0.3, 0.6):
        t = u * sde.T
        alpha, sigma = (v.item() for v in sde.marginal(t))
        for x_t in (-1.0, 0.3, 1.8):
            x_t = alpha * x_t
            log_w = -0.5 * ((x_t - alpha * x0[:, 0]) / sigma) ** 2
            w = torch.softmax(log_w, 0)
            eps = (x_t - alpha * x0[:, 0]) / sigma
            est = (w * eps).sum()
            se = torch.sqrt((w**2 * (eps - est) ** 2).sum())
            ess = 1 / (w**2).sum()
            assert ess > 1000
            expected = -sigma * exact.score(torch.tensor([[x_t]]), torch.tensor([t]))[0, 0]
            assert abs(est - expected) < 5 * se, (name, u, x_t, est.item(), expected.item(), se.item())


class _Net(torch.nn.Module):
    """A 'network' that returns the exact prediction of the given type (for ScoreModel tests)."""

    def __init__(self, exact, sde, kind):
        super().__init__()
        self.exact, self.sde, self.kind = exact, sde, kind
        self.seen_t = None

    def forward(self, x, t):
        self.seen_t = t
        alpha, sigma = self.sde.marginal(t)
        return convert(self.exact.eps(x, t), x, alpha, sigma, source="eps", target=self.kind)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_score_model_answers_every_parameterisation(kind):
    sde = make_sde("vp")
    exact = _mixture(3).diffused(sde)
    model = ScoreModel(_Net(exact, sde, kind), sde, prediction=kind)
    x, t = torch.randn(7, 3), torch.linspace(0.1, 0.9, 7)
    assert torch.allclose(model.score(x, t), exact.score(x, t), rtol=1e-8, atol=1e-9)
    assert torch.allclose(model(x, t), exact.score(x, t), rtol=1e-8, atol=1e-9)
    assert torch.allclose(model.eps(x, t), exact.eps(x, t), rtol=1e-8, atol=1e-9)
    assert torch.allclose(model.x0(x, t), exact.denoiser(x, t), rtol=1e-8, atol=1e-9)
    alpha, sigma = sde.marginal(t)
    assert torch.allclose(model.v(x, t), eps_to_v(exact.eps(x, t), x, alpha, sigma), rtol=1e-8, atol=1e-9)
    model.score(x, 0.5)  # a scalar time reaches the network as a (B,) tensor
    assert model.net.seen_t.shape == (7,)


def test_score_model_time_input_for_discrete_networks():
    sde = VPSDE()
    sched = sde.discretize(1000)
    seen = {}

    def net(x, index):
        seen["index"] = index
        return torch.zeros_like(x)

    model = ScoreModel(net, sde, "eps", time_input=lambda t: sched.index_of_t(t).round().long())
    model.eps(torch.randn(2, 3), torch.tensor([0.001, 1.0]))
    assert seen["index"].tolist() == [0, 999]


def test_score_model_bad_input():
    sde = VPSDE()
    with pytest.raises(ValueError, match="prediction"):
        ScoreModel(lambda x, t: x, sde, prediction="noise")
    with pytest.raises(TypeError, match="sde"):
        ScoreModel(lambda x, t: x, "vp")
    with pytest.raises(TypeError, match="net"):
        ScoreModel(3, sde)
    model = ScoreModel(lambda x, t: x[:, :1], sde)
    with pytest.raises(ValueError, match="net: expected an output shaped like x"):
        model.score(torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match="target"):
        convert(torch.ones(1, 1), torch.ones(1, 1), 1.0, 1.0, source="eps", target="noise")


@pytest.mark.cuda
def test_identities_on_cuda():
    sde = VPSDE()
    exact = _mixture(1).diffused(sde)
    x = torch.randn(16, 3, device="cuda", dtype=torch.float64)
    t = torch.rand(16, device="cuda", dtype=torch.float64) * 0.9 + 0.05
    alpha, sigma = sde.marginal(t)
    s = exact.score(x, t)
    assert s.device.type == "cuda"
    assert torch.allclose(score_to_x0(s, x, alpha, sigma), exact.denoiser(x, t), rtol=1e-8, atol=1e-8)
    assert math.isfinite(exact.log_prob(x, t).sum().item())
