"""Per-step records of a training run."""

from __future__ import annotations

import dataclasses

__all__ = ["History"]


@dataclasses.dataclass
class History:
    """Per-step records of a run: `steps` (1-based step numbers), `losses`, `grad_norms`, `lrs`.

    `skipped` lists the batches passed over with `TrainConfig(skip_nonfinite=True)`, one dict
    per batch: the `step` it was drawn for, where it came from (`where`, dataset indices or
    stream positions) and the `rows` of the batch that were not finite.
    """

    steps: list[int] = dataclasses.field(default_factory=list)
    losses: list[float] = dataclasses.field(default_factory=list)
    grad_norms: list[float] = dataclasses.field(default_factory=list)
    lrs: list[float] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)

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
