"""Which records may fill a cell of the paper tables (``results/imagenet.md``, ``results/coco.md``).

A record fills a paper cell only when it measured what the paper measured: the benchmark's own
split, whole (ImageNet val: 50,000 images of 1,000 classes; COCO val2017: 5,000 images), with the
reference's settings. Anything else is a *partial or custom run*: the tables list it apart, labelled
with what differs, and it never hides (nor is hidden by) a paper-cell run.

:func:`deviations` names every difference of one record (``[]``: it fills its cell);
:func:`fills_paper_cell` is ``not deviations(record)``. Settings missing from a record's config
(older records) count as the reference's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from qwt_core.records import BENCHMARK_SPLITS

PAPER_SUITES = ("imagenet", "coco")


def _quantized(rec: dict[str, Any]) -> bool:
    return rec["method"] != "fp"


def _qwt(rec: dict[str, Any]) -> bool:
    return rec["method"].endswith("+qwt")


@dataclass(frozen=True)
class Reference:
    """One setting of the reference runs: ``config[key]`` (``key`` may be dotted: ``qwt.solver``)
    must equal ``value`` for the records ``applies`` to."""

    key: str
    value: Any
    applies: Callable[[dict[str, Any]], bool] = lambda rec: True

    def get(self, config: dict[str, Any]) -> tuple[bool, Any]:
        """(present, value) of the key in ``config``."""
        node: Any = config
        for part in self.key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node


#: the reference's settings per suite (what the paper's numbers were measured with)
REFERENCE: dict[str, tuple[Reference, ...]] = {
    "imagenet": (
        Reference("tiny", False), Reference("pretrained", True), Reference("model_overrides", {}),
        Reference("calib_size", 32, _quantized), Reference("calib_augment", True, _quantized),
        Reference("qwt_size", 512, _qwt), Reference("start_block", 0, _qwt),
        Reference("kernel_size", 1, _qwt), Reference("factor", 64, _qwt),
        Reference("qwt.solver", "reference", _qwt), Reference("qwt.half_arith", "native", _qwt),
    ),
    "coco": (
        Reference("window_pad", "zero", _quantized),
        Reference("qwt_size", 512, _qwt), Reference("qwt_img_size", 224, _qwt), Reference("start_block", 0, _qwt),
        Reference("qwt_solver", "reference", _qwt),
        Reference("kernel_size", 1, _qwt), Reference("factor", 64, _qwt),  # ResNet backbones (beyond the paper)
    ),
}


def _fmt(value: Any) -> str:
    return "{}" if value == {} else str(value)


def deviations(rec: dict[str, Any]) -> list[str]:
    """What keeps ``rec`` out of its paper cell, in words ([] when nothing does).

    The dataset: not the suite's benchmark split, a class subset, or partial (``--val-limit``);
    then every reference setting of :data:`REFERENCE` the record's config differs from."""
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
    for ref in REFERENCE.get(suite, ()):
        if not ref.applies(rec):
            continue
        present, value = ref.get(rec["config"])
        if present and value != ref.value:
            out.append(f"{ref.key}={_fmt(value)}")
    return out


def fills_paper_cell(rec: dict[str, Any]) -> bool:
    """True when ``rec`` is a full run of the benchmark split with the reference settings."""
    return rec["suite"] in PAPER_SUITES and not deviations(rec)


def label(rec: dict[str, Any]) -> str:
    """The deviations as one short label (what a custom row says differs)."""
    return "; ".join(deviations(rec)) or "reference"
