"""Bad input gets a clear error naming the argument, the value and what was expected."""

import math

import pytest
import torch
from torch import nn

from scoresde import VPSDE, ScoreModel, cfg_score, classifier_guided_score, guided_score, impute
from scoresde.guidance import (
    GuidanceInterval,
    classifier_gradient,
    classifier_guided_eps,
    classifier_log_prob,
    composed_score,
    noise_level,
    noisy_classifier_loss,
    product_of_experts,
    rescale_guidance,
    train_noisy_classifier,
)
from scoresde.inpainting import replace_known

from .conftest import labelled_ring

SDE = VPSDE()
EXACT = labelled_ring().diffused(SDE)
S_U, S_C = EXACT.score, EXACT.conditional(0).score
LOG_P = lambda x, t: EXACT.class_log_prob(x, t, 0)  # noqa: E731
X, T = torch.randn(4, 2, dtype=torch.float64), torch.full((4,), 0.5, dtype=torch.float64)


def logits_net(x, t):
    return torch.stack([x.sum(-1), -x.sum(-1), t], dim=-1)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: guided_score(S_U, S_C, float("nan")), ValueError, r"scale: expected a finite number, got nan"),
        (lambda: guided_score(S_U, S_C, math.inf), ValueError, r"scale: expected a finite number, got inf"),
        (lambda: guided_score(S_U, S_C, torch.tensor([1.0, float("inf")])), ValueError, r"scale: expected finite scales"),
        (lambda: guided_score(S_U, S_C, torch.ones(2, 2)), ValueError, r"scale: expected a number or a \(B,\) tensor, got shape \(2, 2\)"),
        (lambda: guided_score(S_U, S_C, True), TypeError, r"scale: expected a real number, got True"),
        (lambda: guided_score(S_U, S_C, "3"), TypeError, r"scale: expected a real number, got '3'"),
        (lambda: guided_score(S_U, "cond", 1.0), TypeError, r"cond: expected a callable cond\(x, t\), got str"),
        (lambda: guided_score(None, S_C, 1.0), TypeError, r"uncond: expected a callable"),
        (lambda: guided_score(S_U, S_C, 1.0, prediction="noise"), ValueError, r"prediction: expected one of \('eps', 'score', 'x0', 'v', 'flow'\), got 'noise'"),
        (lambda: guided_score(S_U, S_C, 1.0, prediction="eps"), ValueError, r"sde: needed to convert prediction='eps'"),
        (lambda: guided_score(S_U, S_C, 1.0, rescale=0.7), ValueError, r"sde: needed to apply the rescale in rescale_space='x0'"),
        (lambda: guided_score(S_U, S_C, 1.0, rescale=1.5), ValueError, r"rescale: expected phi in \[0, 1\], got 1.5"),
        (lambda: guided_score(S_U, S_C, 1.0, sde=SDE, rescale=0.5, rescale_space="z"), ValueError, r"rescale_space: expected one of"),
        (lambda: guided_score(S_U, S_C, 1.0, sde="vp"), TypeError, r"sde: expected a scoresde.SDE"),
        (lambda: guided_score(S_U, S_C, GuidanceInterval(2.0, 0.1, 1.0)), ValueError, r"sde: a scale schedule .* needs sde="),
        (lambda: composed_score(S_U, [S_C, S_C], [1.0]), ValueError, r"weights: expected 2 weights \(one per condition\), got 1"),
        (lambda: composed_score(S_U, [], []), ValueError, r"conds: expected at least one condition"),
        (lambda: composed_score(S_U, S_C, [1.0]), TypeError, r"conds: expected a sequence of models"),
        (lambda: composed_score(S_U, [S_C], [math.nan]), ValueError, r"weights\[0\]: expected a finite number, got nan"),
        (lambda: product_of_experts([S_U], [GuidanceInterval(1.0, 0.0, 1.0)]), TypeError, r"weights\[0\]: expected a number or a \(B,\) tensor"),
        (lambda: classifier_guided_score(S_U, LOG_P, math.inf), ValueError, r"scale: expected a finite number, got inf"),
        (lambda: classifier_guided_score(S_U, 3, 1.0), TypeError, r"log_prob_y: expected a callable"),
        (lambda: classifier_guided_eps(S_U, LOG_P, 1.0, None), TypeError, r"sde: expected a scoresde.SDE"),
        (lambda: classifier_log_prob(logits_net, 1.5), TypeError, r"y: expected integer labels, got dtype torch.float"),
        (lambda: classifier_log_prob(logits_net, torch.zeros(2, 2, dtype=torch.long)), ValueError, r"y: expected an int or a \(B,\) tensor of labels, got shape \(2, 2\)"),
        (lambda: GuidanceInterval(2.0, 1.0, 0.5), ValueError, r"sigma_hi: expected a value > sigma_lo = 1.0, got 0.5"),
        (lambda: GuidanceInterval(2.0, -1.0, 0.5), ValueError, r"sigma_lo: expected a noise level >= 0, got -1.0"),
        (lambda: GuidanceInterval(2.0, math.nan, 0.5), ValueError, r"sigma_lo: expected a noise level >= 0, got nan"),
        (lambda: GuidanceInterval(math.inf, 0.1, 0.5), ValueError, r"scale: expected a finite number, got inf"),
        (lambda: GuidanceInterval(2.0, 0.1, 0.5, outside=math.nan), ValueError, r"outside: expected a finite number"),
        (lambda: noise_level("vp", 0.5), TypeError, r"sde: expected a scoresde.SDE"),
        (lambda: noise_level(SDE, 1.5), ValueError, r"t: expected times in \[0, T\]"),
        (lambda: rescale_guidance(torch.ones(3), torch.ones(3), 0.5), ValueError, r"guided: expected \(B, ...\) with at least one event dimension"),
        (lambda: rescale_guidance(torch.ones(3, 2), torch.ones(3, 3), 0.5), ValueError, r"cond: expected the shape of guided, \(3, 2\), got \(3, 3\)"),
    ],
)
def test_construction_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_scores_returning_different_shapes():
    guided = guided_score(S_U, lambda x, t: S_C(x, t)[:, :1], 2.0)
    with pytest.raises(ValueError, match=r"cond: expected an output shaped like x, \(4, 2\), got \(4, 1\)"):
        guided(X, T)
    guided = guided_score(lambda x, t: S_U(x, t).sum(), S_C, 2.0)
    with pytest.raises(ValueError, match=r"uncond: expected an output shaped like x, \(4, 2\), got \(\)"):
        guided(X, T)
    guided = composed_score(S_U, [S_C, lambda x, t: None], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"conds\[1\]: expected an output shaped like x, \(4, 2\), got NoneType"):
        guided(X, T)
    guided = classifier_guided_score(lambda x, t: x[:2], LOG_P, 1.0)
    with pytest.raises(ValueError, match=r"score: expected an output shaped like x, \(4, 2\), got \(2, 2\)"):
        guided(X, T)
    with pytest.raises(ValueError, match=r"scores\[0\]: expected an output shaped like x"):
        product_of_experts([lambda x, t: x[:, 0], S_C], [1.0, 1.0])(X, T)


def test_per_sample_scales_of_the_wrong_batch_size():
    with pytest.raises(ValueError, match=r"scale: expected a number or a \(4,\) tensor to match the batch of x, got shape \(3,\)"):
        guided_score(S_U, S_C, torch.ones(3))(X, T)
    with pytest.raises(ValueError, match=r"scale: the schedule returned shape \(2,\), expected a scalar or \(4,\)"):
        guided_score(S_U, S_C, lambda sigma: torch.ones(2), sde=SDE)(X, T)
    with pytest.raises(ValueError, match=r"scale: the schedule returned a NaN or infinite scale"):
        guided_score(S_U, S_C, lambda sigma: sigma * math.inf, sde=SDE)(X, T)


def test_classifier_outputs_checked():
    with pytest.raises(ValueError, match=r"log_prob_y: expected an output of shape \(4,\), one log-probability per sample, got \(4, 1\)"):
        classifier_guided_score(S_U, lambda x, t: LOG_P(x, t)[:, None], 1.0)(X, T)
    with pytest.raises(ValueError, match=r"log_prob_y: its output does not depend on x through autograd"):
        classifier_gradient(lambda x, t: LOG_P(x.detach(), t), X, T)
    with pytest.raises(ValueError, match=r"classifier: expected logits of shape \(4, num_classes\), got \(4,\)"):
        classifier_log_prob(lambda x, t: x.sum(-1), 0)(X, T)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\), got \[0, 5, 1, 1\]"):
        classifier_log_prob(logits_net, torch.tensor([0, 5, 1, 1]))(X, T)


def test_labels_of_the_wrong_batch_size():
    with pytest.raises(ValueError, match=r"y: expected a label or a \(4,\) tensor of labels to match the batch of x, got shape \(3,\)"):
        classifier_log_prob(logits_net, torch.tensor([0, 1, 2]))(X, T)
    model = ScoreModel(lambda x, t, y: torch.zeros_like(x), SDE)
    guided = cfg_score(model, {"y": torch.zeros(3, dtype=torch.long)}, {"y": torch.zeros(1, dtype=torch.long)}, 2.0)
    with pytest.raises(ValueError, match=r"cond\['y'\]: expected a leading batch dimension of 4 \(or 1\) to match x, got shape \(3,\)"):
        guided(X, T)
    guided = cfg_score(model, {"y": torch.zeros(4, dtype=torch.long)}, {"y": torch.zeros(5, dtype=torch.long)}, 2.0)
    with pytest.raises(ValueError, match=r"null_cond\['y'\]: expected a leading batch dimension of 4"):
        guided(X, T)
    with pytest.raises(ValueError, match=r"y: expected a \(4,\) tensor of labels to match the batch of x0, got shape \(2,\)"):
        noisy_classifier_loss(logits_net, SDE, X, torch.zeros(2, dtype=torch.long))


def test_cfg_score_conditions_checked():
    model = ScoreModel(lambda x, t, y: torch.zeros_like(x), SDE)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"cond: expected the keys of null_cond, \['y'\], got \['label'\]"):
        cfg_score(model, {"label": y}, {"y": y}, 2.0)
    with pytest.raises(TypeError, match=r"null_cond: expected a dict of keyword arguments"):
        cfg_score(model, {"y": y}, y, 2.0)
    with pytest.raises(TypeError, match=r"cond\['y'\]: a tensor in one condition and not in the other"):
        cfg_score(model, {"y": y}, {"y": 3}, 2.0)
    with pytest.raises(ValueError, match=r"cond\['y'\]: expected the per-sample shape of null_cond\['y'\], \(\), got \(2,\)"):
        cfg_score(model, {"y": torch.zeros(4, 2)}, {"y": y}, 2.0)
    with pytest.raises(ValueError, match=r"cond\['mode'\]: non-tensor options must be equal .* \(pass batched=False\)"):
        cfg_score(model, {"y": y, "mode": "a"}, {"y": y, "mode": "b"}, 2.0)
    with pytest.raises(ValueError, match=r"prediction: a ScoreModel predicts 'eps'; got prediction='v'"):
        cfg_score(model, {"y": y}, {"y": y}, 2.0, prediction="v")
    with pytest.raises(TypeError, match=r"scale: with a list of conditions, expected a list of scales"):
        cfg_score(model, [{"y": y}, {"y": y}], {"y": y}, 2.0)
    with pytest.raises(ValueError, match=r"rescale: defined for one condition"):
        cfg_score(model, [{"y": y}, {"y": y}], {"y": y}, [1.0, 2.0], rescale=0.5)
    bad = cfg_score(lambda x, t, y: x[:1], {"y": y}, {"y": y}, 2.0)
    with pytest.raises(ValueError, match=r"model: expected an output shaped like its input, \(8, 2\), got \(1, 2\)"):
        bad(X, T)


def test_imputation_inputs_checked():
    known = torch.zeros(4, 2)
    mask = torch.tensor([True, False])
    cases = [
        (dict(mask=torch.ones(3, dtype=torch.bool)), ValueError, r"mask: expected a shape that broadcasts to x_known's \(4, 2\), got \(3,\)"),
        (dict(mask=torch.tensor([0.5, 1.0])), ValueError, r"mask: expected a bool tensor or one of 0s and 1s"),
        (dict(mask=[True, False]), TypeError, r"mask: expected a bool tensor"),
        (dict(steps=0), ValueError, r"steps: expected an int >= 1, got 0"),
        (dict(corrector_steps=-1), ValueError, r"corrector_steps: expected an int >= 0, got -1"),
        (dict(predictor="heun"), ValueError, r"predictor: expected one of \('ancestral', 'euler_maruyama'\), got 'heun'"),
        (dict(t_end=1.0), ValueError, r"t_end: expected a time in \[0, T\) = \[0, 1.0\), got 1.0"),
        (dict(snr=0.0), ValueError, r"snr: expected a finite number > 0, got 0.0"),
        (dict(norms="mean"), ValueError, r"norms: expected one of \('noise', 'sample', 'batch'\), got 'mean'"),
        (dict(x_init=torch.zeros(4, 3)), ValueError, r"x_init: expected the shape of x_known, \(4, 2\), got \(4, 3\)"),
        (dict(score=lambda x, t: x[:, :1]), ValueError, r"score: expected an output shaped like x, \(4, 2\), got (shape )?\(4, 1\)"),
        (dict(score="exact"), TypeError, r"score: expected a callable score\(x, t\), got str"),
    ]
    for kwargs, exc, match in cases:
        args = dict(score=EXACT.score, mask=mask)
        args.update(kwargs)
        score, m = args.pop("score"), args.pop("mask")
        with pytest.raises(exc, match=match):
            impute(SDE, score, known, m, steps=args.pop("steps", 2), **args)
    with pytest.raises(ValueError, match=r"x_known: expected the shape of x, \(4, 2\), got \(2, 2\)"):
        replace_known(known, 0.5, torch.zeros(2, 2), mask, SDE)


def test_training_inputs_checked():
    clf = nn.Linear(2, 3)
    with pytest.raises(ValueError, match=r"steps: required when data is a callable"):
        train_noisy_classifier(clf, SDE, lambda: (X, torch.zeros(4, dtype=torch.long)))
    with pytest.raises(TypeError, match=r"classifier: expected a torch.nn.Module, got function"):
        train_noisy_classifier(logits_net, SDE, [], steps=1)
    with pytest.raises(ValueError, match=r"data: expected batches \(x0, y\), got Tensor"):
        train_noisy_classifier(clf, SDE, [X], steps=1)
    with pytest.raises(ValueError, match=r"t_min: expected a time in \[0, T\) = \[0, 1.0\), got 1.0"):
        noisy_classifier_loss(logits_net, SDE, X, torch.zeros(4, dtype=torch.long), t_min=1.0)
