"""The two errors of training: a checkpoint that cannot be used, a loss that is not finite."""

from __future__ import annotations

__all__ = ["CheckpointError", "NonFiniteLossError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another model or SDE."""


class NonFiniteLossError(RuntimeError):
    """The loss (or its gradient) became NaN or infinite; `step` is the step that failed.

    Raised before the optimizer update, so the model still holds the last good weights;
    the checkpoint on disk is the last good one (a non-finite state is never saved).
    `indices` are the dataset indices of the non-finite samples of the batch (None when the
    batch is finite, or when the data is an iterable dataset: the message then gives the
    positions in the stream). To go past a bad batch, resume with
    `TrainConfig(skip_nonfinite=True)`.
    """

    def __init__(self, message: str, step: int, indices: list[int] | None = None):
        super().__init__(message)
        self.step = step
        self.indices = indices
