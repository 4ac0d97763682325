"""CocoMetric restricted to the evaluated images (``--val-limit`` subsets).

mmdet's CocoMetric scores every image id of the annotation file, so a subset run would count all
unevaluated images as misses. ``SubsetCocoMetric`` sets ``img_ids`` to the images that were
actually evaluated (on a full val2017 run: all of them, so the numbers are CocoMetric's).
"""
from __future__ import annotations

from collections.abc import Sequence

from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS

BOX_MASK_KEYS = ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l")


@METRICS.register_module(force=True)
class SubsetCocoMetric(CocoMetric):
    def compute_metrics(self, results: list) -> dict[str, float]:
        self.img_ids = sorted({gt["img_id"] for gt, _ in results})
        return super().compute_metrics(results)


def to_percent(metrics: dict[str, float], prefix: str = "coco/",
               iou_types: Sequence[str] = ("bbox", "segm")) -> tuple[dict[str, float], list[str]]:
    """CocoMetric's fractions (3 decimals) -> percent (1 decimal) for ``iou_types`` (bbox, and
    segm for detectors with masks; a box-only detector's record has no segm keys); keys that
    CocoMetric could not compute (no detections at all) are reported as 0.0 and listed."""
    out, absent = {}, []
    for iou_type in iou_types:
        for item in BOX_MASK_KEYS:
            key = f"{iou_type}_{item}"
            val = metrics.get(prefix + key)
            if val is None or val != val or val < 0:  # missing, NaN, or -1 (no such objects)
                absent.append(key)
                val = 0.0
            out[key] = round(float(val) * 100, 1)
    return out, absent
