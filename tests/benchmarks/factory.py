"""Hand-made records for the table tests (fixed dates and commits, so renders are comparable)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runtime.records import BENCHMARK_SPLITS, SCHEMA, dataset_entry, validate, write_record


def reference_config(suite: str) -> dict[str, Any]:
    """The config a run with every reference setting records (benchmarks.paper_cell counts a
    missing setting as a deviation): the suite's run config defaults, ``qwt`` nested."""
    from classification.config import ClassificationConfig
    from detection.config import DetectionConfig
    from runtime.config import record_config

    if suite == "imagenet":
        return {**record_config(ClassificationConfig()), "model_overrides": {}}
    return record_config(DetectionConfig()) if suite == "coco" else {}


def record(suite: str, model: str, method: str, bits: int | None, metrics: dict[str, float], *,
           images: int = 50000, partial: bool = False, seed: int = 0,
           date: str = "2026-11-20T10:00:00+00:00", commit: str = "abc1234def5678",
           command: str = "make imagenet-x-w4a4", blocks: list[dict[str, Any]] | None = None,
           split_images: int | None = None, classes: int | None = None, class_subset: bool = False,
           config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A record of ``images`` evaluated images. The split defaults to the suite's benchmark split
    when ``images`` is its size (or the run is partial), else to a custom set of ``images`` images."""
    bench = BENCHMARK_SPLITS.get(suite)
    if split_images is None:
        split_images = bench.images if bench and (partial or images == bench.images) else images
    if classes is None and bench is not None and split_images == bench.images:
        classes = bench.classes
    rec = {"schema": SCHEMA, "suite": suite, "model": model, "method": method, "w_bits": bits,
           "a_bits": bits, "metrics": metrics, "images": images, "partial": partial, "seed": seed,
           "dataset": dataset_entry(suite, f"/data/{suite}", "val", split_images, classes, class_subset),
           "model_size": None, "times": {}, "blocks": blocks or [],
           "config": {**reference_config(suite), **(config or {})},
           "provenance": {"date": date, "git_commit": commit, "git_dirty": False, "command": command,
                          "versions": {"python": "3.11"}, "device": "cpu", "world_size": 1}, **extra}
    return validate(rec)


def write(root: Path, rec: dict[str, Any]) -> Path:
    return write_record(rec, root)


def write_raw(root: Path, suite: str, name: str, obj: Any) -> Path:
    """A record file written as is (no validation), for the error tests."""
    path = root / suite / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def blocks(n: int = 4) -> list[dict[str, Any]]:
    """BlockReport.to_dict()-shaped diagnostics."""
    return [{"index": i, "name": f"blocks.{i}", "r2": 0.5 - 0.2 * i, "applied": 0.5 - 0.2 * i > 0,
             "mse_before": 0.1 * (i + 1), "mse_after": 0.05 * (i + 1), "samples": 1000, "extra": {}}
            for i in range(n)]
