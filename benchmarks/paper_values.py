"""Published numbers, transcribed from the seed READMEs in ``../shared/seeds/`` (never computed).

Every value carries the seed file it was copied from (``PaperValue.seed``);
``tests/benchmarks/test_paper_values.py`` parses those markdown tables and checks this file
against them, so a typo here fails the tests.

Sources:
  * ``QWT_IMAGENET`` (seed 002): QwT's ImageNet table, top-1 %, RepQ-ViT (ViT/DeiT/Swin) or
    Percentile (ResNet, conv inputs at 8 bits as in the released code), with and without QwT.
  * ``QWT_COCO`` (seed 000): QwT's COCO table, AP box / AP mask %, RepQ-ViT with and without QwT.
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


# --- seed 002: QwT ImageNet top-1 (%) -------------------------------------------------------
# model, FP, base W4/A4, base+QwT W4/A4, base W6/A6, base+QwT W6/A6 (base: RepQ-ViT or Percentile)
_IMAGENET = [
    ("deit_tiny", 72.2, 58.2, 61.4, 71.0, 71.2),
    ("deit_small", 79.9, 69.0, 71.5, 78.9, 79.1),
    ("deit_base", 81.8, 75.9, 77.1, 81.2, 81.4),
    ("deit_tiny_distilled", 74.5, 62.9, 64.7, 73.3, 73.6),
    ("deit_small_distilled", 81.2, 70.2, 76.2, 80.4, 80.5),
    ("deit_base_distilled", 83.3, 75.7, 77.7, 82.7, 82.8),
    ("vit_small", 81.4, 65.8, 70.8, 80.5, 80.7),
    ("vit_base", 84.5, 68.5, 76.3, 83.6, 83.9),
    ("swin_tiny", 81.4, 73.0, 75.5, 80.6, 80.7),
    ("swin_small", 83.2, 80.2, 80.4, 82.8, 82.9),
    ("resnet18", 71.0, 58.3, 68.9, 70.7, 71.0),
    ("resnet50", 76.6, 68.4, 74.5, 76.0, 76.8),
    ("resnet101", 77.3, 74.7, 76.4, 77.1, 77.2),
]

# --- seed 000: QwT COCO (AP box, AP mask) ----------------------------------------------------
# detector, FP, RepQ W4/A4, RepQ+QwT W4/A4, RepQ W6/A6, RepQ+QwT W6/A6
_COCO = [
    ("mask_rcnn_swin_t", (46.0, 41.6), (36.1, 36.0), (36.3, 36.0), (45.5, 41.3), (45.4, 41.3)),
    ("mask_rcnn_swin_s", (48.5, 43.3), (42.6, 40.0), (43.1, 40.4), (47.6, 42.9), (48.0, 43.1)),
    ("cascade_mask_rcnn_swin_t", (50.4, 43.7), (47.0, 41.4), (47.6, 41.8), (50.1, 43.5), (50.1, 43.6)),
    ("cascade_mask_rcnn_swin_s", (51.9, 45.0), (49.3, 43.1), (49.9, 43.4), (51.4, 44.6), (51.7, 44.8)),
    ("cascade_mask_rcnn_swin_b", (51.9, 45.0), (49.3, 43.1), (50.0, 43.7), (51.5, 44.8), (51.8, 45.0)),
]

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


def _box_mask(model: str, method: str, bits: int | None, pair: tuple[float, float],
              seed: str) -> list[PaperValue]:
    return [PaperValue("coco", model, method, bits, bits, metric, value, seed)
            for metric, value in zip(("bbox_mAP", "segm_mAP"), pair)]


def _build() -> tuple[PaperValue, ...]:
    out: list[PaperValue] = []
    for model, fp, b4, q4, b6, q6 in _IMAGENET:
        base = "percentile" if model.startswith("resnet") else "repq"
        for method, bits, value in (("fp", None, fp), (base, 4, b4), (base + "+qwt", 4, q4),
                                    (base, 6, b6), (base + "+qwt", 6, q6)):
            out.append(PaperValue("imagenet", model, method, bits, bits, "top1", value, QWT_IMAGENET))
    for model, fp, b4, q4, b6, q6 in _COCO:
        for method, bits, pair in (("fp", None, fp), ("repq", 4, b4), ("repq+qwt", 4, q4),
                                   ("repq", 6, b6), ("repq+qwt", 6, q6)):
            out += _box_mask(model, method, bits, pair, QWT_COCO)
    for model, fp, b4, b6 in _REPQ_COCO:
        for method, bits, pair in (("fp", None, fp), ("repq", 4, b4), ("repq", 6, b6)):
            out += _box_mask(model, method, bits, pair, REPQ_COCO)
    for model, fp, a4 in _APHQ_COCO:
        out += _box_mask(model, "fp", None, fp, APHQ_COCO) + _box_mask(model, "aphq", 4, a4, APHQ_COCO)
    return tuple(out)


#: every transcribed number
PAPER_VALUES: tuple[PaperValue, ...] = _build()


def lookup(suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None,
           seed: str | None = None) -> list[PaperValue]:
    """Published values for one setting (optionally from one seed file only)."""
    return [v for v in PAPER_VALUES
            if (v.suite, v.model, v.method, v.w_bits, v.a_bits) == (suite, model, method, w_bits, a_bits)
            and (seed is None or v.seed == seed)]
