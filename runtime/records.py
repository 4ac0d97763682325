"""Result records: one JSON file per evaluated (suite, model, method, bits, seed) run.

This module sits below the experiment pipelines (``classification``, ``detection``) and the table
layer (``benchmarks``): the pipelines make and write records with it, the tables read them with it.
It imports the standard library only.

Schema ``qwt-record/2`` (``qwt-record/1`` files are still read, see :func:`upgrade`)::

    {
      "schema": "qwt-record/2",
      "suite": "imagenet" | "coco" | "demo" | "perf",
      "model": "deit_small",                 # registry name
      "method": "fp" | "repq" | "repq+qwt" | "percentile" | "percentile+qwt" | ...,
      "w_bits": 4 | null, "a_bits": 4 | null, # null for fp
      "metrics": {"top1": 71.5, "top5": 90.8} # or {"bbox_mAP": .., "segm_mAP": .., ...}
      "images": 50000,                        # images evaluated
      "partial": false,                       # true: fewer images than the split holds (--val-limit)
      "dataset": {                            # what was evaluated (null: no evaluation, e.g. perf)
        "root": "/data/imagenet",             #   dataset folder
        "split": "val",                       #   split evaluated
        "split_images": 50000,                #   images in that split
        "classes": 1000,                      #   class folders / categories of the split
        "class_subset": false,                #   class folders mapped onto a subset of the model's classes
        "benchmark": "ImageNet val" | null    #   the benchmark split it is (image and class counts), else null
      },
      "seed": 0,
      "model_size": {...} | null,             # qwt_core.SizeReport.to_dict()
      "times": {"calibration_s": .., "qwt_s": .., "eval_s": ..},
      "blocks": [BlockReport.to_dict(), ...], # per-block QwT diagnostics ([] without QwT)
      "config": {...},                        # everything needed to re-run (bits, sizes, options)
      "provenance": {"date": ISO-8601, "git_commit": .., "git_dirty": bool, "command": "...",
                     "versions": {"torch": .., ...}, "device": "cpu", "world_size": 1,
                     "machine": {"cpu": .., "torch_cpu_capability": "AVX512", "isa_caps": {..}, "gpu": ..}}
    }

Only a record of a benchmark split (``dataset.benchmark``) evaluated in full can fill a cell of the
paper tables (``benchmarks.paper_cell`` adds the reference-default checks). Records are written
atomically (temporary file + rename): an interrupted write leaves none.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA = "qwt-record/2"
SCHEMA_V1 = "qwt-record/1"
READABLE_SCHEMAS = (SCHEMA_V1, SCHEMA)
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str, "suite": str, "model": str, "method": str, "w_bits": (int, type(None)),
    "a_bits": (int, type(None)), "metrics": dict, "images": int, "partial": bool, "seed": int,
    "times": dict, "blocks": list, "config": dict, "provenance": dict, "dataset": (dict, type(None)),
}
DATASET_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "root": (str, type(None)), "split": (str, type(None)), "split_images": (int, type(None)),
    "classes": (int, type(None)), "class_subset": bool, "benchmark": (str, type(None)),
}
PROVENANCE_REQUIRED = ("date", "git_commit", "command", "versions")
REPO = Path(__file__).resolve().parent.parent
RECORDS_DIR = REPO / "results" / "records"
VERSIONED = ("torch", "torchvision", "timm", "mmdet", "mmcv", "mmengine", "numpy", "pandas", "opencv-python-headless")
#: folders whose changes do not make a tree "dirty": what runs write (records, tables, plots)
GENERATED_PATHS = ("results",)


@dataclass(frozen=True)
class BenchmarkSplit:
    """The evaluation split a paper table is measured on."""

    name: str  # as a reader knows it, e.g. "ImageNet val"
    images: int
    classes: int


#: suite -> its benchmark split (ImageNet val: 50,000 images of 1,000 classes; COCO val2017:
#: 5,000 images, 80 categories)
BENCHMARK_SPLITS: dict[str, BenchmarkSplit] = {
    "imagenet": BenchmarkSplit("ImageNet val", 50_000, 1_000),
    "coco": BenchmarkSplit("COCO val2017", 5_000, 80),
}


class RecordError(ValueError):
    """A record file that cannot be used; the message names the file."""


def git_info(cwd: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """(commit sha or 'unknown', dirty flag) of the repository holding ``cwd`` (default: this
    package's). The dirty flag counts tracked files outside :data:`GENERATED_PATHS`: records,
    tables and plots that runs write are not code changes (so a ``make demo`` that replaces the
    committed demo records still stamps its records with a clean tree)."""
    cwd = cwd or REPO
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        exclude = [f":(exclude,top){p}" for p in GENERATED_PATHS]
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                     *exclude], cwd=cwd, capture_output=True, text=True).stdout.strip())
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(command: str | None = None, device: str = "cpu", world_size: int = 1) -> dict[str, Any]:
    """Date, commit, command line, library versions, device, and the machine (CPU model, the ISA
    its kernels use and any cap on it, GPU: :func:`runtime.machine.machine_info`)."""
    from .machine import machine_info

    sha, dirty = git_info()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": sha, "git_dirty": dirty,
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": versions(), "device": device, "world_size": world_size, "machine": machine_info(),
    }


def dataset_entry(suite: str, root: str | os.PathLike[str] | None, split: str | None, split_images: int | None,
                  classes: int | None, class_subset: bool = False) -> dict[str, Any]:
    """The record's ``dataset``: ``benchmark`` names the suite's benchmark split when the split
    has its image and class counts and no class subset was taken (else None)."""
    bench = BENCHMARK_SPLITS.get(suite)
    is_bench = (bench is not None and split_images == bench.images and classes == bench.classes
                and not class_subset)
    return {"root": None if root is None else str(root), "split": split, "split_images": split_images,
            "classes": classes, "class_subset": class_subset,
            "benchmark": bench.name if bench is not None and is_bench else None}


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A ``qwt-record/1`` record as ``qwt-record/2`` (a copy; other records are returned as they are).

    Version 1 did not say what was evaluated; the dataset is inferred from the image count: a
    full run (not partial) of exactly the benchmark split's image count counts as that split,
    anything else as a custom set. ``dataset.inferred`` says so.
    """
    if record.get("schema") != SCHEMA_V1:
        return record
    rec = dict(record)
    bench = BENCHMARK_SPLITS.get(str(rec.get("suite")))
    images, partial = rec.get("images"), rec.get("partial")
    is_bench = bench is not None and images == bench.images and partial is False
    rec["dataset"] = {"root": None, "split": None,
                      "split_images": images if partial is False and isinstance(images, int) else None,
                      "classes": bench.classes if bench is not None and is_bench else None, "class_subset": False,
                      "benchmark": bench.name if bench is not None and is_bench else None, "inferred": True}
    rec["schema"] = SCHEMA
    rec["schema_read"] = SCHEMA_V1
    return rec


def _check_types(obj: dict[str, Any], fields: dict[str, Any], source: str, where: str = "") -> None:
    missing = [k for k in fields if k not in obj]
    if missing:
        raise RecordError(f"{source}: {where}missing fields {missing}")
    for key, typ in fields.items():
        if not isinstance(obj[key], typ) or (typ is int and isinstance(obj[key], bool)):
            raise RecordError(f"{source}: field {where}{key!r} has type {type(obj[key]).__name__}")


def validate(record: dict[str, Any], source: str = "<record>") -> dict[str, Any]:
    """Check schema version and required fields; raise RecordError naming ``source``.

    A readable older version is upgraded first (:func:`upgrade`); returns the (upgraded) record."""
    if not isinstance(record, dict):
        raise RecordError(f"{source}: a record must be a JSON object")
    if record.get("schema") not in READABLE_SCHEMAS:
        raise RecordError(f"{source}: unknown schema {record.get('schema')!r} (expected {SCHEMA!r})")
    if record.get("schema") == SCHEMA_V1:
        v1 = {k: v for k, v in REQUIRED.items() if k != "dataset"}
        _check_types(record, v1, source)
        record = upgrade(record)
    _check_types(record, REQUIRED, source)
    if record["dataset"] is not None:
        _check_types(record["dataset"], DATASET_REQUIRED, source, "dataset.")
    missing_prov = [k for k in PROVENANCE_REQUIRED if k not in record["provenance"]]
    if missing_prov:
        raise RecordError(f"{source}: provenance lacks {missing_prov}")
    return record


def make_record(*, suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None,
                metrics: dict[str, float], images: int, partial: bool, seed: int,
                config: dict[str, Any], dataset: dict[str, Any] | None = None,
                times: dict[str, float] | None = None, blocks: list[dict[str, Any]] | None = None,
                model_size: dict[str, Any] | None = None, command: str | None = None, device: str = "cpu",
                world_size: int = 1, **extra: Any) -> dict[str, Any]:
    """Assemble and validate a record (extra keyword fields are kept as they are).

    ``dataset``: :func:`dataset_entry` of what was evaluated (None for records that evaluate no
    dataset, e.g. the perf benchmark)."""
    rec = {"schema": SCHEMA, "suite": suite, "model": model, "method": method, "w_bits": w_bits,
           "a_bits": a_bits, "metrics": metrics, "images": images, "partial": partial, "dataset": dataset,
           "seed": seed, "model_size": model_size, "times": times or {}, "blocks": blocks or [],
           "config": config, "provenance": provenance(command, device, world_size), **extra}
    return validate(rec)


def record_path(record: dict[str, Any], root: str | os.PathLike[str] = RECORDS_DIR) -> Path:
    bits = "fp" if record["w_bits"] is None else f"w{record['w_bits']}a{record['a_bits']}"
    stamp = record["provenance"]["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
    method = record["method"].replace("+", "_plus_")
    name = f"{record['model']}__{method}__{bits}__s{record['seed']}__{stamp}__{uuid.uuid4().hex[:6]}.json"
    return Path(root) / record["suite"] / name


def write_record(record: dict[str, Any], root: str | os.PathLike[str] = RECORDS_DIR) -> Path:
    """Validate and write atomically (no temporary file is left behind on failure); returns the path."""
    record = validate({k: v for k, v in record.items() if not k.startswith("_")})
    path = record_path(record, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_records(root: str | os.PathLike[str] = RECORDS_DIR, suite: str | None = None) -> list[dict[str, Any]]:
    """All records under ``root`` (optionally one suite), validated (older schema versions
    upgraded), sorted by path; each carries its file as ``_path``."""
    base = Path(root) / suite if suite else Path(root)
    out = []
    for path in sorted(base.rglob("*.json")) if base.exists() else []:
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}: not valid JSON ({e})") from e
        rec = dict(validate(rec, str(path)))
        rec["_path"] = str(path)
        out.append(rec)
    return out


def iter_suite(records: Iterable[dict[str, Any]], suite: str) -> list[dict[str, Any]]:
    return [r for r in records if r["suite"] == suite]


__all__ = ["SCHEMA", "SCHEMA_V1", "READABLE_SCHEMAS", "REQUIRED", "DATASET_REQUIRED", "PROVENANCE_REQUIRED",
           "RECORDS_DIR", "VERSIONED", "GENERATED_PATHS", "BenchmarkSplit", "BENCHMARK_SPLITS", "RecordError",
           "git_info", "versions", "provenance", "dataset_entry", "upgrade", "validate", "make_record",
           "record_path", "write_record", "load_records", "iter_suite"]
