"""Guidance of networks: eps/x0/v predictors, one network with a null label, guidance rescale, classifiers."""

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from scoresde import VPSDE, ScoreModel, cfg_score, classifier_guided_score, guided_score
from scoresde.guidance import (
    classifier_gradient,
    classifier_log_prob,
    composed_score,
    rescale_guidance,
)
from scoresde.parameterization import convert, eps_to_v, score_to_eps

from ..conftest import devices
from .conftest import labelled_ring, make_sde, points, sde_names

NULL = 3  # the null label of the fake conditional network below


def exact_prediction(exact, prediction):
    """The exact (Bayes) predictor of each parameterisation, from the closed forms."""
    if prediction == "score":
        return exact.score
    if prediction == "eps":
        return exact.eps
    if prediction == "x0":
        return exact.denoiser

    def v(x, t):
        alpha, sigma = exact.sde.marginal(t)
        return eps_to_v(exact.eps(x, t), x, alpha, sigma)

    return v


class LabelNet(nn.Module):
    """A conditional network trained with label dropout, made exact: net(x, t, y) predicts
    `prediction` of p_t(x | y) for y in {0, 1, 2} and of p_t(x) for y = NULL. Counts its calls."""

    def __init__(self, exact, prediction):
        super().__init__()
        self.exact, self.prediction, self.calls = exact, prediction, []

    def forward(self, x, t, y):
        self.calls.append(x.shape[0])
        assert y.shape == (x.shape[0],) and t.shape == (x.shape[0],)
        out = exact_prediction(self.exact, self.prediction)(x, t)
        for label in range(3):
            pred = exact_prediction(self.exact.conditional(label), self.prediction)(x, t)
            out = torch.where((y == label)[:, None], pred, out)
        return out


def class_log_prob(exact, y):
    return lambda x, t: exact.class_log_prob(x, t, y)


def close(a, b, rtol=1e-9, atol=1e-9):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


@given(name=sde_names, seed=st.integers(0, 2**31 - 1), u=st.floats(0.05, 1.0), w=st.floats(-3.0, 8.0),
       prediction=st.sampled_from(["eps", "x0", "v"]))
def test_guidance_is_the_same_in_every_parameterisation(name, seed, u, w, prediction):
    """Each parameterisation is affine in the score with a model-independent offset, so CFG commutes with it."""
    sde = make_sde(name)
    exact = labelled_ring().diffused(sde)
    x, t = points(seed), u * sde.T
    cond = exact.conditional(1)
    by_score = guided_score(exact.score, cond.score, w)(x, t)
    guided = guided_score(exact_prediction(exact, prediction), exact_prediction(cond, prediction), w,
                          sde=sde, prediction=prediction)
    close(guided(x, t), by_score, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("batched", [True, False])
def test_one_network_with_a_null_label(prediction, batched):
    """cfg_score(model, {y}, {null}, w) equals guided_score of the two exact scores; batched = one forward pass of 2B."""
    sde = make_sde("vp-cosine")
    exact = labelled_ring().diffused(sde)
    net = LabelNet(exact, prediction)
    model = ScoreModel(net, sde, prediction=prediction)
    x, t = points(7, n=12), torch.linspace(0.05, 1.0, 12)
    y = torch.tensor([0, 1, 2]).repeat(4)
    w = 2.5
    guided = cfg_score(model, {"y": y}, {"y": torch.tensor([NULL])}, w, batched=batched)
    out = guided(x, t)
    assert net.calls == ([24] if batched else [12, 12])
    expected = classifier_guided_score(exact.score, class_log_prob(exact, y), w)(x, t)  # per-sample labels
    close(out, expected, rtol=1e-7, atol=1e-7)
    # A raw callable with its prediction type and SDE gives the same, at a scalar time too.
    raw = cfg_score(net, {"y": y}, {"y": torch.full_like(y, NULL)}, w, sde=sde, prediction=prediction, batched=batched)
    close(raw(x, 0.5), guided(x, torch.full((12,), 0.5)))


def test_one_network_composes_several_conditions_in_one_pass():
    sde = VPSDE()
    exact = labelled_ring().diffused(sde)
    net = LabelNet(exact, "eps")
    model = ScoreModel(net, sde, prediction="eps")
    x, t = points(2, n=8), torch.full((8,), 0.4)
    y0, y2 = torch.zeros(8, dtype=torch.long), torch.full((8,), 2)
    guided = cfg_score(model, [{"y": y0}, {"y": y2}], {"y": torch.full((8,), NULL)}, [1.5, -0.5])
    out = guided(x, t)
    assert net.calls == [24]
    expected = composed_score(exact.score, [exact.conditional(0).score, exact.conditional(2).score], [1.5, -0.5])(x, t)
    close(out, expected, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("space", ["x0", "eps", "v", "score"])
def test_guidance_rescale_follows_lin_et_al(space):
    """Lin et al. Algorithm 2 in the chosen space: phi = 0 is plain CFG, phi = 1 matches the conditional's std."""
    sde = make_sde("vp")
    mix = labelled_ring(dim=5)
    exact = mix.diffused(sde)
    x, t = points(11, n=10, dim=5), torch.linspace(0.1, 0.9, 10)
    alpha, sigma = sde.marginal(t)
    cond = exact.conditional(0)
    w, phi = 4.0, 0.7
    u_p = convert(exact.score(x, t), x, alpha, sigma, source="score", target=space)
    c_p = convert(cond.score(x, t), x, alpha, sigma, source="score", target=space)
    cfg = u_p + w * (c_p - u_p)
    # The paper's formulas, written out (std over all non-batch dimensions).
    std_pos, std_cfg = c_p.std(dim=1, keepdim=True), cfg.std(dim=1, keepdim=True)
    final = phi * cfg * std_pos / std_cfg + (1 - phi) * cfg
    guided = guided_score(exact.score, cond.score, w, sde=sde, rescale=phi, rescale_space=space)
    out = convert(guided(x, t), x, alpha, sigma, source="score", target=space)
    close(out, final, rtol=1e-8, atol=1e-8)
    full = guided_score(exact.score, cond.score, w, sde=sde, rescale=1.0, rescale_space=space)
    out1 = convert(full(x, t), x, alpha, sigma, source="score", target=space)
    close(out1.std(dim=1), c_p.std(dim=1), rtol=1e-8, atol=1e-10)
    assert torch.equal(guided_score(exact.score, cond.score, w, sde=sde, rescale=0.0, rescale_space=space)(x, t),
                       guided_score(exact.score, cond.score, w)(x, t))


def test_rescale_guidance_function():
    g = torch.Generator().manual_seed(0)
    cfg, pos = torch.randn(4, 3, 8, 8, generator=g) * 3, torch.randn(4, 3, 8, 8, generator=g)
    assert torch.equal(rescale_guidance(cfg, pos, 0.0), cfg)
    out = rescale_guidance(cfg, pos, 1.0)
    close(out.std(dim=(1, 2, 3)), pos.std(dim=(1, 2, 3)))
    close(out / cfg, (pos.std(dim=(1, 2, 3)) / cfg.std(dim=(1, 2, 3)))[:, None, None, None].expand_as(cfg))
    flat = torch.ones(2, 5)  # zero spread: left alone
    assert torch.equal(rescale_guidance(flat, torch.randn(2, 5, generator=g), 0.7), flat)


class TinyClassifier(nn.Module):
    def __init__(self, dim=2, classes=3):
        super().__init__()
        self.lin = nn.Linear(dim + 1, classes)

    def forward(self, x, t):
        return self.lin(torch.cat([x, t[:, None]], dim=-1))


def test_classifier_log_prob_and_gradient():
    torch.manual_seed(0)
    clf = TinyClassifier()
    x, t = points(1, n=6), torch.rand(6)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    lp = classifier_log_prob(clf, y)(x, t)
    expected = torch.log_softmax(clf(x, t), -1)[torch.arange(6), y]
    close(lp, expected)
    close(classifier_log_prob(clf, 2)(x, 0.3), torch.log_softmax(clf(x, torch.full((6,), 0.3)), -1)[:, 2])
    # The gradient of a linear-softmax classifier: W_y - sum_c p_c W_c (the x-columns of W).
    W = clf.lin.weight[:, :2]
    p = torch.softmax(clf(x, t), -1)
    with torch.no_grad():
        grad = classifier_gradient(classifier_log_prob(clf, y), x, t)
        close(grad, W[y] - p @ W)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_classifier_guidance_runs_without_autograd_and_leaves_the_classifier_alone(mode):
    torch.manual_seed(0)
    clf = TinyClassifier()
    sde = VPSDE()
    exact = labelled_ring().diffused(sde)
    guided = classifier_guided_score(exact.score, classifier_log_prob(clf, 1), 2.0)
    x, t = points(4, n=5), torch.full((5,), 0.5)
    reference = guided(x, t)
    ctx = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with ctx:
        x_in = x.clone()
        out = guided(x_in, t)
    assert not out.requires_grad and torch.equal(x_in, x)
    close(out, reference)
    assert all(p.grad is None for p in clf.parameters())


def test_a_classifier_independent_of_x_adds_nothing():
    x = points(0, n=3)
    grad = classifier_gradient(lambda x, t: torch.zeros(3, requires_grad=True) * 1.0, x, 0.5)
    assert torch.equal(grad, torch.zeros_like(x))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_follow_the_input(device, dtype):
    sde = VPSDE()
    exact = labelled_ring().diffused(sde)
    x = points(0, n=4).to(device=device, dtype=dtype)
    t = torch.full((4,), 0.5, device=device, dtype=dtype)
    scale = torch.tensor([0.0, 1.0, 2.0, 3.0])  # a CPU float64 tensor moves to the input's device and dtype
    cond = exact.conditional(1)
    for guided in (
        guided_score(exact.score, cond.score, scale),
        guided_score(exact.eps, cond.eps, 2.0, sde=sde, prediction="eps", rescale=0.5, rescale_space="x0"),
        classifier_guided_score(exact.score, class_log_prob(exact, 1), scale),
        cfg_score(ScoreModel(LabelNet(exact, "eps"), sde), {"y": torch.ones(4, dtype=torch.long, device=device)},
                  {"y": torch.full((1,), NULL, device=device)}, 2.0),
    ):
        out = guided(x, t)
        assert out.device == x.device and out.dtype == dtype
        ref = guided(x.cpu().double(), t.cpu().double())
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(out.cpu().double(), ref, rtol=tol, atol=tol)


def test_partial_binds_a_condition():
    """The documented way to pass conditional ScoreModel calls: functools.partial."""
    sde = VPSDE()
    exact = labelled_ring().diffused(sde)
    model = ScoreModel(LabelNet(exact, "eps"), sde)
    y, null = torch.full((5,), 2), torch.full((5,), NULL)
    guided = guided_score(functools.partial(model, y=null), functools.partial(model, y=y), 3.0)
    x, t = points(9, n=5), torch.full((5,), 0.3)
    close(guided(x, t), cfg_score(model, {"y": y}, {"y": null}, 3.0)(x, t))
    _, sigma = sde.marginal(t)
    close(score_to_eps(guided(x, t), sigma), model.eps(x, t, y=null) + 3.0 * (model.eps(x, t, y=y) - model.eps(x, t, y=null)))
