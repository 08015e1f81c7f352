"""Bad inputs across the library, one row each: every one gets a clear error, never a raw torch one.

A row is `(description, call, exception type, message fragment)`: `call()` must raise that
type (or a subclass) with a message matching the fragment (a regular expression), which
names the argument, the value received and what was expected. The next bad input found is
one more row. Sampler-side and likelihood rows are added by those parts' owners; the
behaviour-level tests of each part stay in its own test folder.

Rows build their objects lazily inside the callable, so one moved name fails one row, not
the whole table.
"""

import numpy as np
import pytest
import torch

import scoresde
import scoresde.nets
import scoresde.plotting
import scoresde.training
from scoresde import VESDE, VPSDE, ScoreModel


def _x(n=64, d=2):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0))


def _model(num_classes=None):
    torch.manual_seed(0)
    return ScoreModel(scoresde.nets.MLP(2, hidden=16, depth=1, num_classes=num_classes), VPSDE(), prediction="eps")


def _trainer(data=None, **config):
    config.setdefault("progress", False)
    config.setdefault("batch_size", 16)
    return scoresde.training.Trainer(_model(), scoresde.DSMLoss(), _x() if data is None else data, **config)


def _train_with_labels(labels):
    trainer = scoresde.training.Trainer(
        _model(num_classes=4), scoresde.DSMLoss(), (_x(), labels), batch_size=16, steps=1, progress=False
    )
    return trainer.train()


def _dsm(weighting):
    return scoresde.DSMLoss(weighting=weighting)(_model(), _x(), generator=torch.Generator().manual_seed(0))


def _config(**kw):
    return scoresde.training.TrainConfig(**kw)


BAD_INPUTS = [
    # ------------------------------------------------------------------ SDEs and schedules
    ("VPSDE beta_max below beta_min", lambda: VPSDE(beta_min=20.0, beta_max=0.1), ValueError, r"beta_max: .*got 0.1"),
    ("VPSDE beta_min as a string", lambda: VPSDE(beta_min="0.1"), TypeError, r"beta_min: expected a real number, got '0.1'"),
    ("VPSDE infinite beta_max", lambda: VPSDE(beta_max=float("inf")), ValueError, r"beta_max: expected a finite number > 0"),
    ("VESDE sigma_max below sigma_min", lambda: VESDE(sigma_min=1.0, sigma_max=0.5), ValueError, r"sigma_max: .*got 0.5"),
    ("perturb at t > T", lambda: VPSDE().perturb(torch.zeros(2, 2), 1.5), ValueError, r"t: expected times in \[0, T\]"),
    ("perturb with an int tensor", lambda: VPSDE().perturb(torch.ones(3, 2, dtype=torch.long), 0.5), TypeError,
     r"x0: expected a real floating-point tensor, got dtype torch.int64"),
    ("perturb with noise of another shape", lambda: VPSDE().perturb(_x(3), 0.5, torch.randn(3, 3)), ValueError,
     r"noise: expected the shape of x0"),
    # ------------------------------------------------------------------ parameterisation
    ("ScoreModel with an unknown prediction", lambda: ScoreModel(torch.nn.Identity(), VPSDE(), prediction="noise"),
     ValueError, r"prediction"),
    # ------------------------------------------------------------------ losses
    ("DSM weighting that returns negative values", lambda: _dsm(lambda t: 1.0 - 2.0 * t), ValueError,
     r"weighting: expected finite values lambda\(t\) >= 0.*got -"),
    ("DSM weighting that returns NaN", lambda: _dsm(lambda t: t * float("nan")), ValueError,
     r"weighting: expected finite values .*got nan"),
    ("DSM weighting by an unknown name", lambda: scoresde.DSMLoss(weighting="snr"), ValueError, r"weighting: expected one of"),
    # ------------------------------------------------------------------ TrainConfig
    ("weight_decay = inf", lambda: _config(weight_decay=float("inf")), ValueError, r"weight_decay: expected a finite number >= 0, got inf"),
    ("weight_decay = NaN", lambda: _config(weight_decay=float("nan")), ValueError, r"weight_decay: .*got nan"),
    ("weight_decay < 0", lambda: _config(weight_decay=-0.1), ValueError, r"weight_decay: .*got -0.1"),
    ("grad_clip = True", lambda: _config(grad_clip=True), TypeError, r"grad_clip: expected a finite number > 0 or None, got True"),
    ("grad_clip = inf", lambda: _config(grad_clip=float("inf")), ValueError, r"grad_clip: .*got inf"),
    ("progress = 'no'", lambda: _config(progress="no"), TypeError, r"progress: expected True or False, got 'no'"),
    ("checkpoint = 123", lambda: _config(checkpoint=123), TypeError, r"checkpoint: expected a path .*got 123"),
    ("betas = 0.9", lambda: _config(betas=0.9), TypeError, r"betas: expected a pair \(beta1, beta2\) .*got 0.9"),
    ("betas = ('a', 'b')", lambda: _config(betas=("a", "b")), TypeError, r"betas\[0\]: expected a number in \[0, 1\), got 'a'"),
    ("betas with a value >= 1", lambda: _config(betas=(0.9, 1.0)), ValueError, r"betas\[1\]: .*got 1.0"),
    ("lr = 0", lambda: _config(lr=0.0), ValueError, r"lr: expected a finite number > 0, got 0.0"),
    ("lr as a string", lambda: _config(lr="1e-3"), TypeError, r"lr: .*got '1e-3'"),
    ("ema_decay = 1", lambda: _config(ema_decay=1.0), ValueError, r"ema_decay: .*got 1.0"),
    ("label_dropout = 1", lambda: _config(label_dropout=1.0), ValueError, r"label_dropout: expected a probability in \[0, 1\)"),
    ("precision 'fp8'", lambda: _config(precision="fp8"), ValueError, r"precision: expected one of"),
    ("skip_nonfinite = 1", lambda: _config(skip_nonfinite=1), TypeError, r"skip_nonfinite: expected True or False, got 1"),
    ("steps = 2.5", lambda: _config(steps=2.5), TypeError, r"steps: expected an int, got 2.5"),
    # ------------------------------------------------------------------ Trainer
    ("data as a list of three tensors", lambda: _trainer(data=[_x()] * 3), TypeError,
     r"data: expected .*pair \(x, labels\).*got a list of 3 items"),
    ("data of integer dtype", lambda: _trainer(data=_x().long()), TypeError, r"data: expected floating-point samples"),
    ("data with a NaN sample", lambda: _trainer(data=torch.cat([_x(8), torch.full((1, 2), float("nan")), _x(55)])),
     ValueError, r"data: samples \[8\] contain NaN"),
    ("fewer samples than a batch", lambda: _trainer(data=_x(8)), ValueError, r"data: 8 samples are fewer than batch_size"),
    ("labels above num_classes", lambda: _train_with_labels(torch.full((64,), 9)), ValueError,
     r"labels: expected class labels in \[0, 4\) or the null label 4 .*got 9 at sample 0"),
    ("negative labels", lambda: _train_with_labels(-torch.ones(64, dtype=torch.long)), ValueError,
     r"labels: expected class labels in \[0, 4\).*got -1"),
    ("float labels", lambda: _train_with_labels(torch.zeros(64)), TypeError, r"labels: expected integer class labels"),
    ("checkpoint path that is a directory", lambda: _trainer(checkpoint="."), ValueError, r"checkpoint: '\.' is a directory"),
    ("unknown Trainer keyword", lambda: _trainer(stepz=3), TypeError, r"unexpected keyword arguments \['stepz'\]"),
    ("loss that is not callable", lambda: scoresde.training.Trainer(_model(), "dsm", _x()), TypeError, r"loss: expected a callable"),
    ("fp16 without CUDA", lambda: _trainer(precision="fp16") if not torch.cuda.is_available() else _config(precision="fp8"),
     ValueError, r"precision: "),
    ("EMA decay outside [0, 1)", lambda: scoresde.training.EMA(torch.nn.Linear(1, 1), decay=1.5), ValueError, r"decay: expected a number in \[0, 1\)"),
    # ------------------------------------------------------------------ plotting
    ("image grid of 2-channel images", lambda: scoresde.plotting.image_grid(torch.zeros(2, 2, 8, 8)), ValueError,
     r"images: expected a tensor of shape \(B, 1 or 3, H, W\)"),
    ("samples of an unplottable shape", lambda: scoresde.plotting.save_samples(torch.zeros(4, 3), "x.png"), ValueError,
     r"samples: expected shape \(B, C, H, W\) or \(B, 2\)"),
]


@pytest.mark.parametrize("description, call, exc, match", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(description, call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_the_table_has_unique_descriptions():
    names = [row[0] for row in BAD_INPUTS]
    assert len(names) == len(set(names))
    assert all(isinstance(row[2], type) and issubclass(row[2], Exception) for row in BAD_INPUTS)


def test_numpy_data_is_accepted_not_refused():
    """The positive counterpart of the dtype rows: float64 numpy data trains a float32 model (cast)."""
    trainer = _trainer(data=np.asarray(_x(), dtype=np.float64), steps=1)
    assert trainer.data.x.dtype == torch.float32
    assert len(trainer.train().losses) == 1
