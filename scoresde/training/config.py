"""The options of the training loop, checked once at construction."""

from __future__ import annotations

import dataclasses
import math
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
