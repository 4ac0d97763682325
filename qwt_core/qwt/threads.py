"""Running short CPU work on one torch thread."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block (restored on exit, also on errors).

    For chains of short operations (small LAPACK factorizations, the ordered fp16 dot product's
    elementwise passes): on a loaded CPU every parallel region waits for all threads, so one thread
    is faster; results do not depend on it beyond the usual float reordering.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
