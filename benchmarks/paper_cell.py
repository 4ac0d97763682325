"""Which records may fill a cell of the paper tables (``results/imagenet.md``, ``results/coco.md``).

A record fills a paper cell only when it measured what the paper measured: the benchmark's own
split, whole (ImageNet val: 50,000 images of 1,000 classes; COCO val2017: 5,000 images), with the
reference's settings. Anything else is a *partial or custom run*: the tables list it apart, labelled
with what differs, and it never hides (nor is hidden by) a paper-cell run.

:func:`deviations` names every difference of one record (``[]``: it fills its cell);
:func:`fills_paper_cell` is ``not deviations(record)``. The settings are read into the suite's
typed run config (:func:`runtime.legacy.read_config`, which also reads the older flat / nested
schemas) and compared with the reference defaults: the run config's field defaults and
``QwTConfig()``'s, every QwT field (the dataclass is not spelled out here, so new fields are
compared too). A setting the record does not hold is a deviation (``<setting> not recorded``),
never taken for the reference's.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from classification.config import ClassificationConfig
from detection.config import DetectionConfig
from qwt_core import QwTConfig
from runtime.config import RunConfig
from runtime.legacy import read_config
from runtime.records import BENCHMARK_SPLITS

PAPER_SUITES = ("imagenet", "coco")
SUITE_CONFIG: dict[str, type[RunConfig]] = {"imagenet": ClassificationConfig, "coco": DetectionConfig}
#: QwT fields that do not change a result (where the block inputs live between blocks)
NOT_SETTINGS = ("store",)


def _always(rec: dict[str, Any]) -> bool:
    return True


def _quantized(rec: dict[str, Any]) -> bool:
    return rec["method"] != "fp"


def _qwt(rec: dict[str, Any]) -> bool:
    return rec["method"].endswith("+qwt")


@dataclass(frozen=True)
class Setting:
    """One setting of the reference runs: ``key`` is a run-config field or ``qwt.<field>``; it
    is compared for the records ``applies`` to."""

    key: str
    applies: Callable[[dict[str, Any]], bool] = _always

    def value(self, cfg: RunConfig) -> Any:
        if self.key == "eval_fp16":
            return cfg.fp16_eval if cfg.eval_fp16 is not None else None
        if self.key.startswith("qwt."):
            return getattr(cfg.qwt, self.key[4:])
        return getattr(cfg, self.key)

    def reference(self, cls: type[RunConfig]) -> Any:
        if self.key == "eval_fp16":
            return cls.FP16_EVAL
        if self.key.startswith("qwt."):
            return getattr(QwTConfig(), self.key[4:])
        return {f.name: f for f in fields(cls)}[self.key].default if self.key != "model_kwargs" else {}


def _qwt_settings() -> tuple[Setting, ...]:
    return tuple(Setting(f"qwt.{f.name}", _qwt) for f in fields(QwTConfig)
                 if f.name not in NOT_SETTINGS)


#: the reference's settings per suite (what the paper's numbers were measured with)
SETTINGS: dict[str, tuple[Setting, ...]] = {
    "imagenet": (
        Setting("tiny"), Setting("pretrained"), Setting("model_kwargs"),
        Setting("calib_size", _quantized), Setting("calib_augment", _quantized),
        Setting("qwt_size", _qwt), Setting("eval_fp16", _qwt), Setting("half_arith", _qwt), *_qwt_settings(),
    ),
    "coco": (
        Setting("window_pad", _quantized),
        Setting("qwt_size", _qwt), Setting("qwt_img_size", _qwt), Setting("eval_fp16", _qwt), *_qwt_settings(),
    ),
}


def _fmt(value: Any) -> str:
    return "{}" if value == {} else str(value)


def deviations(rec: dict[str, Any]) -> list[str]:
    """What keeps ``rec`` out of its paper cell, in words ([] when nothing does).

    The dataset: not the suite's benchmark split, a class subset, or partial (``--val-limit``);
    then every setting of :data:`SETTINGS` the record's config differs from or does not hold."""
    suite = rec["suite"]
    out: list[str] = []
    bench = BENCHMARK_SPLITS.get(suite)
    ds = rec.get("dataset") or {}
    if bench is None or not ds.get("benchmark"):
        classes = ds.get("classes")
        what = f"{ds.get('split_images') or rec['images']} images" + (f", {classes} classes" if classes else "")
        out.append(f"custom data ({what}; not {bench.name})" if bench else "custom data")
    if ds.get("class_subset"):
        out.append("class subset")
    if rec["partial"]:
        total = ds.get("split_images")
        out.append(f"partial ({rec['images']} of {total} images)" if total else f"partial ({rec['images']} images)")
    cls = SUITE_CONFIG.get(suite)
    if cls is not None:
        cfg, missing = read_config(cls, rec["config"])
        for setting in SETTINGS[suite]:
            if not setting.applies(rec):
                continue
            if setting.key in missing:
                out.append(f"{setting.key} not recorded")
            elif (value := setting.value(cfg)) != setting.reference(cls):
                out.append(f"{setting.key}={_fmt(value)}")
    return out


def fills_paper_cell(rec: dict[str, Any]) -> bool:
    """True when ``rec`` is a full run of the benchmark split with the reference settings."""
    return rec["suite"] in PAPER_SUITES and not deviations(rec)


def label(rec: dict[str, Any]) -> str:
    """The deviations as one short label (what a custom row says differs)."""
    return "; ".join(deviations(rec)) or "reference"
