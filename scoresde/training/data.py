r"""The seeded, sharded data order: which samples each process sees at each step.

Where a run stands in its data is two integers, `(epoch, index)`: the epoch and the next
batch within it. Everything random on the data path is a function of the run's seed and
that position, never of the history of a random state, so a run resumed at `(epoch, index)`
draws exactly the batches (and the augmentations) that an uninterrupted run draws there:

* tensors and map-style datasets: epoch $e$ is the permutation `randperm(n)` drawn from a
  generator seeded by $(\text{seed}, e)$; process `rank` of `world` takes positions
  `rank::world` of it and cuts them into full batches (the last partial batch is dropped).
  Each item `dataset[i]` is read with torch's, numpy's and Python's global random states
  seeded by $(\text{seed}, e, \text{position})$ (and restored afterwards), so random data
  augmentation gives the same result whatever `num_workers` is and wherever a run resumed;
* iterable datasets: epoch $e$ is one pass over the dataset, read with the random states
  seeded by $(\text{seed}, e, \text{rank})$ (DataLoader workers: seeded from the same, one
  stream per worker, as `DataLoader` does); a resumed run replays the pass up to its position.
  With `num_workers > 0` each worker iterates its own copy of the dataset, which must shard
  itself with `torch.utils.data.get_worker_info()` (as for any `DataLoader`); under DDP each
  process takes items `rank::world` of the stream.

Neither the DataLoader nor the data touches the global random state of the training
process (which the network's dropout draws from): the DataLoader is given its own generator.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from .errors import CheckpointError

_ACCEPTED = (
    "a float tensor (N, ...) or numpy array, a pair (x, labels) of tensors, a TensorDataset of one or two"
    " tensors, a map-style Dataset (__getitem__ and __len__) whose items are x or (x, label), or an"
    " IterableDataset"
)

_MASK64 = (1 << 64) - 1


def _mix64(*values: int) -> int:
    """A 63-bit seed from integers, by SplitMix64 finalisation of each in turn (Steele et al. 2014)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1


@contextlib.contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Run a block with torch's (CPU), numpy's and Python's global random states seeded by `seed`; restore them after."""
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class _PrivateRNG:
    """Global random states (torch CPU, numpy, Python) kept aside for one stream and swapped in around each use."""

    def __init__(self, seed: int):
        with _seeded_global_rng(seed):
            self.state = (torch.get_rng_state(), np.random.get_state(), random.getstate())

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        torch.set_rng_state(self.state[0])
        np.random.set_state(self.state[1])
        random.setstate(self.state[2])
        try:
            yield
        finally:
            self.state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
            torch.set_rng_state(outer[0])
            np.random.set_state(outer[1])
            random.setstate(outer[2])


class _SeededItems(torch.utils.data.Dataset):
    """A map-style dataset read by keys `(index, seed)`: item `index`, with the global random states seeded by `seed`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with _seeded_global_rng(seed):
            return self.dataset[index]


class _SeededStream(torch.utils.data.IterableDataset):
    """An iterable dataset's pass, seeded per pass (and per worker), taking items `rank::world`."""

    def __init__(self, dataset, seed: int, rank: int, world: int):
        self.dataset, self.seed, self.rank, self.world = dataset, seed, rank, world

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        if info is not None:  # a worker: DataLoader seeded its global states from the loader's own generator
            yield from itertools.islice(iter(self.dataset), self.rank, None, self.world)
            return
        # The main process: a private random stream, so the training's own states are untouched.
        rng = _PrivateRNG(self.seed)
        with rng.active():
            it = itertools.islice(iter(self.dataset), self.rank, None, self.world)
        while True:
            with rng.active():
                item = next(it, _END)
            if item is _END:
                return
            yield item


_END = object()


class _Data:
    """The data of a run and its position `(epoch, index)`; see the module's docstring for the order."""

    def __init__(
        self,
        data,
        batch_size: int,
        seed: int,
        rank: int,
        world: int,
        device: torch.device,
        num_workers: int,
        dtype: torch.dtype | None = None,
        num_classes: int | None = None,
        null_label: int | None = None,
    ):
        self.labels: Tensor | None = None
        self.dataset = None
        self.iterable = False
        self.dtype, self.num_classes, self.null_label = dtype, num_classes, null_label
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(data)
        if isinstance(data, Tensor):
            self.x = self._check_x(data)
        elif isinstance(data, (tuple, list)):
            if len(data) != 2 or not all(isinstance(d, (Tensor, np.ndarray)) for d in data):
                kinds = ", ".join(sorted({type(d).__name__ for d in data})) or "nothing"
                raise TypeError(
                    f"data: expected {_ACCEPTED}; got a {type(data).__name__} of {len(data)} items ({kinds})."
                    " A list or tuple is read as the pair (x, labels) only: stack per-sample tensors with"
                    " torch.stack, or wrap them in a Dataset"
                )
            self.x = self._check_x(torch.as_tensor(data[0]))
            self.labels = self._check_labels(torch.as_tensor(data[1]), self.x.shape[0])
        elif isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) in (1, 2):
            self.x = self._check_x(data.tensors[0])
            if len(data.tensors) == 2:
                self.labels = self._check_labels(data.tensors[1], self.x.shape[0])
        elif isinstance(data, torch.utils.data.IterableDataset):
            self.x = None
            self.dataset = data
            self.iterable = True
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (str, bytes, dict)):
            self.x = None
            self.dataset = data
        else:
            raise TypeError(f"data: expected {_ACCEPTED}, got {type(data).__name__}")
        if self.x is not None:
            if dtype is not None and self.x.dtype != dtype:
                self.x = self.x.to(dtype)  # the model's dtype (numpy data is float64 by default)
            self.x = self.x.to(device)
            self.labels = self.labels.to(device) if self.labels is not None else None
        self.n = None if self.iterable else (len(self.dataset) if self.dataset is not None else self.x.shape[0])
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.device, self.num_workers = device, num_workers
        if self.n is not None:
            self.per_epoch = (self.n // world) // batch_size
            if self.per_epoch < 1:
                raise ValueError(
                    f"data: {self.n} samples are fewer than batch_size x processes = {batch_size} x {world}"
                )
        else:
            self.per_epoch = None  # an iterable's pass ends when it ends
        self.epoch, self.index = 0, 0  # the next batch to draw
        self.last: tuple[int, int, list[int] | None] | None = None  # (epoch, index, dataset indices) of the last batch
        self.last_bad_rows: list[int] = []  # rows of the last batch with NaN or infinite values
        self._iter: Iterator | None = None

    # ------------------------------------------------------------------ checks
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

    def _check_labels(self, y: Tensor, n: int, where: list[int] | None = None) -> Tensor:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"labels: expected integer class labels, got dtype {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"labels: expected shape ({n},) to match the data, got {tuple(y.shape)}")
        y = y.long()
        if self.num_classes is not None and y.numel():
            allowed = (y >= 0) & (y < self.num_classes)
            if self.null_label is not None:
                allowed |= y == self.null_label
            if not bool(allowed.all()):  # labels are on the host here: no device-side assert
                i = int(torch.nonzero(~allowed)[0])
                at = f"dataset index {where[i]}" if where is not None else f"sample {i}"
                null = f" or the null label {self.null_label}" if self.null_label is not None else ""
                raise ValueError(
                    f"labels: expected class labels in [0, {self.num_classes}){null} (the network's num_classes"
                    f" is {self.num_classes}), got {int(y[i])} at {at}"
                )
        return y

    # ------------------------------------------------------------------ order
    def _order(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed((self.seed % 2**31) * 2**32 + epoch)
        perm = torch.randperm(self.n, generator=g)[self.rank :: self.world]
        return perm[: self.per_epoch * self.batch_size].view(self.per_epoch, self.batch_size)

    def _item_seed(self, epoch: int, position: int) -> int:
        return _mix64(self.seed, epoch, position, 0xDA7A)

    def _keyed_batches(self, epoch: int, index: int) -> Iterator[list[tuple[int, int]]]:
        """Batches of keys `(dataset index, item seed)` from position `(epoch, index)` on, forever."""
        while True:
            order = self._order(epoch).tolist()
            for i in range(index, self.per_epoch):
                base = (i * self.batch_size) * self.world + self.rank  # position in the epoch's permutation
                yield [(j, self._item_seed(epoch, base + k * self.world)) for k, j in enumerate(order[i])]
            epoch, index = epoch + 1, 0

    def _loader_generator(self, epoch: int) -> torch.Generator:
        # The DataLoader draws its workers' base seed from this, not from the global generator.
        return torch.Generator().manual_seed(_mix64(self.seed, epoch, self.rank, 0x10AD))

    def _open_pass(self, epoch: int) -> Iterator:
        stream = _SeededStream(self.dataset, _mix64(self.seed, epoch, self.rank, 0x57E4), self.rank, self.world)
        loader = torch.utils.data.DataLoader(
            stream,
            batch_size=self.batch_size,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=self._loader_generator(epoch),
        )
        return iter(loader)

    def next(self) -> tuple[Tensor, Tensor | None]:
        """The next batch `(x0, labels or None)` on the device; advances the position and sets `last`."""
        epoch, index = self.epoch, self.index
        indices = None
        self.last_bad_rows = []  # tensor data was checked whole at construction
        if self.x is not None:
            idx = self._order(epoch)[index]
            indices = idx.tolist()
            idx = idx.to(self.device)
            x, y = self.x[idx], (self.labels[idx] if self.labels is not None else None)
        elif not self.iterable:
            if self._iter is None:
                loader = torch.utils.data.DataLoader(
                    _SeededItems(self.dataset),
                    batch_sampler=self._keyed_batches(epoch, index),
                    num_workers=self.num_workers,
                    pin_memory=self.device.type == "cuda",
                    generator=self._loader_generator(epoch),
                )
                self._iter = iter(loader)
            indices = self._order(epoch)[index].tolist()
            x, y = self._split(next(self._iter), indices)
        else:
            batch = self._next_of_stream()
            epoch, index = self.epoch, self.index  # a pass may have ended
            x, y = self._split(batch, None)
        self.last = (epoch, index, indices)
        self.index += 1
        if self.per_epoch is not None and self.index == self.per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return x, y

    def _next_of_stream(self) -> Any:
        if self._iter is None:  # (re)open the pass and replay it up to the position
            self._iter = self._open_pass(self.epoch)
            for i in range(self.index):
                if next(self._iter, _END) is _END:
                    raise CheckpointError(
                        f"checkpoint: the data stream's pass {self.epoch} ended after {i} batches, before the"
                        f" saved position {self.index}; the iterable dataset is not the one the run was saved with"
                    )
        batch = next(self._iter, _END)
        if batch is _END:
            if self.index == 0:
                raise ValueError(
                    f"data: the iterable dataset yielded fewer than batch_size x processes ="
                    f" {self.batch_size} x {self.world} samples in a pass"
                )
            self.epoch, self.index = self.epoch + 1, 0
            self._iter = self._open_pass(self.epoch)
            batch = next(self._iter, _END)
            if batch is _END:
                raise ValueError(f"data: the iterable dataset's pass {self.epoch} yielded no full batch")
        return batch

    def describe_last(self, rows: list[int]) -> str:
        """Where rows `rows` of the last batch come from: dataset indices, or positions in the stream."""
        epoch, index, indices = self.last
        if indices is not None:
            return f"dataset indices {[indices[r] for r in rows]} (epoch {epoch}, batch {index} of the epoch)"
        first = index * self.batch_size
        return (
            f"items {[first + r for r in rows]} of pass {epoch} of the data stream (this process's share;"
            f" batch {index} of the pass)"
        )

    def _split(self, batch: Any, indices: list[int] | None) -> tuple[Tensor, Tensor | None]:
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2:
                raise ValueError(f"data: expected items x or (x, label), got tuples of length {len(batch)}")
            x, y = batch
            y = self._check_labels(torch.as_tensor(y), x.shape[0], indices).to(self.device, non_blocking=True)
        else:
            x, y = batch, None
        if not isinstance(x, Tensor) or not torch.is_floating_point(x):
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"data: expected floating-point samples, got {got}")
        # On the host, where the DataLoader put the batch: no device synchronisation.
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        self.last_bad_rows = torch.nonzero(~finite).flatten().tolist()
        # Samples take the model's dtype (a numpy dataset gives float64, a model is usually float32).
        return x.to(self.device, self.dtype or x.dtype, non_blocking=True), y

    # ------------------------------------------------------------------ state
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
