r"""Dhariwal & Nichol's Algorithm 1 (classifier guidance as a mean shift) against its formula and the conditional.

With the exact noisy classifier of a labelled mixture at scale 1 it samples $p(x\mid y)$ as
the steps shrink; per step it differs from score-level classifier guidance in an ancestral
step by $O(h^2)$ (so both converge to the conditional, at different finite-step errors).
"""

import pytest
import torch

from scoresde import VESDE, VPSDE, Ancestral, classifier_guided_score, sample
from scoresde.samplers import MeanShiftGuidance
from scoresde.samplers import SamplingContext, as_noise_source

from .conftest import WEIGHTS, labelled_ring
from .test_sampling import assert_mode_weights, nearest_component

F64 = torch.float64


def _context(sde, score, steps, x):
    ts = torch.linspace(sde.T, 1e-3, steps + 1, dtype=F64)
    return SamplingContext(sde, score, ts, as_noise_source(torch.Generator().manual_seed(0), x.shape[0]), tuple(x.shape), F64, x.device)


def _one_step(sampler, sde, score, x, steps, i=0):
    ctx = _context(sde, score, steps, x)
    torch.manual_seed(0)
    x_next, _ = sampler.step(ctx, x, i, None)
    return x_next, ctx


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_min=0.01, sigma_max=10.0)], ids=["vp", "ve"])
@pytest.mark.parametrize("at", ["mean", "state"])
def test_one_step_is_the_shifted_ancestral_mean(sde, at):
    exact = labelled_ring().diffused(sde)
    log_p = lambda x, t: exact.class_log_prob(x, t, 1)  # noqa: E731
    x = 2.0 * torch.randn(6, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    s = 2.5
    got, ctx = _one_step(MeanShiftGuidance(log_p, scale=s, at=at), sde, exact.score, x, steps=20, i=3)
    base, _ = _one_step(Ancestral(), sde, exact.score, x, steps=20, i=3)  # same noise, no shift
    a, v, _ = ctx.transition(3)
    mu = (x + v * exact.score(x, ctx.t_grid[3])) / a
    var = v * (ctx.sigma[4] / ctx.sigma[3]) ** 2
    pt, tt = (mu, ctx.t_grid[4]) if at == "mean" else (x, ctx.t_grid[3])
    pt = pt.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(exact.class_log_prob(pt, tt, 1).sum(), pt)
    torch.testing.assert_close(got - base, s * var * g, rtol=1e-10, atol=1e-12)


def test_one_step_differs_from_score_level_guidance_at_second_order():
    """Mean shift vs an ancestral step of s + grad log p_t(y | x): the gap shrinks like h^2."""
    sde = VPSDE()
    exact = labelled_ring().diffused(sde)
    log_p = lambda x, t: exact.class_log_prob(x, t, 1)  # noqa: E731
    guided = classifier_guided_score(exact.score, log_p, 1.0)
    x = 2.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    gaps = []
    for steps in (50, 100, 200, 400):
        i = steps // 2  # the same time t_i = T/2 (about), a step of size T/steps
        ms, _ = _one_step(MeanShiftGuidance(log_p), sde, exact.score, x, steps, i)
        sl, _ = _one_step(Ancestral(), sde, guided, x, steps, i)
        gaps.append((ms - sl).abs().max().item())
    ratios = [gaps[k] / gaps[k + 1] for k in range(3)]
    assert gaps[0] > 1e-4  # they are different samplers
    assert all(3.5 < r < 4.5 for r in ratios), (gaps, ratios)  # second order in h


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_min=0.01, sigma_max=10.0)], ids=["vp", "ve"])
def test_mean_shift_at_scale_one_samples_the_conditional(sde):
    """Label 2 owns components 2 and 5 (weights 3 : 6); chi-square at level 0.001 as in test_sampling."""
    mix = labelled_ring()
    exact = mix.diffused(sde)
    y, n = 2, 4000
    sampler = MeanShiftGuidance(lambda x, t: exact.class_log_prob(x, t, y))
    with torch.no_grad():
        x = sample(sde, exact.score, (n, 2), sampler=sampler, steps=200, generator=torch.Generator().manual_seed(0), dtype=F64)
    k = nearest_component(x, mix)
    on_label = mix.labels[k] == y
    assert on_label.sum().item() >= n - 4
    assert_mode_weights((k[on_label] == 5).long(), [WEIGHTS[2] / 9, WEIGHTS[5] / 9], int(on_label.sum()))


def test_mean_shift_bad_input():
    with pytest.raises(TypeError, match="log_prob_y: expected a callable"):
        MeanShiftGuidance(3.0)
    with pytest.raises(ValueError, match=r"at: expected one of \('mean', 'state'\), got 'x0'"):
        MeanShiftGuidance(lambda x, t: x.sum(1), at="x0")
    with pytest.raises(ValueError, match="scale: expected a finite number"):
        MeanShiftGuidance(lambda x, t: x.sum(1), scale=float("nan"))
    with pytest.raises(ValueError, match="variance: expected"):
        MeanShiftGuidance(lambda x, t: x.sum(1), variance="big")
