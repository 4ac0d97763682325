"""Where the block inputs of the calibration set live between blocks."""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

import torch
from torch import Tensor


class _OnDisk:
    """One batch written as raw bytes (shape and dtype kept here): no pickling, one write and
    one read of the tensor's bytes."""

    __slots__ = ("path", "shape", "dtype")

    def __init__(self, path: str, t: Tensor) -> None:
        self.path, self.shape, self.dtype = path, tuple(t.shape), t.dtype
        t = t.detach().cpu().contiguous()
        with open(path, "wb") as f:
            f.write(memoryview(t.view(torch.uint8).reshape(-1).numpy()))

    def load(self) -> Tensor:
        t = torch.empty(self.shape, dtype=self.dtype)
        with open(self.path, "rb") as f:
            got = f.readinto(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        if got != t.numel() * t.element_size():
            raise OSError(f"{self.path}: read {got} bytes, expected {t.numel() * t.element_size()}")
        return t

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)


class FeatureStore:
    """An ordered list of feature batches kept on the compute device, in host memory, or on disk
    (one file per batch in a temporary folder, so host and device memory stay flat).

    :meth:`drain` yields the batches in order and forgets each one once read (its file is deleted),
    so a producer writing the next block's batches while draining this one keeps about one set of
    batches alive.
    """

    def __init__(self, where: str, device: torch.device) -> None:
        self.where, self.device = where, device
        self._items: list[Tensor | _OnDisk | None] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._count = 0
        if where == "disk":
            self._dir = tempfile.TemporaryDirectory(prefix="qwt-features-")

    def _put(self, t: Tensor) -> Tensor | _OnDisk:
        if self.where == "device":
            return t
        if self.where == "cpu":
            return t.cpu()
        assert self._dir is not None
        self._count += 1
        return _OnDisk(os.path.join(self._dir.name, f"{self._count}.bin"), t)

    def append(self, t: Tensor) -> None:
        self._items.append(self._put(t.detach()))

    def __setitem__(self, i: int, t: Tensor) -> None:
        self._forget(i)
        self._items[i] = self._put(t.detach())

    def __getitem__(self, i: int) -> Tensor:
        item = self._items[i]
        if item is None:
            raise IndexError(f"feature batch {i} was already drained")
        t = item.load() if isinstance(item, _OnDisk) else item
        return t.to(self.device, non_blocking=True)

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
        """Yield every batch in order, forgetting each as it is read."""
        for i in range(len(self)):
            t = self[i]
            self._forget(i)
            yield t

    def close(self) -> None:
        self._items.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
