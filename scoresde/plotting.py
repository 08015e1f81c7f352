"""Pictures of samples and of training runs: image grids, scatter plots, loss curves (matplotlib).

matplotlib (and pillow, which it depends on) is an optional dependency; it is imported
only when a picture is written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int

__all__ = ["image_grid", "save_image_grid", "save_samples", "save_loss_curve"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    """Save a batch of images `(B, C, H, W)` as one PNG grid; `kwargs` as [`image_grid`][scoresde.plotting.image_grid]."""
    arr = image_grid(images, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image  # pillow, a dependency of matplotlib

    Image.fromarray(arr).save(path, format="png")  # 8-bit grey or RGB, as the grid
    return path


def save_samples(samples: Tensor, path: str | os.PathLike, **kwargs) -> Path:
    """Save samples as a PNG: an image grid for `(B, C, H, W)`, a scatter plot for `(B, 2)` (matplotlib)."""
    if not isinstance(samples, Tensor):
        raise TypeError(f"samples: expected a tensor, got {type(samples).__name__}")
    if samples.ndim == 4:
        return save_image_grid(samples, path, **kwargs)
    if samples.ndim == 2 and samples.shape[1] == 2:
        plt = _pyplot()
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


def save_loss_curve(history: "Sequence[float] | object", path: str | os.PathLike, smooth: int = 50, log: bool = True) -> Path:
    """Plot the loss per step (raw and a moving average over `smooth` steps) to a PNG (matplotlib)."""
    plt = _pyplot()
    if hasattr(history, "losses") and hasattr(history, "steps"):  # a History
        losses, steps = np.asarray(history.losses, dtype=float), np.asarray(history.steps)
    else:
        losses = np.asarray(list(history), dtype=float)
        steps = np.arange(1, len(losses) + 1)
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
