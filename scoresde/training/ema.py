"""Exponential moving average of a module's parameters."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


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
