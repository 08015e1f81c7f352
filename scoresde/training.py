r"""Training utilities: a resumable training loop with EMA, mixed precision and DDP.

```python
from scoresde import VPSDE, ScoreModel, DSMLoss, Trainer, TrainConfig, nets

model = ScoreModel(nets.MLP(dim=2), VPSDE(), prediction="eps")
trainer = Trainer(model, DSMLoss(), data, TrainConfig(steps=5000, checkpoint="out/ckpt.pt"))
history = trainer.train(resume=True)      # picks up out/ckpt.pt if it exists
samples_model = trainer.ema.module        # the EMA weights, a ScoreModel
```

What the [`Trainer`][scoresde.training.Trainer] does each step: draw a batch in a seeded
order, drop class labels with probability `label_dropout` (classifier-free guidance
training), evaluate the loss under autocast (bf16 on CUDA devices that support it, off on
the CPU), backpropagate, clip the gradient norm, check the loss and the gradient for NaN
or infinity *before* the update, take an AdamW step with linear warm-up, update the EMA
of the weights and the tqdm bar.

Checkpoints hold the model, the EMA, the optimizer, the learning-rate schedule, the
gradient scaler, every random state (torch, CUDA, numpy, Python and the trainer's own
generator, per process) and the position in the data order, so a run resumed from its
last checkpoint reproduces the loss trajectory of an uninterrupted run exactly. They are
written atomically (a temporary file, then `os.replace`), never from a non-finite state,
and loading checks that the checkpoint belongs to the same model and SDE before anything
is changed.

Under `torchrun` call [`init_distributed`][scoresde.training.init_distributed] first: the
trainer then wraps the model in `DistributedDataParallel` (gloo on the CPU, NCCL on CUDA),
gives each process its own shard of each epoch and its own noise, averages the logged loss
over processes and lets process 0 write checkpoints and samples.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._checks import check_int

__all__ = [
    "EMA",
    "TrainConfig",
    "Trainer",
    "History",
    "CheckpointError",
    "NonFiniteLossError",
    "init_distributed",
    "image_grid",
    "save_image_grid",
    "save_samples",
    "save_loss_curve",
]

_FORMAT = "scoresde.trainer/1"
_PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_LR_SCHEDULES = ("constant", "cosine")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another model or SDE."""


class NonFiniteLossError(RuntimeError):
    """The loss (or its gradient) became NaN or infinite; `step` is the step that failed.

    Raised before the optimizer update, so the model still holds the last good weights;
    the checkpoint on disk is the last good one (a non-finite state is never saved).
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


# ---------------------------------------------------------------------- EMA
class EMA:
    r"""Exponential moving average of a module's parameters, $\bar\theta \leftarrow d\,\bar\theta + (1-d)\,\theta$.

    The averaged copy is `ema.module` (an independent deep copy, in eval mode, without
    gradients); buffers are copied as they are. With `warmup=True` the decay is
    $\min(d, \frac{1+n}{10+n})$ after $n$ updates, so early averages do not remember the
    random initialisation (as TensorFlow's `ExponentialMovingAverage` with `num_updates`).

    Arguments:
        model: the module to average.
        decay: $d$ in $[0, 1)$, default 0.999 (Song et al. 2021 use 0.999 to 0.9999).
        warmup: ramp the decay up from 0.1 as above.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay: expected a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current parameters."""
        d = self.current_decay()
        ema_p = [p for p in self.module.parameters()]
        cur_p = [p.detach() for p in model.parameters()]
        if len(ema_p) != len(cur_p):
            raise ValueError("model: it has a different set of parameters from the averaged module")
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite `model`'s parameters and buffers with the averaged ones."""
        model.load_state_dict(self.module.state_dict())

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.decay, self.warmup, self.num_updates = state["decay"], state["warmup"], state["num_updates"]


# ---------------------------------------------------------------------- config
@dataclasses.dataclass
class TrainConfig:
    """Options of the [`Trainer`][scoresde.training.Trainer].

    Attributes:
        steps: total number of optimizer steps of the run (a resumed run continues to it).
        batch_size: samples per step and process.
        lr: AdamW learning rate (after warm-up).
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment decays.
        warmup_steps: linear learning-rate warm-up from 0 (Song et al. 2021 use 5000).
        lr_schedule: `"constant"` after warm-up, or `"cosine"` decay to 0 at `steps`.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        ema_decay: EMA decay, or None for no EMA.
        precision: `"auto"` (bf16 autocast on CUDA devices that support it, else fp32),
            `"bf16"`, `"fp16"` (CUDA, with a gradient scaler) or `"fp32"`.
        seed: seeds the data order and the trainer's noise generator.
        label_dropout: probability of replacing a class label by the null label
            (classifier-free guidance training; Ho & Salimans 2021 use 0.1 to 0.2).
        null_label: the null label; default the network's `null_label` attribute.
        checkpoint: path of the checkpoint file (None: no checkpoints).
        checkpoint_every: save every this many steps (and at the end); None: only at the end.
        sample_every: call the sampler every this many steps (and at the end).
        sample_dir: where sample images go, default next to the checkpoint or `./samples`.
        num_workers: DataLoader workers for `Dataset` inputs (tensor data is indexed directly).
        progress: show a tqdm progress bar.
    """

    steps: int = 10_000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    precision: str = "auto"
    seed: int = 0
    label_dropout: float = 0.0
    null_label: int | None = None
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    sample_every: int | None = None
    sample_dir: str | os.PathLike | None = None
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_int("batch_size", self.batch_size)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_int("num_workers", self.num_workers, minimum=0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if len(tuple(self.betas)) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {_LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"grad_clip: expected a number > 0 or None, got {self.grad_clip!r}")
        if self.ema_decay is not None and not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay: expected a number in [0, 1) or None, got {self.ema_decay!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision: expected one of {_PRECISIONS}, got {self.precision!r}")
        if isinstance(self.label_dropout, bool) or not isinstance(self.label_dropout, (int, float)) or not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout: expected a probability in [0, 1), got {self.label_dropout!r}")
        if self.null_label is not None:
            check_int("null_label", self.null_label, minimum=0)
        for name in ("checkpoint_every", "sample_every"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))


@dataclasses.dataclass
class History:
    """Per-step records of a run: `steps` (1-based step numbers), `losses`, `grad_norms`, `lrs`."""

    steps: list[int] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    grad_norms: list[float] = dataclasses.field(default_factory=list)
    lrs: list[float] = dataclasses.field(default_factory=list)

    def append(self, step: int, loss: float, grad_norm: float, lr: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)
        self.grad_norms.append(grad_norm)
        self.lrs.append(lr)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "History":
        return cls(**{k: list(v) for k, v in state.items()})


# ---------------------------------------------------------------------- data
class _Data:
    """In-memory or map-style data with an epoch order that is a function of (seed, epoch).

    Each epoch is a permutation of all indices; process `rank` of `world` takes positions
    `rank::world` of it and cuts them into full batches (the last partial batch is dropped),
    so the order, and where a run stopped in it, is two integers.
    """

    def __init__(self, data, batch_size: int, seed: int, rank: int, world: int, device: torch.device, num_workers: int):
        self.labels: Tensor | None = None
        self.dataset = None
        if isinstance(data, Tensor):
            self.x = self._check_x(data)
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Tensor) for d in data):
            self.x = self._check_x(data[0])
            self.labels = self._check_labels(data[1], self.x.shape[0])
        elif isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) in (1, 2):
            self.x = self._check_x(data.tensors[0])
            if len(data.tensors) == 2:
                self.labels = self._check_labels(data.tensors[1], self.x.shape[0])
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.x = None
            self.dataset = data
        else:
            raise TypeError(
                "data: expected a float tensor (N, ...), a pair (x, labels) of tensors, a TensorDataset"
                f" or a map-style Dataset, got {type(data).__name__}"
            )
        if self.x is not None:
            self.x = self.x.to(device)
            self.labels = self.labels.to(device) if self.labels is not None else None
        self.n = len(self.dataset) if self.dataset is not None else self.x.shape[0]
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.device, self.num_workers = device, num_workers
        self.per_epoch = (self.n // world) // batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"data: {self.n} samples are fewer than batch_size x processes = {batch_size} x {world}"
            )
        self.epoch, self.index = 0, 0  # the next batch to draw
        self._iter: Iterator | None = None

    @staticmethod
    def _check_x(x: Tensor) -> Tensor:
        if not torch.is_floating_point(x):
            hint = " (images in 0..255: use x.float() / 127.5 - 1)" if x.dtype == torch.uint8 else " (convert with .float())"
            raise TypeError(f"data: expected floating-point samples, got dtype {x.dtype}{hint}")
        if x.ndim < 2:
            raise ValueError(f"data: expected a tensor of shape (N, ...) with one sample per row, got shape {tuple(x.shape)}")
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:5].tolist()
            raise ValueError(f"data: samples {bad} contain NaN or infinite values")
        return x

    @staticmethod
    def _check_labels(y: Tensor, n: int) -> Tensor:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"labels: expected integer class labels, got dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) to match the data, got {tuple(y.shape)}")
        return y.long()

    def _order(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed((self.seed % 2**31) * 2**32 + epoch)
        perm = torch.randperm(self.n, generator=g)[self.rank :: self.world]
        return perm[: self.per_epoch * self.batch_size].view(self.per_epoch, self.batch_size)

    def _index_batches(self, epoch: int, index: int) -> Iterator[list[int]]:
        while True:
            order = self._order(epoch)
            for i in range(index, self.per_epoch):
                yield order[i].tolist()
            epoch, index = epoch + 1, 0

    def next(self) -> tuple[Tensor, Tensor | None]:
        """The next batch `(x0, labels or None)` on the device; advances the position."""
        if self.x is not None:
            idx = self._order(self.epoch)[self.index].to(self.device)
            x, y = self.x[idx], (self.labels[idx] if self.labels is not None else None)
        else:
            if self._iter is None:
                loader = torch.utils.data.DataLoader(
                    self.dataset,
                    batch_sampler=self._index_batches(self.epoch, self.index),
                    num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda",
                )
                self._iter = iter(loader)
            x, y = self._split(next(self._iter))
        self.index += 1
        if self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return x, y

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2:
                raise ValueError(f"data: expected items x or (x, label), got tuples of length {len(batch)}")
            x, y = batch
            y = self._check_labels(torch.as_tensor(y), x.shape[0]).to(self.device, non_blocking=True)
        else:
            x, y = batch, None
        if not isinstance(x, Tensor) or not torch.is_floating_point(x):
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"data: expected floating-point samples, got {got}")
        return x.to(self.device, non_blocking=True), y

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "batch_size": self.batch_size, "seed": self.seed}

    def check_state(self, state: dict) -> None:
        """Raise unless `state` describes this data order (same size, batch size and seed)."""
        if (state["n"], state["batch_size"], state["seed"]) != (self.n, self.batch_size, self.seed):
            raise CheckpointError(
                "checkpoint: its data order (n={n}, batch_size={batch_size}, seed={seed}) differs from this run's"
                f" (n={self.n}, batch_size={self.batch_size}, seed={self.seed}); the run cannot resume exactly".format(**state)
            )

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self.epoch, self.index = state["epoch"], state["index"]
        self._iter = None


# ---------------------------------------------------------------------- distributed
def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group `torchrun` set up; return `(rank, world_size, device)`.

    Without torchrun's environment (`RANK`, `WORLD_SIZE`) it does nothing and returns
    `(0, 1, device)` with the first CUDA device if there is one. The backend defaults to
    NCCL with CUDA (each process on `cuda:LOCAL_RANK`) and gloo on the CPU.

    Example (two processes on one machine):
        ```
        torchrun --nproc_per_node 2 examples/train_digits.py --device cpu
        ```
    """
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if backend not in ("nccl", "gloo", "mpi"):
        raise ValueError(f"backend: expected 'nccl', 'gloo', 'mpi' or None, got {backend!r}")
    device = torch.device("cpu")
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


class _LossModule(nn.Module):
    """The loss as a module, so DistributedDataParallel's forward wraps every network call."""

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, x0: Tensor, cond: dict | None, generator: torch.Generator) -> Tensor:
        return self.loss(self.model, x0, cond=cond, generator=generator)


# ---------------------------------------------------------------------- trainer
def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    generator.set_state(state["generator"])


def _describe_model(model: nn.Module) -> dict:
    net = getattr(model, "net", None)
    sde = getattr(model, "sde", None)
    return {
        "model": type(model).__qualname__,
        "net": type(net).__qualname__ if net is not None else None,
        "sde": repr(sde) if sde is not None else None,
        "prediction": getattr(model, "prediction", None),
        "shapes": {k: tuple(v.shape) for k, v in model.state_dict().items()},
    }


class Trainer:
    r"""Train a score model: AdamW, EMA, gradient clipping, mixed precision, exact resume, DDP.

    Arguments:
        model: the model to train, usually a [`ScoreModel`][scoresde.ScoreModel], already on
            its device.
        loss: a loss `loss(model, x0, cond=None, generator=None) -> scalar`, for example
            [`DSMLoss`][scoresde.losses.DSMLoss], [`DDPMLoss`][scoresde.losses.DDPMLoss] or
            [`NCSNLoss`][scoresde.losses.NCSNLoss]; it must draw its randomness from
            `generator` for runs to be reproducible.
        data: a float tensor `(N, ...)`; a pair `(x, labels)` of tensors (class labels go to
            the network as `y`); a `TensorDataset` of one or two tensors; or a map-style
            `Dataset` whose items are `x` or `(x, label)`.
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

        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.data = _Data(data, config.batch_size, config.seed, self.rank, self.world, self.device, config.num_workers)

        self.null_label = config.null_label
        if config.label_dropout > 0:
            if self.null_label is None:
                net = getattr(model, "net", model)
                self.null_label = getattr(net, "null_label", None)
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
                loss, norm = self._train_step()
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

    def _train_step(self) -> tuple[float, float]:
        x0, y = self.data.next()
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
            self._raise_non_finite(x0, loss_value, norm_value)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss_value, norm_value

    def _raise_non_finite(self, x0: Tensor, loss_value: float, norm_value: float) -> None:
        step = self.step + 1
        finite = torch.isfinite(x0.reshape(x0.shape[0], -1)).all(1)
        if not bool(finite.all()):
            cause = f"the batch holds NaN or infinite values (samples {torch.nonzero(~finite).flatten()[:5].tolist()} of the batch)"
        elif not math.isfinite(loss_value):
            cause = "the batch is finite, so the model diverged: lower the learning rate or clip the gradient"
        else:
            cause = "the gradient norm is not finite although the loss is: lower the learning rate or clip the gradient"
        kept = (
            f"the last good checkpoint ({self.config.checkpoint}, step {self._last_saved}) is kept"
            if self._last_saved is not None
            else "no checkpoint was written by this run"
        )
        raise NonFiniteLossError(
            f"loss = {loss_value!r} (gradient norm {norm_value!r}) at step {step}: {cause}; no update was"
            f" applied and {kept}",
            step,
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
        non-finite weights, so a good checkpoint is never replaced by a broken one. The file
        is written to a temporary name in the same directory, flushed to disk and renamed
        over the old one with `os.replace`, so a crash mid-write leaves the old file whole.
        """
        target = path if path is not None else self.config.checkpoint
        if target is None:
            raise ValueError("path: expected a checkpoint path (or config.checkpoint), got None")
        path = Path(target)
        bad = [name for name, p in self.model.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        if bad:
            raise CheckpointError(
                f"refusing to save step {self.step}: parameters {bad[:5]} are not finite; the checkpoint at {path} is kept"
            )
        state = self.state_dict()  # collective (RNG states of every process)
        if self.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                with open(tmp, "wb") as f:
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        self._last_saved = self.step
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the training state from `path` (written by `save_checkpoint`).

        Everything is checked before anything changes: the format, the model class, the
        network class, every parameter name and shape, the SDE and the prediction type,
        and the data order. A mismatch raises [`CheckpointError`][scoresde.training.CheckpointError]
        and leaves both the trainer and the file untouched.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no checkpoint at {path}")
        try:
            # On the host: random states must stay CPU tensors; load_state_dict moves the rest.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file
            raise CheckpointError(f"path: cannot read a checkpoint from {path}: {err}") from err
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise CheckpointError(f"path: {path} is not a scoresde trainer checkpoint (format {_FORMAT})")
        self._check_compatible(state["meta"], path)
        self.data.check_state(state["data"])
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


# ---------------------------------------------------------------------- images and plots
def _png_bytes(img: np.ndarray) -> bytes:
    """Encode a uint8 array (H, W) or (H, W, 3) as a PNG (zlib; no imaging library needed)."""
    h, w = img.shape[:2]
    color = 2 if img.ndim == 3 else 0
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def image_grid(
    images: Tensor,
    nrow: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    padding: int = 1,
    scale: int = 1,
) -> np.ndarray:
    """Tile a batch of images `(B, C, H, W)` (C = 1 or 3) into one uint8 array, `(H', W')` or `(H', W', 3)`.

    Values are clipped to `value_range` and mapped to 0..255; `nrow` images per row
    (default about the square root of B), `padding` white pixels around each; `scale`
    enlarges each pixel (nearest neighbour) so 8x8 images stay visible.
    """
    from einops import rearrange

    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor of shape (B, 1 or 3, H, W), got {got}")
    B, C = images.shape[:2]
    nrow = max(1, math.ceil(math.sqrt(B))) if nrow is None else check_int("nrow", nrow)
    scale = check_int("scale", scale)
    ncol = math.ceil(B / nrow)
    lo, hi = value_range
    x = ((images.detach().float().cpu().clamp(lo, hi) - lo) / (hi - lo) * 255).round().to(torch.uint8)
    x = torch.nn.functional.pad(x, (padding, padding, padding, padding), value=255)
    pad = ncol * nrow - B
    if pad:
        x = torch.cat([x, torch.full((pad, *x.shape[1:]), 255, dtype=torch.uint8)])
    grid = rearrange(x, "(r c) ch h w -> (r h) (c w) ch", r=ncol, c=nrow)
    if scale > 1:
        grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    arr = grid.numpy()
    return np.ascontiguousarray(arr[..., 0] if C == 1 else arr)


def save_image_grid(images: Tensor, path: str | os.PathLike, **kwargs) -> Path:
    """Save a batch of images `(B, C, H, W)` as one PNG grid; `kwargs` as [`image_grid`][scoresde.training.image_grid]."""
    arr = image_grid(images, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(arr))
    return path


def save_samples(samples: Tensor, path: str | os.PathLike, **kwargs) -> Path:
    """Save samples as a PNG: an image grid for `(B, C, H, W)`, a scatter plot for `(B, 2)` (matplotlib)."""
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples: expected a tensor, got {type(samples).__name__}")
    if samples.ndim == 4:
        return save_image_grid(samples, path, **kwargs)
    if samples.ndim == 2 and samples.shape[1] == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(4, 4))
        xy = samples.detach().float().cpu().numpy()
        ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return path
    raise ValueError(f"samples: expected shape (B, C, H, W) or (B, 2), got {tuple(samples.shape)}")


def save_loss_curve(history: History | Sequence[float], path: str | os.PathLike, smooth: int = 50, log: bool = True) -> Path:
    """Plot the loss per step (raw and a moving average over `smooth` steps) to a PNG (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(history.losses if isinstance(history, History) else list(history), dtype=float)
    steps = np.asarray(history.steps) if isinstance(history, History) else np.arange(1, len(losses) + 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.5, alpha=0.35, label="loss")
    k = max(1, min(smooth, len(losses)))
    if len(losses) >= k > 1:
        avg = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], avg, lw=1.5, label=f"moving average ({k})")
    if log and len(losses) and np.all(losses > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
