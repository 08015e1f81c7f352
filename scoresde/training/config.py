"""The options of the training loop, checked once at construction."""

from __future__ import annotations

import dataclasses
import math
import numbers
import os

from .._checks import check_int

__all__ = ["TrainConfig"]

_PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_LR_SCHEDULES = ("constant", "cosine")


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
        progress: show a tqdm progress bar (a bool).
        skip_nonfinite: when True, a batch that holds NaN or infinite samples is not trained
            on: it is skipped with a warning naming its dataset indices, recorded in
            `History.skipped`, and the next batch is drawn for the same step. When False
            (the default) such a batch stops the run with
            [`NonFiniteLossError`][scoresde.training.NonFiniteLossError]; resuming with
            `skip_nonfinite=True` then goes past it. A diverging loss on finite data always
            stops the run.
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
    skip_nonfinite: bool = False

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_int("batch_size", self.batch_size)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_int("num_workers", self.num_workers, minimum=0)
        _check_real("lr", self.lr, "a finite number > 0", lambda v: v > 0)
        _check_real("weight_decay", self.weight_decay, "a finite number >= 0", lambda v: v >= 0)
        betas = self.betas
        if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}")
        for i, b in enumerate(betas):
            _check_real(f"betas[{i}]", b, "a number in [0, 1)", lambda v: 0.0 <= v < 1.0)
        self.betas = tuple(float(b) for b in betas)
        if self.lr_schedule not in _LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected one of {_LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.grad_clip is not None:
            _check_real("grad_clip", self.grad_clip, "a finite number > 0 or None", lambda v: v > 0)
        if self.ema_decay is not None:
            _check_real("ema_decay", self.ema_decay, "a number in [0, 1) or None", lambda v: 0 <= v < 1)
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision: expected one of {_PRECISIONS}, got {self.precision!r}")
        _check_real("label_dropout", self.label_dropout, "a probability in [0, 1)", lambda v: 0 <= v < 1)
        if self.null_label is not None:
            check_int("null_label", self.null_label, minimum=0)
        for name in ("checkpoint_every", "sample_every"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        for name in ("checkpoint", "sample_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name}: expected a path (str or os.PathLike) or None, got {value!r}")
            if isinstance(value, str) and not value:
                raise ValueError(f"{name}: expected a path, got the empty string")
        for name in ("progress", "skip_nonfinite"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")


def _check_real(name: str, value, expected: str, ok) -> None:
    """Raise unless `value` is a real, finite number (not a bool) for which `ok(value)` holds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
