"""Checkpoint contents: random states of every generator and a description of the model."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

_FORMAT = "scoresde.trainer/1"


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
