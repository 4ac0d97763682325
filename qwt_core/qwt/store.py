"""Where the block inputs of the calibration set live between blocks."""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

import torch
from torch import Tensor


class FeatureStore:
    """An ordered list of feature batches kept on the compute device, in host memory, or on disk
    (one file per batch in a temporary folder, so host and device memory stay flat)."""

    def __init__(self, where: str, device: torch.device) -> None:
        self.where, self.device = where, device
        self._items: list[Tensor | str] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        if where == "disk":
            self._dir = tempfile.TemporaryDirectory(prefix="qwt-features-")

    def _put(self, t: Tensor, index: int) -> Tensor | str:
        if self.where == "device":
            return t
        if self.where == "cpu":
            return t.cpu()
        assert self._dir is not None
        path = os.path.join(self._dir.name, f"{index}.pt")
        torch.save(t.cpu(), path)
        return path

    def append(self, t: Tensor) -> None:
        self._items.append(self._put(t.detach(), len(self._items)))

    def __setitem__(self, i: int, t: Tensor) -> None:
        self._items[i] = self._put(t.detach(), i)

    def __getitem__(self, i: int) -> Tensor:
        item = self._items[i]
        t = torch.load(item) if isinstance(item, str) else item
        return t.to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Tensor]:
        return (self[i] for i in range(len(self)))

    def close(self) -> None:
        self._items.clear()
        if self._dir is not None:
            self._dir.cleanup()
