"""Result records: one JSON file per evaluated (suite, model, method, bits, seed) run.

Schema ``qwt-record/1`` (shared by classification, detection, the demo and the perf benchmark)::

    {
      "schema": "qwt-record/1",
      "suite": "imagenet" | "coco" | "demo" | "perf",
      "model": "deit_small",                 # registry name
      "method": "fp" | "repq" | "repq+qwt" | "percentile" | "percentile+qwt" | ...,
      "w_bits": 4 | null, "a_bits": 4 | null, # null for fp
      "metrics": {"top1": 71.5, "top5": 90.8} # or {"bbox_mAP": .., "segm_mAP": .., ...}
      "images": 50000,                        # images evaluated
      "partial": false,                       # true for --val-limit style runs
      "seed": 0,
      "model_size": {...} | null,             # qwt_core.SizeReport.to_dict()
      "times": {"calibration_s": .., "qwt_s": .., "eval_s": ..},
      "blocks": [BlockReport.to_dict(), ...], # per-block QwT diagnostics ([] without QwT)
      "config": {...},                        # everything needed to re-run (bits, sizes, options)
      "provenance": {"date": ISO-8601, "git_commit": .., "git_dirty": bool, "command": "...",
                     "versions": {"torch": .., ...}, "device": "cpu", "world_size": 1}
    }

Records are written atomically (temporary file + rename): an interrupted run leaves none.
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
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

SCHEMA = "qwt-record/1"
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema": str, "suite": str, "model": str, "method": str, "w_bits": (int, type(None)),
    "a_bits": (int, type(None)), "metrics": dict, "images": int, "partial": bool, "seed": int,
    "times": dict, "blocks": list, "config": dict, "provenance": dict,
}
PROVENANCE_REQUIRED = ("date", "git_commit", "command", "versions")
RECORDS_DIR = Path(__file__).resolve().parent.parent / "results" / "records"
VERSIONED = ("torch", "torchvision", "timm", "mmdet", "mmcv", "mmengine", "numpy", "pandas")


class RecordError(ValueError):
    """A record file that cannot be used; the message names the file."""


def git_info(cwd: str | os.PathLike[str] | None = None) -> tuple[str, bool]:
    """(commit sha or 'unknown', dirty flag) of the repository holding this package."""
    cwd = cwd or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=cwd, capture_output=True, text=True).stdout.strip())
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
    """Date, commit, command line, library versions, device."""
    sha, dirty = git_info()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": sha, "git_dirty": dirty,
        "command": command if command is not None else shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "versions": versions(), "device": device, "world_size": world_size,
    }


def validate(record: dict[str, Any], source: str = "<record>") -> dict[str, Any]:
    """Check schema version and required fields; raise RecordError naming ``source``."""
    if not isinstance(record, dict):
        raise RecordError(f"{source}: a record must be a JSON object")
    if record.get("schema") != SCHEMA:
        raise RecordError(f"{source}: unknown schema {record.get('schema')!r} (expected {SCHEMA!r})")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise RecordError(f"{source}: missing fields {missing}")
    for key, typ in REQUIRED.items():
        if not isinstance(record[key], typ) or (typ is int and isinstance(record[key], bool)):
            raise RecordError(f"{source}: field {key!r} has type {type(record[key]).__name__}")
    missing_prov = [k for k in PROVENANCE_REQUIRED if k not in record["provenance"]]
    if missing_prov:
        raise RecordError(f"{source}: provenance lacks {missing_prov}")
    return record


def make_record(*, suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None,
                metrics: dict[str, float], images: int, partial: bool, seed: int,
                config: dict[str, Any], times: dict[str, float] | None = None,
                blocks: list[dict[str, Any]] | None = None, model_size: dict[str, Any] | None = None,
                command: str | None = None, device: str = "cpu", world_size: int = 1,
                **extra: Any) -> dict[str, Any]:
    """Assemble and validate a record (extra keyword fields are kept as they are)."""
    rec = {"schema": SCHEMA, "suite": suite, "model": model, "method": method, "w_bits": w_bits,
           "a_bits": a_bits, "metrics": metrics, "images": images, "partial": partial,
           "seed": seed, "model_size": model_size, "times": times or {}, "blocks": blocks or [],
           "config": config, "provenance": provenance(command, device, world_size), **extra}
    return validate(rec)


def record_path(record: dict[str, Any], root: Path = RECORDS_DIR) -> Path:
    bits = "fp" if record["w_bits"] is None else f"w{record['w_bits']}a{record['a_bits']}"
    stamp = record["provenance"]["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
    method = record["method"].replace("+", "_plus_")
    name = f"{record['model']}__{method}__{bits}__s{record['seed']}__{stamp}__{uuid.uuid4().hex[:6]}.json"
    return root / record["suite"] / name


def write_record(record: dict[str, Any], root: str | os.PathLike[str] = RECORDS_DIR) -> Path:
    """Validate and write atomically; returns the path."""
    validate(record)
    path = record_path(record, Path(root))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_records(root: str | os.PathLike[str] = RECORDS_DIR, suite: str | None = None) -> list[dict[str, Any]]:
    """All records under ``root`` (optionally one suite), validated, sorted by path."""
    base = Path(root) / suite if suite else Path(root)
    out = []
    for path in sorted(base.rglob("*.json")) if base.exists() else []:
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}: not valid JSON ({e})") from e
        rec = validate(rec, str(path))
        rec["_path"] = str(path)
        out.append(rec)
    return out


def iter_suite(records: Iterable[dict[str, Any]], suite: str) -> list[dict[str, Any]]:
    return [r for r in records if r["suite"] == suite]
