"""The forward SDE as a `solvers` problem, for simulating the forward process in tests."""

from __future__ import annotations

import torch
from torch import Tensor

from scoresde._checks import append_dims


class ForwardProblem:
    r"""$dx = f(t)\,x\,dt + g(t)\,dw$ with `drift(x, t)` and `diffusion(x, t)` (the `solvers` protocol)."""

    noise_type = "additive"

    def __init__(self, sde):
        self.sde = sde

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.sde.drift(x, t)

    def diffusion(self, x: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        return append_dims(self.sde.diffusion(t), x.ndim).expand_as(x)
