"""Joining the process group that `torchrun` set up."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed"]


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
