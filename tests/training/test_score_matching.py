"""Implicit and sliced score matching against the closed form of a linear score on Gaussian data.

For s(x) = -A x on x ~ N(0, S): J = E[1/2 |s|^2 + tr(grad s)] = tr(A^T A S)/2 - tr(A). The
implicit objective is exact per sample; the sliced estimates are compared with it through
standard errors computed from the same draws (4.5 standard errors: a false alarm rate
below 1e-5 per comparison), never from the observed result.
"""

import math

import pytest
import torch

from scoresde import VESDE, VPSDE, ScoreModel
from scoresde.score_matching import ism_loss, noisy_score_matching_loss, ssm_loss

D64 = torch.float64


def _problem(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=D64) / 2 + torch.eye(d, dtype=D64)  # not symmetric
    L = torch.randn(d, d, generator=g, dtype=D64) / 2 + torch.eye(d, dtype=D64)
    S = L @ L.T
    return A, S, L, g


def _closed_form(A, S):
    return 0.5 * torch.trace(A.T @ A @ S).item() - torch.trace(A).item()


def test_ism_is_exact_per_sample_for_a_linear_score():
    A, S, L, g = _problem()
    x = torch.randn(50, 3, generator=g, dtype=D64) @ L.T
    per_sample = ism_loss(lambda x: -x @ A.T, x, reduction="none")
    exact = 0.5 * (x @ A.T).square().sum(1) - torch.trace(A)
    torch.testing.assert_close(per_sample, exact, rtol=1e-13, atol=1e-13)


def test_ism_divergence_is_the_jacobian_trace_of_a_nonlinear_score():
    g = torch.Generator().manual_seed(1)
    W1, W2 = torch.randn(4, 8, generator=g, dtype=D64), torch.randn(8, 4, generator=g, dtype=D64)
    score = lambda x: torch.tanh(x @ W1) @ W2  # noqa: E731
    x = torch.randn(6, 2, 2, generator=g, dtype=D64)  # any data shape (B, ...)
    flat = lambda v: score(v.reshape(1, 4)).reshape(4)  # noqa: E731
    per_sample = ism_loss(lambda x: score(x.reshape(-1, 4)).reshape(x.shape), x, reduction="none")
    for i in range(6):
        J = torch.autograd.functional.jacobian(flat, x[i].reshape(4))
        want = 0.5 * flat(x[i].reshape(4)).square().sum() + torch.trace(J)
        torch.testing.assert_close(per_sample[i], want, rtol=1e-12, atol=1e-12)


def test_ism_expectation_and_exact_gradient():
    A, S, L, g = _problem()
    n = 100_000
    x = torch.randn(n, 3, generator=g, dtype=D64) @ L.T
    per_sample = ism_loss(lambda x: -x @ A.T, x, reduction="none")
    se = per_sample.std().item() / math.sqrt(n)
    assert abs(per_sample.mean().item() - _closed_form(A, S)) < 4.5 * se
    # The gradient of the empirical objective 1/2 tr(A^T A S_hat) - tr(A) is A S_hat - I, exactly.
    Ap = A.clone().requires_grad_(True)
    ism_loss(lambda x: -x @ Ap.T, x[:1000]).backward()
    S_hat = x[:1000].T @ x[:1000] / 1000
    torch.testing.assert_close(Ap.grad, A @ S_hat - torch.eye(3, dtype=D64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
@pytest.mark.parametrize("variance_reduced", [True, False])
@pytest.mark.parametrize("n_projections", [1, 4])
def test_ssm_expectation_is_the_closed_form(distribution, variance_reduced, n_projections):
    A, S, L, g = _problem(seed=2)
    n = 100_000
    x = torch.randn(n, 3, generator=g, dtype=D64) @ L.T
    score = lambda x: -x @ A.T  # noqa: E731
    kw = dict(n_projections=n_projections, distribution=distribution, variance_reduced=variance_reduced)
    per_sample = ssm_loss(score, x, generator=g, reduction="none", **kw)
    se = per_sample.std().item() / math.sqrt(n)
    assert abs(per_sample.mean().item() - _closed_form(A, S)) < 4.5 * se
    # On the same x the difference to the exact objective carries only the projections' noise.
    diff = per_sample - ism_loss(score, x, reduction="none")
    se_diff = diff.std().item() / math.sqrt(n)
    assert abs(diff.mean().item()) < 4.5 * se_diff
    assert se_diff > 0  # the projections are random


def test_more_projections_and_variance_reduction_shrink_the_variance():
    A, S, L, g = _problem(seed=3)
    x = torch.randn(20_000, 3, generator=g, dtype=D64) @ L.T
    score = lambda x: -x @ A.T  # noqa: E731
    exact = ism_loss(score, x, reduction="none")
    var = {}
    for vr in (True, False):
        for m in (1, 8):
            est = ssm_loss(score, x, n_projections=m, variance_reduced=vr, generator=g, reduction="none")
            var[vr, m] = (est - exact).var().item()
    # Averaging m independent projections divides the projection variance by m (F-test bounds at n = 20000).
    assert 8 * 0.9 < var[True, 1] / var[True, 8] < 8 * 1.1
    assert var[True, 1] < var[False, 1]


def test_rademacher_variance_reduced_is_exact_for_a_diagonal_jacobian():
    """v^T diag(a) v = sum a_i when v_i = +-1: the sliced estimate has no noise at all."""
    a = torch.tensor([0.5, 1.5, 2.0], dtype=D64)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(4), dtype=D64)
    score = lambda x: -x * a  # noqa: E731
    est = ssm_loss(score, x, n_projections=3, generator=torch.Generator().manual_seed(5), reduction="none")
    torch.testing.assert_close(est, ism_loss(score, x, reduction="none"), rtol=1e-13, atol=1e-13)


def test_fixed_projections_give_the_formula():
    A, S, L, g = _problem()
    x = torch.randn(5, 3, generator=g, dtype=D64)
    v = torch.randn(2, 5, 3, generator=g, dtype=D64)
    s = -x @ A.T
    vJv = torch.einsum("mbi,ij,mbj->mb", v, -A, v)
    sv = torch.einsum("mbi,bi->mb", v, s)
    vr = (vJv + 0.5 * s.square().sum(1)).mean(0)
    plain = (vJv + 0.5 * sv.square()).mean(0)
    f = lambda x: -x @ A.T  # noqa: E731
    torch.testing.assert_close(ssm_loss(f, x, n_projections=2, projections=v, reduction="none"), vr)
    torch.testing.assert_close(ssm_loss(f, x, n_projections=2, projections=v, variance_reduced=False, reduction="none"), plain)


def test_losses_under_no_grad_are_values():
    x = torch.randn(8, 2)
    with torch.no_grad():
        a, b = ism_loss(lambda x: -x, x), ssm_loss(lambda x: -x, x)
    assert not a.requires_grad and not b.requires_grad
    with torch.inference_mode():
        x_inf = x.clone()
        c, d = ism_loss(lambda x: -x, x_inf), ssm_loss(lambda x: -x, x_inf, projections=torch.ones(1, 8, 2))
    assert math.isclose(c.item(), a.item(), rel_tol=1e-6) and math.isclose(d.item(), a.item(), rel_tol=1e-6)
    assert math.isclose(a.item(), 0.5 * x.square().sum(1).mean().item() - 2, rel_tol=1e-5)


def test_ssm_training_recovers_a_gaussian_score():
    """A linear score s(x) = -P (x - m) trained with SSM-VR (one Rademacher projection) reaches -S^-1 (x - mu).

    The iterates' average over the last 200 of 600 Adam steps lands within 0.3% of S^-1 and
    0.001 of mu (seeded); the bounds, ten times wider, leave room for other platforms' rounding
    while an objective wrong by a few percent (a biased trace estimate) would fail them.
    """
    mu = torch.tensor([1.0, -2.0])
    L = torch.tensor([[1.0, 0.0], [0.6, 0.5]])
    P_exact = torch.linalg.inv(L @ L.T)
    P = torch.nn.Parameter(torch.eye(2))
    m = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([P, m], lr=0.05)
    g = torch.Generator().manual_seed(1)
    P_avg, m_avg, steps, tail = 0, 0, 600, 200
    for step in range(steps):
        x = mu + torch.randn(1024, 2, generator=g) @ L.T  # fresh samples of N(mu, L L^T)
        loss = ssm_loss(lambda x: -(x - m) @ P.T, x, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= steps - tail:  # Polyak averaging of the last iterates
            P_avg = P_avg + P.detach() / tail
            m_avg = m_avg + m.detach() / tail
    assert torch.linalg.norm(P_avg - P_exact) / torch.linalg.norm(P_exact) < 0.03
    assert torch.linalg.norm(m_avg - mu) < 0.02


from ..sde_zoo import sdes  # noqa: E402

SDES = sdes("training")


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("method", ["ism", "ssm"])
def test_noisy_score_matching_at_fixed_times_is_the_closed_form(name, method):
    """At time t, p_t = N(0, v_t I) with v_t = alpha^2 s0^2 + sigma^2; for s = -a x the objective is
    sigma^2 d (a^2 v_t / 2 - a)."""
    sde, s0, d, n = SDES[name](), 0.7, 2, 50_000
    g = torch.Generator().manual_seed(6)
    t = torch.full((n,), 0.4, dtype=D64)
    alpha, sigma = sde.marginal(t[:1])
    v_t = (alpha**2 * s0**2 + sigma**2).item()
    a = 1.3 / v_t  # not the minimiser 1 / v_t
    score = lambda x, t: -a * x  # noqa: E731
    x0 = s0 * torch.randn(n, d, generator=g, dtype=D64)
    per_sample = noisy_score_matching_loss(score, x0, sde, method=method, t=t, generator=g, reduction="none")
    exact = sigma.item() ** 2 * d * (0.5 * a * a * v_t - a)
    se = per_sample.std().item() / math.sqrt(n)
    assert abs(per_sample.mean().item() - exact) < 4.5 * se


def test_noisy_score_matching_minimiser_is_the_diffused_score():
    """Over times drawn uniformly, the loss of s = -a(t) x is least at a(t) = 1/v_t (checked by perturbing a)."""
    sde, s0, n = VPSDE(), 0.7, 40_000
    x0 = s0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(7), dtype=D64)

    def loss_at(scale):
        def score(x, t):
            alpha, sigma = sde.marginal(t)
            return -scale * x / (alpha**2 * s0**2 + sigma**2)[:, None]

        return noisy_score_matching_loss(score, x0, sde, method="ism", generator=torch.Generator().manual_seed(8)).item()

    # Common random numbers: the same t and eps for every scale.
    values = [loss_at(s) for s in (0.8, 1.0, 1.25)]
    assert values[1] < values[0] and values[1] < values[2]


def test_noisy_score_matching_takes_the_sde_of_a_score_model():
    sde = VESDE(sigma_min=0.01, sigma_max=5.0)
    model = ScoreModel(lambda x, t: x * 0.1, sde, prediction="eps")
    x0 = torch.randn(16, 2, dtype=D64)
    kw = dict(t=0.3, noise=torch.zeros_like(x0), method="ism")
    torch.testing.assert_close(noisy_score_matching_loss(model, x0, **kw), noisy_score_matching_loss(model.score, x0, sde, **kw))


def test_validation():
    x = torch.randn(4, 2)
    f = lambda x: -x  # noqa: E731
    with pytest.raises(TypeError, match="score"):
        ism_loss("score", x)
    with pytest.raises(TypeError, match="x"):
        ism_loss(f, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="reduction"):
        ssm_loss(f, x, reduction="avg")
    with pytest.raises(ValueError, match="distribution"):
        ssm_loss(f, x, distribution="uniform")
    with pytest.raises(ValueError, match="n_projections"):
        ssm_loss(f, x, n_projections=0)
    with pytest.raises(TypeError, match="variance_reduced"):
        ssm_loss(f, x, variance_reduced=1)
    with pytest.raises(ValueError, match="projections"):
        ssm_loss(f, x, projections=torch.zeros(4, 2))
    with pytest.raises(ValueError, match="score"):
        ism_loss(lambda x: x[:, :1], x)
    with pytest.raises(ValueError, match="sde"):
        noisy_score_matching_loss(lambda x, t: -x, x)
    with pytest.raises(ValueError, match="method"):
        noisy_score_matching_loss(lambda x, t: -x, x, VPSDE(), method="dsm")
    with pytest.raises(ValueError, match="weighting"):
        noisy_score_matching_loss(lambda x, t: -x, x, VPSDE(), weighting="likelihood")
    with pytest.raises(ValueError, match="t_eps"):
        noisy_score_matching_loss(lambda x, t: -x, x, VPSDE(), t_eps=1.0)
    with pytest.raises(ValueError, match="t"):
        noisy_score_matching_loss(lambda x, t: -x, x, VPSDE(), t=2.0)
