"""The experiment registry: every model this suite benchmarks, and every row of its ImageNet and COCO tables.

One home for each fact about a benchmarked model (:class:`Model`): its suite, its family (which
backbone: the quantization baseline and the adapter follow from it), the name the paper's tables
print, the QwT paper's published values (``None``: a model beyond the paper) and, derived from
those, the table rows (:class:`Experiment`) and the Make targets that produce them. The Makefile
reads the model and target lists from here (``python -m benchmarks.registry targets imagenet``,
see ``mk/classification.mk`` and ``mk/detection.mk``); the tables, the tests and the paper-value
checks read the rows. How to build a model (timm name, checkpoint, mmdet config) stays with its
pipeline: :mod:`classification.registry`, :mod:`detection.registry` (a test checks both against
this list).

The rows and their order follow the paper's tables (seeds 002 and 000); ResNet has extra "strict"
rows (conv inputs at n bits, no paper value) and COCO an APHQ-ViT reference row (another method,
not run by this suite). Values other papers publish for the same setting are in
:mod:`benchmarks.paper_values` (``refs``). This module imports nothing outside the standard library
and :mod:`benchmarks.paper_values`, so Make can call it without torch.

>>> get("imagenet", "deit_small", "repq+qwt", 4, 4).target
'imagenet-deit_small-w4a4'
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

from benchmarks import paper_values as pv

BITS = (4, 6)  # the paper's W4/A4 and W6/A6 columns
SUITES = ("imagenet", "coco")
SUITE_METRICS = {"imagenet": ("top1",), "coco": ("bbox_mAP", "segm_mAP")}  # the tables' metrics
#: what every record must hold (a box-only detector such as RetinaNet has no segm_mAP)
REQUIRED_METRICS = {"imagenet": ("top1",), "coco": ("bbox_mAP",)}
#: the seed file holding the QwT paper's table of each suite
QWT_SEEDS = {"imagenet": pv.QWT_IMAGENET, "coco": pv.QWT_COCO}
FAMILIES = ("vit", "swin", "resnet")

#: one published cell: top-1 (ImageNet) or (AP box, AP mask) (COCO), in percent
Value = float | tuple[float, float]


@dataclass(frozen=True)
class Model:
    """One benchmarked model: a row group of its suite's table.

    ``paper``: the QwT paper's values in its column order: FP, base W4/A4, base + QwT W4/A4,
    base W6/A6, base + QwT W6/A6 (base: :attr:`base`); ``None`` for a model beyond the paper.
    """

    name: str  # registry, command-line and Make target name
    suite: str  # "imagenet" | "coco"
    family: str  # backbone: "vit" | "swin" | "resnet"
    display: str  # as the tables print it
    paper: tuple[Value, Value, Value, Value, Value] | None = None

    def __post_init__(self) -> None:
        if self.suite not in SUITES or self.family not in FAMILIES:
            raise ValueError(f"{self.name}: suite must be one of {SUITES} and family one of {FAMILIES}, "
                             f"got {self.suite!r}, {self.family!r}")

    @property
    def base(self) -> str:
        """The quantization baseline QwT compensates: Percentile for ResNet backbones, else RepQ-ViT."""
        return "percentile" if self.family == "resnet" else "repq"

    @property
    def beyond_paper(self) -> bool:
        return self.paper is None

    @property
    def strict(self) -> bool:
        """Whether the model has the extra "strict" rows (ImageNet ResNet: conv inputs at n bits)."""
        return self.suite == "imagenet" and self.family == "resnet"

    @property
    def methods(self) -> tuple[str, ...]:
        """The quantized methods of its table rows, in table order."""
        base = (self.base, self.base + "+qwt")
        return base + (("percentile_strict", "percentile_strict+qwt") if self.strict else ())


#: every benchmarked model, in table order (the paper's rows, then the rows beyond the paper)
MODELS: tuple[Model, ...] = (
    # seed 002: QwT ImageNet top-1 (%): FP, base W4/A4, base+QwT W4/A4, base W6/A6, base+QwT W6/A6
    Model("deit_tiny", "imagenet", "vit", "DeiT-T", (72.2, 58.2, 61.4, 71.0, 71.2)),
    Model("deit_small", "imagenet", "vit", "DeiT-S", (79.9, 69.0, 71.5, 78.9, 79.1)),
    Model("deit_base", "imagenet", "vit", "DeiT-B", (81.8, 75.9, 77.1, 81.2, 81.4)),
    Model("deit_tiny_distilled", "imagenet", "vit", "DeiT-T-distilled", (74.5, 62.9, 64.7, 73.3, 73.6)),
    Model("deit_small_distilled", "imagenet", "vit", "DeiT-S-distilled", (81.2, 70.2, 76.2, 80.4, 80.5)),
    Model("deit_base_distilled", "imagenet", "vit", "DeiT-B-distilled", (83.3, 75.7, 77.7, 82.7, 82.8)),
    Model("vit_small", "imagenet", "vit", "ViT-S", (81.4, 65.8, 70.8, 80.5, 80.7)),
    Model("vit_base", "imagenet", "vit", "ViT-B", (84.5, 68.5, 76.3, 83.6, 83.9)),
    Model("swin_tiny", "imagenet", "swin", "Swin-T", (81.4, 73.0, 75.5, 80.6, 80.7)),
    Model("swin_small", "imagenet", "swin", "Swin-S", (83.2, 80.2, 80.4, 82.8, 82.9)),
    Model("resnet18", "imagenet", "resnet", "ResNet18", (71.0, 58.3, 68.9, 70.7, 71.0)),
    Model("resnet50", "imagenet", "resnet", "ResNet50", (76.6, 68.4, 74.5, 76.0, 76.8)),
    Model("resnet101", "imagenet", "resnet", "ResNet101", (77.3, 74.7, 76.4, 77.1, 77.2)),
    # seed 000: QwT COCO (AP box, AP mask): FP, RepQ W4/A4, RepQ+QwT W4/A4, RepQ W6/A6, RepQ+QwT W6/A6
    Model("mask_rcnn_swin_t", "coco", "swin", "Mask RCNN + Swin_T",
          ((46.0, 41.6), (36.1, 36.0), (36.3, 36.0), (45.5, 41.3), (45.4, 41.3))),
    Model("mask_rcnn_swin_s", "coco", "swin", "Mask RCNN + Swin_S",
          ((48.5, 43.3), (42.6, 40.0), (43.1, 40.4), (47.6, 42.9), (48.0, 43.1))),
    Model("cascade_mask_rcnn_swin_t", "coco", "swin", "Cascade Mask RCNN + Swin_T",
          ((50.4, 43.7), (47.0, 41.4), (47.6, 41.8), (50.1, 43.5), (50.1, 43.6))),
    Model("cascade_mask_rcnn_swin_s", "coco", "swin", "Cascade Mask RCNN + Swin_S",
          ((51.9, 45.0), (49.3, 43.1), (49.9, 43.4), (51.4, 44.6), (51.7, 44.8))),
    Model("cascade_mask_rcnn_swin_b", "coco", "swin", "Cascade Mask RCNN + Swin_B",
          ((51.9, 45.0), (49.3, 43.1), (50.0, 43.7), (51.5, 44.8), (51.8, 45.0))),
    # beyond the paper: mmdet's own configs + openmmlab checkpoints (detection.registry.ZOO_DETECTORS)
    Model("mask_rcnn_r50_fpn_1x", "coco", "resnet", "Mask RCNN + R50-FPN 1x (mmdet)"),
    Model("retinanet_r50_fpn_1x", "coco", "resnet", "RetinaNet + R50-FPN 1x (mmdet)"),
    Model("mmdet_mask_rcnn_swin_t_3x", "coco", "swin", "Mask RCNN + Swin_T 3x (mmdet)"),
)

METHOD_LABELS = {
    "fp": "FP", "repq": "RepQ-ViT", "repq+qwt": "RepQ-ViT + QwT", "percentile": "Percentile",
    "percentile+qwt": "Percentile + QwT", "percentile_strict": "Percentile (strict)",
    "percentile_strict+qwt": "Percentile (strict) + QwT", "aphq": "APHQ-ViT (reference only)",
    # the demo's second QwT rows: the same fit with the float64 least-squares solve (--qwt-solver lstsq)
    "repq+qwt_f64": "RepQ-ViT + QwT (float64 solve)", "percentile+qwt_f64": "Percentile + QwT (float64 solve)",
}
METHOD_ORDER = tuple(METHOD_LABELS)


def models(suite: str | None = None, beyond_paper: bool | None = False) -> list[Model]:
    """Registered models (optionally of one suite), in table order: the paper's (default), those
    beyond the paper (True), or both (None)."""
    if suite is not None and suite not in SUITES:
        raise KeyError(f"no registered suite {suite!r}; registered: {', '.join(SUITES)}")
    return [m for m in MODELS if (suite is None or m.suite == suite)
            and (beyond_paper is None or m.beyond_paper == beyond_paper)]


def model(name: str) -> Model:
    """The registered model ``name``; KeyError lists what exists."""
    for m in MODELS:
        if m.name == name:
            return m
    raise KeyError(f"no registered model {name!r}; registered: {', '.join(m.name for m in MODELS)}")


def display(name: str) -> str:
    """The model's name as the tables print it (unregistered names as they are)."""
    return next((m.display for m in MODELS if m.name == name), name)


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


# --- published values ---------------------------------------------------------------------------
def _paper_values(m: Model) -> list[pv.PaperValue]:
    """The QwT paper's values of one model as :class:`~benchmarks.paper_values.PaperValue` s."""
    if m.paper is None:
        return []
    fp, b4, q4, b6, q6 = m.paper
    cells = (("fp", None, fp), (m.base, 4, b4), (m.base + "+qwt", 4, q4), (m.base, 6, b6), (m.base + "+qwt", 6, q6))
    seed = QWT_SEEDS[m.suite]
    return [v for method, bits, value in cells for v in pv.values(m.suite, m.name, method, bits, value, seed)]


#: every transcribed number: the QwT paper's (from :data:`MODELS`) and other papers' (:mod:`benchmarks.paper_values`)
PAPER_VALUES: tuple[pv.PaperValue, ...] = tuple(v for m in MODELS for v in _paper_values(m)) + pv.REFERENCE_VALUES


def lookup(suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None,
           seed: str | None = None) -> list[pv.PaperValue]:
    """Published values for one setting (optionally from one seed file only)."""
    return [v for v in PAPER_VALUES
            if (v.suite, v.model, v.method, v.w_bits, v.a_bits) == (suite, model, method, w_bits, a_bits)
            and (seed is None or v.seed == seed)]


# --- table rows ---------------------------------------------------------------------------------
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


def _metric_values(vals: list[pv.PaperValue]) -> dict[str, float]:
    return {v.metric: v.value for v in vals}


def _experiment(suite: str, model: str, method: str, bits: int | None, *, target: bool = True,
                note: str = "", beyond_paper: bool = False) -> Experiment:
    qwt_seed = QWT_SEEDS[suite]
    main = lookup(suite, model, method, bits, bits, seed=qwt_seed)
    fp = lookup(suite, model, "fp", None, None, seed=qwt_seed)
    others = [v for v in lookup(suite, model, method, bits, bits) if v.seed != qwt_seed]
    refs: dict[str, dict[str, float]] = {}
    for v in others:
        refs.setdefault(v.source, {})[v.metric] = v.value
    seeds = tuple(sorted({v.seed for v in main + fp + others}))
    return Experiment(suite, model, method, bits, bits,
                      make_target(suite, model, method, bits, bits) if target else None,
                      _metric_values(main), _metric_values(fp), refs, seeds, note, beyond_paper)


_STRICT_NOTE = "ours: conv inputs at n bits (no paper value)"
_BEYOND_NOTE = "beyond the paper: mmdet config + openmmlab checkpoint (no paper value)"


def _rows(m: Model) -> list[Experiment]:
    """A model's table rows: FP, then per method W4/A4 and W6/A6 (and a reference row where another
    paper reports a method this suite does not run: APHQ-ViT)."""
    note = _BEYOND_NOTE if m.beyond_paper else ""
    rows = [_experiment(m.suite, m.name, "fp", None, note=note, beyond_paper=m.beyond_paper)]
    for method in m.methods:
        for b in BITS:
            rows.append(_experiment(m.suite, m.name, method, b, beyond_paper=m.beyond_paper,
                                    note=_STRICT_NOTE if "strict" in method else note))
    if lookup(m.suite, m.name, "aphq", 4, 4):
        rows.append(_experiment(m.suite, m.name, "aphq", 4, target=False,
                                note="APHQ-ViT's own table; not implemented here"))
    return rows


#: every registered experiment of the paper's tables, in table order
EXPERIMENTS: tuple[Experiment, ...] = tuple(e for m in models(beyond_paper=False) for e in _rows(m))
#: registered rows beyond the paper (COCO: mmdet model-zoo detectors), in table order
BEYOND_PAPER: tuple[Experiment, ...] = tuple(e for m in models(beyond_paper=True) for e in _rows(m))


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
    names = sorted({e.model for e in exps})
    methods = sorted({e.method for e in exps if e.model == model})
    raise KeyError(f"no {suite} experiment ({model}, {method}, {bits_label(w_bits, a_bits)}); "
                   f"models: {', '.join(names)}; methods for {model}: {', '.join(methods) or '-'}")


def find(suite: str, model: str, method: str, w_bits: int | None, a_bits: int | None) -> Experiment | None:
    try:
        return get(suite, model, method, w_bits, a_bits)
    except KeyError:
        return None


def make_targets(suite: str, beyond_paper: bool | None = False) -> list[str]:
    """The Make targets of the registered rows, each once: the models' targets in table order, then
    the "strict" ones (what ``make imagenet-list`` prints and ``make imagenet-all`` runs)."""
    targets = list(dict.fromkeys(e.target for e in experiments(suite, beyond_paper) if e.target))
    return sorted(targets, key=lambda t: "-strict-" in t)  # stable: table order within each group


# --- command line (what the Makefile calls) -----------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.registry",
                                 description="The registered models and Make targets, for the Makefile "
                                             "(whitespace-separated on one line).")
    ap.add_argument("what", choices=("targets", "models", "methods"),
                    help="targets: the Make targets of SUITE's rows; models: its model names; "
                         "methods: MODEL's quantized methods, comma-separated (for --methods)")
    ap.add_argument("suite", choices=SUITES)
    ap.add_argument("model", nargs="?", help="methods: the model")
    ap.add_argument("--beyond-paper", action="store_true", help="the rows beyond the paper instead")
    args = ap.parse_args(argv)
    try:
        if args.what == "methods":
            if args.model is None:
                ap.error("methods needs a MODEL")
            m = model(args.model)
            if m.suite != args.suite:
                raise KeyError(f"{m.name} is a {m.suite} model, not {args.suite}")
            print(",".join(m.methods))
        elif args.what == "targets":
            print(" ".join(make_targets(args.suite, args.beyond_paper)))
        else:
            print(" ".join(m.name for m in models(args.suite, args.beyond_paper)))
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
