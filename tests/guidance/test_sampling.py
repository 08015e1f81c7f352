"""Statistical tests with fixed seeds: guided sampling, a learned noisy classifier, imputation.

Mode weights are compared with a chi-square test at level 0.001 (the 0.999 quantile of
chi-square with K - 1 degrees of freedom): with fixed seeds the tests are deterministic,
and with n = 4000 samples a weight error of 0.025 on a 1/3 vs 2/3 split is detected with
probability above 0.9, so the samplers must get the weights right, not just roughly.
"""

import math

import pytest
import torch
from scipy.stats import chi2
from torch import nn

from scoresde import VESDE, VPSDE, GaussianMixture, classifier_guided_score, guided_score, impute
from scoresde.guidance import classifier_log_prob, train_noisy_classifier

from .conftest import WEIGHTS, labelled_ring


def nearest_component(x, mixture):
    return torch.cdist(x, mixture.means).argmin(dim=1)


def assert_mode_weights(k, expected, n, level=1e-3):
    """Chi-square goodness of fit of component counts against the expected weights."""
    counts = torch.bincount(k, minlength=len(expected)).double()
    expected = torch.as_tensor(expected, dtype=torch.float64) * n
    stat = ((counts - expected) ** 2 / expected).sum().item()
    bound = chi2.ppf(1 - level, len(expected) - 1)
    assert stat < bound, f"counts {counts.tolist()} vs expected {expected.tolist()}: chi2 = {stat:.2f} >= {bound:.2f}"


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_min=0.01, sigma_max=10.0)], ids=["vp", "ve"])
def test_classifier_guided_samples_reproduce_the_conditional_mode_weights(sde):
    """Exact score + exact classifier at scale 1 = p(x | y): label 2 owns components 2 and 5, weights 3 : 6."""
    mix = labelled_ring()
    exact = mix.diffused(sde)
    y, n = 2, 4000
    guided = classifier_guided_score(exact.score, lambda x, t: exact.class_log_prob(x, t, y), 1.0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an empty mask: imputation is plain ancestral sampling
        x = impute(sde, guided, torch.zeros(n, 2), torch.zeros(2, dtype=torch.bool), steps=200, generator=gen)
    k = nearest_component(x, mix)
    on_label = (mix.labels[k] == y)
    assert on_label.sum().item() >= n - 4  # p(x | y) puts < 1e-9 of its mass near the other labels' modes
    assert_mode_weights((k[on_label] == 5).long(), [WEIGHTS[2] / 9, WEIGHTS[5] / 9], int(on_label.sum()))
    # Unguided samples, for contrast, visit every label: the test separates the two.
    with torch.no_grad():
        x_u = impute(sde, exact.score, torch.zeros(n, 2), torch.zeros(2, dtype=torch.bool), steps=200, generator=gen)
    assert (mix.labels[nearest_component(x_u, mix)] != y).double().mean() > 0.5


class NoisyClassifier(nn.Module):
    """A small MLP on (x_t / sqrt(alpha^2 + sigma^2), log(sigma_t / alpha_t))."""

    def __init__(self, sde, classes=3, hidden=64):
        super().__init__()
        self.sde = sde
        self.net = nn.Sequential(
            nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x, t):
        alpha, sigma = self.sde.marginal(t)
        scale = torch.sqrt(alpha**2 + sigma**2)[:, None]
        level = torch.log(sigma / alpha).clamp(-5.0, 5.0)[:, None]
        return self.net(torch.cat([x / scale, level], dim=-1))


def test_training_a_noisy_classifier_approaches_the_bayes_classifier():
    """After 1500 Adam steps the mean KL(p_t(y|x_t) || p_phi(y|x_t, t)) over t ~ U[0, 1] is below 0.02 nats.

    The untrained classifier is 0.26 nats away, and accuracy lands within 0.02 of the exact
    Bayes classifier's (0.52 here, chance is 1/3); with n = 20000 test points the
    standard error of an accuracy difference is below 0.005.
    """
    torch.manual_seed(0)
    sde = VPSDE()
    mix = GaussianMixture.ring(6, radius=2.0, std=0.3, labels=[0, 1, 2, 0, 1, 2])
    exact = mix.diffused(sde)
    clf = NoisyClassifier(sde)
    gen = torch.Generator().manual_seed(0)

    def batch():
        x0, k = mix.sample(256, generator=gen, return_labels=True)
        return x0, mix.labels[k]

    test_gen = torch.Generator().manual_seed(1)
    n = 20000
    x0, k = mix.sample(n, generator=test_gen, return_labels=True)
    y = mix.labels[k]
    t = torch.rand(n, generator=test_gen)
    x_t = sde.perturb(x0, t, generator=test_gen)
    bayes = torch.stack([exact.class_log_prob(x_t, t, c) for c in range(3)], dim=-1)

    def kl_and_accuracy():
        with torch.no_grad():
            learned = torch.stack([classifier_log_prob(clf, c)(x_t, t) for c in range(3)], dim=-1)
        kl = (bayes.exp() * (bayes - learned)).sum(-1).mean().item()
        return kl, (learned.argmax(-1) == y).double().mean().item()

    kl_before, _ = kl_and_accuracy()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 1500 tiny steps: one thread is as fast, and immune to busy cores
    try:
        losses = train_noisy_classifier(clf, sde, batch, steps=1500, lr=3e-3, generator=gen)
    finally:
        torch.set_num_threads(threads)
    kl, acc = kl_and_accuracy()
    acc_bayes = (bayes.argmax(-1) == y).double().mean().item()
    assert losses.shape == (1500,) and losses[-100:].mean() < losses[:100].mean()
    assert kl_before > 0.1
    assert kl < 0.02
    assert acc_bayes > 0.45 and acc > acc_bayes - 0.02


def test_imputation_is_exact_when_the_unknown_coordinates_are_independent():
    """A ring in coordinates (0, 1) times an independent coordinate 2: observing coordinate 2
    says nothing about the others, and the replacement method is exact for them."""
    weights = [1.0, 2.0, 3.0, 4.0]
    mix = GaussianMixture.ring(4, radius=3.0, std=0.3, dim=3, weights=weights)
    sde = VPSDE()
    n = 4000
    x_known = torch.full((n, 3), float("nan"))
    x_known[:, 2] = 0.25
    mask = torch.tensor([False, False, True])
    x = impute(sde, mix.diffused(sde).score, x_known, mask, steps=200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 2], x_known[:, 2]) and torch.isfinite(x).all()
    assert_mode_weights(nearest_component(x, mix), [w / 10 for w in weights], n)


@pytest.mark.parametrize("norms", ["noise", "batch"])  # "sample" is biased in 2-D (LangevinCorrector)
def test_langevin_correction_brings_imputation_towards_the_exact_conditional(norms):
    """Two modes (-2, -2) and (2, 2), weights 0.7 / 0.3, observe x_0 = 1: exactly, p(mode 2 | x_0) = 1 - 2e-11.

    Replacement alone commits to a mode before the noisy observation is informative and
    lands near the prior 0.3 / 0.7 mix (its known bias); Langevin corrector steps let the
    unknown coordinate equilibrate with the known one at each noise level and at least
    halve the error. n = 2000: the standard error of a fraction is below 0.011.
    """
    mix = GaussianMixture(torch.tensor([[-2.0, -2.0], [2.0, 2.0]]), 0.4, weights=[0.7, 0.3])
    sde = VPSDE()
    exact = mix.diffused(sde)
    n = 2000
    x_known = torch.zeros(n, 2)
    x_known[:, 0] = 1.0
    mask = torch.tensor([True, False])
    errors = {}
    for m in (0, 3):
        x = impute(sde, exact.score, x_known, mask, steps=200, corrector_steps=m, norms=norms,
                   generator=torch.Generator().manual_seed(0))
        assert torch.equal(x[:, 0], x_known[:, 0])
        errors[m] = 1.0 - (x[:, 1] > 0).double().mean().item()
        if m:
            in_mode = x[x[:, 1] > 0, 1]
            assert abs(in_mode.mean().item() - 2.0) < 0.1 and abs(in_mode.std().item() - 0.4) < 0.05
    assert errors[0] > 0.15  # the replacement method's bias on this problem, well above sampling noise
    assert errors[3] < 0.5 * errors[0]


@pytest.mark.parametrize("predictor,norms", [("ancestral", "noise"), ("euler_maruyama", "noise"), ("ancestral", "batch")])
def test_predictor_corrector_sampling_keeps_the_mode_weights(predictor, norms):
    """With nothing known, impute is a predictor-corrector sampler; the corrector leaves p_t invariant."""
    mix = labelled_ring()
    sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    n = 4000
    gen = torch.Generator().manual_seed(3)
    x = impute(sde, mix.diffused(sde).score, torch.zeros(n, 2), torch.zeros(1, 2, dtype=torch.bool), steps=100,
               corrector_steps=1, predictor=predictor, norms=norms, generator=gen)
    assert_mode_weights(nearest_component(x, mix), [w / sum(WEIGHTS) for w in WEIGHTS], n)
    # Within a mode the spread is the component's, 0.4 (standard error 0.4 / sqrt(2 * 4000 / 6) = 0.011).
    k = nearest_component(x, mix)
    spread = (x - mix.means[k]).std().item()
    assert math.isclose(spread, 0.4, rel_tol=0.1)


def test_guided_imputation_composes():
    """Imputation takes any score: CFG-guided (scale 1) imputation of a labelled ring in coordinates
    (0, 1), with an independent known coordinate 2, samples the conditional p(x_0, x_1 | y) exactly."""
    mix = labelled_ring(dim=3)
    sde = VPSDE()
    exact = mix.diffused(sde)
    n, y = 4000, 2
    x_known = torch.full((n, 3), -0.3)
    mask = torch.tensor([False, False, True])
    guided = guided_score(exact.score, exact.conditional(y).score, 1.0)
    x = impute(sde, guided, x_known, mask, steps=200, generator=torch.Generator().manual_seed(0))
    k = nearest_component(x, mix)
    on_label = mix.labels[k] == y
    assert on_label.sum().item() >= n - 4 and torch.equal(x[:, 2], x_known[:, 2])
    assert_mode_weights((k[on_label] == 5).long(), [WEIGHTS[2] / 9, WEIGHTS[5] / 9], int(on_label.sum()))
