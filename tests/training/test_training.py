"""The training loop: exact resume, NaN handling, atomic checkpoints, mismatched checkpoints, bad data."""

import dataclasses
import math

import matplotlib.image
import pytest
import torch

from scoresde import (
    EMA,
    VESDE,
    VPSDE,
    CheckpointError,
    DSMLoss,
    GaussianMixture,
    NonFiniteLossError,
    ScoreModel,
    TrainConfig,
    Trainer,
    nets,
    save_image_grid,
    save_loss_curve,
    training,
)

N, BATCH = 256, 32  # 8 batches per epoch: a 12-step run crosses an epoch boundary


def _data(n=N, seed=0):
    mix = GaussianMixture.ring(4, radius=2.0, std=0.3, dtype=torch.float32)
    return mix.sample(n, generator=torch.Generator().manual_seed(seed), return_labels=True)


def _trainer(tmp_path, init_seed=0, sde=None, hidden=32, prediction="eps", data=None, loss=None, **overrides):
    torch.manual_seed(init_seed)
    net = nets.MLP(2, hidden=hidden, depth=2, emb_dim=16, num_classes=4, dropout=0.1)
    model = ScoreModel(net, sde or VPSDE(), prediction=prediction)
    config = TrainConfig(
        steps=12, batch_size=BATCH, lr=1e-3, warmup_steps=3, ema_decay=0.9, label_dropout=0.2,
        checkpoint=tmp_path / "ckpt.pt", checkpoint_every=4, progress=False,
    )
    loss = loss or DSMLoss(weighting="likelihood", importance_sampling=True)
    return Trainer(model, loss, data if data is not None else _data(), dataclasses.replace(config, **overrides))


def _params(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same_params(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupted_run_resumes_to_the_same_loss_trajectory(tmp_path):
    """Stop after step 10 (last checkpoint: step 8), resume in a fresh trainer: bit-identical to one run.

    The run exercises every random source: network dropout (global torch RNG), label dropout and
    the loss's times and noise (the trainer's generator), the data order across an epoch boundary,
    the learning-rate warm-up, gradient clipping, AdamW moments and the EMA.
    """
    full = _trainer(tmp_path / "a")
    history = full.train()
    assert history.steps == list(range(1, 13))

    class Stop(Exception):
        pass

    def interrupt(trainer, step, loss):
        if step == 10:
            raise Stop

    cut = _trainer(tmp_path / "b")
    cut.callback = interrupt
    with pytest.raises(Stop):
        cut.train()
    assert cut.history.losses == history.losses[:10]

    resumed = _trainer(tmp_path / "b", init_seed=123)  # a different initialisation: the checkpoint decides
    resumed.train(resume=True)
    assert resumed.history.steps == history.steps
    assert resumed.history.losses == history.losses  # exact equality of floats, step by step
    assert resumed.history.grad_norms == history.grad_norms
    _assert_same_params(_params(resumed.model), _params(full.model))
    _assert_same_params(_params(resumed.ema.module), _params(full.ema.module))
    # without the checkpoint a different initialisation gives a different trajectory
    other = _trainer(tmp_path / "c", init_seed=123, steps=2, checkpoint=None).train()
    assert other.losses != history.losses[:2]


class _NaNAfter(torch.utils.data.Dataset):
    """A map-style dataset whose items turn NaN after `good` items have been read."""

    def __init__(self, x, y, good):
        self.x, self.y, self.good, self.reads = x, y, good, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        x = self.x[i] if self.reads <= self.good else torch.full_like(self.x[i], float("nan"))
        return x, self.y[i]


def test_nan_in_a_batch_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = _data()
    trainer = _trainer(tmp_path, data=_NaNAfter(x, y, good=6 * BATCH))
    saved = {}

    def remember(tr, step, loss):
        if step == 4:
            saved["bytes"] = (tmp_path / "ckpt.pt").read_bytes()
            saved["params"] = _params(tr.model)
        if step == 6:
            saved["params6"] = _params(tr.model)

    trainer.callback = remember
    with pytest.raises(NonFiniteLossError, match="step 7") as info:
        trainer.train()
    assert info.value.step == 7
    assert "batch holds NaN" in str(info.value) and "step 4" in str(info.value)
    assert (tmp_path / "ckpt.pt").read_bytes() == saved["bytes"]
    _assert_same_params(_params(trainer.model), saved["params6"])  # no update from the bad batch
    with pytest.raises(CheckpointError, match="not finite"):  # and a broken state is never saved
        with torch.no_grad():
            next(trainer.model.parameters()).fill_(float("nan"))
        trainer.save_checkpoint()
    assert (tmp_path / "ckpt.pt").read_bytes() == saved["bytes"]
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert state["step"] == 4
    _assert_same_params(state["model"], saved["params"])


def test_diverging_loss_stops_before_the_update(tmp_path):
    base = DSMLoss()
    calls = []

    def loss(model, x0, cond=None, generator=None):
        value = base(model, x0, cond=cond, generator=generator)
        if x0.shape[0] == BATCH:
            calls.append(1)
            if len(calls) == 3:
                return value * float("inf")
        return value

    trainer = _trainer(tmp_path, loss=loss, checkpoint=None)
    with pytest.raises(NonFiniteLossError, match="step 3.*model diverged") as info:
        trainer.train()
    assert info.value.step == 3 and trainer.step == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, steps=4)
    trainer.train()
    path = tmp_path / "ckpt.pt"
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary file left behind


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden=48), "architecture.*shape"),
        (dict(sde=VESDE(sigma_min=0.01, sigma_max=5.0)), "SDE.*VPSDE.*VESDE"),
        (dict(prediction="x0"), "prediction"),
    ],
)
def test_a_checkpoint_of_another_model_is_refused_and_nothing_changes(tmp_path, change, message):
    _trainer(tmp_path, steps=4).train()
    path = tmp_path / "ckpt.pt"
    before = path.read_bytes()
    other = _trainer(tmp_path, **change)
    params = _params(other.model)
    with pytest.raises(CheckpointError, match=message):
        other.train(resume=True)
    assert other.step == 0 and not other.history.steps
    _assert_same_params(_params(other.model), params)
    assert path.read_bytes() == before


def test_unreadable_checkpoints(tmp_path):
    trainer = _trainer(tmp_path)
    with pytest.raises(FileNotFoundError, match="path"):
        trainer.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        trainer.load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a scoresde"):
        trainer.load_checkpoint(tmp_path / "foreign.pt")
    _trainer(tmp_path, steps=4).train()
    with pytest.raises(CheckpointError, match="data order"):
        _trainer(tmp_path, batch_size=16).load_checkpoint(tmp_path / "ckpt.pt")


def test_bad_data_and_configuration_raise_clear_errors(tmp_path):
    x, y = _data()
    with pytest.raises(TypeError, match=r"data.*uint8.*127\.5"):
        _trainer(tmp_path, data=(x * 50).to(torch.uint8))
    with pytest.raises(ValueError, match="data.*shape"):
        _trainer(tmp_path, data=torch.randn(100), label_dropout=0.0)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"data: samples \[3\]"):
        _trainer(tmp_path, data=(bad, y))
    with pytest.raises(TypeError, match="labels"):
        _trainer(tmp_path, data=(x, y.float()))
    with pytest.raises(ValueError, match="labels"):
        _trainer(tmp_path, data=(x, y[:10]))
    with pytest.raises(ValueError, match="fewer than batch_size"):
        _trainer(tmp_path, data=(x[:16], y[:16]))
    with pytest.raises(ValueError, match="label_dropout"):
        _trainer(tmp_path, data=x)
    with pytest.raises(ValueError, match=r"data: samples of shape \(3,\)"):
        _trainer(tmp_path, data=(torch.randn(N, 3), y)).train()
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="precision"):
        _trainer(tmp_path, precision="fp16")  # no CUDA device here
    with pytest.raises(ValueError, match="label_dropout"):
        TrainConfig(label_dropout=1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        Trainer(ScoreModel(nets.MLP(2), VPSDE()), DSMLoss(), x, stepz=3)
    with pytest.raises(TypeError, match="loss"):
        Trainer(ScoreModel(nets.MLP(2), VPSDE()), "dsm", x)


def test_ema_follows_its_formula():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = EMA(lin, decay=0.5, warmup=False)
    values = [3.0, -1.0, 2.0]
    expected = 1.0
    for v in values:
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update(lin)
        expected = 0.5 * expected + 0.5 * v
    assert ema.module.weight.item() == pytest.approx(expected)
    warm = EMA(lin, decay=0.999)
    assert [round(warm.current_decay(), 6) for _ in range(1)] == [0.1]  # (1 + 0) / (10 + 0)
    warm.num_updates = 10_000
    assert warm.current_decay() == 0.999


def test_label_dropout_rate_and_values(tmp_path):
    """Labels are replaced by the null label with probability p (binomial, 4 standard errors)."""
    seen = []
    base = DSMLoss()

    def loss(model, x0, cond=None, generator=None):
        if x0.shape[0] == BATCH:
            seen.append(cond["y"].clone())
        return base(model, x0, cond=cond, generator=generator)

    p = 0.25
    _trainer(tmp_path, loss=loss, label_dropout=p, steps=40, checkpoint=None).train()
    y = torch.cat(seen)
    assert set(y.unique().tolist()) <= {0, 1, 2, 3, 4}
    rate = (y == 4).double().mean().item()
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / y.numel())


def test_samples_and_loss_curve_are_saved(tmp_path):
    trainer = _trainer(tmp_path, steps=4, sample_every=2, checkpoint=None, sample_dir=tmp_path / "s")
    trainer.sampler = lambda model: torch.randn(64, 2)
    history = trainer.train()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["samples_0000002.png", "samples_0000004.png"]
    save_loss_curve(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = torch.linspace(-1, 1, 5 * 64).reshape(5, 1, 8, 8)
    save_image_grid(images, tmp_path / "grid.png", nrow=3, scale=2)
    img = matplotlib.image.imread(tmp_path / "grid.png")
    assert img.shape == (2 * 10 * 2, 3 * 10 * 2)  # 2 rows x 3 columns of 8x8 + padding, doubled
    assert img.min() == 0.0 and img.max() == 1.0
    with pytest.raises(ValueError, match="images"):
        save_image_grid(torch.zeros(2, 2, 8, 8), tmp_path / "bad.png")


def test_bf16_autocast_on_the_cpu(tmp_path):
    trainer = _trainer(tmp_path, steps=3, precision="bf16", checkpoint=None)
    history = trainer.train()
    assert all(math.isfinite(v) for v in history.losses)


@pytest.mark.cuda
def test_cuda_bf16_training_and_exact_resume(tmp_path):
    """On CUDA: precision 'auto' is bf16 where supported, and resume is exact there too."""

    def make(sub, seed=0):
        t = _trainer(tmp_path / sub, init_seed=seed)
        t.model.cuda()
        return Trainer(t.model, t.loss, tuple(v.cuda() for v in _data()), t.config)

    full = make("a")
    assert full.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    history = full.train()
    cut = make("b")
    cut.train(steps=8)
    resumed = make("b", seed=7)
    resumed.train(resume=True)
    assert resumed.history.losses == history.losses
