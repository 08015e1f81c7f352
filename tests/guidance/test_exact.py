"""Guidance is exact algebra: pointwise identities on labelled Gaussian mixtures, every SDE.

References are computed independently of the code under test: conditional scores from the
closed form of the conditional mixture, tilted scores by autograd of closed-form
log-densities $\\log p_t(x) + \\sum_i w_i \\log p_t(y_i\\mid x)$.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scoresde import VESDE, VPSDE, classifier_guided_score, guided_score
from scoresde.guidance import (
    GuidanceInterval,
    classifier_guided_eps,
    composed_score,
    noise_level,
    product_of_experts,
)
from scoresde.parameterization import score_to_eps

from .conftest import labelled_ring, make_sde, points, sde_names

seeds = st.integers(0, 2**31 - 1)
fractions = st.floats(0.0, 1.0)
labels = st.integers(0, 2)
scales = st.floats(-4.0, 10.0, allow_nan=False)


def tilted_score(exact, x, t, ys, ws):
    r"""$\nabla_x[\log p_t(x) + \sum_i w_i \log p_t(y_i\mid x)]$ by autograd of the closed forms."""
    x = x.clone().requires_grad_(True)
    total = exact.log_prob(x, t)
    for y, w in zip(ys, ws):
        total = total + w * exact.class_log_prob(x, t, y)
    (grad,) = torch.autograd.grad(total.sum(), x)
    return grad


def class_log_prob(exact, y):
    return lambda x, t: exact.class_log_prob(x, t, y)


def close(a, b, rtol=1e-9, atol=1e-9):
    assert a.shape == b.shape and a.dtype == b.dtype
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@given(name=sde_names, seed=seeds, u=fractions, y=labels)
def test_classifier_guidance_at_scale_one_is_the_conditional_score(name, seed, u, y):
    """grad log p_t(x) + grad log p_t(y|x) = grad log p_t(x|y), the conditional mixture's closed-form score."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), torch.full((16,), u * sde.T)
    guided = classifier_guided_score(exact.score, class_log_prob(exact, y), 1.0)
    with torch.no_grad():  # the guidance takes its gradient with autograd enabled locally
        close(guided(x, t), exact.conditional(y).score(x, t))


@given(name=sde_names, seed=seeds, u=fractions, y=labels, gamma=scales)
def test_classifier_guidance_at_scale_gamma_is_the_tilted_score(name, seed, u, y, gamma):
    """At scale gamma the guided score is grad log[p_t(x) p_t(y|x)^gamma]."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x = points(seed)
    t = u * sde.T * torch.rand(16, generator=torch.Generator().manual_seed(seed))  # per-sample times
    guided = classifier_guided_score(exact.score, class_log_prob(exact, y), gamma)
    close(guided(x, t), tilted_score(exact, x, t, [y], [gamma]))


@given(name=sde_names, seed=seeds, u=fractions, y=labels, w=scales)
def test_cfg_with_exact_scores_equals_classifier_guidance_with_the_exact_classifier(name, seed, u, y, w):
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    cfg = guided_score(exact.score, exact.conditional(y).score, w)
    cg = classifier_guided_score(exact.score, class_log_prob(exact, y), w)
    close(cfg(x, t), cg(x, t))


@pytest.mark.parametrize("name", ["vp", "ve", "subvp"])
def test_scale_zero_and_one_reduce_exactly(name):
    """Bitwise: scale 0 is the unconditional score and scale 1 the conditional one."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(0, n=64), torch.linspace(0.0, sde.T, 64)
    s_u, s_c = exact.score(x, t), exact.conditional(1).score(x, t)
    assert torch.equal(guided_score(exact.score, exact.conditional(1).score, 0.0)(x, t), s_u)
    assert torch.equal(guided_score(exact.score, exact.conditional(1).score, 1)(x, t), s_c)
    per_sample = torch.tensor([0.0, 1.0]).repeat(32)
    out = guided_score(exact.score, exact.conditional(1).score, per_sample)(x, t)
    assert torch.equal(out[0::2], s_u[0::2]) and torch.equal(out[1::2], s_c[1::2])
    assert torch.equal(classifier_guided_score(exact.score, class_log_prob(exact, 1), 0.0)(x, t), s_u)


@given(name=sde_names, seed=seeds, u=fractions, w1=scales, w2=scales)
def test_composition_is_the_score_of_the_product_of_classifiers(name, seed, u, w1, w2):
    """Liu et al.: s_u + sum_i w_i (s_i - s_u) = grad log p_t(x) prod_i p_t(y_i|x)^{w_i}; negative w_i negate."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    conds = [exact.conditional(0).score, exact.conditional(2).score]
    composed = composed_score(exact.score, conds, [w1, w2])
    close(composed(x, t), tilted_score(exact, x, t, [0, 2], [w1, w2]), rtol=1e-8, atol=1e-8)


@given(name=sde_names, seed=seeds, u=fractions, w1=scales, w2=scales, c=st.floats(-3.0, 3.0))
def test_composition_is_linear_in_the_weights(name, seed, u, w1, w2, c):
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    conds = [exact.conditional(1).score, exact.conditional(2).score]
    s_u = exact.score(x, t)

    def f(a, b):
        return composed_score(exact.score, conds, [a, b])(x, t) - s_u

    close(f(w1 + c * w2, w2 - c), f(w1, w2) + c * f(w2, -1.0), rtol=1e-8, atol=1e-8)
    close(composed_score(exact.score, conds[:1], [w1])(x, t), guided_score(exact.score, conds[0], w1)(x, t))


@given(name=sde_names, seed=seeds, u=fractions, w=scales)
def test_product_of_experts_is_the_weighted_sum(name, seed, u, w):
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    s_u, s_c = exact.score, exact.conditional(0).score
    poe = product_of_experts([s_u, s_c, exact.conditional(1).score], [1.0 - w, w, 0.5])
    expected = (1.0 - w) * s_u(x, t) + w * s_c(x, t) + 0.5 * exact.conditional(1).score(x, t)
    close(poe(x, t), expected)
    close(product_of_experts([s_u, s_c], [1.0 - w, w])(x, t), guided_score(s_u, s_c, w)(x, t))


@given(name=sde_names, seed=seeds, u=fractions, y=labels, w1=scales, w2=scales)
def test_cfg_and_classifier_guidance_together(name, seed, u, y, w1, w2):
    """Classifier guidance on top of CFG: grad log p_t(x) p_t(y|x)^w1 p_t(y2|x)^w2."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    y2 = (y + 1) % 3
    both = classifier_guided_score(guided_score(exact.score, exact.conditional(y).score, w1), class_log_prob(exact, y2), w2)
    close(both(x, t), tilted_score(exact, x, t, [y, y2], [w1, w2]), rtol=1e-8, atol=1e-8)


@given(name=sde_names, seed=seeds, u=st.floats(0.01, 1.0), y=labels, w=scales)
def test_eps_form_of_classifier_guidance(name, seed, u, y, w):
    """Dhariwal & Nichol: eps - w sigma_t grad log p(y|x) is the eps of the guided score."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    guided_eps = classifier_guided_eps(exact.eps, class_log_prob(exact, y), w, sde)
    guided = classifier_guided_score(exact.score, class_log_prob(exact, y), w)
    _, sigma = sde.marginal(t)
    close(guided_eps(x, t), score_to_eps(guided(x, t), sigma), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", ["vp", "vp-cosine", "subvp", "ve"])
def test_guidance_interval_switches_exactly_at_its_bounds(name):
    """Kynkaanniemi et al.: guidance on sigma in (sigma_lo, sigma_hi], the conditional score elsewhere."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    s_u, s_c = exact.score, exact.conditional(2).score
    t_lo, t_hi = 0.3 * sde.T, 0.6 * sde.T
    lo, hi = noise_level(sde, t_lo).item(), noise_level(sde, t_hi).item()
    assert lo == pytest.approx(torch.exp(-0.5 * sde.log_snr(t_lo)).item(), rel=1e-10)  # sigma_t / alpha_t
    nudge = 1e-9 * sde.T
    t = torch.tensor([0.0, t_lo - nudge, t_lo, t_lo + nudge, 0.45 * sde.T, t_hi - nudge, t_hi, t_hi + nudge, sde.T])
    inside = torch.tensor([False, False, False, True, True, True, True, False, False])
    x = points(3, n=t.shape[0])
    w = 3.5
    guided = guided_score(s_u, s_c, GuidanceInterval(w, lo, hi), sde=sde)(x, t)
    full = guided_score(s_u, s_c, w)(x, t)
    cond = s_c(x, t)
    assert torch.equal(guided[inside], full[inside])
    assert torch.equal(guided[~inside], cond[~inside])
    # A classifier switched off outside the interval leaves the base score exactly.
    cg = classifier_guided_score(s_c, class_log_prob(exact, 2), GuidanceInterval(w, lo, hi, outside=0.0), sde=sde)(x, t)
    assert torch.equal(cg[~inside], cond[~inside])
    close(cg[inside], s_c(x, t)[inside] + w * (exact.conditional(2).score(x, t) - s_u(x, t))[inside])
    # The schedule itself: the paper's half-open interval.
    sched = GuidanceInterval(w, lo, hi, outside=-1.0)
    levels = torch.tensor([lo, hi, (lo + hi) / 2, hi * 2, lo / 2])
    assert sched(levels).tolist() == [-1.0, w, w, -1.0, -1.0]


def test_interval_applies_per_weight_in_a_composition():
    sde = VESDE(sigma_min=0.01, sigma_max=20.0)
    exact = labelled_ring().diffused(sde)
    conds = [exact.conditional(0).score, exact.conditional(1).score]
    x, t = points(5, n=2), torch.tensor([0.1, 0.9])  # sigma = 0.023 and 10.6
    composed = composed_score(exact.score, conds, [GuidanceInterval(2.0, 1.0, 50.0, outside=0.0), -1.0], sde=sde)
    out = composed(x, t)
    close(out[:1], composed_score(exact.score, conds, [0.0, -1.0])(x, t)[:1])
    close(out[1:], composed_score(exact.score, conds, [2.0, -1.0])(x, t)[1:])


def test_noise_level_is_sigma_over_alpha():
    vp, ve = VPSDE(), VESDE()
    t = torch.tensor([0.0, 0.2, 1.0])
    alpha, sigma = vp.marginal(t)
    close(noise_level(vp, t), sigma / alpha)
    close(noise_level(ve, t), ve.sigma(t))
    assert noise_level(vp, 0.5).ndim == 0
