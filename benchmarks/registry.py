"""Experiment registry: every row of the paper's ImageNet and COCO tables, as data.

An :class:`Experiment` is one (suite, model, method, bits) cell group: the QwT paper's published
value(s), the paper's full-precision baseline, values other papers publish for the same setting
(``refs``), and the Make target that produces our value. The rows and their order follow the
paper's tables (seeds 002 and 000); ResNet has extra "strict" rows (conv inputs at n bits, no
paper value) and COCO an APHQ-ViT reference row (another method, not run by this suite). COCO also
registers mmdet model-zoo detectors beyond the paper (``COCO_ZOO_MODELS``: no paper values, their
own section of ``results/coco.md``).

>>> get("imagenet", "deit_small", "repq+qwt", 4, 4).target
'imagenet-deit_small-w4a4'
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks import paper_values as pv

IMAGENET_MODELS = ("deit_tiny", "deit_small", "deit_base", "deit_tiny_distilled", "deit_small_distilled",
                   "deit_base_distilled", "vit_small", "vit_base", "swin_tiny", "swin_small",
                   "resnet18", "resnet50", "resnet101")  # the paper's row order
COCO_MODELS = ("mask_rcnn_swin_t", "mask_rcnn_swin_s", "cascade_mask_rcnn_swin_t",
               "cascade_mask_rcnn_swin_s", "cascade_mask_rcnn_swin_b")
#: beyond the paper: mmdet's own configs + openmmlab checkpoints (detection.registry.ZOO_DETECTORS),
#: name -> the base quantization method of its backbone
COCO_ZOO_MODELS = {"mask_rcnn_r50_fpn_1x": "percentile", "retinanet_r50_fpn_1x": "percentile",
                   "mmdet_mask_rcnn_swin_t_3x": "repq"}
BITS = (4, 6)  # the paper's W4/A4 and W6/A6 columns
SUITE_METRICS = {"imagenet": ("top1",), "coco": ("bbox_mAP", "segm_mAP")}  # the tables' metrics
#: what every record must hold (a box-only detector such as RetinaNet has no segm_mAP)
REQUIRED_METRICS = {"imagenet": ("top1",), "coco": ("bbox_mAP",)}

#: names as the paper's tables print them
DISPLAY = {
    "deit_tiny": "DeiT-T", "deit_small": "DeiT-S", "deit_base": "DeiT-B",
    "deit_tiny_distilled": "DeiT-T-distilled", "deit_small_distilled": "DeiT-S-distilled",
    "deit_base_distilled": "DeiT-B-distilled", "vit_small": "ViT-S", "vit_base": "ViT-B",
    "swin_tiny": "Swin-T", "swin_small": "Swin-S", "resnet18": "ResNet18", "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "mask_rcnn_swin_t": "Mask RCNN + Swin_T", "mask_rcnn_swin_s": "Mask RCNN + Swin_S",
    "cascade_mask_rcnn_swin_t": "Cascade Mask RCNN + Swin_T",
    "cascade_mask_rcnn_swin_s": "Cascade Mask RCNN + Swin_S",
    "cascade_mask_rcnn_swin_b": "Cascade Mask RCNN + Swin_B",
    "mask_rcnn_r50_fpn_1x": "Mask RCNN + R50-FPN 1x (mmdet)",
    "retinanet_r50_fpn_1x": "RetinaNet + R50-FPN 1x (mmdet)",
    "mmdet_mask_rcnn_swin_t_3x": "Mask RCNN + Swin_T 3x (mmdet)",
}
METHOD_LABELS = {
    "fp": "FP", "repq": "RepQ-ViT", "repq+qwt": "RepQ-ViT + QwT", "percentile": "Percentile",
    "percentile+qwt": "Percentile + QwT", "percentile_strict": "Percentile (strict)",
    "percentile_strict+qwt": "Percentile (strict) + QwT", "aphq": "APHQ-ViT (reference only)",
    # the demo's second QwT rows: the same fit with the float64 least-squares solve (--qwt-solver lstsq)
    "repq+qwt_f64": "RepQ-ViT + QwT (float64 solve)", "percentile+qwt_f64": "Percentile + QwT (float64 solve)",
}
METHOD_ORDER = tuple(METHOD_LABELS)


def display(model: str) -> str:
    return DISPLAY.get(model, model)


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def bits_label(w_bits: int | None, a_bits: int | None) -> str:
    """"W4/A4", or "FP" when both are None."""
    return "FP" if w_bits is None and a_bits is None else f"W{w_bits}/A{a_bits}"


def make_target(suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None) -> str:
    """The Make target whose run writes this cell's record.

    FP has no target of its own: the experiment targets evaluate the FP model in the same
    invocation, so its target is the model's W4/A4 target.
    """
    w, a = (4, 4) if w_bits is None else (w_bits, a_bits)
    strict = "-strict" if method.startswith("percentile_strict") else ""
    return f"{suite}-{model}{strict}-w{w}a{a}"


@dataclass(frozen=True)
class Experiment:
    """One row cell group of a paper table (values in percent)."""

    suite: str
    model: str
    method: str
    w_bits: int | None
    a_bits: int | None
    target: str | None  # Make target producing it; None: not run by this suite (reference row)
    paper: dict[str, float] = field(default_factory=dict)  # metric -> QwT paper value ({}: none)
    fp: dict[str, float] = field(default_factory=dict)  # metric -> the paper's FP baseline
    refs: dict[str, dict[str, float]] = field(default_factory=dict)  # source -> metric -> value
    seeds: tuple[str, ...] = ()  # seed files the published values come from
    note: str = ""
    beyond_paper: bool = False  # a row outside the paper's table (own section, no paper value)

    @property
    def bits(self) -> str:
        return bits_label(self.w_bits, self.a_bits)

    @property
    def key(self) -> tuple[str, str, str, int | None, int | None]:
        return (self.suite, self.model, self.method, self.w_bits, self.a_bits)


def _values(vals: list[pv.PaperValue]) -> dict[str, float]:
    return {v.metric: v.value for v in vals}


def _experiment(suite: str, model: str, method: str, bits: int | None, *, target: bool = True,
                note: str = "", beyond_paper: bool = False) -> Experiment:
    qwt_seed = pv.QWT_IMAGENET if suite == "imagenet" else pv.QWT_COCO
    main = pv.lookup(suite, model, method, bits, bits, seed=qwt_seed)
    fp = pv.lookup(suite, model, "fp", None, None, seed=qwt_seed)
    others = [v for v in pv.lookup(suite, model, method, bits, bits) if v.seed != qwt_seed]
    refs: dict[str, dict[str, float]] = {}
    for v in others:
        refs.setdefault(v.source, {})[v.metric] = v.value
    seeds = tuple(sorted({v.seed for v in main + fp + others}))
    return Experiment(suite, model, method, bits, bits,
                      make_target(suite, model, method, bits, bits) if target else None,
                      _values(main), _values(fp), refs, seeds, note, beyond_paper)


def _build() -> tuple[Experiment, ...]:
    rows: list[Experiment] = []
    for model in IMAGENET_MODELS:
        resnet = model.startswith("resnet")
        methods = (["percentile", "percentile+qwt", "percentile_strict", "percentile_strict+qwt"]
                   if resnet else ["repq", "repq+qwt"])
        rows.append(_experiment("imagenet", model, "fp", None))
        for method in methods:
            for b in BITS:
                note = "ours: conv inputs at n bits (no paper value)" if "strict" in method else ""
                rows.append(_experiment("imagenet", model, method, b, note=note))
    for model in COCO_MODELS:
        rows.append(_experiment("coco", model, "fp", None))
        for method in ("repq", "repq+qwt"):
            for b in BITS:
                rows.append(_experiment("coco", model, method, b))
        if pv.lookup("coco", model, "aphq", 4, 4):
            rows.append(_experiment("coco", model, "aphq", 4, target=False,
                                    note="APHQ-ViT's own table; not implemented here"))
    return tuple(rows)


def _build_beyond() -> tuple[Experiment, ...]:
    rows: list[Experiment] = []
    for model, base in COCO_ZOO_MODELS.items():
        note = "beyond the paper: mmdet config + openmmlab checkpoint (no paper value)"
        rows.append(_experiment("coco", model, "fp", None, note=note, beyond_paper=True))
        for method in (base, base + "+qwt"):
            for b in BITS:
                rows.append(_experiment("coco", model, method, b, note=note, beyond_paper=True))
    return tuple(rows)


#: every registered experiment of the paper's tables, in table order
EXPERIMENTS: tuple[Experiment, ...] = _build()
#: registered rows beyond the paper (COCO: mmdet model-zoo detectors), in table order
BEYOND_PAPER: tuple[Experiment, ...] = _build_beyond()
SUITES = ("imagenet", "coco")


def experiments(suite: str | None = None, beyond_paper: bool | None = False) -> list[Experiment]:
    """Registered experiments (optionally of one suite), in table order: the paper's rows
    (``beyond_paper=False``, default), the rows beyond the paper (True), or both (None)."""
    if suite is not None and suite not in SUITES:
        raise KeyError(f"no registered suite {suite!r}; registered: {', '.join(SUITES)}")
    rows = (EXPERIMENTS if beyond_paper is False else BEYOND_PAPER if beyond_paper else EXPERIMENTS + BEYOND_PAPER)
    return [e for e in rows if suite is None or e.suite == suite]


def get(suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None) -> Experiment:
    """The registered experiment for one cell (paper row or beyond); KeyError lists what exists."""
    exps = experiments(suite, beyond_paper=None)
    for e in exps:
        if e.key == (suite, model, method, w_bits, a_bits):
            return e
    models = sorted({e.model for e in exps})
    methods = sorted({e.method for e in exps if e.model == model})
    raise KeyError(f"no {suite} experiment ({model}, {method}, {bits_label(w_bits, a_bits)}); "
                   f"models: {', '.join(models)}; methods for {model}: {', '.join(methods) or '-'}")


def find(suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None) -> Experiment | None:
    try:
        return get(suite, model, method, w_bits, a_bits)
    except KeyError:
        return None
