"""Published numbers: the seed files, the :class:`PaperValue` record, and the other papers' tables,
transcribed from the seed READMEs in ``../shared/seeds/`` (never computed).

The QwT paper's own numbers live with the models they describe, in :data:`benchmarks.registry.MODELS`
(the one home of each model's facts); this module holds what the registry's rows cite beside them.
Every value carries the seed file it was copied from (``PaperValue.seed``);
``tests/benchmarks/test_paper_values.py`` parses those markdown tables and checks
``benchmarks.registry.PAPER_VALUES`` (QwT's and these) against them, so a typo fails the tests.

Sources:
  * ``QWT_IMAGENET`` (seed 002): QwT's ImageNet table, top-1 %, RepQ-ViT (ViT/DeiT/Swin) or
    Percentile (ResNet, conv inputs at 8 bits as in the released code), with and without QwT
    (in :mod:`benchmarks.registry`).
  * ``QWT_COCO`` (seed 000): QwT's COCO table, AP box / AP mask %, RepQ-ViT with and without QwT
    (in :mod:`benchmarks.registry`).
  * ``REPQ_COCO`` (seed 003): RepQ-ViT's own COCO table (same setting as our ``repq`` rows; it
    differs from the RepQ-ViT numbers QwT reports for some cells, e.g. Mask R-CNN Swin-S W4/A4).
  * ``APHQ_COCO`` (seed 004): APHQ-ViT's COCO table: full precision and APHQ-ViT at W4/A4
    (its "MLP Recon." column is a modified FP model with no counterpart here; not transcribed).
"""
from __future__ import annotations

from dataclasses import dataclass

QWT_IMAGENET = "002_7c9d971da05a72e0.txt"
QWT_COCO = "000_d8e84817af4daee4.txt"
REPQ_COCO = "003_d8353c903652b411.txt"
APHQ_COCO = "004_5331b0b6bcbe6e53.txt"
SEED_FILES = (QWT_COCO, QWT_IMAGENET, REPQ_COCO, APHQ_COCO)

#: which table a seed file holds (used in column headers and footnotes)
SOURCE_NAMES = {QWT_IMAGENET: "QwT", QWT_COCO: "QwT", REPQ_COCO: "RepQ-ViT", APHQ_COCO: "APHQ-ViT"}


@dataclass(frozen=True)
class PaperValue:
    """One published number: ``metric`` of (suite, model, method, bits) in percent."""

    suite: str  # "imagenet" | "coco"
    model: str  # registry model name (e.g. "deit_small", "mask_rcnn_swin_t")
    method: str  # "fp" | "repq" | "repq+qwt" | "percentile" | "percentile+qwt" | "aphq"
    w_bits: int | None  # None for fp
    a_bits: int | None
    metric: str  # "top1" | "bbox_mAP" | "segm_mAP"
    value: float
    seed: str  # seed file the number was copied from

    @property
    def source(self) -> str:
        """Whose table the number is from: "QwT", "RepQ-ViT" or "APHQ-ViT"."""
        return SOURCE_NAMES[self.seed]


# --- seed 003: RepQ-ViT's own COCO table -----------------------------------------------------
# detector, FP, RepQ W4/A4, RepQ W6/A6
_REPQ_COCO = [
    ("mask_rcnn_swin_t", (46.0, 41.6), (36.1, 36.0), (45.1, 41.2)),
    ("mask_rcnn_swin_s", (48.5, 43.3), (44.2, 40.2), (47.8, 43.0)),
    ("cascade_mask_rcnn_swin_t", (50.4, 43.7), (47.0, 41.4), (50.0, 43.5)),
    ("cascade_mask_rcnn_swin_s", (51.9, 45.0), (49.3, 43.1), (51.4, 44.6)),
]

# --- seed 004: APHQ-ViT's COCO table ---------------------------------------------------------
# detector, FP, APHQ-ViT W4/A4
_APHQ_COCO = [
    ("mask_rcnn_swin_t", (46.0, 41.6), (38.9, 38.1)),
    ("mask_rcnn_swin_s", (48.5, 43.3), (44.1, 41.0)),
    ("cascade_mask_rcnn_swin_t", (50.4, 43.7), (48.9, 42.7)),
    ("cascade_mask_rcnn_swin_s", (51.9, 45.0), (50.3, 43.7)),
]


def values(suite: str, model: str, method: str, bits: int | None, value: float | tuple[float, float],
           seed: str) -> list[PaperValue]:
    """One published cell as :class:`PaperValue` s: top-1 (ImageNet) or (AP box, AP mask) (COCO)."""
    if suite == "imagenet":
        if not isinstance(value, float):
            raise TypeError(f"{model} {method}: an ImageNet cell is one top-1 value, got {value!r}")
        return [PaperValue(suite, model, method, bits, bits, "top1", value, seed)]
    if not isinstance(value, tuple):
        raise TypeError(f"{model} {method}: a COCO cell is (AP box, AP mask), got {value!r}")
    return [PaperValue(suite, model, method, bits, bits, metric, v, seed)
            for metric, v in zip(("bbox_mAP", "segm_mAP"), value)]


def _build() -> tuple[PaperValue, ...]:
    out: list[PaperValue] = []
    for model, fp, b4, b6 in _REPQ_COCO:
        for method, bits, pair in (("fp", None, fp), ("repq", 4, b4), ("repq", 6, b6)):
            out += values("coco", model, method, bits, pair, REPQ_COCO)
    for model, fp, a4 in _APHQ_COCO:
        out += values("coco", model, "fp", None, fp, APHQ_COCO) + values("coco", model, "aphq", 4, a4, APHQ_COCO)
    return tuple(out)


#: every transcribed number of the other papers' tables (the QwT paper's are in benchmarks.registry.MODELS)
REFERENCE_VALUES: tuple[PaperValue, ...] = _build()
