"""Bad input gets a clear error naming the argument, the value and what was expected."""

import pytest
import torch

import scoresde
from scoresde import VESDE, VPSDE, GaussianMixture, SubVPSDE
from scoresde.vp_schedules import CosineSchedule, InterpolatedSchedule


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: VPSDE(beta_min=20.0, beta_max=0.1), ValueError, r"beta_max: expected a value >= beta_min = 20.0, got 0.1"),
        (lambda: VPSDE(beta_min=-1.0), ValueError, r"beta_min: expected a finite number > 0, got -1.0"),
        (lambda: VPSDE(beta_min=0.0), ValueError, r"beta_min: .*got 0.0"),
        (lambda: VPSDE(beta_max=float("inf")), ValueError, r"beta_max: expected a finite number > 0"),
        (lambda: SubVPSDE(T=0.0), ValueError, r"T: expected a finite number > 0, got 0.0"),
        (lambda: VPSDE(schedule="quadratic"), ValueError, r"schedule: expected 'linear', 'cosine'.*'quadratic'"),
        (lambda: VPSDE(beta_min="0.1"), TypeError, r"beta_min: expected a real number, got '0.1'"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), ValueError, r"sigma_max: expected a value > sigma_min = 1.0, got 0.5"),
        (lambda: VESDE(sigma_min=0.0), ValueError, r"sigma_min"),
        (lambda: CosineSchedule(u_end=1.0), ValueError, r"u_end: expected a value in \(0, 1\)"),
        (lambda: InterpolatedSchedule([0.0, 1.0], [0.0, 0.1]), ValueError, r"log_alpha_knots"),
        (lambda: InterpolatedSchedule([0.5, 1.0], [0.0, -0.1]), ValueError, r"t_knots"),
    ],
)
def test_constructor_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=repr)
def test_time_outside_horizon(sde):
    """Times are checked at the entry points (here `perturb`; `sample`, the losses and
    `log_likelihood` in their own tests), not by the coefficient protocol."""
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"t: expected times in \[0, T\] = \[0, 1.0\], got 1.5"):
        sde.perturb(x, 1.5)
    with pytest.raises(ValueError, match=r"got -0.25"):
        sde.perturb(x, torch.tensor([0.1, -0.25, 0.3]))
    with pytest.raises(ValueError, match="t: expected times"):
        sde.perturb(x, float("nan"))


def test_protocol_is_unchecked_and_takes_numbers():
    """The coefficient methods are the SDE's unchecked protocol: a number becomes a tensor, a time
    past T extrapolates (no host sync, no value check); shape checks of composite methods still run."""
    sde = VPSDE()
    alpha, sigma = sde.marginal(1.5)
    assert isinstance(alpha, torch.Tensor) and alpha.ndim == 0
    torch.testing.assert_close(sde.marginal(torch.tensor(1.5)), (alpha, sigma))
    torch.testing.assert_close(sde.t_from_log_snr(sde.log_snr(0.25)), torch.tensor(0.25))
    with pytest.raises(ValueError, match="batch"):
        sde.drift(torch.randn(3, 2), torch.rand(4))
    assert not hasattr(scoresde, "validation")


def test_batch_size_mismatch():
    sde = VPSDE()
    with pytest.raises(ValueError, match=r"t: expected a scalar or shape \(3,\) to match the batch of x, got shape \(4,\)"):
        sde.perturb(torch.randn(3, 2), torch.rand(4))
    with pytest.raises(ValueError, match=r"t: expected a scalar or a tensor of shape \(B,\), got shape \(3, 1\)"):
        sde.drift(torch.randn(3, 2), torch.rand(3, 1))
    with pytest.raises(ValueError, match=r"noise: expected the shape of x0, \(3, 2\), got \(3, 3\)"):
        sde.perturb(torch.randn(3, 2), 0.5, torch.randn(3, 3))


def test_integer_and_complex_tensors():
    sde = VPSDE()
    with pytest.raises(TypeError, match=r"x: expected a real floating-point tensor, got dtype torch.int64"):
        sde.drift(torch.ones(3, 2, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match=r"x0: expected a real floating-point tensor, got dtype torch.complex64"):
        sde.perturb(torch.ones(3, 2, dtype=torch.complex64), 0.5)
    with pytest.raises(TypeError, match=r"t: expected a real floating-point tensor, got dtype torch.int64"):
        sde.perturb(torch.ones(2, 2), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"t: expected a real number or a floating tensor, got True"):
        sde.perturb(torch.ones(2, 2), True)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor, got list"):
        sde.prior_logp([1.0, 2.0])


def test_other_arguments():
    sde = VPSDE()
    with pytest.raises(ValueError, match=r"shape: expected a non-empty sequence of positive ints, got \(0, 2\)"):
        sde.prior_sample((0, 2))
    with pytest.raises(TypeError, match=r"score: expected a callable"):
        sde.reverse("score")
    with pytest.raises(TypeError, match=r"probability_flow: expected a bool"):
        sde.reverse(lambda x, t: x, probability_flow=1)
    rev = sde.reverse(lambda x, t: x[:, :1])
    with pytest.raises(ValueError, match=r"score: expected an output shaped like x, \(2, 3\), got \(2, 1\)"):
        rev.drift(torch.randn(2, 3), torch.full((2,), 0.5))


def test_mixture_errors():
    with pytest.raises(ValueError, match="stds: expected finite standard deviations > 0"):
        GaussianMixture(torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError, match=r"weights: expected 2 finite positive weights"):
        GaussianMixture(torch.zeros(2, 3), 1.0, weights=[1.0, -1.0])
    mix = GaussianMixture(torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3\), got \(4, 2\)"):
        mix.score(torch.randn(4, 2))
    with pytest.raises(ValueError, match="labels"):
        mix.class_log_prob(torch.randn(4, 3), 0)
    labelled = GaussianMixture(torch.zeros(2, 3), 1.0, labels=[0, 1])
    with pytest.raises(ValueError, match=r"y: expected a label or a \(4,\) tensor of labels, got shape \(3,\)"):
        labelled.class_log_prob(torch.randn(4, 3), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="y: no component has label 5"):
        labelled.condition(5)


def test_declared_options():
    """`option(...)` fields are checked by one `__post_init__`, with messages that name the
    argument, the value and the expected kind, range or choices."""
    import math
    from dataclasses import dataclass

    from scoresde._checks import Options, option

    @dataclass(frozen=True)
    class Toy(Options):
        order: int = option(2, choices=(1, 2, 3))
        final: bool | str = option(True, choices=(True, False, "always"))
        eta: float = option(0.0, ge=0.0, le=1.0)
        lo: float = option(0.0, ge=0.0)
        hi: float = option(math.inf, ge="lo", finite=False)
        cap: float | None = option(None, gt=0.0)
        flag: bool = option(False)
        n: int = option(1, ge=1)

    Toy()
    Toy(order=3, final="always", eta=1.0, lo=2.0, hi=2.0, cap=0.5, flag=True, n=7)
    cases = [
        (dict(order=4), ValueError, r"order: expected one of \(1, 2, 3\), got 4"),
        (dict(order=2.0), TypeError, r"order: expected an int, got 2.0"),
        (dict(final=1), ValueError, r"final: expected one of \(True, False, 'always'\), got 1"),  # 1 is not True
        (dict(eta=1.5), ValueError, r"eta: expected a finite number in \[0, 1\], got 1.5"),
        (dict(eta=math.nan), ValueError, r"eta: expected a finite number in \[0, 1\], got nan"),
        (dict(eta="0"), TypeError, r"eta: expected a real number, got '0'"),
        (dict(lo=1.0, hi=0.5), ValueError, r"hi: expected a number >= 1, got 0.5 \(lo = 1.0\)"),
        (dict(cap=0.0), ValueError, r"cap: expected a finite number > 0, got 0.0"),
        (dict(flag=0), TypeError, r"flag: expected a bool, got 0"),
        (dict(n=0), ValueError, r"n: expected an int >= 1, got 0"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            Toy(**kwargs)
