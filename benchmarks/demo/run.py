"""`make demo`: the whole suite on the embedded digits data, on a CPU, in minutes.

For each demo model, bit width and calibration seed, one invocation of the suite's own pipeline
(``classification.pipeline`` / ``detection.pipeline``, the code paths of the paper tables) runs
FP, the quantized baseline (RepQ-ViT; "Percentile" for the ResNet) and the baseline + QwT, and
writes one record per method under ``results/records/demo/``; a second invocation fits the same
QwT with the float64 least-squares solve (``--qwt-solver lstsq``), recorded as ``<base>+qwt_f64``:
the seed-by-seed verdicts are stated only where both solves agree by more than they differ
(:meth:`benchmarks.demo_table.Effect.verdicts`). Then ``results/demo.md`` is
rendered from the records by :func:`benchmarks.demo_table.render_demo` (mean ± std over seeds, and
the seed-by-seed comparison of each method + QwT with its baseline, also printed at the end). The demo
runs on the CPU (``device="cpu"``), as documented, whatever GPU the machine has.

Records of a (model, method, bits, seed) that this run produces replace the older ones, so the
table always describes one consistent run per seed (a partial ``--test-limit`` record never
replaces a full one).

    python -m benchmarks.demo.run                                   # everything (make demo)
    python -m benchmarks.demo.run --models demo_vit --seeds 0 --bits 4 --test-limit 100   # reduced
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.demo_table import F64
from runtime.records import RECORDS_DIR, load_records, write_record

from . import data, detection_data
from .models import CHECKPOINTS, CLASSIFIERS

REPO = data.REPO
DETECTOR = "demo_mask_rcnn_swin"
DETECTOR_CONFIG = Path(__file__).resolve().parent / "configs" / f"{DETECTOR}.py"
MODELS = (*CLASSIFIERS, DETECTOR)
BITS = (4, 6, 3)  # W4/A4, W6/A6, W3/A3
SEEDS = (0, 1, 2)
SUITE = "demo"
DEFAULT_OUT = REPO / "results" / "demo.md"


@dataclass(frozen=True)
class Settings:
    """Calibration sizes of the demo (the paper-scale defaults, scaled to the digits data)."""

    calib_size: int = 32  # RepQ-ViT statistics: one batch of train images (SPEC: 32)
    qwt_size: int = 256  # QwT regression images (SPEC: 512; the digits train split has 1197)
    det_qwt_size: int = 128  # detector: train canvases for the QwT regression (of 400)
    det_qwt_img_size: int = 128  # canvases are 128x128 (SPEC on COCO: 224)
    test_limit: int | None = None  # evaluate only the first N test images (records: partial)
    threads: int = 2
    checkpoints: Path = CHECKPOINTS  # folder of the <model>.pth files


@dataclass(frozen=True)
class Job:
    model: str
    bits: int
    seed: int
    methods: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model} W{self.bits}A{self.bits} seed {self.seed}"


def plan(models: list[str], bits: list[int], seeds: list[int]) -> list[Job]:
    """One job per (model, bits, seed); each runs FP, the baseline and the baseline + QwT."""
    jobs = []
    for model in models:
        methods = CLASSIFIERS[model].methods if model in CLASSIFIERS else ("fp", "repq", "repq+qwt")
        for seed in seeds:
            for i, b in enumerate(bits):
                # The classifiers need FP in every call (agreement_fp / kl_fp compare with it).
                # The detector's FP evaluation depends on neither bits nor seed: run it once per
                # seed (the table counts FP per seed), not once per bit width.
                ms = methods if model in CLASSIFIERS or i == 0 else tuple(m for m in methods if m != "fp")
                jobs.append(Job(model, b, seed, tuple(ms)))
    return jobs


def _key(rec: dict[str, Any]) -> tuple:
    return (rec["model"], rec["method"], rec["w_bits"], rec["a_bits"], rec["seed"])


def replace_older(records_root: Path, new_paths: list[Path]) -> int:
    """Delete demo records with the same (model, method, bits, seed) as ``new_paths`` that are
    not among them (full records only give way to full ones); returns how many were removed."""
    new = {p.resolve() for p in new_paths}
    keys: dict[tuple, bool] = {}  # key -> the new record is partial
    for p in new_paths:
        rec = json.loads(p.read_text())
        keys[_key(rec)] = rec["partial"]
    removed = 0
    for rec in load_records(records_root, SUITE):
        path = Path(rec["_path"]).resolve()
        # a partial (--test-limit) run never removes a full record; the table prefers full ones
        if path not in new and _key(rec) in keys and (rec["partial"] or not keys[_key(rec)]):
            path.unlink()
            removed += 1
    return removed


def _relabel(records: list[dict[str, Any]], records_root: Path, command: str, qwt_suffix: str = "") -> list[Path]:
    """Write pipeline records under the demo suite (pipelines without a ``suite`` option write
    their paper suite; the record is otherwise unchanged); with ``qwt_suffix`` only the ``+qwt``
    records, their method renamed (the float64-solve rows)."""
    paths = []
    for rec in records:
        if qwt_suffix and not rec["method"].endswith("+qwt"):
            continue  # a float64-solve call keeps only its QwT rows
        rec = {k: v for k, v in rec.items() if not k.startswith("_")}
        rec["config"] = {**rec["config"], "pipeline_suite": rec["suite"], "demo_command": command}
        rec["suite"] = SUITE
        if qwt_suffix and rec["method"].endswith("+qwt"):
            rec["config"]["pipeline_method"] = rec["method"]
            rec["method"] += qwt_suffix
        paths.append(write_record(rec, records_root))
    return paths


def f64_job(job: Job) -> Job | None:
    """The job's second QwT row: its ``+qwt`` method solved in float64 (``lstsq``); the classifiers
    also evaluate FP (their KL(FP‖Q) needs the FP outputs of the same call), a record not kept."""
    qwt = tuple(m for m in job.methods if m.endswith("+qwt"))
    if not qwt:
        return None
    return Job(job.model, job.bits, job.seed, (("fp",) if job.model in CLASSIFIERS else ()) + qwt)


def run_classifier(job: Job, s: Settings, records_root: Path, command: str, solver: str = "reference") -> list[Path]:
    """One invocation of the classification pipeline (FP, baseline, baseline + QwT), records
    written straight into the demo suite; with ``solver="lstsq"`` the ``+qwt`` records are renamed
    ``<base>+qwt_f64`` (the table's float64-solve rows)."""
    from classification.pipeline import ExperimentConfig, run_experiment
    from qwt_core import QwTConfig
    from qwt_core.qwt.config import SOLVER_PRESETS

    def config(results_dir: str) -> ExperimentConfig:
        return ExperimentConfig(
            model=job.model, data_dir=str(data.DEFAULT_ROOT), w_bits=job.bits, a_bits=job.bits,
            methods=job.methods, checkpoint=str(s.checkpoints / f"{job.model}.pth"), workers=0, device="cpu",
            seed=job.seed, calib_size=s.calib_size, qwt_size=s.qwt_size, val_limit=s.test_limit,
            results_dir=results_dir, suite=SUITE, command=command, progress=False,
            qwt=QwTConfig(**SOLVER_PRESETS[solver]))

    if solver == "reference":
        return [Path(r["_path"]) for r in run_experiment(config(str(records_root)))]
    with tempfile.TemporaryDirectory(prefix="qwt-demo-") as tmp:
        return _relabel(run_experiment(config(tmp)), records_root, command, F64)


def run_detector(job: Job, s: Settings, records_root: Path, command: str, solver: str = "reference") -> list[Path]:
    """One invocation of the detection pipeline (FP, RepQ-ViT, RepQ-ViT + QwT on the backbone)."""
    from detection.pipeline import DetectionRun, run_experiment
    from qwt_core import QwTConfig
    from qwt_core.qwt.config import SOLVER_PRESETS

    log_dir = REPO / "work_dirs" / "demo"  # mmengine / pycocotools output of each call
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{job.model}_w{job.bits}a{job.bits}_s{job.seed}.log"
    with tempfile.TemporaryDirectory(prefix="qwt-demo-") as tmp, open(log_path, "w") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        run = DetectionRun(
            config=str(DETECTOR_CONFIG), data_dir=str(detection_data.DEFAULT_ROOT),
            checkpoint=str(s.checkpoints / f"{DETECTOR}.pth"), w_bits=job.bits, a_bits=job.bits,
            methods=job.methods, seed=job.seed, device="cpu", qwt_size=s.det_qwt_size, qwt_img_size=s.det_qwt_img_size,
            qwt_batch_size=16, val_limit=s.test_limit, results_dir=tmp, workers=0, log_interval=10**6,
            work_dir=str(Path(tmp) / "work_dir"), command=command,
            cfg_options={"log_level": "WARNING"}, qwt=QwTConfig(**SOLVER_PRESETS[solver]))
        records = run_experiment(run)
        return _relabel(records, records_root, command, F64 if solver != "reference" else "")


RUNNERS: dict[str, Callable[..., list[Path]]] = {
    **{m: run_classifier for m in CLASSIFIERS}, DETECTOR: run_detector}


def summary(paths: list[Path]) -> str:
    """One line per job: the headline metrics of each record it wrote."""
    parts = []
    for p in paths:
        rec = json.loads(p.read_text())
        m = rec["metrics"]
        if "top1" in m:
            text = f"top1 {m['top1']:.2f}" + (f" kl {m['kl_fp']:.4f}" if "kl_fp" in m else "")
        else:
            text = f"box {m.get('bbox_mAP', float('nan')):.1f} mask {m.get('segm_mAP', float('nan')):.1f}"
        parts.append(f"{rec['method']} {text}")
    return " | ".join(parts)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    ap.add_argument("--bits", default=",".join(map(str, BITS)), help="W=A bit widths, e.g. 4,6,3")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="calibration seeds, e.g. 0,1,2")
    ap.add_argument("--test-limit", type=int, default=None,
                    help="evaluate only the first N test images (records are marked partial)")
    ap.add_argument("--records", default=str(RECORDS_DIR), help="records root (suite folder 'demo' inside)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="rendered table")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--checkpoints", default=str(CHECKPOINTS),
                    help="folder holding <model>.pth (default: the committed checkpoints)")
    ap.add_argument("--no-f64", action="store_true",
                    help="skip the float64-solve QwT rows (then no seed-by-seed verdicts are decided)")
    ap.add_argument("--no-table", action="store_true",
                    help="write records only (no demo.md, no plots): e.g. a second run under ISA caps "
                         "for `make demo-isa-check`")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown demo models {unknown}; choose from {', '.join(MODELS)}")
    settings = Settings(test_limit=args.test_limit, threads=args.threads, checkpoints=Path(args.checkpoints))
    command = shlex.join(["python", "-m", "benchmarks.demo.run", *(sys.argv[1:] if argv is None else argv)])

    import torch
    from tqdm import tqdm

    torch.set_num_threads(settings.threads)
    t0 = time.time()
    data.build()
    if DETECTOR in models:
        detection_data.build()
    if any(m in CLASSIFIERS for m in models):
        from .models import register_classifiers
        register_classifiers()
    jobs = plan(models, _ints(args.bits), _ints(args.seeds))
    records_root = Path(args.records)
    written: list[Path] = []
    with tqdm(jobs, desc="[demo]", unit="run", file=sys.stdout, dynamic_ncols=True) as bar:
        for job in bar:
            bar.set_postfix_str(job.label)
            paths = RUNNERS[job.model](job, settings, records_root, command)
            f64 = None if args.no_f64 else f64_job(job)
            if f64 is not None:
                paths += RUNNERS[job.model](f64, settings, records_root, command, solver="lstsq")
            replace_older(records_root, paths)
            written += paths
            bar.write(f"[demo] {job.label}: " + summary(paths))
    from benchmarks.demo_table import qwt_effect, render_demo

    if args.no_table:
        print(f"[demo] {len(written)} records in {records_root / SUITE} ({time.time() - t0:.0f}s)")
        return 0
    out = render_demo(records_root, args.out, plots=True)
    print(f"[demo] {len(written)} records in {records_root / SUITE}, table {out} "
          f"({time.time() - t0:.0f}s)")
    for line in qwt_effect(load_records(records_root, SUITE)):  # the same lines as in the table
        print("[demo] seed by seed:", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
