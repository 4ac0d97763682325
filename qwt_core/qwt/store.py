"""Where the block inputs of the calibration set live between blocks."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import torch
from torch import Tensor


class Recycler:
    """Host tensors freed by one store's reader and reused by the next reads of the same shape,
    and the folder of the feature files.

    A fresh tensor of a batch's size costs more in page faults than reading the batch's file into
    it: the stores of one fit share one recycler, which keeps at most ``capacity`` spare tensors, so
    memory stays flat. (Files are not reused: writing over a file written moments before was
    slower than a new one, which is deleted before it reaches the disk.) Files live in the
    recycler's temporary folder, removed by :meth:`close`.
    """

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._tensors: list[Tensor] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._count = 0

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor | None:
        """A spare tensor of this shape and dtype, or None."""
        for i, t in enumerate(self._tensors):
            if tuple(t.shape) == tuple(shape) and t.dtype == dtype:
                return self._tensors.pop(i)
        return None

    def give_tensor(self, t: Tensor) -> None:
        self._tensors.append(t)
        del self._tensors[:-self.capacity]

    def file(self) -> str:
        """A new file path in the recycler's folder."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="qwt-features-")
        self._count += 1
        return os.path.join(self._dir.name, f"{self._count}.bin")

    def close(self) -> None:
        self._tensors.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class _OnDisk:
    """One batch written as raw bytes (shape and dtype kept here): no pickling, one write and one
    read of the tensor's bytes."""

    __slots__ = ("path", "shape", "dtype", "nbytes")

    def __init__(self, t: Tensor, recycler: Recycler) -> None:
        t = t.detach().cpu().contiguous()
        self.shape, self.dtype, self.nbytes = tuple(t.shape), t.dtype, t.numel() * t.element_size()
        self.path = recycler.file()
        with open(self.path, "wb", buffering=0) as f:
            f.write(t.view(torch.uint8).reshape(-1).numpy().data)  # (.data: the array's memoryview)

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)

    def load(self, into: Tensor | None = None) -> Tensor:
        t = torch.empty(self.shape, dtype=self.dtype) if into is None else into
        with open(self.path, "rb", buffering=0) as f:
            got = f.readinto(t.view(torch.uint8).reshape(-1).numpy().data)
        if got != self.nbytes:
            raise OSError(f"{self.path}: read {got} bytes, expected {self.nbytes}")
        return t


class FeatureStore:
    """An ordered list of feature batches kept on the compute device, in host memory, or on disk
    (one file per batch, so host and device memory stay flat).

    :meth:`drain` yields the batches in order and forgets each one once read, so a producer writing
    the next block's batches while draining this one keeps about one set of batches alive. On disk,
    a drained batch is read into host memory freed by an earlier drained batch (``recycler``): it
    is valid until the next one is requested.
    """

    def __init__(self, where: str, device: torch.device, recycler: Recycler | None = None) -> None:
        self.where, self.device = where, device
        self._own = recycler is None
        self.recycler = recycler if recycler is not None else Recycler()
        self._items: list[Tensor | _OnDisk | None] = []

    def _put(self, t: Tensor) -> Tensor | _OnDisk:
        if self.where == "device":
            return t
        if self.where == "cpu":
            return t.cpu()
        return _OnDisk(t, self.recycler)

    def append(self, t: Tensor) -> None:
        self._items.append(self._put(t.detach()))

    def __setitem__(self, i: int, t: Tensor) -> None:
        self._forget(i)
        self._items[i] = self._put(t.detach())

    def __getitem__(self, i: int) -> Tensor:
        return self._read(i)

    def _read(self, i: int, into: Tensor | None = None) -> Tensor:
        """Batch i on the compute device; a file is read into ``into`` when it fits (CPU only)."""
        item = self._items[i]
        if item is None:
            raise IndexError(f"feature batch {i} was already drained")
        if isinstance(item, _OnDisk):
            fits = (into is not None and self.device.type == "cpu" and tuple(into.shape) == item.shape
                    and into.dtype == item.dtype)
            return item.load(into if fits else None).to(self.device, non_blocking=True)
        return item.to(self.device, non_blocking=True)

    def _forget(self, i: int) -> None:
        item = self._items[i]
        if isinstance(item, _OnDisk):
            item.remove()
        self._items[i] = None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def drain(self) -> Iterator[Tensor]:
        """Yield every batch in order, forgetting each as it is read (on disk: each valid until the
        next is requested, see the class doc)."""
        recycle = self.device.type == "cpu"
        for i in range(len(self)):
            item = self._items[i]
            on_disk = isinstance(item, _OnDisk) and recycle
            t = self._read(i, self.recycler.tensor(item.shape, item.dtype) if on_disk else None)  # type: ignore[union-attr]
            self._forget(i)
            yield t
            if on_disk:
                self.recycler.give_tensor(t)
            del t

    def close(self) -> None:
        for i in range(len(self._items)):
            if self._items[i] is not None:
                self._forget(i)
        self._items.clear()
        if self._own:
            self.recycler.close()
