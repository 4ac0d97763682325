"""Figure 2 of ``make bench``: this suite's default path against the released QwT-cls-RepQ-ViT code.

Per model, two worker processes (:mod:`benchmarks.perf.released_worker`): the released code, run
as ``make parity`` runs it (imported unchanged from ``REF`` in the side environment with timm
0.4.12), and this suite's default path (``calibrate_repq``, ``fit_qwt`` with ``QwTConfig()``), on
the same seeded weights and images. Each calibrates once, then fits ``plan.rel_repeats`` rounds;
each fit figure is the minimum over the rounds, on the process clock of
:func:`benchmarks.perf.measure.clock_for` (process CPU seconds on a CPU, synchronised wall seconds
on a GPU). On a CPU with two cores the two contenders run at the same time, one per core, their
fit rounds started together (:class:`ReleasedFigure`); otherwise they alternate. Peak memory is
taken in the first fit round of each process (glibc's mmap threshold pinned at 1 MiB for both, so
freed tensors leave the resident set; see :mod:`benchmarks.perf.released_worker`).

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
import threading
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

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def ask(self, cmd: str, timeout: float) -> dict[str, Any]:
        self.send(cmd)
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


def _spare_cores() -> tuple[int, int] | None:
    """Two CPUs this process may use (one per contender), or None with fewer."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def _pin(proc: subprocess.Popen[str], cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(proc.pid, {cpu})


class Side:
    """One contender of one model: its worker and its answers (``calibration``, ``fits``)."""

    def __init__(self, name: str, worker: Worker | None, timeout: float) -> None:
        self.name, self.worker, self.timeout = name, worker, timeout
        self.calibration: dict[str, Any] | None = None
        self.fits: list[dict[str, Any]] = []
        self.error: str | None = None
        self.setup: dict[str, Any] | None = None  # the worker's ready line

    def step(self, cmd: str, say: Any, label: str) -> None:
        """Send ``cmd`` (calibrate or fit) and keep the answer."""
        assert self.worker is not None
        t0 = time.perf_counter()
        self.worker.send(cmd)
        self.collect(cmd, say, label, t0)

    def collect(self, cmd: str, say: Any, label: str, t0: float) -> None:
        """Keep the answer to ``cmd``, sent at ``t0``."""
        assert self.worker is not None
        doc = self.worker.answer(self.timeout)
        if cmd == "calibrate":
            self.calibration = doc
        else:
            self.fits.append(doc)
        say(f"  [{label}] {self.name} {cmd}{'' if cmd == 'calibrate' else f' {len(self.fits)}'}: "
            f"{time.perf_counter() - t0:.0f} s wall")

    def calibrate(self, say: Any, label: str) -> None:
        """The one calibration; a worker failure is kept in ``error`` (and the worker closed)."""
        try:
            self.step("calibrate", say, label)
        except WorkerError as e:
            self.error = str(e)
            self.close()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


def start_released(model: tuple[str, str, str], plan: Plan, device: torch.device, ref: Path, side: Path,
                   tmp: Path, cpu: int | None) -> tuple[Side, list[str]]:
    """The released worker of one model, set up (it exports the seeded weights and images for the
    suite side) and pinned to ``cpu``; with the arguments the suite worker needs."""
    name, family, arch = model
    counts = ["--model", name, "--device", str(device), "--threads", str(plan.threads or torch.get_num_threads()),
              "--n-calib", str(plan.rel_calib_images), "--n-qwt", str(plan.rel_images),
              "--batch-size", str(batch_of(plan))]
    weights = tmp / f"{name}.pt"
    worker = Worker("released", ["--side", "released", "--ref", str(ref), "--family", family, "--arch", arch,
                                 "--export", str(weights), *counts], [str(side), str(ROOT)],
                    tmp / f"{name}.released.log")
    _pin(worker.proc, cpu)
    rel = Side("released", worker, plan.rel_timeout)
    try:
        rel.setup = worker.answer(plan.rel_timeout)
    except WorkerError:
        worker.close()
        raise
    return rel, ["--weights", str(weights), "--solvers", ",".join(SOLVERS), *counts]


def fit_rounds_together(rel: Side, suite: Side, repeats: int, say: Any, label: str) -> None:
    """``repeats`` fit rounds of both contenders of one model, each round started on both at once
    (each worker pinned to its core), the next round once both have answered: every fit of one
    side runs beside a fit of the other (the suite's default fit, about half as long, is followed
    in its round by its streaming fit, so the released fit has a neighbour for most of its time too).
    A failure is kept in the failing side's ``error``; both workers are closed at the end."""
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for side in (rel, suite):
                assert side.worker is not None
                side.worker.send("fit")
            waiting = [rel, suite]
            while waiting:  # collected as they answer, so that each logged wall time is its own
                pipes = [s.worker.proc.stdout for s in waiting if s.worker is not None and s.worker.proc.stdout]
                ready, _, _ = select.select(pipes, [], [], rel.timeout)
                side = next((s for s in waiting if s.worker is not None and s.worker.proc.stdout in ready), waiting[0])
                waiting.remove(side)
                try:
                    side.collect("fit", say, label, t0)
                except WorkerError as e:
                    side.error = str(e)
            if rel.error or suite.error:
                break
    finally:
        rel.close()
        suite.close()


def summarize(rel: Side, ours: Side, clock: str) -> dict[str, Any]:
    """Seconds per stage (calibration: its one run; fits: the minimum over the rounds, with the
    profile of that round), peak memory of the first fit round (the memory round) and of the
    calibration (MiB); the largest |R² released - R² ours| of the default fit."""
    out: dict[str, Any] = {}
    for side in (rel, ours):
        assert side.calibration is not None
        c = side.calibration["calibration"]
        out[f"{side.name}/calibration"] = {
            "seconds": c[clock], "wall": c["wall"], "cpu": c["cpu"], "peak_mib": c["peak_bytes"] / MiB,
            "peak_mib_per_round": [c["peak_bytes"] / MiB], "resettable": c["resettable"],
            "weight_cache_mib": None, "rounds": 1, "profile": side.calibration.get("calibration_profile")}
        keys = ["fit"] if side is rel else [f"fit_{s}" for s in SOLVERS]
        for key in keys:
            best = min(side.fits, key=lambda r: r[key][clock])
            out[f"{side.name}/{key}"] = {
                "seconds": best[key][clock], "wall": min(r[key]["wall"] for r in side.fits),
                "cpu": min(r[key]["cpu"] for r in side.fits), "peak_mib": side.fits[0][key]["peak_bytes"] / MiB,
                "peak_mib_per_round": [r[key]["peak_bytes"] / MiB for r in side.fits],
                "seconds_per_round": [r[key][clock] for r in side.fits], "rounds": len(side.fits),
                "resettable": side.fits[0][key]["resettable"],
                "weight_cache_mib": side.fits[0][key].get("weight_cache_mib"),
                "profile": best.get(f"{key}_profile")}
    r2_rel, r2_ours = rel.fits[0]["r2"], ours.fits[0]["r2_reference"]
    out["r2"] = {"released": r2_rel, "ours": r2_ours,
                 "max_abs_diff": max((abs(a - b) for a, b in zip(r2_rel, r2_ours)), default=float("nan"))
                 if len(r2_rel) == len(r2_ours) else float("nan")}
    return out


class ReleasedFigure:
    """Figure 2 for every case of the plan.

    On a CPU with two cores to spare the contenders run **at the same time, one per core**, each
    worker pinned to its core: :meth:`start` sets up every worker and calibrates them, the released
    ones one model after the other on the first core (a background thread drives them), the
    suite's on the second, which then runs the rest of ``make bench``; :meth:`finish` runs the fit
    rounds of each model on both cores **round by round together** (:func:`fit_rounds_together`),
    so that each side's fit runs beside the other side's fit: both are memory-bound, and our
    ResNet-50 fit took 17.4 s beside the released calibrations (the earlier schedule, our rounds
    early), 15.9-16.7 s alone, 15.8-16.0 s beside the released fit (see docs/perf.md). A
    contender's CPU seconds do not count waiting. Otherwise (one core, or a GPU) the two workers
    of a model alternate, released first in odd rounds, suite first in even ones. Either way each
    figure is the minimum over the fit rounds; the calibration runs once per contender."""

    def __init__(self, plan: Plan, device: torch.device, ref: str | None, say: Any, show: Any) -> None:
        self.plan, self.device, self.ref, self.say, self.show = plan, device, ref, say, show
        self.thread: threading.Thread | None = None
        self.results: list[tuple[str, Side | None, Side | None, str | None, float]] = []
        self.out: dict[str, Any] | None = None  # raw["released"] once started
        self.tmp: tempfile.TemporaryDirectory[str] | None = None  # exported weights and worker logs
        self.saved_affinity: set[int] | None = None

    def start(self, raw: dict[str, Any]) -> None:
        """Set up every model's released worker and run the suite's side (and, with one core to
        spare per contender, start the released side in the background)."""
        plan, say = self.plan, self.say
        if not self.ref:
            raw["released_skipped"] = ("skipped: no REF=<path to QwT-cls-RepQ-ViT> given (make bench REF=... runs "
                                       "the released code beside this suite's default path)")
            say(f"[released] {raw['released_skipped']}")
            return
        from benchmarks.parity.side_env import SideEnvError, ensure

        ref_path = Path(self.ref).resolve()
        try:
            side = ensure()
        except SideEnvError as e:
            raw["released_skipped"] = f"skipped: {e}"
            say(f"[released] {raw['released_skipped']}")
            return
        cores = _spare_cores() if self.device.type == "cpu" else None
        clock = "wall" if self.device.type == "cuda" else "cpu"
        self.out = {"ref": str(ref_path), "side_env": str(side), "calib_images": plan.rel_calib_images,
                    "images": plan.rel_images, "batch": batch_of(plan), "repeats": plan.rel_repeats,
                    "clock": clock, "solver": "rows (QwTConfig() default)", "models": {},
                    "schedule": "rounds-together" if cores else "interleaved", "cores": list(cores) if cores else None}
        raw["released"] = self.out
        self.tmp = tempfile.TemporaryDirectory(prefix="qwt-perf-released-")
        tmp = Path(self.tmp.name)
        say(f"[released] the released code and this suite's default path: {plan.rel_calib_images} calibration and "
            f"{plan.rel_images} QwT images (batch {batch_of(plan)}), calibration once, {plan.rel_repeats} fit rounds"
            + (f"; released on CPU {cores[0]}, ours on CPU {cores[1]}: calibrations now, fit rounds together at "
               "the end" if cores else "; contenders interleaved"))
        if cores:
            self.saved_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {cores[1]})  # this process and the suite workers it starts
        started: list[tuple[str, Side | None, list[str], str | None]] = []
        for model in models(plan, ref_path):
            t0 = time.perf_counter()
            try:
                rel, suite_args = start_released(model, plan, self.device, ref_path, side, tmp,
                                                 cores[0] if cores else None)
                started.append((model[0], rel, suite_args, None))
            except WorkerError as e:
                started.append((model[0], None, [], str(e)))
            say(f"  [{model[0]}] released set-up: {time.perf_counter() - t0:.0f} s")
        if cores:
            pending = [(name, r) for name, r, _, _ in started if r is not None]

            def released_calibrations() -> None:
                for name, r in pending:
                    r.calibrate(say, name)
            self.thread = threading.Thread(target=released_calibrations, daemon=True)
            self.thread.start()
        for name, maybe_rel, suite_args, err in started:
            t0 = time.perf_counter()
            if maybe_rel is None:
                self.results.append((name, None, None, err, 0.0))
                continue
            rel = maybe_rel
            worker = Worker("suite", ["--side", "suite", *suite_args], [str(ROOT)], tmp / f"{name}.suite.log")
            suite = Side("suite", worker, plan.rel_timeout)
            try:
                suite.setup = worker.answer(plan.rel_timeout)
                if cores:
                    suite.calibrate(say, name)  # (the fit rounds run in finish(), both sides together)
                else:
                    self._interleave(rel, suite, name)
            except WorkerError as e:
                suite.error = str(e)
                suite.close()
            self.results.append((name, rel, suite, None, time.perf_counter() - t0))

    def _interleave(self, rel: Side, suite: Side, name: str) -> None:
        """Both workers of one model in alternating order (one core, or a GPU)."""
        try:
            for side in (rel, suite):
                side.step("calibrate", self.say, name)
            for r in range(self.plan.rel_repeats):
                for side in ((rel, suite) if r % 2 == 0 else (suite, rel)):
                    side.step("fit", self.say, name)
        except WorkerError as e:
            rel.error = rel.error or str(e)
        finally:
            rel.close()
            suite.close()

    def finish(self, metrics: dict[str, float]) -> None:
        """Wait for the released side, then the figure's metrics per model."""
        if self.out is None:
            return
        if self.thread is not None:
            if self.thread.is_alive():
                self.say("[released] waiting for the released code's calibrations on the other core")
            self.thread.join()
            self.say(f"[released] fit rounds, both contenders at the same time (released on CPU "
                     f"{self.out['cores'][0]}, ours on CPU {self.out['cores'][1]}), round by round")
            for i, (name, rel, suite, err, seconds) in enumerate(self.results):
                if rel is None or suite is None or rel.error or suite.error:
                    for side in (rel, suite):
                        if side is not None:
                            side.close()
                    continue
                t0 = time.perf_counter()
                fit_rounds_together(rel, suite, self.plan.rel_repeats, self.say, name)
                self.results[i] = (name, rel, suite, err, seconds + time.perf_counter() - t0)
        if self.saved_affinity is not None:
            os.sched_setaffinity(0, self.saved_affinity)
        clock, say, show = self.out["clock"], self.say, self.show
        for name, rel, suite, err, seconds in self.results:
            err = err or (rel.error if rel else None) or (suite.error if suite else None)
            if err or rel is None or suite is None:
                self.out["models"][name] = {"error": err or "not run"}
                say(f"  [{name}] FAILED: {err}")
                continue
            s = summarize(rel, suite, clock)
            s["setup"] = {"released": rel.setup, "suite": suite.setup}
            s["seconds_total"] = seconds
            self.out["models"][name] = s
            rel_c, rel_f = s["released/calibration"], s["released/fit"]
            our_c, our_f, our_s = s["suite/calibration"], s["suite/fit_reference"], s["suite/fit_streaming"]
            metrics[f"calib_over_released/{name}"] = our_c["seconds"] / rel_c["seconds"]
            metrics[f"fit_over_released/{name}"] = our_f["seconds"] / rel_f["seconds"]
            metrics[f"fit_mem_over_released/{name}"] = our_f["peak_mib"] / rel_f["peak_mib"]
            metrics[f"fit_streaming_over_released/{name}"] = our_s["seconds"] / rel_f["seconds"]
            metrics[f"fit_streaming_mem_over_released/{name}"] = our_s["peak_mib"] / rel_f["peak_mib"]
            if self.device.type == "cuda" and name == "deit_small":
                metrics[f"whole_calibration_s/{name}"] = our_c["seconds"] + our_f["seconds"]
            say(f"[released] {name}: calibration {our_c['seconds']:.2f} s ours / {rel_c['seconds']:.2f} s released; "
                f"fit {our_f['seconds']:.2f} s ours (default; streaming {our_s['seconds']:.2f} s) / "
                f"{rel_f['seconds']:.2f} s released; fit peak {our_f['peak_mib']:.0f} MiB ours (streaming "
                f"{our_s['peak_mib']:.0f}) / {rel_f['peak_mib']:.0f} MiB released; max |R² ours - released| "
                f"{s['r2']['max_abs_diff']:.1e}")
            for prefix in ("calib_over_released", "fit_over_released", "fit_mem_over_released",
                           "fit_streaming_over_released", "fit_streaming_mem_over_released", "whole_calibration_s"):
                if f"{prefix}/{name}" in metrics:
                    show(f"{prefix}/{name}", metrics[f"{prefix}/{name}"])
        if self.tmp is not None:
            self.tmp.cleanup()
