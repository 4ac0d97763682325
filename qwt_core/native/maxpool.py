"""Max pooling through the CPU kernel (torch's own scan, without the index tensor it also fills)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from . import available, library


def _int(v: int | tuple[int, ...]) -> int | None:
    """The one size of a square setting, else None."""
    if isinstance(v, int):
        return v
    return v[0] if len(set(v)) == 1 else None


def max_pool2d(pool: nn.MaxPool2d, x: Tensor) -> Tensor:
    """``pool(x)`` for x (N, C, H, W): bit for bit (comparisons only, the same scan order) through
    ``qwt_max_pool2d`` where it applies (fp32 contiguous CPU input, square kernel, stride and
    padding, dilation 1, floor mode, no indices), else the module itself."""
    k, s, p, d = _int(pool.kernel_size), _int(pool.stride or pool.kernel_size), _int(pool.padding), _int(pool.dilation)
    if (k is None or s is None or p is None or d != 1 or pool.ceil_mode or pool.return_indices
            or x.dim() != 4 or not x.is_contiguous() or not available(x) or x.requires_grad):
        return pool(x)
    N, C, H, W = x.shape
    oH, oW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    if oH < 1 or oW < 1 or p > k // 2:
        return F.max_pool2d(x, k, s, p)  # (torch's own error for invalid geometry)
    out = x.new_empty(N, C, oH, oW)
    lib = library()
    assert lib is not None
    lib.qwt_max_pool2d(x.data_ptr(), out.data_ptr(), N * C, H, W, oH, oW, k, s, p)
    return out
