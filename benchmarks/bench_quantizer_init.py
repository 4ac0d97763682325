"""Speed-up of the vectorized percentile-MSE quantizer initialisation over the reference's
per-channel loop, on ViT-B-sized tensors. Prints ratios measured in this run.

    python -m benchmarks.bench_quantizer_init [--repeats 3] [--device cpu]

Tensors: the fc1 weight of ViT-B (3072, 768), channel dim 0; the fc1 input activation of a
32-image calibration batch (32, 197, 768), channel-wise over the last dim (RepQ-ViT's
post-LayerNorm case). Both implementations return the same ranges (checked here too).
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from qwt_core.quant.primitives import per_channel_loop_search, search_uniform_range


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def run(repeats: int = 3, device: str = "cpu", bits: int = 4) -> list[dict[str, float | str]]:
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    cases = {
        "weight fc1 (3072, 768), per output channel": (torch.randn(3072, 768, generator=g) * 0.02, 0),
        "activation fc1 input (32, 197, 768), per channel": (torch.randn(32, 197, 768, generator=g)
                                                              * torch.rand(768, generator=g) * 4, -1),
    }
    rows: list[dict[str, float | str]] = []
    for name, (x, dim) in cases.items():
        x = x.to(dev)
        fast = _time(lambda: search_uniform_range(x, bits, dim), repeats, dev)
        loop = _time(lambda: per_channel_loop_search(x, bits, dim), 1, dev)
        d1, z1 = search_uniform_range(x, bits, dim)
        d2, z2 = per_channel_loop_search(x, bits, dim)
        same = bool(torch.allclose(d1, d2, rtol=1e-6, atol=0) and torch.equal(z1, z2))
        rows.append({"case": name, "vectorized_s": fast, "loop_s": loop, "speedup": loop / fast,
                     "same_ranges": same})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for r in run(args.repeats, args.device):
        print(f"{r['case']}: vectorized {r['vectorized_s']:.3f}s, per-channel loop {r['loop_s']:.3f}s, "
              f"speed-up {r['speedup']:.1f}x (target >= 10x), identical ranges: {r['same_ranges']}")


if __name__ == "__main__":
    main()
