"""Time and peak-memory helpers of the perf benchmark.

* :func:`interleaved_min` times several contenders in alternating order and keeps the minimum of
  each (the machine is shared: only ratios measured in one run, min-of-N, mean anything).
* :func:`probe` runs one fit in a fresh subprocess (``python -m benchmarks.perf.measure``) and
  returns its peak memory above the baseline taken just before the fit, so peaks of different
  measurements never contaminate each other:
  - CPU: the process's resident-set high-water mark (``VmHWM``), reset with
    ``/proc/self/clear_refs`` right before the fit (so model building does not count), minus the
    resident set at that moment. Torch tensors are not seen by tracemalloc; RSS sees everything.
  - CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the fit.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_min(contenders: Sequence[tuple[str, Callable[[], Any], Callable[[Any], Any]]],
                    repeats: int, device: torch.device | str = "cpu") -> dict[str, float]:
    """Seconds of ``run(setup())`` per contender: the minimum over ``repeats`` rounds, the order
    reversed every other round; ``setup`` (e.g. copying a model) is not timed."""
    best = {name: float("inf") for name, _, _ in contenders}
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name, setup, run in order:
            arg = setup()
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            run(arg)
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
            del arg
    return best


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
    cfg = QwTConfig(store=job["store"])
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
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
