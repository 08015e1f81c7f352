"""Bad inputs to sampling, imputation, likelihoods, parameterisations and SDEs, as one table.

Each row is (what, call, exception, message): the call must raise the exception with a message
that names the argument, the value and what was expected. The next bad input found is one more
row. Rows marked "accepted" are inputs that used to be refused or mishandled and must now work.
"""

import math

import numpy as np
import pytest
import solvers
import torch
from torch import nn

import scoresde
from scoresde import VESDE, VPSDE, GaussianMixture, impute, log_likelihood, sample
from scoresde.parameterization import eps_to_score, eps_to_x0, score_to_x0, x0_to_score
from scoresde.samplers import DDIM, Ancestral

SDE = VPSDE()
VE = VESDE(sigma_min=0.01, sigma_max=20.0)
MIX = GaussianMixture.ring(4, radius=2.0, std=0.3)
EXACT = MIX.diffused(SDE)
X = torch.zeros(4, 2)
MASK = torch.tensor([True, False])
CUDA = torch.cuda.is_available()


def _sample(**kw):
    args = dict(sde=SDE, score=EXACT.score, shape=(4, 2), sampler=DDIM(), steps=3)
    args.update(kw)
    return sample(args.pop("sde"), args.pop("score"), args.pop("shape"), args.pop("sampler"), args.pop("steps"), **args)


def _impute(**kw):
    args = dict(score=EXACT.score, x_known=X, mask=MASK, sampler=Ancestral(), steps=3)
    args.update(kw)
    return impute(SDE, args.pop("score"), args.pop("x_known"), args.pop("mask"), args.pop("sampler"), args.pop("steps"),
                  **args)


def _lik(x=None, **kw):
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) if x is None else x
    return log_likelihood(SDE, EXACT.score, x, solver=solvers.Euler(), steps=kw.pop("steps", 4), **kw)


def _nan_known():
    x = X.clone()
    x[1, 0] = float("nan")
    return _impute(x_known=x)


def _model64():
    return nn.Linear(2, 2).double()


BAD = [
    # -- devices and dtypes (issue: raw torch errors)
    ("device='gpu'", lambda: _sample(device="gpu"), ValueError, r"device: expected a device name such as 'cpu', 'cuda'"),
    ("device='meta'", lambda: _sample(device="meta"), ValueError, r"device: 'meta' holds no values to sample"),
    ("device=3.5", lambda: _sample(device=3.5), TypeError, r"device: expected a torch.device or a name"),
    ("dtype='float32'", lambda: _sample(dtype="float32"), TypeError, r"dtype: expected a torch.dtype such as torch.float32"),
    ("dtype=np.float32", lambda: _sample(dtype=np.float32), TypeError, r"dtype: expected a torch.dtype"),
    ("dtype=torch.int64", lambda: _sample(dtype=torch.int64), TypeError, r"dtype: expected a floating-point dtype, got torch.int64"),
    ("float64 model, float32 state", lambda: _sample(score=_model64(), dtype=torch.float32), ValueError,
     r"score: the model's parameters are torch.float64 but the state is torch.float32; sample with dtype=torch.float64"),
    ("x_init float32, dtype=float64", lambda: _sample(shape=None, x_init=torch.zeros(4, 2), dtype=torch.float64),
     ValueError, r"dtype: the state takes x_init's dtype, torch.float32, but dtype=torch.float64"),
    ("x_init on cpu, device='meta'", lambda: _sample(shape=None, x_init=torch.zeros(4, 2), device="meta"), ValueError,
     r"device: 'meta' holds no values"),
    # -- the score callable and its output
    ("score taking one argument", lambda: _sample(score=lambda x: -x), TypeError,
     r"score: expected a callable score\(x, t\) taking the state and the time, got <lambda>\(x\)"),
    ("score returning int", lambda: _sample(score=lambda x, t: torch.zeros(x.shape, dtype=torch.int64)), TypeError,
     r"score: expected a real floating-point output like x \(torch.float32\), got dtype torch.int64"),
    ("score returning bool", lambda: _sample(score=lambda x, t: x > 0), TypeError,
     r"score: expected a real floating-point output .* got dtype torch.bool"),
    ("score returning complex", lambda: _sample(score=lambda x, t: x.to(torch.complex64)), TypeError,
     r"score: expected a real floating-point output .* got dtype torch.complex64"),
    # -- progress and steps
    ("progress=dict(bogus=1)", lambda: _sample(progress=dict(bogus=1)), TypeError,
     r"progress: tqdm does not accept these keyword arguments, \['bogus'\]"),
    ("progress='no'", lambda: _sample(progress="no"), TypeError, r"progress: expected a bool or a dict"),
    ("steps=np.float64(3)", lambda: _sample(steps=np.float64(3.0)), TypeError, r"steps: expected an int"),
    # -- seeds
    ("generator=2**64", lambda: _sample(sampler=DDIM(eta=1.0), generator=2 ** 64), ValueError,
     r"generator: expected a seed in \[0, 2\*\*64\), got 18446744073709551616"),
    ("generator=-1", lambda: _sample(sampler=DDIM(eta=1.0), generator=-1), ValueError, r"generator: expected a seed in \[0, 2\*\*64\)"),
    ("generator=[0, -1, 2, 3]", lambda: _sample(sampler=DDIM(eta=1.0), generator=[0, -1, 2, 3]), ValueError,
     r"generator: expected seeds in \[0, 2\*\*64\), got -1"),
    ("generator='seed'", lambda: _sample(generator="seed"), TypeError, r"generator: expected None, a torch.Generator, an int seed"),
    # -- imputation
    ("impute generator='seed'", lambda: _impute(generator="seed"), TypeError, r"generator: expected None, a torch.Generator"),
    ("impute generator=[0, 1]", lambda: _impute(generator=[0, 1]), ValueError, r"generator: got 2 per-sample seeds for a batch of 4"),
    ("impute NaN known data", _nan_known, ValueError, r"x_known: 1 known values \(where mask is True\) are NaN or inf"),
    ("impute NaN score", lambda: _impute(score=lambda x, t: x * float("nan")), solvers.NonFiniteError,
     r"score: returned a non-finite value \(NaN or inf\) at t = 1"),
    ("impute sampler and predictor", lambda: _impute(predictor="ancestral"), ValueError, r"predictor: give a sampler or a predictor name"),
    ("impute jump_length=0", lambda: _impute(jump_length=0, resample=2), ValueError, r"jump_length: expected an int >= 1, got 0"),
    ("impute resample=1.5", lambda: _impute(resample=1.5), TypeError, r"resample: expected an int, got 1.5"),
    ("impute mask of 2s", lambda: _impute(mask=torch.tensor([2, 0])), ValueError, r"mask: expected a bool tensor or one of 0s and 1s"),
    ("impute sampler class", lambda: _impute(sampler=Ancestral), TypeError, r"sampler: pass an instance, e.g. Ancestral\(\)"),
    # -- log_likelihood
    ("log_likelihood NaN x", lambda: _lik(torch.tensor([[0.0, float("nan")], [0.0, 0.0]], dtype=torch.float64)),
     ValueError, r"x: 1 of 2 samples contain NaN or inf; expected finite data"),
    ("log_likelihood x ~ 1e3", lambda: _lik(1e3 * torch.ones(2, 2, dtype=torch.float64)), ValueError,
     r"x: max \|x\| = 1e\+03 \(2 of 2 samples above 152\), but VPSDE keeps alpha_T = 0.00657 .* expects data of scale"),
    ("log_likelihood x ~ 1e6 (VE)", lambda: log_likelihood(VE, MIX.diffused(VE).score, 1e6 * torch.ones(2, 2, dtype=torch.float64)),
     ValueError, r"x: max \|x\| = 1e\+06 .* data beyond sigma_T / alpha_T = 20 is not forgotten"),
    ("log_likelihood progress='yes'", lambda: _lik(progress="yes"), TypeError, r"progress: expected a bool, got 'yes'"),
    # -- parameterisations
    ("eps_to_score sigma of batch 3", lambda: eps_to_score(torch.zeros(4, 2), torch.ones(3)), ValueError,
     r"sigma: expected a number, a 0-d tensor or a \(B,\) tensor with B = 4 \(the batch of the data\), got shape \(3,\)"),
    ("eps_to_score sigma (4, 2)", lambda: eps_to_score(torch.zeros(4, 2), torch.ones(4, 2)), ValueError, r"sigma: expected .* got shape \(4, 2\)"),
    ("eps_to_score(eps, 0.0)", lambda: eps_to_score(torch.zeros(4, 2), 0.0), ValueError,
     r"sigma: eps_to_score divides by sigma, which must be nonzero; got sigma = 0.0"),
    ("eps_to_score sigma tensor with a 0", lambda: eps_to_score(torch.zeros(2, 2), torch.tensor([1.0, 0.0])), ValueError,
     r"sigma: eps_to_score divides by sigma"),
    ("Tweedie with alpha = 0", lambda: score_to_x0(torch.zeros(4, 2), torch.zeros(4, 2), 0.0, 1.0), ValueError,
     r"alpha: Tweedie's formula \(score_to_x0\) divides by alpha, which must be nonzero"),
    ("eps_to_x0 alpha = 0 tensor", lambda: eps_to_x0(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4), 1.0), ValueError,
     r"alpha: eps_to_x0 divides by alpha"),
    ("x0_to_score sigma = 0", lambda: x0_to_score(torch.zeros(4, 2), torch.zeros(4, 2), 1.0, 0), ValueError,
     r"sigma: x0_to_score divides by sigma"),
    ("eps_to_score sigma='1'", lambda: eps_to_score(torch.zeros(4, 2), "1"), TypeError, r"sigma: expected a real number or a tensor, got str"),
    # -- SDE constructors and t_from_log_snr (the coefficient protocol is unchecked, but for the
    # inverse log-SNR whose values are on the host: it refuses values outside the SDE's range)
    ("VE t_from_log_snr above log_snr(0)", lambda: VE.t_from_log_snr(100.0), ValueError,
     r"log_snr: expected a log-SNR in \[log_snr\(T\), log_snr\(0\)\] = \[-5.99146, 9.21034\], the range of VESDE on \[0, T\] = \[0, 1.0\], got 100.0"),
    ("VP t_from_log_snr below log_snr(T)", lambda: SDE.t_from_log_snr(torch.tensor([0.0, -50.0])), ValueError,
     r"log_snr: expected a log-SNR in \[log_snr\(T\), log_snr\(0\)\] = \[-10.0\d*, inf\], .* got -50.0"),
    ("t_from_log_snr NaN", lambda: SDE.t_from_log_snr(float("nan")), ValueError, r"log_snr: expected a log-SNR in .* got nan"),
    ("VPSDE beta_max with cosine", lambda: VPSDE(beta_max=10.0, schedule="cosine"), ValueError,
     r"beta_min, beta_max: only the linear schedule uses them, got beta_min=0.1, beta_max=10.0 with schedule='cosine'"),
    ("SubVPSDE beta_min with cosine", lambda: scoresde.SubVPSDE(beta_min=0.5, schedule="cosine"), ValueError,
     r"beta_min, beta_max: only the linear schedule uses them"),
]

if not CUDA:
    BAD += [
        ("device='cuda' without CUDA", lambda: _sample(device="cuda"), ValueError,
         r"device: 'cuda' asks for CUDA, but torch.cuda.is_available\(\) is False here"),
        ("device=0 without an accelerator", lambda: _sample(device=0), ValueError,
         r"device: 0 names an accelerator by index, but none is available here"),
        ("x_init on cpu, device='cuda' without CUDA", lambda: _sample(shape=None, x_init=torch.zeros(4, 2), device="cuda"),
         ValueError, r"device: 'cuda' asks for CUDA"),
    ]


@pytest.mark.parametrize("what,call,exc,match", BAD, ids=[row[0] for row in BAD])
def test_bad_input_gets_a_clear_error(what, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


ACCEPTED = [
    ("steps=np.int64(3)", lambda: _sample(steps=np.int64(3))),
    ("impute steps=np.int32(3)", lambda: _impute(steps=np.int32(3))),
    ("log_likelihood steps=np.int64(4)", lambda: _lik(steps=np.int64(4))),
    ("impute generator=0", lambda: _impute(generator=0)),
    ("impute one seed per sample", lambda: _impute(generator=[3, 1, 4, 1])),
    ("impute one generator per sample", lambda: _impute(generator=[torch.Generator().manual_seed(k) for k in range(4)])),
    ("generator=2**64 - 1", lambda: _sample(sampler=DDIM(eta=1.0), generator=2 ** 64 - 1)),
    ("progress=dict(disable=True)", lambda: _sample(progress=dict(disable=True))),
    ("t_from_log_snr at the ends", lambda: VE.t_from_log_snr(VE.log_snr(torch.tensor([0.0, 1.0])))),
    ("VPSDE(schedule='cosine')", lambda: VPSDE(schedule="cosine")),
]


@pytest.mark.parametrize("what,call", ACCEPTED, ids=[row[0] for row in ACCEPTED])
def test_inputs_that_must_work(what, call):
    out = call()
    if isinstance(out, torch.Tensor):
        assert torch.isfinite(out).all()
    elif hasattr(out, "log_prob"):
        assert torch.isfinite(out.log_prob).all()


def test_seed_2_to_the_64_is_not_seed_0():
    """Seeds used to be reduced modulo 2**64 (generator=2**64 gave generator=0's samples)."""
    a = _sample(sampler=DDIM(eta=1.0), generator=0)
    b = _sample(sampler=DDIM(eta=1.0), generator=2 ** 64 - 1)
    assert not torch.equal(a, b)
    assert math.isfinite(a.sum().item())


@pytest.mark.parametrize("adaptive", [True, False], ids=["adaptive", "fixed-step"])
def test_log_likelihood_progress_bar_counts_to_its_total_and_stays(adaptive, capsys):
    """The bar counts integer steps (fixed-step) or per mille of [t_eps, T] (adaptive), ends at its
    total and is left on screen (it used to count floats, stop at 12% and erase itself)."""
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kw = dict(solver=solvers.Euler(), steps=7) if not adaptive else {}
    log_likelihood(SDE, EXACT.score, x, progress=True, **kw)
    err = capsys.readouterr().err
    total = "7/7" if not adaptive else "1000/1000"
    states = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert states, "no progress bar was shown"
    assert states[-1].startswith("log_likelihood: 100%") and total in states[-1], states[-3:]
