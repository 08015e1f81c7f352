"""The seeded, sharded data order: which samples each process sees at each step."""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor

from .errors import CheckpointError


class _Data:
    """In-memory or map-style data with an epoch order that is a function of (seed, epoch).

    Each epoch is a permutation of all indices; process `rank` of `world` takes positions
    `rank::world` of it and cuts them into full batches (the last partial batch is dropped),
    so the order, and where a run stopped in it, is two integers.
    """

    def __init__(self, data, batch_size: int, seed: int, rank: int, world: int, device: torch.device, num_workers: int):
        self.labels: Tensor | None = None
        self.dataset = None
        if isinstance(data, Tensor):
            self.x = self._check_x(data)
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, Tensor) for d in data):
            self.x = self._check_x(data[0])
            self.labels = self._check_labels(data[1], self.x.shape[0])
        elif isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) in (1, 2):
            self.x = self._check_x(data.tensors[0])
            if len(data.tensors) == 2:
                self.labels = self._check_labels(data.tensors[1], self.x.shape[0])
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.x = None
            self.dataset = data
        else:
            raise TypeError(
                "data: expected a float tensor (N, ...), a pair (x, labels) of tensors, a TensorDataset"
                f" or a map-style Dataset, got {type(data).__name__}"
            )
        if self.x is not None:
            self.x = self.x.to(device)
            self.labels = self.labels.to(device) if self.labels is not None else None
        self.n = len(self.dataset) if self.dataset is not None else self.x.shape[0]
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.device, self.num_workers = device, num_workers
        self.per_epoch = (self.n // world) // batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"data: {self.n} samples are fewer than batch_size x processes = {batch_size} x {world}"
            )
        self.epoch, self.index = 0, 0  # the next batch to draw
        self._iter: Iterator | None = None

    @staticmethod
    def _check_x(x: Tensor) -> Tensor:
        if not torch.is_floating_point(x):
            hint = " (images in 0..255: use x.float() / 127.5 - 1)" if x.dtype == torch.uint8 else " (convert with .float())"
            raise TypeError(f"data: expected floating-point samples, got dtype {x.dtype}{hint}")
        if x.ndim < 2:
            raise ValueError(f"data: expected a tensor of shape (N, ...) with one sample per row, got shape {tuple(x.shape)}")
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:5].tolist()
            raise ValueError(f"data: samples {bad} contain NaN or infinite values")
        return x

    @staticmethod
    def _check_labels(y: Tensor, n: int) -> Tensor:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"labels: expected integer class labels, got dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) to match the data, got {tuple(y.shape)}")
        return y.long()

    def _order(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed((self.seed % 2**31) * 2**32 + epoch)
        perm = torch.randperm(self.n, generator=g)[self.rank :: self.world]
        return perm[: self.per_epoch * self.batch_size].view(self.per_epoch, self.batch_size)

    def _index_batches(self, epoch: int, index: int) -> Iterator[list[int]]:
        while True:
            order = self._order(epoch)
            for i in range(index, self.per_epoch):
                yield order[i].tolist()
            epoch, index = epoch + 1, 0

    def next(self) -> tuple[Tensor, Tensor | None]:
        """The next batch `(x0, labels or None)` on the device; advances the position."""
        if self.x is not None:
            idx = self._order(self.epoch)[self.index].to(self.device)
            x, y = self.x[idx], (self.labels[idx] if self.labels is not None else None)
        else:
            if self._iter is None:
                loader = torch.utils.data.DataLoader(
                    self.dataset,
                    batch_sampler=self._index_batches(self.epoch, self.index),
                    num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda",
                )
                self._iter = iter(loader)
            x, y = self._split(next(self._iter))
        self.index += 1
        if self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return x, y

    def _split(self, batch: Any) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2:
                raise ValueError(f"data: expected items x or (x, label), got tuples of length {len(batch)}")
            x, y = batch
            y = self._check_labels(torch.as_tensor(y), x.shape[0]).to(self.device, non_blocking=True)
        else:
            x, y = batch, None
        if not isinstance(x, Tensor) or not torch.is_floating_point(x):
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"data: expected floating-point samples, got {got}")
        return x.to(self.device, non_blocking=True), y

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "n": self.n, "batch_size": self.batch_size, "seed": self.seed}

    def check_state(self, state: dict) -> None:
        """Raise unless `state` describes this data order (same size, batch size and seed)."""
        if (state["n"], state["batch_size"], state["seed"]) != (self.n, self.batch_size, self.seed):
            raise CheckpointError(
                "checkpoint: its data order (n={n}, batch_size={batch_size}, seed={seed}) differs from this run's"
                f" (n={self.n}, batch_size={self.batch_size}, seed={self.seed}); the run cannot resume exactly".format(**state)
            )

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self.epoch, self.index = state["epoch"], state["index"]
        self._iter = None
