"""Training recipes: the flow-matching velocity, EDM's preconditioning, noise-level proposals.

Exact identities are checked to float64 rounding against closed forms (autograd derivatives
of the marginals, Gaussian denoisers, Karras et al.'s table 1, diffusers' EDM scheduler).
Statistical checks use fixed seeds and tolerances of 4 to 5 standard errors computed from
the same draws (or the exact sampling law of the statistic), never from the observed result.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from scoresde import SDE, VESDE, VPSDE, DSMLoss, GaussianMixture, ScoreModel, SubVPSDE
from scoresde.losses import dsm_loss
from scoresde.noise_levels import LogitNormalTime, LogNormalSigma, LogSNRNormal
from scoresde.parameterization import MODEL_PREDICTIONS
from scoresde.preconditioning import (
    EDMPreconditioning,
    edm_coefficients,
    edm_loss_weight,
    edm_weighting,
)
from scoresde.recipes import edm_loss, flow_matching_loss
from scoresde.flow import flow_target, from_flow, marginal_derivatives, to_flow

D64 = torch.float64


class RectifiedFlowLike(SDE):
    """alpha_t = 1 - t, sigma_t = t on [0, 1]: rectified flow's interpolant, written in the test only."""

    T = 1.0

    def drift_coef(self, t):
        return -1.0 / (1.0 - t)  # d log alpha / dt

    def diffusion(self, t):
        return torch.sqrt(2.0 * t / (1.0 - t))  # g^2 = d sigma^2/dt - 2 f sigma^2

    def marginal(self, t):
        return 1.0 - t, t

    def log_snr(self, t):
        return 2.0 * (torch.log1p(-t) - torch.log(t))

    def t_from_log_snr(self, lam):
        return torch.sigmoid(-0.5 * lam)

    @property
    def prior_std(self):
        return 1.0

    def params(self):
        return {}

    def discretize(self, N):
        raise NotImplementedError


SDES = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=50.0),
    "vp-cosine": lambda: VPSDE(schedule="cosine"),
    "rf": RectifiedFlowLike,
}


def _autograd_derivatives(sde, t):
    """d alpha / dt and d sigma / dt of the closed-form marginal, by autograd, per time."""
    t = t.detach().clone().requires_grad_(True)
    alpha, sigma = sde.marginal(t)
    out = []
    for c in (alpha, sigma):
        if not c.requires_grad:  # a constant coefficient (VE's alpha = 1)
            out.append(torch.zeros_like(t))
        else:
            out.append(torch.autograd.grad(c.sum(), t, retain_graph=True)[0])
    return out[0].detach(), out[1].detach()


# ---------------------------------------------------------------------- the flow velocity
@pytest.mark.parametrize("name", SDES)
def test_marginal_derivatives_match_autograd_of_the_marginal(name):
    sde = SDES[name]()
    t = torch.linspace(0.02, 0.98, 49, dtype=D64) * sde.T
    da, ds = marginal_derivatives(sde, t)
    da_ref, ds_ref = _autograd_derivatives(sde, t)
    torch.testing.assert_close(da, da_ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ds, ds_ref, rtol=1e-9, atol=1e-12)


def test_rectified_flow_velocity_is_eps_minus_x0():
    sde = RectifiedFlowLike()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, generator=g, dtype=D64), torch.randn(6, 3, generator=g, dtype=D64)
    t = torch.rand(6, generator=g, dtype=D64) * 0.9 + 0.05
    da, ds = marginal_derivatives(sde, t)
    torch.testing.assert_close(flow_target(x0, eps, da, ds), eps - x0, rtol=0, atol=1e-12)


def test_an_sde_may_supply_its_own_derivatives():
    class Own(RectifiedFlowLike):
        def _marginal_derivatives(self, t):
            return -torch.ones_like(t), torch.ones_like(t)

    t = torch.tensor([0.5, 1.0], dtype=D64)  # exact also at t = 1, where alpha = 0
    da, ds = marginal_derivatives(Own(), t)
    assert da.tolist() == [-1.0, -1.0] and ds.tolist() == [1.0, 1.0]


@given(
    name=st.sampled_from(sorted(SDES)),
    u=st.floats(0.03, 0.97),
    seed=st.integers(0, 2**16),
    space=st.sampled_from(("eps", "score", "x0", "v")),
)
def test_flow_conversions_round_trip_against_closed_forms(name, u, seed, space):
    sde = SDES[name]()
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(4, 3, generator=g, dtype=D64), torch.randn(4, 3, generator=g, dtype=D64)
    t = torch.full((4,), u * sde.T, dtype=D64)
    alpha, sigma = sde.marginal(t)
    a, s = alpha[:, None], sigma[:, None]
    x_t = a * x0 + s * eps
    da, ds = _autograd_derivatives(sde, t)  # independent of marginal_derivatives
    flow = da[:, None] * x0 + ds[:, None] * eps  # the closed-form velocity d x_t / dt
    exact = {"eps": eps, "score": -eps / s, "x0": x0, "v": a * eps - s * x0}
    d_alpha, d_sigma = marginal_derivatives(sde, t)
    tol = dict(rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(from_flow(flow, x_t, alpha, sigma, d_alpha, d_sigma, target=space), exact[space], **tol)
    torch.testing.assert_close(to_flow(exact[space], x_t, alpha, sigma, d_alpha, d_sigma, source=space), flow, **tol)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rf"])
@pytest.mark.parametrize("target", MODEL_PREDICTIONS)
def test_flow_score_model_is_exact_on_gaussian_data(name, target):
    """A flow network equal to the exact velocity answers every parameterisation exactly."""
    sde = SDES[name]()
    data = GaussianMixture.gaussian(torch.tensor([0.7, -0.3], dtype=D64), torch.tensor([0.5, 1.3], dtype=D64))
    exact = data.diffused(sde)

    def exact_flow(x, t):  # the probability-flow ODE's vector field f x - g^2/2 score
        f, g2 = sde.drift_coef(t)[:, None], sde.diffusion(t)[:, None] ** 2
        return f * x - 0.5 * g2 * exact.score(x, t)

    model = ScoreModel(exact_flow, sde, prediction="flow")
    g = torch.Generator().manual_seed(1)
    t = (torch.rand(8, generator=g, dtype=D64) * 0.9 + 0.05) * sde.T
    x = exact.sample(8, t, generator=g)
    alpha, sigma = sde.marginal(t)
    score = exact.score(x, t)
    want = {
        "score": score,
        "eps": -sigma[:, None] * score,
        "x0": exact.denoiser(x, t),
        "v": alpha[:, None] * (-sigma[:, None] * score) - sigma[:, None] * exact.denoiser(x, t),
        "flow": exact_flow(x, t),
    }[target]
    torch.testing.assert_close(model.predict(x, t, target), want, rtol=1e-9, atol=1e-9)
    # And back: an exact eps-model answers the same velocity.
    eps_model = ScoreModel(exact.eps, sde, prediction="eps")
    torch.testing.assert_close(eps_model.flow(x, t), exact_flow(x, t), rtol=1e-9, atol=1e-9)


def test_score_model_rejects_unknown_predictions():
    with pytest.raises(ValueError, match="prediction"):
        ScoreModel(lambda x, t: x, VPSDE(), prediction="velocity")
    with pytest.raises(ValueError, match="target"):
        ScoreModel(lambda x, t: x, VPSDE(), prediction="flow").predict(torch.zeros(2, 2), 0.5, "u")


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rf"])
def test_flow_loss_is_the_velocity_error_and_the_score_loss_times_g4_over_4(name):
    sde = SDES[name]()
    g = torch.Generator().manual_seed(2)
    W = torch.randn(3, 3, generator=g, dtype=D64) / 2
    net = lambda x, t: torch.tanh(x @ W) * (1 + t[:, None])  # noqa: E731
    x0, noise = torch.randn(7, 3, generator=g, dtype=D64), torch.randn(7, 3, generator=g, dtype=D64)
    t = (torch.rand(7, generator=g, dtype=D64) * 0.9 + 0.05) * sde.T
    kw = dict(t=t, noise=noise, reduction="none")
    flow_model = ScoreModel(net, sde, prediction="flow")
    loss = flow_matching_loss(flow_model, x0, **kw)
    alpha, sigma = sde.marginal(t)
    da, ds = _autograd_derivatives(sde, t)
    x_t = alpha[:, None] * x0 + sigma[:, None] * noise
    direct = (net(x_t, t) - (da[:, None] * x0 + ds[:, None] * noise)).square().mean(1)
    torch.testing.assert_close(loss, direct, rtol=1e-10, atol=1e-12)
    # The same objective in score space: lambda = g^4 / 4 times the score error.
    score_err = dsm_loss(flow_model.score, x0, sde, weighting="uniform", **kw)
    g2 = sde.diffusion(t) ** 2
    torch.testing.assert_close(loss, g2**2 / 4 * score_err, rtol=1e-8, atol=1e-12)
    # An eps-model of the same function trains on the same number.
    eps_model = ScoreModel(lambda x, t: flow_model.eps(x, t), sde, prediction="eps")
    torch.testing.assert_close(flow_matching_loss(eps_model, x0, **kw), loss, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------- EDM preconditioning
def test_edm_coefficients_are_table_1_and_diffusers():
    sigma = torch.tensor([0.002, 0.1, 0.5, 1.0, 7.3, 80.0], dtype=D64)
    sd = 0.5
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, sd)
    for i, s in enumerate(sigma.tolist()):  # Karras et al. 2022, table 1, written out per value
        assert math.isclose(c_skip[i].item(), sd**2 / (s**2 + sd**2), rel_tol=1e-14)
        assert math.isclose(c_out[i].item(), s * sd / math.sqrt(s**2 + sd**2), rel_tol=1e-14)
        assert math.isclose(c_in[i].item(), 1 / math.sqrt(s**2 + sd**2), rel_tol=1e-14)
        assert math.isclose(c_noise[i].item(), math.log(s) / 4, rel_tol=1e-14)
        assert math.isclose(edm_loss_weight(sigma, sd)[i].item(), (s**2 + sd**2) / (s * sd) ** 2, rel_tol=1e-14)
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.EDMEulerScheduler(sigma_data=sd)
    x, F = torch.randn(6, 3, dtype=D64), torch.randn(6, 3, dtype=D64)
    ours = EDMPreconditioning(lambda y, c: F, sigma_data=sd).denoise(x, sigma)
    theirs = sched.precondition_outputs(x, F, sigma[:, None])
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(c_in[:, None] * x, sched.precondition_inputs(x, sigma[:, None]), rtol=1e-12, atol=0)
    torch.testing.assert_close(c_noise, sched.precondition_noise(sigma), rtol=1e-12, atol=0)


def test_edm_network_sees_c_in_x_and_c_noise():
    seen = {}

    def F(y, c):
        seen["y"], seen["c"] = y, c
        return torch.zeros_like(y)

    x, sigma = torch.randn(4, 2, dtype=D64), torch.tensor([0.1, 0.5, 2.0, 40.0], dtype=D64)
    D = EDMPreconditioning(F, sigma_data=0.5).denoise(x, sigma)
    torch.testing.assert_close(seen["y"], x / torch.sqrt(sigma**2 + 0.25)[:, None])
    torch.testing.assert_close(seen["c"], sigma.log() / 4)
    torch.testing.assert_close(D, 0.25 / (sigma**2 + 0.25)[:, None] * x)


@pytest.mark.parametrize("data", ["gaussian", "two-point"])
def test_edm_effective_target_and_input_have_unit_variance(data):
    """On data of standard deviation sigma_data, Var(c_in x) = Var((x0 - c_skip x)/c_out) = 1, lambda c_out^2 = 1."""
    sd, n = 0.5, 200_000
    g = torch.Generator().manual_seed(3)
    sigma = torch.tensor([0.01, 0.2, 0.5, 3.0, 80.0], dtype=D64)
    c_skip, c_out, c_in, _ = edm_coefficients(sigma, sd)
    torch.testing.assert_close(edm_loss_weight(sigma, sd) * c_out**2, torch.ones_like(sigma), rtol=1e-14, atol=0)
    for i in range(len(sigma)):
        if data == "gaussian":
            x0 = sd * torch.randn(n, generator=g, dtype=D64)
        else:  # +-sigma_data: only the second moment matters
            x0 = sd * (torch.randint(0, 2, (n,), generator=g).to(D64) * 2 - 1)
        x = x0 + sigma[i] * torch.randn(n, generator=g, dtype=D64)
        # Exact second moments: Var(target) = ((1 - c_skip)^2 sd^2 + c_skip^2 sigma^2) / c_out^2.
        exact = ((1 - c_skip[i]) ** 2 * sd**2 + c_skip[i] ** 2 * sigma[i] ** 2) / c_out[i] ** 2
        assert math.isclose(exact.item(), 1.0, rel_tol=1e-12)
        for z in ((x0 - c_skip[i] * x) / c_out[i], c_in[i] * x):
            m2 = z.square()
            se = m2.std() / math.sqrt(n)  # the standard error of the mean square
            assert abs(m2.mean().item() - 1.0) < 5 * se.item()


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rf"])
def test_edm_preconditioning_as_x0_model_is_exact_with_the_ideal_network(name):
    """F* = (D* - c_skip x)/c_out for Gaussian data makes ScoreModel's score the exact diffused score."""
    sde, sd, s0 = SDES[name](), 0.5, 0.8
    data = GaussianMixture.gaussian(torch.zeros(2, dtype=D64), torch.full((2,), s0, dtype=D64))
    exact = data.diffused(sde)

    def F_ideal(y, c_noise):  # inverts the preconditioning of the exact EDM denoiser
        sig = torch.exp(4 * c_noise)[:, None]
        x = y * torch.sqrt(sig**2 + sd**2)  # y = c_in x
        D = s0**2 / (s0**2 + sig**2) * x  # E[x0 | x0 + sig eps] for x0 ~ N(0, s0^2)
        c_skip, c_out = sd**2 / (sig**2 + sd**2), sig * sd / torch.sqrt(sig**2 + sd**2)
        return (D - c_skip * x) / c_out

    model = ScoreModel(EDMPreconditioning(F_ideal, sigma_data=sd, sde=sde), sde, prediction="x0")
    g = torch.Generator().manual_seed(4)
    t = (torch.rand(16, generator=g, dtype=D64) * 0.9 + 0.05) * sde.T
    x = exact.sample(16, t, generator=g)
    torch.testing.assert_close(model.score(x, t), exact.score(x, t), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.x0(x, t), exact.denoiser(x, t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["vp", "ve", "rf"])
def test_edm_loss_is_lambda_times_denoiser_error_and_unit_weight_on_F(name):
    sde, sd = SDES[name](), 0.5
    g = torch.Generator().manual_seed(5)
    W = torch.randn(3, 3, generator=g, dtype=D64)
    F = lambda y, c: torch.tanh(y @ W) + c[:, None]  # noqa: E731
    model = ScoreModel(EDMPreconditioning(F, sigma_data=sd, sde=sde), sde, prediction="x0")
    x0, noise = torch.randn(9, 3, generator=g, dtype=D64) * sd, torch.randn(9, 3, generator=g, dtype=D64)
    t = (torch.rand(9, generator=g, dtype=D64) * 0.9 + 0.05) * sde.T
    loss = edm_loss(model, x0, t=t, noise=noise, reduction="none", sigma_data=sd)
    alpha, sigma = sde.marginal(t)
    sig = sigma / alpha
    x_tilde = x0 + sig[:, None] * noise  # EDM's variable
    D = EDMPreconditioning(F, sigma_data=sd).denoise(x_tilde, sig)
    want = edm_loss_weight(sig, sd) * (D - x0).square().mean(1)
    torch.testing.assert_close(loss, want, rtol=1e-9, atol=1e-12)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sig, sd)
    target = (x0 - c_skip[:, None] * x_tilde) / c_out[:, None]
    torch.testing.assert_close(loss, (F(c_in[:, None] * x_tilde, c_noise) - target).square().mean(1), rtol=1e-9, atol=1e-12)


def test_edm_validation():
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPreconditioning(lambda x, c: x, sigma_data=0.0)
    with pytest.raises(TypeError, match="net"):
        EDMPreconditioning("net")
    with pytest.raises(TypeError, match="sde"):
        EDMPreconditioning(lambda x, c: x, sde="vp")
    with pytest.raises(ValueError, match="sigma"):
        edm_coefficients(torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="net"):
        EDMPreconditioning(lambda x, c: x[:, :1]).denoise(torch.zeros(2, 2), 1.0)
    with pytest.raises(TypeError, match="sde"):
        edm_weighting(None)


# ---------------------------------------------------------------------- noise levels
def _truncated_normal_cdf(lam, mean, std, lo, hi):
    a, b = (lo - mean) / std, (hi - mean) / std
    return (stats.norm.cdf((lam - mean) / std) - stats.norm.cdf(a)) / (stats.norm.cdf(b) - stats.norm.cdf(a))


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rf"])
@pytest.mark.parametrize("proposal", [LogNormalSigma(), LogitNormalTime(), LogitNormalTime(0.5, 0.7)], ids=repr)
def test_proposals_draw_the_truncated_normal_log_snr(name, proposal):
    sde, t_min, n = SDES[name](), 1e-3, 20_000
    t = proposal.sample(sde, n, t_min=t_min, generator=torch.Generator().manual_seed(6), dtype=D64)
    assert t.shape == (n,) and bool(((t >= t_min) & (t <= sde.T)).all())
    lam = sde.log_snr(t).numpy()
    lo, hi = sde.log_snr(torch.tensor([sde.T, t_min], dtype=D64)).tolist()
    ks = stats.kstest(lam, lambda v: _truncated_normal_cdf(v, proposal.mean, proposal.std, lo, hi))
    assert ks.pvalue > 1e-4, ks
    # The density of t integrates to one on [t_min, T] and matches the law of the draws.
    p = lambda s: proposal.density(sde, torch.tensor(s, dtype=D64), t_min=t_min).item()  # noqa: E731
    total, _ = integrate.quad(p, t_min, sde.T, limit=200, points=[0.01, 0.1, 0.5])
    assert math.isclose(total, 1.0, rel_tol=1e-6)


def test_proposal_parameters_are_the_papers():
    edm, sd3 = LogNormalSigma(), LogitNormalTime()
    assert (edm.p_mean, edm.p_std) == (-1.2, 1.2) and (edm.mean, edm.std) == (2.4, 2.4)
    assert (sd3.loc, sd3.scale) == (0.0, 1.0) and (sd3.mean, sd3.std) == (0.0, 2.0)
    # On the rectified flow, the logit-normal is logit(t) ~ N(m, s^2) exactly (up to the truncation at t_min).
    sde, m, s = RectifiedFlowLike(), 0.3, 0.8
    t = LogitNormalTime(m, s).sample(sde, 20_000, t_min=1e-9, generator=torch.Generator().manual_seed(7), dtype=D64)
    ks = stats.kstest(torch.logit(t).numpy(), stats.norm(m, s).cdf)
    assert ks.pvalue > 1e-4, ks


def _linear_score_loss(alpha, sigma, s0, s_w):
    """Per-dimension E|s_hat(x_t) + eps/sigma|^2 for s_hat = -x/(alpha^2 s_w^2 + sigma^2), x0 ~ N(0, s0^2)."""
    c = 1.0 / (alpha**2 * s_w**2 + sigma**2)
    return c**2 * alpha**2 * s0**2 + (1.0 / sigma - c * sigma) ** 2


CASES = [  # (sde, proposal, weighting, model space): each proposal with its paper's weighting
    ("vp", "edm", "edm", "score"),
    ("subvp", "edm", "edm", "score"),
    ("ve", "edm", "edm", "score"),
    ("rf", "edm", "edm", "x0"),
    ("subvp", "logit", "flow", "score"),
    ("ve", "logit", "flow", "score"),
    ("rf", "logit", "flow", "flow"),
]


@pytest.mark.parametrize("name,prop,weighting,space", CASES)
def test_weighted_loss_expectation_is_the_stated_integral(name, prop, weighting, space):
    r"""E_{t~p}[lambda(t) l(t)] by Monte Carlo against \int p(t) lambda(t) l(t) dt by quadrature.

    Gaussian data N(0, s0^2 I) and the linear score of a wrong variance s_w^2 give the
    per-time loss l(t) in closed form. (The VP SDE with the flow weighting is left out: its
    velocity grows like t^{-1/2} at t -> 0, and the integrand's variance is dominated by draws
    of probability 1e-4, so a standard error from 10^5 draws would not be trustworthy.)
    """
    sde, s0, s_w, d, n, t_min = SDES[name](), 0.9, 0.6, 2, 100_000, 1e-4
    proposal = LogNormalSigma() if prop == "edm" else LogitNormalTime()
    lam_fn = edm_weighting(sde, 0.5) if weighting == "edm" else "flow"

    def score(x, t):
        alpha, sigma = sde.marginal(t)
        return -x / (alpha**2 * s_w**2 + sigma**2)[:, None]

    if space == "score":
        model = score
    else:  # the same function as an x0- or flow-network, trained in its own space
        helper = ScoreModel(score, sde, prediction="score")
        model = ScoreModel(lambda x, t: helper.predict(x, t, space), sde, prediction=space)
    loss = DSMLoss(sde, lam_fn, t_eps=t_min, time_sampler=proposal, reduction="none")
    g = torch.Generator().manual_seed(8)
    x0 = s0 * torch.randn(n, d, generator=g, dtype=D64)
    per_sample = loss(model, x0, generator=g)
    mc, se = per_sample.mean().item(), per_sample.std().item() / math.sqrt(n)

    lam_w = DSMLoss(sde, lam_fn).weight  # the weighting lambda(t) the loss applies

    def integrand(t):
        t = torch.tensor([t], dtype=D64)
        alpha, sigma = sde.marginal(t)
        w = lam_w(sde, t, alpha, sigma)
        return (proposal.density(sde, t, t_min=t_min) * w * _linear_score_loss(alpha, sigma, s0, s_w)).item()

    # Quadrature in the log-SNR's standard score z, where the integrand is smooth.
    lo, hi = sde.log_snr(torch.tensor([sde.T, t_min], dtype=D64)).tolist()
    a, b = max((lo - proposal.mean) / proposal.std, -12.0), min((hi - proposal.mean) / proposal.std, 12.0)

    def in_z(z):
        t = sde.t_from_log_snr(torch.tensor(proposal.mean + proposal.std * z, dtype=D64)).item()
        dt_dz = proposal.std * sde.marginal(torch.tensor(t, dtype=D64))[1].item() ** 2 / sde.diffusion(torch.tensor(t, dtype=D64)).item() ** 2
        return integrand(t) * dt_dz

    exact, err = integrate.quad(in_z, a, b, limit=400, epsabs=0, epsrel=1e-10)
    assert err < 1e-3 * se
    assert abs(mc - exact) < 4.5 * se, (mc, exact, se)
    assert se < 0.02 * abs(exact)  # the comparison has power: a 10% error would be caught


def test_time_sampler_validation():
    with pytest.raises(TypeError, match="time_sampler"):
        DSMLoss(VPSDE(), time_sampler="lognormal")
    with pytest.raises(ValueError, match="time_sampler"):
        DSMLoss(VPSDE(), importance_sampling=True, time_sampler=LogNormalSigma())
    with pytest.raises(ValueError, match="p_std"):
        LogNormalSigma(p_std=0.0)
    with pytest.raises(ValueError, match="loc"):
        LogitNormalTime(loc=float("nan"))
    with pytest.raises(ValueError, match="t_min"):
        LogNormalSigma().sample(VPSDE(), 4, t_min=1.0)
    with pytest.raises(TypeError, match="sde"):
        LogNormalSigma().sample("vp", 4)
    with pytest.raises(TypeError, match="n"):
        LogSNRNormal(0.0, 1.0).sample(VPSDE(), 2.5)


def test_recipes_train_without_error_and_follow_dtype():
    sde = VPSDE()
    net = torch.nn.Linear(2, 2)
    F = lambda y, c: net(y) * (1 + c[:, None])  # noqa: E731
    model = ScoreModel(EDMPreconditioning(F, sde=sde), sde, prediction="x0")
    loss = edm_loss(model, torch.randn(16, 2), generator=torch.Generator().manual_seed(9))
    loss.backward()
    assert loss.dtype == torch.float32 and net.weight.grad is not None
    flow = ScoreModel(lambda x, t: net(x), sde, prediction="flow")
    loss = flow_matching_loss(flow, torch.randn(16, 2), time_sampler=LogitNormalTime(), generator=torch.Generator().manual_seed(9))
    assert torch.isfinite(loss) and "time_sampler" in repr(DSMLoss(sde, time_sampler=LogitNormalTime()))


def test_flow_conversion_validation():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="target"):
        from_flow(x, x, 1.0, 1.0, 0.0, 1.0, target="flow")
    with pytest.raises(ValueError, match="source"):
        to_flow(x, x, 1.0, 1.0, 0.0, 1.0, source="velocity")
    with pytest.raises(ValueError, match="u"):
        from_flow(torch.zeros(3, 3), x, 1.0, 1.0, 0.0, 1.0, target="eps")
    with pytest.raises(TypeError, match="sde"):
        marginal_derivatives("vp", torch.zeros(3))
    with pytest.raises(ValueError, match="eps"):
        flow_target(x, torch.zeros(2, 2), 1.0, 1.0)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "rf"])
def test_flow_loss_minimiser_is_the_exact_velocity(name):
    """At a fixed t, the flow loss of u = k x is quadratic in k; its minimiser is the exact
    velocity's coefficient f + (g^2/2)/v_t for x0 ~ N(0, s0^2 I), within 4.5 standard errors
    of the least-squares estimate."""
    sde, s0, n, d = SDES[name](), 0.7, 50_000, 2
    g = torch.Generator().manual_seed(10)
    x0, noise = s0 * torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, d, generator=g, dtype=D64)
    t = torch.full((n,), 0.35 * sde.T, dtype=D64)
    loss = lambda k: flow_matching_loss(ScoreModel(lambda x, t: k * x, sde, prediction="flow"), x0, t=t, noise=noise).item()  # noqa: E731
    l0, l1, l2 = loss(0.0), loss(1.0), loss(2.0)
    k_hat = 1.0 - 0.5 * (l2 - l0) / (l2 - 2 * l1 + l0)  # the vertex of the parabola through three points
    alpha, sigma = sde.marginal(t[:1])
    v_t = (alpha**2 * s0**2 + sigma**2).item()
    f, half_g2 = sde.drift_coef(t[:1]).item(), 0.5 * sde.diffusion(t[:1]).item() ** 2
    k_exact = f + half_g2 / v_t  # u* = f x - (g^2 / 2) score, score = -x / v_t
    x_t = alpha * x0 + sigma * noise
    da, ds = _autograd_derivatives(sde, t[:1])
    resid = (da * x0 + ds * noise) - k_hat * x_t
    se = math.sqrt((resid.square() * x_t.square()).sum().item()) / x_t.square().sum().item()  # sandwich SE of k_hat
    assert abs(k_hat - k_exact) < 4.5 * se, (k_hat, k_exact, se)
