"""The training loop: AdamW, EMA, gradient clipping, mixed precision, exact resume, DDP."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .._checks import check_int
from ..plotting import save_samples
from .checkpoints import (
    _FORMAT,
    _describe_model,
    _rng_state,
    _set_rng_state,
    check_checkpoint_path,
    non_finite_state,
    previous_path,
    read_checkpoint,
    write_checkpoint,
)
from .config import TrainConfig
from .data import _Data
from .ema import EMA
from .errors import CheckpointError, NonFiniteLossError
from .history import History

__all__ = ["Trainer"]


class _LossModule(nn.Module):
    """The loss as a module, so DistributedDataParallel's forward wraps every network call."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x0: Tensor, cond: dict | None, generator: torch.Generator) -> Tensor:
        return self.loss(self.model, x0, cond=cond, generator=generator)


@contextlib.contextmanager
def _global_rng_kept(device: torch.device) -> Iterator[None]:
    """Run a block and put torch's (CPU and `device`), numpy's and Python's global random states back after it."""
    np_state, py_state = np.random.get_state(), random.getstate()
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index or 0] if cuda else [], **({"device_type": "cuda"} if cuda else {})):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class Trainer:
    r"""Train a score model: AdamW, EMA, gradient clipping, mixed precision, exact resume, DDP.

    Arguments:
        model: the model to train, usually a [`ScoreModel`][scoresde.ScoreModel], already on
            its device.
        loss: a loss `loss(model, x0, cond=None, generator=None) -> scalar`, for example
            [`DSMLoss`][scoresde.losses.DSMLoss], [`DDPMLoss`][scoresde.losses.DDPMLoss] or
            [`NCSNLoss`][scoresde.losses.NCSNLoss]; it must draw its randomness from
            `generator` for runs to be reproducible.
        data: a float tensor `(N, ...)` (or numpy array); a pair `(x, labels)` of tensors
            (class labels go to the network as `y`); a `TensorDataset` of one or two tensors;
            a map-style `Dataset` whose items are `x` or `(x, label)`; or an `IterableDataset`
            of such items (one pass is one epoch). Samples are cast to the dtype of the
            model's parameters (a numpy dataset gives float64, a model is usually float32);
            labels must lie in `[0, num_classes)` of the network (or be its null label).
            What makes resume exact for each form: the docstring of `scoresde.training.data`.
        config: a [`TrainConfig`][scoresde.training.TrainConfig]; keyword arguments override
            its fields (`Trainer(model, loss, data, steps=1000)`).
        sampler: optional `sampler(model) -> Tensor`, called with the EMA model every
            `sample_every` steps; the samples are saved as a PNG (an image grid for
            `(B, C, H, W)`, a scatter plot for `(B, 2)`).
        callback: optional `callback(trainer, step, loss)` called after every step.

    `train()` returns the [`History`][scoresde.training.History] of the whole run (a resumed
    run's history includes the steps before the checkpoint).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable,
        data,
        config: TrainConfig | None = None,
        *,
        sampler: Callable[[nn.Module], Tensor] | None = None,
        callback: Callable[["Trainer", int, float], None] | None = None,
        **overrides,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module (e.g. a ScoreModel), got {type(model).__name__}")
        if not callable(loss):
            raise TypeError(f"loss: expected a callable loss(model, x0, cond=, generator=), got {type(loss).__name__}")
        if config is None:
            config = TrainConfig()
        elif not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        if overrides:
            unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
            if unknown:
                raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; TrainConfig fields are accepted")
            config = dataclasses.replace(config, **overrides)
        for name, fn in (("sampler", sampler), ("callback", callback)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a callable or None, got {type(fn).__name__}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model: it has no trainable parameters")
        self.model, self.loss, self.config = model, loss, config
        self.sampler, self.callback = sampler, callback
        self.device = params[0].device
        if config.checkpoint is not None:  # a directory or an unwritable place fails now, not after training
            check_checkpoint_path(config.checkpoint)

        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        net = getattr(model, "net", model)
        self.null_label = config.null_label
        if self.null_label is None:
            self.null_label = getattr(net, "null_label", None)
        num_classes = getattr(net, "num_classes", None)
        self.data = _Data(
            data, config.batch_size, config.seed, self.rank, self.world, self.device, config.num_workers,
            dtype=params[0].dtype, num_classes=num_classes if isinstance(num_classes, int) else None,
            null_label=self.null_label,
        )

        if config.label_dropout > 0:
            if self.null_label is None:
                raise ValueError("label_dropout: needs a null label; pass null_label= or use a network with num_classes")
            if self.data.x is not None and self.data.labels is None:
                raise ValueError("label_dropout: the data has no labels; pass data=(x, labels)")

        self.precision = self._resolve_precision(config.precision)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

        self.step = 0
        self.history = History()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed * 7919 + 104729 * self.rank + 1)

        self._module: nn.Module = _LossModule(model, loss)
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._module = DistributedDataParallel(self._module, device_ids=ids)
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: self._lr_factor(step))
        self.ema = EMA(model, config.ema_decay) if config.ema_decay is not None else None
        self._last_saved: int | None = None

    # ------------------------------------------------------------------ helpers
    def _resolve_precision(self, precision: str) -> str:
        cuda = self.device.type == "cuda"
        if precision == "auto":
            return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
        if precision == "fp16" and not cuda:
            raise ValueError(f"precision: 'fp16' needs a CUDA device, the model is on {self.device}; use 'bf16' or 'fp32'")
        return precision

    def _lr_factor(self, step: int) -> float:
        c = self.config
        f = min(1.0, (step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.lr_schedule == "cosine" and c.steps > c.warmup_steps:
            u = min(1.0, max(0.0, (step - c.warmup_steps) / (c.steps - c.warmup_steps)))
            f *= 0.5 * (1.0 + math.cos(math.pi * u))
        return f

    @property
    def is_main(self) -> bool:
        """Whether this is process 0 (the one that writes files)."""
        return self.rank == 0

    @property
    def sample_model(self) -> nn.Module:
        """The model to sample from: the EMA copy if there is one, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def _autocast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return torch.autocast(self.device.type, enabled=False)

    def _check_fits(self) -> None:
        """Run the model on two samples once, so a data/model shape mismatch fails with a clear message."""
        x, y = (self.data.x[:2], self.data.labels[:2] if self.data.labels is not None else None) if self.data.x is not None else (None, None)
        if x is None:
            return
        cond = {"y": y} if y is not None else None
        was_training = self.model.training
        self.model.eval()  # no dropout: the check draws nothing from the global random state
        try:
            with torch.no_grad(), self._autocast():
                self.loss(self.model, x, cond=cond, generator=torch.Generator(device=self.device).manual_seed(0))
        except (ValueError, RuntimeError, TypeError) as err:
            raise ValueError(
                f"data: samples of shape {tuple(x.shape[1:])} (dtype {x.dtype}) do not fit the model: {err}"
            ) from err
        finally:
            self.model.train(was_training)

    def _drop_labels(self, y: Tensor) -> Tensor:
        drop = torch.rand(y.shape, generator=self.generator, device=y.device) < self.config.label_dropout
        return torch.where(drop, torch.full_like(y, self.null_label), y)

    # ------------------------------------------------------------------ the loop
    def train(self, steps: int | None = None, *, resume: bool = False) -> History:
        """Train until step `steps` (default `config.steps`); with `resume`, first load `config.checkpoint` if it exists."""
        c = self.config
        total = c.steps if steps is None else check_int("steps", steps, minimum=0)
        if resume:
            if c.checkpoint is None:
                raise ValueError("resume: needs config.checkpoint, the file to resume from")
            if Path(c.checkpoint).exists():
                self.load_checkpoint(c.checkpoint)
        if self.step == 0:
            self._check_fits()
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=self.step, disable=not (c.progress and self.is_main), desc="train", dynamic_ncols=True)
        smoothed = None
        self.model.train()
        try:
            while self.step < total:
                result = self._train_step()
                if result is None:  # a non-finite batch skipped (skip_nonfinite): draw the next one
                    continue
                loss, norm = result
                self.step += 1
                lr = self.optimizer.param_groups[0]["lr"]
                self.history.append(self.step, loss, norm, lr)
                smoothed = loss if smoothed is None else 0.98 * smoothed + 0.02 * loss
                bar.update(1)
                bar.set_postfix(loss=f"{smoothed:.4g}", refresh=False)
                if c.checkpoint is not None and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.sampler is not None and c.sample_every and self.step % c.sample_every == 0:
                    self.sample()
                if self.callback is not None:
                    self.callback(self, self.step, loss)
        finally:
            bar.close()
        if c.checkpoint is not None and self._last_saved != self.step:
            self.save_checkpoint()
        if self.sampler is not None and not (c.sample_every and self.step % c.sample_every == 0):
            self.sample()
        return self.history

    def _train_step(self) -> tuple[float, float] | None:
        x0, y = self.data.next()
        # Non-finite samples, found on the host before the batch reaches the network (whose
        # buffers, e.g. batch-norm statistics, a forward pass would already change).
        rows = self.data.last_bad_rows
        bad_total = len(rows)
        if self.distributed and self.data.x is None:  # every process skips (or stops) together
            count = torch.tensor([float(bad_total)], device=self.device)
            dist.all_reduce(count)
            bad_total = int(count.item())
        if bad_total and self.config.skip_nonfinite:
            self._skip_batch(rows, bad_total)
            return None
        if bad_total:
            self._raise_non_finite(rows, bad_total, None, None)
        if y is not None and self.config.label_dropout > 0:
            y = self._drop_labels(y)
        cond = {"y": y} if y is not None else None
        with self._autocast():
            loss = self._module(x0, cond, self.generator)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss: expected a scalar tensor, got {loss!r:.80}")
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.config.grad_clip if self.config.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        stats = torch.stack([loss.detach().float().reshape(()), norm.detach().float().reshape(())])
        if self.distributed:
            dist.all_reduce(stats)
            stats /= self.world
        loss_value, norm_value = stats.tolist()  # the step's one host sync
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(norm_value)):
            self._raise_non_finite([], 0, loss_value, norm_value)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss_value, norm_value

    def _skip_batch(self, rows: list[int], bad_total: int) -> None:
        """Pass over a batch with non-finite samples (skip_nonfinite): no forward pass, a warning, a record."""
        where = self.data.describe_last(rows) if rows else "another process's batch"
        self.history.skipped.append({"step": self.step + 1, "where": where, "rows": rows})
        warnings.warn(
            f"step {self.step + 1}: skipped a batch with {bad_total} NaN or infinite samples ({where});"
            " no update was applied, the next batch is drawn (skip_nonfinite=True)",
            stacklevel=3,
        )

    def _raise_non_finite(self, rows: list[int], bad_total: int, loss_value: float | None, norm_value: float | None) -> None:
        step = self.step + 1
        indices = None
        if rows:
            shown = rows[:8]
            indices = [self.data.last[2][r] for r in rows] if self.data.last[2] is not None else None
            cause = (
                f"the batch holds NaN or infinite values: samples at {self.data.describe_last(shown)}"
                f"{' and more' if len(rows) > len(shown) else ''} (rows {shown} of the batch); the network did"
                " not see it; to go past this batch, resume with TrainConfig(skip_nonfinite=True)"
            )
        elif bad_total > 0:
            cause = "another process's batch holds NaN or infinite values (see its error)"
        elif not math.isfinite(loss_value):
            cause = "the batch is finite, so the model diverged: lower the learning rate or clip the gradient"
        else:
            cause = "the gradient norm is not finite although the loss is: lower the learning rate or clip the gradient"
        kept = (
            f"the last good checkpoint ({self.config.checkpoint}, step {self._last_saved}) is kept"
            if self._last_saved is not None
            else "no checkpoint was written by this run"
        )
        values = f"loss = {loss_value!r} (gradient norm {norm_value!r}) at " if loss_value is not None else ""
        raise NonFiniteLossError(
            f"{values}step {step}: {cause}; no update was applied and {kept}",
            step,
            indices,
        )

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def sample(self) -> Path | None:
        """Call the sampler with the EMA model and save the samples as `samples_{step}.png`; returns the path (process 0)."""
        if self.sampler is None or not self.is_main:
            return None
        model = self.sample_model
        was_training = model.training
        model.eval()
        try:
            # The sampler's draws do not move the training's random states (process 0 samples,
            # the others do not, and a resumed run does not repeat the samples before its checkpoint).
            with _global_rng_kept(self.device):
                x = self.sampler(model)
        finally:
            model.train(was_training)
        if not isinstance(x, Tensor):
            raise TypeError(f"sampler: expected it to return a tensor of samples, got {type(x).__name__}")
        directory = Path(self.config.sample_dir) if self.config.sample_dir is not None else (
            Path(self.config.checkpoint).parent if self.config.checkpoint is not None else Path("samples")
        )
        path = directory / f"samples_{self.step:07d}.png"
        save_samples(x, path)
        return path

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The whole training state (collective under DDP: every process must call it)."""
        rng = _rng_state(self.generator, self.device)
        if self.distributed:
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        cfg = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in dataclasses.asdict(self.config).items()}
        return {
            "format": _FORMAT,
            "step": self.step,
            "meta": _describe_model(self.model),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data": self.data.state_dict(),
            "rng": rng_all,
            "history": self.history.state_dict(),
            "config": cfg,
            "world_size": self.world,
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write the training state atomically to `path` (default `config.checkpoint`).

        Refuses (with [`CheckpointError`][scoresde.training.CheckpointError]) a state with
        non-finite weights, EMA weights or optimizer moments, so a good checkpoint is never
        replaced by a broken one. The file carries the SHA-256 of its content; it is written
        to a temporary name in the same directory, flushed to disk, read back and verified,
        and renamed over the old one with `os.replace`, so a crash mid-write leaves the old
        file whole; the file it replaces is kept as `<name>.prev`
        (see `scoresde.training.checkpoints`).
        """
        target = path if path is not None else self.config.checkpoint
        if target is None:
            raise ValueError("path: expected a checkpoint path (or config.checkpoint), got None")
        path = check_checkpoint_path(target)
        bad = non_finite_state({
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
        })
        if bad:
            raise CheckpointError(
                f"refusing to save step {self.step}: {bad[:5]} are not finite; the checkpoint at {path} is kept"
            )
        state = self.state_dict()  # collective (RNG states of every process)
        if self.is_main:
            write_checkpoint(state, path)
        self._last_saved = self.step
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the training state from `path` (written by `save_checkpoint`).

        Everything is checked before anything changes: the SHA-256 of the file's content, the
        format, the model class, the network class, every parameter name and shape, the SDE
        and the prediction type, the data order, and that the model, EMA and optimizer states
        are finite. A mismatch raises [`CheckpointError`][scoresde.training.CheckpointError]
        and leaves both the trainer and the file untouched.
        """
        path = Path(path)
        state = read_checkpoint(path)  # verifies the SHA-256 of the content
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise CheckpointError(f"path: {path} is not a scoresde trainer checkpoint (format {_FORMAT})")
        self._check_compatible(state["meta"], path)
        self.data.check_state(state["data"])
        bad = non_finite_state(state)
        if bad:
            prev = previous_path(path)
            raise CheckpointError(
                f"path: {path} holds NaN or infinite values in {bad[:5]}; nothing was loaded"
                + (f"; the checkpoint it replaced is kept at {prev}" if prev.is_file() else "")
            )
        if (self.ema is None) != (state["ema"] is None):
            raise CheckpointError(f"path: {path} was saved {'without' if state['ema'] is None else 'with'} an EMA; this trainer has ema_decay={self.config.ema_decay}")
        # All checks passed: restore.
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.data.load_state_dict(state["data"])
        rng = state["rng"]
        if len(rng) == self.world:
            _set_rng_state(rng[self.rank], self.generator, self.device)
        else:
            warnings.warn(
                f"checkpoint: saved by {len(rng)} processes, resumed by {self.world}; the random streams are"
                " reseeded, so the run continues but not bit for bit",
                stacklevel=2,
            )
            self.generator.manual_seed(self.config.seed * 7919 + 104729 * self.rank + 1 + state["step"])
        self.history = History.from_state_dict(state["history"])
        self.step = state["step"]
        self._last_saved = self.step

    def _check_compatible(self, meta: dict, path: Path) -> None:
        mine = _describe_model(self.model)
        for key, what in (("model", "model class"), ("net", "network class"), ("sde", "SDE"), ("prediction", "prediction type")):
            if meta[key] != mine[key]:
                raise CheckpointError(
                    f"path: {path} holds a checkpoint of another {what}: it was saved with {meta[key]}, this"
                    f" trainer's model has {mine[key]}"
                )
        theirs, ours = meta["shapes"], mine["shapes"]
        missing = sorted(set(ours) - set(theirs))
        unexpected = sorted(set(theirs) - set(ours))
        shape = sorted(k for k in set(ours) & set(theirs) if tuple(ours[k]) != tuple(theirs[k]))
        if missing or unexpected or shape:
            parts = []
            if missing:
                parts.append(f"missing parameters {missing[:4]}")
            if unexpected:
                parts.append(f"unexpected parameters {unexpected[:4]}")
            if shape:
                k = shape[0]
                parts.append(f"{len(shape)} shape mismatches, e.g. {k}: saved {tuple(theirs[k])}, model {tuple(ours[k])}")
            raise CheckpointError(f"path: {path} holds a checkpoint of another architecture: " + "; ".join(parts))
