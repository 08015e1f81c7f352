r"""Exact posteriors of the analytic lab, and DPS / PiGDM / MMPS against their formulas and the truth.

Full-covariance mixtures are checked against autograd of their log-density and against
torch.distributions; `GaussianMixture.posterior` against Bayes' rule by brute force on a
2-D grid and against the information form of the Gaussian posterior (a different formula);
each posterior-sampling method's score against autograd of the likelihood it states; and
MMPS with an exact Jacobian against the exact posterior score of a Gaussian prior.
"""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from scoresde import DPMSolverPP, VESDE, VPSDE, GaussianMixture, LinearMeasurement, posterior_score, sample

from ..conftest import devices

F64 = torch.float64


def spd(D, seed, jitter=0.2):
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(D, D, generator=g, dtype=F64)
    return L @ L.T / D + jitter * torch.eye(D, dtype=F64)


def full_mixture(D=3, K=3, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(K, D, generator=g, dtype=F64)
    covs = torch.stack([spd(D, seed + 10 + k) for k in range(K)])
    return GaussianMixture(means, weights=[0.2, 0.3, 0.5][:K], labels=list(range(K)), covs=covs)


SDES = [VPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)]
SDE_IDS = ["vp", "ve"]


# ---------------------------------------------------------------------- full covariances
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_full_covariance_mixture_is_exact(sde):
    mix = full_mixture()
    exact = mix.diffused(sde)
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(7, 3, generator=g, dtype=F64)
    t = torch.linspace(0.05, 0.95, 7, dtype=F64)
    alpha, sigma = sde.marginal(t)
    # log p_t against torch's multivariate normals with covariance alpha^2 C_k + sigma^2 I
    C = mix.covariances
    ref = []
    for b in range(7):
        comps = MultivariateNormal(alpha[b] * mix.means, covariance_matrix=alpha[b] ** 2 * C + sigma[b] ** 2 * torch.eye(3, dtype=F64))
        ref.append(torch.logsumexp(comps.log_prob(x[b]) + mix.weights.log(), 0))
    torch.testing.assert_close(exact.log_prob(x, t), torch.stack(ref), rtol=1e-12, atol=1e-12)
    # the score is the gradient of the log-density, Tweedie's formula holds
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exact.log_prob(xg, t).sum(), xg)
    torch.testing.assert_close(exact.score(x, t), grad, rtol=1e-11, atol=1e-11)
    tweedie = (x + sigma[:, None] ** 2 * exact.score(x, t)) / alpha[:, None]
    torch.testing.assert_close(exact.denoiser(x, t), tweedie, rtol=1e-10, atol=1e-10)


def test_diagonal_covariances_given_as_matrices_match_the_diagonal_path():
    g = torch.Generator().manual_seed(2)
    means, stds = torch.randn(3, 4, generator=g, dtype=F64), 0.3 + torch.rand(3, 4, generator=g, dtype=F64)
    diag = GaussianMixture(means, stds, weights=[1.0, 2.0, 3.0])
    full = GaussianMixture(means, weights=[1.0, 2.0, 3.0], covs=torch.diag_embed(stds**2))
    x = torch.randn(5, 4, generator=g, dtype=F64)
    for i, (a, s) in enumerate([(1.0, 0.0), (0.8, 0.6), (torch.full((5,), 0.3, dtype=F64), torch.full((5,), 2.0, dtype=F64))]):
        torch.testing.assert_close(full.log_prob(x, a, s), diag.log_prob(x, a, s), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(full.score(x, a, s), diag.score(x, a, s), rtol=1e-12, atol=1e-12)
        if i > 0:
            torch.testing.assert_close(full.posterior_mean(x, a, s), diag.posterior_mean(x, a, s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(full.covariances, diag.covariances)


def test_full_covariance_samples_have_the_mixture_moments():
    mix = full_mixture(D=2, K=2, seed=3)
    n = 200_000
    x = mix.sample(n, generator=torch.Generator().manual_seed(4))
    w, mu, C = mix.weights, mix.means, mix.covariances
    mean = (w[:, None] * mu).sum(0)
    cov = (w[:, None, None] * (C + mu[:, :, None] * mu[:, None, :])).sum(0) - mean[:, None] * mean[None]
    se = (torch.diagonal(cov) / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se).all()  # 5 standard errors: a false alarm below 1e-6
    # variance of a sample covariance entry <= E[(x_i x_j)^2] / n; bound it by the 4th moment estimate
    xc = x - mean
    se_cov = ((xc[:, :, None] * xc[:, None, :]) ** 2).mean(0).sqrt() / math.sqrt(n)
    assert ((xc.T @ xc / n - cov).abs() < 5 * se_cov).all()


def test_full_covariance_bad_input():
    with pytest.raises(ValueError, match="covs: expected positive definite"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match=r"covs: expected shape \(1, 2, 2\)"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.eye(3)[None])
    with pytest.raises(ValueError, match="covs: expected symmetric"):
        GaussianMixture(torch.zeros(1, 2), covs=torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]))
    with pytest.raises(ValueError, match="exactly one of them"):
        GaussianMixture(torch.zeros(1, 2), 1.0, covs=torch.eye(2)[None])
    with pytest.raises(ValueError, match="exactly one of them"):
        GaussianMixture(torch.zeros(1, 2))


# ---------------------------------------------------------------------- exact posteriors
def test_posterior_matches_bayes_rule_on_a_grid():
    """2-D prior, a 1-D projection splitting the modes: weights, means, covariances, density by quadrature."""
    mix = full_mixture(D=2, K=3, seed=5, spread=1.5)
    A = torch.tensor([[1.0, 0.5]], dtype=F64)
    y, noise = torch.tensor([0.7], dtype=F64), 0.6
    post = mix.posterior(A, y, noise)
    h = 0.02
    u = torch.arange(-10.0, 10.0 + h / 2, h, dtype=F64)
    X = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    log_lik = -0.5 * ((y - X @ A.T)[:, 0] / noise) ** 2  # log N(y; A x, noise^2) up to a constant
    comps = torch.stack(
        [MultivariateNormal(mix.means[k], covariance_matrix=mix.covariances[k]).log_prob(X) for k in range(3)], 1
    )
    joint = comps + mix.weights.log() + log_lik[:, None]  # log w_k N_k(x) p(y | x)
    mass = joint.exp().sum(0) * h * h  # per-component evidence (trapezoid = Riemann sum, tails < 1e-20)
    torch.testing.assert_close(post.weights, mass / mass.sum(), rtol=1e-10, atol=1e-12)
    for k in range(3):
        pk = joint[:, k].exp() / joint[:, k].exp().sum()
        m = (pk[:, None] * X).sum(0)
        C = ((pk[:, None, None] * (X - m)[:, :, None] * (X - m)[:, None, :])).sum(0)
        torch.testing.assert_close(post.means[k], m, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(post.covariances[k], C, rtol=1e-8, atol=1e-10)
    log_post = torch.logsumexp(joint, 1) - math.log(mass.sum())
    pts = torch.tensor([[0.0, 0.0], [1.0, -0.5], [0.3, 1.2]], dtype=F64)
    idx = [int(((X - p).abs().sum(1)).argmin()) for p in pts]
    torch.testing.assert_close(post.log_prob(X[idx]), log_post[idx], rtol=1e-9, atol=1e-9)


def test_posterior_matches_the_information_form_with_per_measurement_noise():
    """One Gaussian in 5-D, 3 measurements with their own stds: C' = (C^-1 + A^T R^-1 A)^-1."""
    m, C = torch.linspace(-1, 1, 5, dtype=F64), spd(5, 7)
    A = torch.randn(3, 5, generator=torch.Generator().manual_seed(8), dtype=F64)
    y, s = torch.tensor([0.5, -1.0, 2.0], dtype=F64), torch.tensor([0.1, 0.5, 1.0], dtype=F64)
    post = GaussianMixture(m[None], covs=C[None]).posterior(A, y, s)
    Ri = torch.diag(1 / s**2)
    Cp = torch.linalg.inv(torch.linalg.inv(C) + A.T @ Ri @ A)
    mp = Cp @ (torch.linalg.solve(C, m) + A.T @ Ri @ y)
    torch.testing.assert_close(post.covariances[0], Cp, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(post.means[0], mp, rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(post.weights, torch.ones(1, dtype=F64))


def test_posterior_keeps_labels_and_event_shape():
    mix = GaussianMixture.ring(4, radius=2.0, std=0.3, labels=[0, 1, 0, 1])
    post = mix.posterior(torch.eye(2, dtype=F64)[:1], torch.tensor([2.0], dtype=F64), 0.1)
    assert post.labels.tolist() == [0, 1, 0, 1] and post.full and post.event_shape == (2,)
    assert post.weights[0] > 0.99  # y = 2 = the first coordinate of the mode at angle 0
    img = GaussianMixture(torch.zeros(2, 1, 2, 2, dtype=F64), 1.0)
    assert img.posterior(torch.eye(4, dtype=F64), torch.zeros(4, dtype=F64), 1.0).event_shape == (1, 2, 2)


def test_posterior_bad_input():
    mix = GaussianMixture.ring(4)
    A, y = torch.eye(2, dtype=F64), torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match=r"A: expected a matrix of shape \(M, 2\)"):
        mix.posterior(torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64), 0.1)
    with pytest.raises(ValueError, match=r"y: expected shape \(2,\)"):
        mix.posterior(A, torch.zeros(3, dtype=F64), 0.1)
    for bad in (-0.1, float("nan"), 0.0):
        with pytest.raises(ValueError, match="noise_std"):
            mix.posterior(A, y, bad)
    with pytest.raises(ValueError, match=r"noise_std: expected a number or shape \(2,\)"):
        mix.posterior(A, y, torch.ones(3, dtype=F64))


# ---------------------------------------------------------------------- the methods' formulas
def _setup(seed=0, D=3, M=2):
    mix = full_mixture(D=D, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    A = torch.randn(M, D, generator=g, dtype=F64)
    y = torch.randn(M, generator=g, dtype=F64)
    x = 1.5 * torch.randn(4, D, generator=g, dtype=F64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=F64)
    return mix, A, y, x, t


def _tweedie(score, sde, x, t):
    alpha, sigma = sde.marginal(t)
    return (x + sigma[:, None] ** 2 * score(x, t)) / alpha[:, None]


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_dps_is_the_gradient_of_the_gaussian_likelihood_at_tweedie(sde):
    mix, A, y, x, t = _setup()
    exact, noise = mix.diffused(sde), 0.3
    meas = LinearMeasurement(A, y, noise)
    xg = x.clone().requires_grad_(True)
    x0 = _tweedie(exact.score, sde, xg, t)
    lik = MultivariateNormal(x0 @ A.T, covariance_matrix=noise**2 * torch.eye(2, dtype=F64)).log_prob(y)
    (grad,) = torch.autograd.grad(lik.sum(), xg)
    with torch.no_grad():
        for scale in (1.0, 2.5):
            got = posterior_score(exact.score, sde, meas, method="dps", scale=scale)(x, t)
            torch.testing.assert_close(got, exact.score(x, t) + scale * grad, rtol=1e-10, atol=1e-10)
        # a log-likelihood callable is the same thing
        got = posterior_score(exact.score, sde, meas.log_likelihood, method="dps")(x, t)
        torch.testing.assert_close(got, exact.score(x, t) + grad, rtol=1e-10, atol=1e-10)
    # the paper's step-size rule: -zeta grad ||r||^2 / ||r|| = -2 zeta grad ||r||
    xg = x.clone().requires_grad_(True)
    r = y - _tweedie(exact.score, sde, xg, t) @ A.T
    (gnorm,) = torch.autograd.grad(r.norm(dim=1).sum(), xg)
    got = posterior_score(exact.score, sde, meas, method="dps", zeta=0.4)(x, t)
    torch.testing.assert_close(got, exact.score(x, t) - 2 * 0.4 * gnorm, rtol=1e-10, atol=1e-10)


def test_dps_with_a_nonlinear_log_likelihood():
    """y = |x|^2 + noise: the guidance is the autograd gradient of log p(y | x0_hat(x_t))."""
    sde, mix, x, t = VPSDE(), full_mixture(), torch.randn(4, 3, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    exact = mix.diffused(sde)

    def log_lik(x0):
        return -0.5 * ((x0.square().sum(1) - 2.0) / 0.5) ** 2

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_lik(_tweedie(exact.score, sde, xg, t)).sum(), xg)
    got = posterior_score(exact.score, sde, log_lik, method="dps")(x, t)
    torch.testing.assert_close(got, exact.score(x, t) + grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_pigdm_is_the_gradient_of_its_gaussian_with_r_t(sde):
    mix, A, y, x, t = _setup(1)
    exact, noise, v = mix.diffused(sde), 0.2, 2.0
    alpha, sigma = sde.marginal(t)
    r2 = v * sigma**2 / (alpha**2 * v + sigma**2)
    xg = x.clone().requires_grad_(True)
    x0 = _tweedie(exact.score, sde, xg, t)
    cov = r2[:, None, None] * (A @ A.T) + noise**2 * torch.eye(2, dtype=F64)  # held constant in x_t
    lik = MultivariateNormal(x0 @ A.T, covariance_matrix=cov).log_prob(y)
    (grad,) = torch.autograd.grad(lik.sum(), xg)
    want = exact.score(x, t) + grad
    torch.testing.assert_close(posterior_score(exact.score, sde, LinearMeasurement(A, y, noise), "pigdm", data_var=v)(x, t), want,
                               rtol=1e-10, atol=1e-10)
    # the same operator as callables, solved by conjugate gradients (exact after M = 2 iterations)
    op = LinearMeasurement(lambda z: z @ A.T, y, noise, AT=lambda w: w @ A)
    torch.testing.assert_close(posterior_score(exact.score, sde, op, "pigdm", data_var=v, cg_iters=2)(x, t), want,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_mmps_is_the_gradient_of_its_gaussian_with_the_tweedie_covariance(sde):
    """Cov[x0 | x_t] = (sigma^2 / alpha) dD/dx_t (Jacobian by autograd, held constant), converged CG."""
    mix, A, y, x, t = _setup(2)
    exact, noise = mix.diffused(sde), 0.25
    alpha, sigma = sde.marginal(t)
    want = []
    for b in range(4):
        xb, tb = x[b : b + 1], t[b : b + 1]
        J = torch.autograd.functional.jacobian(lambda z: _tweedie(exact.score, sde, z, tb)[0], xb)[:, 0]
        V = sigma[b] ** 2 / alpha[b] * J
        xg = xb.clone().requires_grad_(True)
        x0 = _tweedie(exact.score, sde, xg, tb)[0]
        cov = A @ V @ A.T + noise**2 * torch.eye(2, dtype=F64)
        cov = 0.5 * (cov + cov.T)
        (grad,) = torch.autograd.grad(MultivariateNormal(A @ x0, covariance_matrix=cov).log_prob(y), xg)
        want.append(exact.score(xb, tb) + grad)
    got = posterior_score(exact.score, sde, LinearMeasurement(A, y, noise), "mmps", cg_iters=2)(x, t)
    torch.testing.assert_close(got, torch.cat(want), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("operator", [False, True], ids=["matrix", "callables"])
def test_mmps_is_the_exact_posterior_score_of_a_gaussian_prior(sde, operator):
    """One Gaussian N(m, C), a linear measurement: MMPS with M CG iterations = grad log p_t(x | y)."""
    D, M, noise = 4, 3, 0.2
    g = torch.Generator().manual_seed(9)
    prior = GaussianMixture(torch.randn(1, D, generator=g, dtype=F64), covs=spd(D, 10)[None])
    A, y = torch.randn(M, D, generator=g, dtype=F64), torch.randn(M, generator=g, dtype=F64)
    meas = LinearMeasurement(lambda z: z @ A.T, y, noise, AT=lambda w: w @ A) if operator else LinearMeasurement(A, y, noise)
    exact_post = prior.posterior(A, y, noise).diffused(sde)
    x = 2.0 * torch.randn(6, D, generator=g, dtype=F64)
    t = torch.linspace(0.02, 0.98, 6, dtype=F64)
    with torch.no_grad():
        got = posterior_score(prior.diffused(sde).score, sde, meas, "mmps", cg_iters=M)(x, t)
    torch.testing.assert_close(got, exact_post.score(x, t), rtol=1e-8, atol=1e-8)
    # with one CG iteration it is not exact: the solve matters
    one = posterior_score(prior.diffused(sde).score, sde, meas, "mmps", cg_iters=1)(x, t)
    assert (one - exact_post.score(x, t)).abs().max() > 1e-3


def test_pigdm_is_exact_for_an_isotropic_gaussian_prior_of_variance_data_var():
    """N(0, v I): Cov[x0 | x_t] = r_t^2 I exactly, so PiGDM with data_var = v is the exact posterior score."""
    sde, v, noise = VPSDE(), 2.0, 0.3
    prior = GaussianMixture(torch.zeros(1, 3, dtype=F64), math.sqrt(v))
    A, y = torch.tensor([[1.0, -1.0, 0.5]], dtype=F64), torch.tensor([0.8], dtype=F64)
    x, t = torch.randn(5, 3, dtype=F64), torch.linspace(0.1, 0.9, 5, dtype=F64)
    got = posterior_score(prior.diffused(sde).score, sde, LinearMeasurement(A, y, noise), "pigdm", data_var=v)(x, t)
    torch.testing.assert_close(got, prior.posterior(A, y, noise).diffused(sde).score(x, t), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- statistics
@pytest.mark.parametrize("method", ["mmps", "pigdm"])
def test_sampled_posterior_moments_where_the_method_is_exact(method):
    """N(0, v I) prior, 2 measurements: both methods give the exact posterior score (tests above).

    So their samples follow the exact-posterior-score samples path by path (same seeds), and
    the samples' mean and variance differ from the exact posterior's by Monte-Carlo error and
    the sampler's discretisation only. DPM-Solver++(2M) at 50 steps: its bias on this posterior
    (variance 0.039 along the measured directions) is below 0.5 standard errors at n = 4000;
    DDIM at 100 steps, for contrast, is 20% low there (the default grid's last steps are too
    coarse for a posterior this narrow), which is the sampler's error, not the method's.
    Bound: 4.5 standard errors per coordinate."""
    sde, v, noise, n = VPSDE(), 1.5, 0.2, 4000
    prior = GaussianMixture(torch.zeros(1, 3, dtype=F64), math.sqrt(v))
    A = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0]], dtype=F64)
    y = torch.tensor([1.0, -0.5], dtype=F64)
    post = prior.posterior(A, y, noise)
    guided = posterior_score(prior.diffused(sde).score, sde, LinearMeasurement(A, y, noise), method, data_var=v, cg_iters=2)
    run = dict(sampler=DPMSolverPP(), steps=50, dtype=F64)
    with torch.no_grad():
        x = sample(sde, guided, (n, 3), generator=torch.Generator().manual_seed(0), **run)
        x_exact = sample(sde, post.diffused(sde).score, (n, 3), generator=torch.Generator().manual_seed(0), **run)
    torch.testing.assert_close(x, x_exact, rtol=1e-6, atol=1e-6)
    var = torch.diagonal(post.covariances[0])
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2 / (n - 1))
    assert ((x.mean(0) - post.means[0]).abs() < 4.5 * se_mean).all(), (x.mean(0), post.means[0])
    assert ((x.var(0) - var).abs() < 4.5 * se_var).all(), (x.var(0), var)


# ---------------------------------------------------------------------- bad input
def test_measurement_and_posterior_score_bad_input():
    sde, exact = VPSDE(), full_mixture().diffused(VPSDE())
    A, y = torch.randn(2, 3, dtype=F64), torch.zeros(2, dtype=F64)
    x, t = torch.randn(4, 3, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match=r"y: expected shape \(2,\) or \(B, 2\)"):
        LinearMeasurement(A, torch.zeros(3, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="A: expected a matrix of shape"):
        LinearMeasurement(torch.zeros(2, 3, 1, dtype=F64), y, 0.1)
    with pytest.raises(TypeError, match="AT: expected the adjoint"):
        LinearMeasurement(lambda z: z, y, 0.1)
    for bad in (-1.0, float("nan"), torch.tensor([0.1, -0.1], dtype=F64), torch.tensor([0.1, float("nan")], dtype=F64)):
        with pytest.raises(ValueError, match="noise_std: expected"):
            LinearMeasurement(A, y, bad)
    # A whose columns do not match the data, y that does not match A x
    wrong = posterior_score(exact.score, sde, LinearMeasurement(torch.randn(2, 5, dtype=F64), y, 0.1), "dps")
    with pytest.raises(ValueError, match=r"A: expected a matrix of shape \(2, 3\) to act on data of shape \(3,\), got \(2, 5\)"):
        wrong(x, t)
    op = LinearMeasurement(lambda z: z[:, :2], torch.zeros(3, dtype=F64), 0.1, AT=lambda w: torch.cat([w, 0 * w[:, :1]], 1))
    with pytest.raises(ValueError, match=r"y: expected the shape of A x for one sample, \(2,\)"):
        posterior_score(exact.score, sde, op, "mmps")(x, t)
    meas = LinearMeasurement(A, y, 0.1)
    with pytest.raises(ValueError, match=r"method: expected one of \('dps', 'pigdm', 'mmps'\), got 'repaint'"):
        posterior_score(exact.score, sde, meas, "repaint")
    with pytest.raises(ValueError, match=r"log_likelihood: expected an output of shape \(4,\)"):
        posterior_score(exact.score, sde, lambda x0: x0.sum(), "dps")(x, t)
    with pytest.raises(TypeError, match="measurement: method='mmps' needs a LinearMeasurement"):
        posterior_score(exact.score, sde, lambda x0: x0.sum(1), "mmps")
    with pytest.raises(ValueError, match="zeta: DPS's step-size rule"):
        posterior_score(exact.score, sde, meas, "pigdm", zeta=1.0)
    with pytest.raises(ValueError, match="needs noise_std > 0"):
        posterior_score(exact.score, sde, LinearMeasurement(A, y, 0.0), "dps")
    with pytest.raises(TypeError, match="sde: expected a scoresde.SDE"):
        posterior_score(exact.score, None, meas)
    with pytest.raises(ValueError, match="cg_iters: expected an int >= 1"):
        posterior_score(exact.score, sde, meas, "mmps", cg_iters=0)


# ---------------------------------------------------------------------- devices, images
def _blur(x):
    """A 3x3 box-ish blur (separable 0.25, 0.5, 0.25) on (B, C, H, W) images, circular: self-adjoint."""
    for dim in (2, 3):
        x = 0.5 * x + 0.25 * (torch.roll(x, 1, dims=dim) + torch.roll(x, -1, dims=dim))
    return x


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_image_operator_on_every_device_and_dtype(device, dtype):
    """A blur of 1x8x8 images as callables: device and dtype follow the input, values match float64 on the CPU;
    for a Gaussian image prior MMPS with 64 CG iterations is the exact posterior score there too."""
    sde, noise = VPSDE(), 0.1
    g = torch.Generator().manual_seed(11)
    prior = GaussianMixture(torch.randn(1, 1, 8, 8, generator=g, dtype=F64), covs=spd(64, 12, jitter=0.5)[None])
    A = _blur(torch.eye(64, dtype=F64).reshape(64, 1, 8, 8)).reshape(64, 64).T  # the matrix of the blur
    y = torch.randn(1, 8, 8, generator=g, dtype=F64)
    exact_post = prior.posterior(A, y.reshape(64), noise).diffused(sde)
    x = torch.randn(3, 1, 8, 8, generator=g, dtype=F64)
    t = torch.tensor([0.3, 0.5, 0.7], dtype=F64)
    ref = {}
    for method, kw in (("dps", {}), ("pigdm", {}), ("mmps", dict(cg_iters=64))):
        meas = LinearMeasurement(_blur, y.to(device=device, dtype=dtype), noise, AT=_blur)
        guided = posterior_score(prior.diffused(sde).score, sde, meas, method, **kw)
        with torch.no_grad():
            out = guided(x.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype))
        assert out.device.type == torch.device(device).type and out.dtype == dtype
        ref[method] = posterior_score(prior.diffused(sde).score, sde, LinearMeasurement(_blur, y, noise, AT=_blur), method, **kw)(x, t)
        tol = 2e-3 if dtype == torch.float32 else 1e-8
        torch.testing.assert_close(out.cpu().double(), ref[method], rtol=tol, atol=tol * ref[method].abs().max().item())
    torch.testing.assert_close(ref["mmps"], exact_post.score(x, t), rtol=1e-7, atol=1e-7)
