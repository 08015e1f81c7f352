"""The two errors of training: a checkpoint that cannot be used, a loss that is not finite."""

from __future__ import annotations

__all__ = ["CheckpointError", "NonFiniteLossError"]


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
