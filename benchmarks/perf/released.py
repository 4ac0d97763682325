"""Figure 2 of ``make bench``: this suite's default path against the released QwT-cls-RepQ-ViT code.

Per model, two worker processes (:mod:`benchmarks.perf.released_worker`): the released code, run
as ``make parity`` runs it (imported unchanged from ``REF`` in the side environment with timm
0.4.12), and this suite's default path (``calibrate_repq``, ``fit_qwt`` with ``QwTConfig()``), on
the same seeded weights and images. Both stay alive while the orchestrator asks them for rounds
in alternating order (released, suite; suite, released; ...); each figure is the minimum over the
rounds, on the process clock of :func:`benchmarks.perf.measure.clock_for` (process CPU seconds on a
CPU, synchronised wall seconds on a GPU). Peak memory is taken in the first round of each process
(glibc's mmap threshold pinned at 1 MiB for both, so freed tensors leave the resident set; see
:mod:`benchmarks.perf.released_worker`).

Metrics (``<name>/<model>``): ``calib_over_released`` and ``fit_over_released`` (time ratios),
``fit_mem_over_released`` (peak memory of the fit), the streaming solver's time and memory ratios
(information), and on a GPU ``whole_calibration_s/deit_small`` (our RepQ-ViT + QwT seconds).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import torch

from .cases import Plan
from .measure import MMAP_THRESHOLD, ROOT, MiB

SOLVERS = ("reference", "streaming")  # the suite side's fits: the default, then the streaming solver (info)


class WorkerError(RuntimeError):
    """A worker failed; the message is one line with its last words."""


class Worker:
    """One contender process; :meth:`ask` sends a command and returns its JSON answer."""

    def __init__(self, name: str, args: list[str], pythonpath: list[str], log: Path) -> None:
        self.name, self.log_path = name, log
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]),
                   MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD), TQDM_DISABLE="1", PYTHONWARNINGS="ignore",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self.log: IO[str] = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.perf.released_worker", *args], cwd=ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def _tail(self) -> str:
        self.log.flush()
        lines = [ln.strip() for ln in self.log_path.read_text().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"

    def answer(self, timeout: float) -> dict[str, Any]:
        """The next JSON line of the worker (``WorkerError`` on an error, an exit or a timeout)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise WorkerError(f"{self.name}: exited with {self.proc.returncode} ({self._tail()})")
        doc = json.loads(line)
        if "error" in doc:
            raise WorkerError(f"{self.name}: {doc['error']} ({self._tail()})")
        return doc

    def ask(self, cmd: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.answer(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def batch_of(plan: Plan) -> int:
    """The QwT batch: ``plan.rel_batch``, or all the images when there are fewer."""
    return min(plan.rel_batch, plan.rel_images)


def models(plan: Plan, ref: Path) -> list[tuple[str, str, str]]:
    """(registry name, family, timm 0.4.12 arch) of every case of the plan, each run by the released
    script of its family (:func:`benchmarks.parity.run.resolve_models` checks it)."""
    from benchmarks.parity.run import resolve_models

    return resolve_models(",".join(c.model for c in plan.cases), ref)


def contend(model: tuple[str, str, str], plan: Plan, device: torch.device, ref: Path, side: Path, tmp: Path,
            say: Any) -> dict[str, Any]:
    """Both contenders of one model, ``plan.rel_repeats`` interleaved rounds; every round's answers."""
    name, family, arch = model
    counts = ["--model", name, "--device", str(device), "--threads", str(plan.threads or torch.get_num_threads()),
              "--n-calib", str(plan.rel_calib_images), "--n-qwt", str(plan.rel_images),
              "--batch-size", str(batch_of(plan))]
    weights = tmp / f"{name}.pt"
    timeout = plan.rel_timeout
    released = Worker("released", ["--side", "released", "--ref", str(ref), "--family", family, "--arch", arch,
                                   "--export", str(weights), *counts], [str(side), str(ROOT)],
                      tmp / f"{name}.released.log")
    suite: Worker | None = None
    try:
        setup = {"released": released.answer(timeout)}
        suite = Worker("suite", ["--side", "suite", "--weights", str(weights), "--solvers", ",".join(SOLVERS), *counts],
                       [str(ROOT)], tmp / f"{name}.suite.log")
        setup["suite"] = suite.answer(timeout)
        rounds: dict[str, list[dict[str, Any]]] = {"released": [], "suite": []}
        for r in range(plan.rel_repeats):
            order = [("released", released), ("suite", suite)]
            for side_name, w in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                rounds[side_name].append(w.ask("run", timeout))
                say(f"  [{name}] round {r + 1}/{plan.rel_repeats} {side_name}: {time.perf_counter() - t0:.0f} s wall")
        return {"setup": setup, "rounds": rounds}
    finally:
        released.close()
        if suite is not None:
            suite.close()


def summarize(res: dict[str, Any], clock: str) -> dict[str, Any]:
    """Minimum seconds per stage over the rounds (and the profile of that round); peak memory of
    the first round (MiB); the largest |R² released - R² ours| of the default fit."""
    out: dict[str, Any] = {}
    stages = {"released": {"calibration": "calibration", "fit": "fit"},
              "suite": {"calibration": "calibration", **{f"fit_{s}": f"fit_{s}" for s in SOLVERS}}}
    for side_name, keys in stages.items():
        rounds = res["rounds"][side_name]
        for label, key in keys.items():
            best = min(rounds, key=lambda r: r[key][clock])
            out[f"{side_name}/{label}"] = {
                "seconds": best[key][clock], "wall": min(r[key]["wall"] for r in rounds),
                "cpu": min(r[key]["cpu"] for r in rounds), "peak_mib": rounds[0][key]["peak_bytes"] / MiB,
                "peak_mib_per_round": [r[key]["peak_bytes"] / MiB for r in rounds],
                "resettable": rounds[0][key]["resettable"],
                "weight_cache_mib": rounds[0][key].get("weight_cache_mib"),
                "profile": best.get(f"{key}_profile") if side_name == "suite" and key != "calibration"
                else best.get("fit_profile" if key == "fit" else "calibration_profile")}
    r2_rel, r2_ours = res["rounds"]["released"][0]["r2"], res["rounds"]["suite"][0]["r2_reference"]
    out["r2"] = {"released": r2_rel, "ours": r2_ours,
                 "max_abs_diff": max((abs(a - b) for a, b in zip(r2_rel, r2_ours)), default=float("nan"))
                 if len(r2_rel) == len(r2_ours) else float("nan")}
    return out


def released_figure(plan: Plan, device: torch.device, ref: str | None, metrics: dict[str, float],
                    raw: dict[str, Any], say: Any, show: Any) -> None:
    """Figure 2 for every case of ``plan`` (skipped, with one line, without ``ref``)."""
    if not ref:
        raw["released_skipped"] = ("skipped: no REF=<path to QwT-cls-RepQ-ViT> given (make bench REF=... runs the "
                                   "released code beside this suite's default path)")
        say(f"[released] {raw['released_skipped']}")
        return
    from benchmarks.parity.side_env import SideEnvError, ensure

    ref_path = Path(ref).resolve()
    try:
        side = ensure()
    except SideEnvError as e:
        raw["released_skipped"] = f"skipped: {e}"
        say(f"[released] {raw['released_skipped']}")
        return
    clock = "wall" if device.type == "cuda" else "cpu"
    out: dict[str, Any] = {"ref": str(ref_path), "side_env": str(side), "calib_images": plan.rel_calib_images,
                           "images": plan.rel_images, "batch": batch_of(plan), "repeats": plan.rel_repeats,
                           "clock": clock, "solver": "reference (QwTConfig() default)", "models": {}}
    raw["released"] = out
    with tempfile.TemporaryDirectory(prefix="qwt-perf-released-") as tmp:
        for model in models(plan, ref_path):
            name = model[0]
            say(f"[released] {name}: the released code and this suite's default path, {plan.rel_calib_images} "
                f"calibration and {plan.rel_images} QwT images (batch {batch_of(plan)}), {plan.rel_repeats} rounds")
            t0 = time.perf_counter()
            try:
                res = contend(model, plan, device, ref_path, side, Path(tmp), say)
            except WorkerError as e:
                out["models"][name] = {"error": str(e)}
                say(f"  [{name}] FAILED: {e}")
                continue
            s = summarize(res, clock)
            s["setup"], s["seconds_total"] = res["setup"], time.perf_counter() - t0
            out["models"][name] = s
            rel_c, rel_f = s["released/calibration"], s["released/fit"]
            our_c, our_f, our_s = s["suite/calibration"], s["suite/fit_reference"], s["suite/fit_streaming"]
            metrics[f"calib_over_released/{name}"] = our_c["seconds"] / rel_c["seconds"]
            metrics[f"fit_over_released/{name}"] = our_f["seconds"] / rel_f["seconds"]
            metrics[f"fit_mem_over_released/{name}"] = our_f["peak_mib"] / rel_f["peak_mib"]
            metrics[f"fit_streaming_over_released/{name}"] = our_s["seconds"] / rel_f["seconds"]
            metrics[f"fit_streaming_mem_over_released/{name}"] = our_s["peak_mib"] / rel_f["peak_mib"]
            if device.type == "cuda" and name == "deit_small":
                metrics[f"whole_calibration_s/{name}"] = our_c["seconds"] + our_f["seconds"]
            say(f"[released] {name}: calibration {our_c['seconds']:.2f} s ours / {rel_c['seconds']:.2f} s released; "
                f"fit {our_f['seconds']:.2f} s ours (default solver; streaming {our_s['seconds']:.2f} s) / "
                f"{rel_f['seconds']:.2f} s released; fit peak {our_f['peak_mib']:.0f} MiB ours (streaming "
                f"{our_s['peak_mib']:.0f}) / {rel_f['peak_mib']:.0f} MiB released; max |R² ours - released| "
                f"{s['r2']['max_abs_diff']:.1e}")
            for prefix in ("calib_over_released", "fit_over_released", "fit_mem_over_released",
                           "fit_streaming_over_released", "fit_streaming_mem_over_released", "whole_calibration_s"):
                if f"{prefix}/{name}" in metrics:
                    show(f"{prefix}/{name}", metrics[f"{prefix}/{name}"])
