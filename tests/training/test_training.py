"""The training loop: exact resume, NaN handling, atomic checkpoints, mismatched checkpoints, bad data."""

import dataclasses
import math
import os
import random
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import torch

from scoresde import VESDE, VPSDE, DSMLoss, GaussianMixture, ScoreModel, TrainConfig, Trainer, nets
from scoresde.plotting import save_image_grid, save_loss_curve
from scoresde.training import EMA, CheckpointError, NonFiniteLossError

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
    with pytest.raises(CheckpointError, match="not a checkpoint"):
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


# ---------------------------------------------------------------------- exact resume, every data form
class _Augmented(torch.utils.data.Dataset):
    """A map-style dataset with random augmentation from torch's, numpy's and Python's global generators."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        jitter = 0.05 * torch.randn(2) + 0.01 * float(np.random.randn()) + 0.01 * random.random()
        return self.x[i] + jitter, self.y[i]


class _Stream(torch.utils.data.IterableDataset):
    """An iterable dataset that shuffles each pass and augments each item (global torch generator)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in torch.randperm(len(self.x))[wid::nw].tolist():
            yield self.x[i] + 0.05 * torch.randn(2), self.y[i]


def _run_interrupted(tmp_path, data, **overrides):
    """An uninterrupted 12-step run and one stopped after step 10 and resumed from its step-8 checkpoint."""
    full = _trainer(tmp_path / "a", data=data, **overrides)
    history = full.train()

    class Stop(Exception):
        pass

    def interrupt(trainer, step, loss):
        if step == 10:
            raise Stop

    cut = _trainer(tmp_path / "b", data=data, **overrides)
    cut.callback = interrupt
    with pytest.raises(Stop):
        cut.train()
    resumed = _trainer(tmp_path / "b", init_seed=123, data=data, **overrides)
    resumed.train(resume=True)
    return full, history, resumed


@pytest.mark.parametrize("kind", ["map", "iterable"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_is_exact_for_datasets_with_augmentation_and_dropout(tmp_path, kind, num_workers):
    """Resumed mid-epoch (step 8 of 8 per epoch, then across the boundary): bit-identical losses and weights.

    The network has dropout (torch's global generator in the training process) and the data
    augmentation draws from the global generators of whichever process reads the items.
    """
    x, y = _data()
    data = _Augmented(x, y) if kind == "map" else _Stream(x, y)
    full, history, resumed = _run_interrupted(tmp_path, data, num_workers=num_workers)
    assert resumed.history.steps == history.steps
    assert resumed.history.losses == history.losses
    assert resumed.history.grad_norms == history.grad_norms
    _assert_same_params(_params(resumed.model), _params(full.model))
    _assert_same_params(_params(resumed.ema.module), _params(full.ema.module))
    if kind == "map" and num_workers == 2:  # items are seeded by their position: workers change nothing
        same = _trainer(tmp_path / "c", data=data, num_workers=0, checkpoint=None).train()
        assert same.losses == history.losses


def test_the_data_path_leaves_the_global_generator_alone(tmp_path):
    """Reading a batch from a Dataset draws nothing from the training process's global generators."""
    x, y = _data()
    trainer = _trainer(tmp_path, data=_Augmented(x, y), checkpoint=None)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    trainer.data.next()
    trainer.data.next()
    assert torch.equal(torch.get_rng_state(), before[0])
    assert (np.random.get_state()[1] == before[1]).all() and random.getstate() == before[2]


# ---------------------------------------------------------------------- verified checkpoints
def test_a_flipped_byte_in_a_checkpoint_is_refused_naming_the_file_and_the_previous_one(tmp_path):
    trainer = _trainer(tmp_path, steps=8)  # saves at steps 4 and 8: step 4 is kept as ckpt.pt.prev
    trainer.train()
    path = tmp_path / "ckpt.pt"
    assert (tmp_path / "ckpt.pt.prev").is_file()
    data = bytearray(path.read_bytes())
    # one byte inside a weight's storage record (an ordinary torch.load would accept it)
    weight = max(trainer.model.parameters(), key=lambda p: p.numel())
    needle = weight.detach().cpu().numpy().tobytes()[:16]
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 3] ^= 0x40
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["step"] == 8  # torch itself does not notice
    fresh = _trainer(tmp_path)
    with pytest.raises(CheckpointError, match=r"ckpt\.pt is damaged.*SHA-256.*ckpt\.pt\.prev"):
        fresh.train(resume=True)
    assert fresh.step == 0 and path.read_bytes() == bytes(data)  # nothing loaded, nothing changed
    fresh.load_checkpoint(tmp_path / "ckpt.pt.prev")  # the previous checkpoint is whole
    assert fresh.step == 4


def test_non_finite_ema_or_optimizer_state_is_refused_on_save_and_on_load(tmp_path):
    from scoresde.training.checkpoints import write_checkpoint

    trainer = _trainer(tmp_path, steps=4)
    trainer.train()
    with torch.no_grad():
        next(trainer.ema.module.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="ema.*not finite"):
        trainer.save_checkpoint()
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg"].view(-1)[0] = float("inf")
    write_checkpoint(state, tmp_path / "bad.pt")  # a correctly signed file with a broken moment
    with pytest.raises(CheckpointError, match=r"bad\.pt holds NaN or infinite values in \['optimizer"):
        _trainer(tmp_path).load_checkpoint(tmp_path / "bad.pt")


def test_stale_temporary_files_are_removed_on_the_next_save(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".ckpt.pt.tmp-{dead.pid}"
    live = tmp_path / f".ckpt.pt.tmp-{os.getppid()}"  # a running process: its file is kept
    for p in (stale, live):
        p.write_bytes(b"half a checkpoint")
    _trainer(tmp_path, steps=4).train()
    assert not stale.exists() and live.exists()


def test_a_checkpoint_path_that_is_a_directory_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="checkpoint: .* is a directory"):
        _trainer(tmp_path, checkpoint=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="checkpoint: cannot create .* is a file"):
        _trainer(tmp_path, checkpoint=tmp_path / "file" / "ckpt.pt")


def test_a_crash_while_writing_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, steps=4)
    trainer.train()
    path = tmp_path / "ckpt.pt"
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


# ---------------------------------------------------------------------- bad data, named where it is
def test_labels_out_of_range_are_refused_before_the_network_sees_them(tmp_path):
    x, y = _data()
    bad = y.clone()
    bad[17] = 7  # the network has 4 classes, null label 4
    with pytest.raises(ValueError, match=r"labels: expected class labels in \[0, 4\) or the null label 4.*got 7 at sample 17"):
        _trainer(tmp_path, data=(x, bad))
    trainer = _trainer(tmp_path, data=_Augmented(x, bad), checkpoint=None)
    with pytest.raises(ValueError, match=r"labels: .*got 7 at dataset index 17"):
        trainer.train(steps=8)


def test_float64_numpy_data_is_cast_to_the_model_dtype(tmp_path):
    x, y = _data()

    class Numpy(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x[i].double().numpy(), int(y[i])

    h_np = _trainer(tmp_path, data=Numpy(), steps=3, checkpoint=None).train()
    h_t = _trainer(tmp_path, data=(x, y), steps=3, checkpoint=None).train()
    assert h_np.losses == h_t.losses  # float32 after the cast, the same values
    h_arr = _trainer(tmp_path, data=(x.double().numpy(), y.numpy()), steps=3, checkpoint=None).train()
    assert h_arr.losses == h_t.losses


def test_a_list_of_tensors_says_which_data_forms_are_accepted(tmp_path):
    x, _ = _data()
    with pytest.raises(TypeError, match=r"data: expected .*pair \(x, labels\).*got a list of 3 items"):
        _trainer(tmp_path, data=[x, x, x])


def test_a_nan_sample_is_named_by_its_dataset_index_and_can_be_skipped_on_resume(tmp_path):
    x, y = _data()
    x_bad = x.clone()
    trainer = _trainer(tmp_path, checkpoint=None)
    order = trainer.data._order(0)
    target = int(order[6, 5])  # in the batch of step 7, row 5
    x_bad[target, 0] = float("nan")

    class Bad(torch.utils.data.Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return x_bad[i], y[i]

    run = _trainer(tmp_path, data=Bad())
    with pytest.raises(NonFiniteLossError, match=rf"step 7.*dataset indices \[{target}\].*rows \[5\].*skip_nonfinite") as info:
        run.train()
    assert info.value.indices == [target]
    base = DSMLoss(weighting="likelihood", importance_sampling=True)

    def loss(model, x0, cond=None, generator=None):
        assert torch.isfinite(x0).all(), "the network saw a non-finite batch"
        return base(model, x0, cond=cond, generator=generator)

    resumed = _trainer(tmp_path, data=Bad(), skip_nonfinite=True, loss=loss)
    with pytest.warns(UserWarning, match=rf"step (7|12): skipped.*dataset indices \[{target}\]"):
        history = resumed.train(resume=True)  # from the step-4 checkpoint, past the bad batch
    assert history.steps == list(range(1, 13)) and all(math.isfinite(v) for v in history.losses)
    # the bad sample comes round again in the next epoch, and is skipped again
    assert [s["step"] for s in history.skipped] == [7, 12] and history.skipped[0]["rows"] == [5]
    assert all(f"dataset indices [{target}]" in s["where"] for s in history.skipped)
    clean = _trainer(tmp_path / "clean", data=(x, y), checkpoint=None).train()
    assert history.losses[:6] == clean.losses[:6]


def test_a_negative_dsm_weighting_is_refused():
    model = ScoreModel(nets.MLP(2), VPSDE())
    loss = DSMLoss(weighting=lambda t: 1.0 - 2.0 * t)
    with pytest.raises(ValueError, match=r"weighting: expected finite values lambda\(t\) >= 0.*got -"):
        loss(model, torch.randn(64, 2), generator=torch.Generator().manual_seed(0))


def test_a_sampler_drawing_from_the_global_generator_does_not_break_exact_resume(tmp_path):
    """Sampling at a checkpointed step (8) draws global random numbers; the resumed run does not repeat it."""
    sampler = lambda model: torch.randn(16, 2)  # noqa: E731  (the global generator)
    over = dict(sample_every=4, sample_dir=tmp_path / "s")
    full = _trainer(tmp_path / "a", **over)
    full.sampler = sampler
    history = full.train()
    cut = _trainer(tmp_path / "b", **over)
    cut.sampler = sampler

    def interrupt(trainer, step, loss):
        if step == 10:
            raise KeyboardInterrupt

    cut.callback = interrupt
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    resumed = _trainer(tmp_path / "b", init_seed=5, **over)
    resumed.sampler = sampler
    resumed.train(resume=True)  # from the step-8 checkpoint, saved just before step 8's samples
    assert resumed.history.losses == history.losses


@pytest.mark.cuda
def test_cuda_labels_out_of_range_are_a_clear_error_not_a_device_assert(tmp_path):
    x, y = _data()
    bad = y.clone()
    bad[3] = 11
    t = _trainer(tmp_path, checkpoint=None)
    with pytest.raises(ValueError, match=r"labels: expected class labels in \[0, 4\).*got 11 at sample 3"):
        Trainer(t.model.cuda(), t.loss, (x.cuda(), bad.cuda()), t.config)
    trainer = Trainer(t.model, t.loss, _Augmented(x, bad), t.config)
    with pytest.raises(ValueError, match=r"labels: .*got 11 at dataset index 3"):
        trainer.train(steps=8)
    torch.cuda.synchronize()  # no device-side assert was triggered
