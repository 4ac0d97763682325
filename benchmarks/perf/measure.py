"""Time and peak-memory helpers of the perf benchmark.

* :func:`interleaved_min` times several contenders in alternating order and keeps the minimum of
  each (the machine is shared: only ratios measured in one run, min-of-N, mean anything). It
  records wall-clock seconds and the process's CPU seconds (all threads, ``time.process_time``).
  On a GPU the figures use wall time (synchronised); on a shared CPU they use CPU time, which
  counts the work done rather than the time spent waiting for a core held by another job (on a
  2-core machine with a load average of 8, wall times of one computation varied by 4x).
* :func:`probe` runs one fit in a fresh subprocess (``python -m benchmarks.perf.measure``) and
  returns its peak memory above the baseline taken just before the fit, so peaks of different
  measurements never contaminate each other:
  - CPU: the process's resident-set high-water mark (``VmHWM``), reset with
    ``/proc/self/clear_refs`` right before the fit (so model building does not count), minus the
    resident set at that moment. Torch tensors are not seen by tracemalloc; RSS sees everything.
  - CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the fit.
  The subprocess runs with glibc's mmap threshold pinned at 1 MiB (``MALLOC_MMAP_THRESHOLD_``):
  by default glibc raises the threshold after the first large free, so later tensors come from the
  heap, whose freed pages stay resident, and RSS then follows the allocator's history (it crept up
  by 25% over 8x more batches with no live tensor growing) instead of the live tensors. Pinned,
  every tensor above 1 MiB is its own mapping and leaves the resident set when freed. The same
  setting applies to both fits.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20
MMAP_THRESHOLD = 1 * MiB  # glibc: allocations above this are separate mappings (see module doc)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc mallopt parameters (malloc.h)


def _glibc() -> Any:
    """This process's C library (OSError where there is none; reading ``mallopt`` or
    ``malloc_trim`` from it raises AttributeError where it is not glibc)."""
    import ctypes

    return ctypes.CDLL(None)


def keep_freed_memory() -> dict[str, Any]:
    """Tell glibc's allocator to keep freed memory in the process (``mallopt``: no mmap for large
    blocks, no trimming), so that a tensor allocated after another was freed reuses its pages.

    With glibc's defaults every tensor above 32 MiB is a fresh mapping whose pages are faulted in
    and zeroed on first touch (about 2.7 µs per 4 KiB page on the benchmark's VM: 35-40 % of the CPU
    seconds of a ResNet-50 forward at batch 32), and how many of them a measurement pays depends on
    what ran before it in the process. Kept memory makes the timings measure the computation; the
    memory probes run in their own processes with their own settings. Returns what was applied.
    """
    try:
        mallopt = _glibc().mallopt
    except (OSError, AttributeError) as e:  # not glibc
        return {"applied": False, "why": f"{type(e).__name__}: {e}"}
    ok = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return {"applied": ok, "settings": "mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, -1)"}


def pin_mmap_threshold() -> dict[str, Any]:
    """Undo :func:`keep_freed_memory` for a peak-memory measurement: every allocation above
    ``MMAP_THRESHOLD`` is its own mapping again (returned to the system when freed; trimming back
    at glibc's default 128 KiB), and ``malloc_trim(0)`` gives back what the kept heap holds free,
    so that the resident set follows the live tensors (see the module doc). Returns what was applied."""
    try:
        libc = _glibc()
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError) as e:  # not glibc
        return {"applied": False, "why": f"{type(e).__name__}: {e}"}
    ok = (bool(mallopt(M_MMAP_MAX, 65536)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
          and bool(mallopt(M_TRIM_THRESHOLD, 128 * 1024)))
    trim(0)
    return {"applied": ok, "settings": f"mallopt(M_MMAP_THRESHOLD, {MMAP_THRESHOLD}), malloc_trim(0)"}


def process_clock(device: torch.device | str) -> Callable[[], float]:
    """The clock of :func:`clock_for` as a function: process CPU seconds on the CPU,
    synchronised wall seconds on a GPU."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return time.process_time

    def wall() -> float:
        torch.cuda.synchronize(dev)
        return time.perf_counter()
    return wall


def clock_for(device: torch.device | str) -> str:
    """'wall' on a GPU, 'cpu' (process CPU time) on the CPU."""
    return "wall" if torch.device(device).type == "cuda" else "cpu"


def interleaved_min(contenders: Sequence[tuple[str, Callable[[], Any], Callable[[Any], Any]]],
                    repeats: int, device: torch.device | str = "cpu",
                    both: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """Seconds of ``run(setup())`` per contender on the device's clock (:func:`clock_for`): the
    minimum over ``repeats`` rounds, the order reversed every other round; ``setup`` (e.g. copying
    a model) is not timed. ``both`` receives {name: {"wall": s, "cpu": s}} (each a minimum)."""
    clock = clock_for(device)
    best = {name: {"wall": float("inf"), "cpu": float("inf")} for name, _, _ in contenders}
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name, setup, run in order:
            arg = setup()
            gc.collect()
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            run(arg)
            sync(device)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            best[name] = {"wall": min(best[name]["wall"], wall), "cpu": min(best[name]["cpu"], cpu)}
            del arg
    if both is not None:
        both.update(best)
    return {name: v[clock] for name, v in best.items()}


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class PeakMemory:
    """Peak memory above the baseline at :meth:`start` (bytes), on ``device``."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.base = 0
        self.resettable = True

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current VmRSS
        except OSError:
            self.resettable = False  # then the peak may include the set-up; reported as such
        self.base = _status("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return _status("VmHWM") - self.base


def run_probe(job: dict[str, Any]) -> dict[str, Any]:
    """Inside the subprocess: rebuild the calibrated model, then one fit under :class:`PeakMemory`."""
    from qwt_core import QwTConfig, fit_qwt, load_state
    from qwt_core.qwt.config import solver_preset

    from .cases import ALL_CASES, Batches, build, case_by_key
    from .reference_fit import reference_fit

    torch.set_num_threads(job.get("threads") or torch.get_num_threads())
    case = case_by_key(job["case"], ALL_CASES)
    dev = torch.device(job["device"])
    built = build(case, dev)
    load_state(built.quant, job["state"], map_location=dev)
    del built.fp
    adapter = built.blockwise(built.quant)
    batches = Batches(job["images"], job["batch"], case.size, seed=job.get("seed", 2), device=dev)
    cfg = QwTConfig(store=job["store"], **solver_preset(job.get("solver", "streaming")))
    meter = PeakMemory(dev)
    meter.start()
    t0 = time.perf_counter()
    if job["fit"] == "ours":
        fit_qwt(adapter, batches, cfg, device=dev)
    elif job["fit"] == "reference":
        reference_fit(adapter, batches, cfg, batch_size=job["batch"])
    else:
        raise ValueError(f"unknown fit {job['fit']!r} (expected 'ours' or 'reference')")
    sync(dev)
    seconds = time.perf_counter() - t0
    return {"peak_bytes": meter.peak(), "seconds": seconds, "resettable": meter.resettable,
            "baseline_bytes": meter.base}


def probe(job: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    """Run :func:`run_probe` in a fresh interpreter; returns its result (or ``{"error": ...}``)."""
    cmd = [sys.executable, "-m", "benchmarks.perf.measure", json.dumps(job)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="one peak-memory probe (used by benchmarks.perf.run)")
    ap.add_argument("job", help="JSON job description")
    job = json.loads(ap.parse_args().job)
    print(json.dumps(run_probe(job)), flush=True)


if __name__ == "__main__":
    main()
