"""Which detectors this suite quantizes, decided from the config before any work.

A detector is supported when its backbone is one of
    swin    mmdet's ``SwinTransformer``                 RepQ-ViT (+ QwT per Swin block)
    resnet  mmdet's ``ResNet``, ``ResNetV1d``, ``ResNeXt``  percentile (+ QwT per residual block)
(the exact classes: subclasses such as ``Res2Net``, ``RegNet``, ``ResNeSt`` or ``HRNet`` change
the blocks and are refused), the ResNet has no deformable convs, plugins or custom conv layers
(``dcn``, ``plugins``, ``conv_cfg``: they are not ``nn.Conv2d`` and would stay in float), and the
test evaluator is ``CocoMetric``. Anything else is refused with one line naming what was found
and what is supported (:class:`BackboneError`).
"""
from __future__ import annotations

from typing import Any

from runtime.errors import BadInput
from runtime.methods import QWT

SWIN_TYPES = ("SwinTransformer",)
RESNET_TYPES = ("ResNet", "ResNetV1d", "ResNeXt")
SUPPORTED = ", ".join(SWIN_TYPES + RESNET_TYPES)

#: base quantization methods of each backbone kind (``<base>+qwt`` adds QwT)
KIND_METHODS: dict[str, tuple[str, ...]] = {
    "swin": ("repq",),
    "resnet": ("percentile", "percentile_strict"),
}
#: what ``--methods`` means when not given
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "swin": ("fp", "repq", "repq+qwt"),
    "resnet": ("fp", "percentile", "percentile+qwt"),
}
ALL_METHODS: tuple[str, ...] = ("fp",) + tuple(m + s for k in KIND_METHODS.values() for m in k for s in ("", QWT))


class BackboneError(BadInput):
    """A detector this suite cannot quantize; the message is one line for the user."""


def _type_name(t: Any) -> str:
    """``"ResNet"`` for ``"ResNet"``, ``"mmdet.ResNet"`` or the class itself."""
    if isinstance(t, type):
        return t.__name__
    return str(t).rsplit(".", 1)[-1]


def backbone_kind(model_cfg: Any, what: str = "the config") -> str:
    """'swin' or 'resnet' for a detector's ``cfg.model``; BackboneError for anything else."""
    backbone = model_cfg.get("backbone") if hasattr(model_cfg, "get") else None
    if backbone is None:
        raise BackboneError(f"{what}: model {_type_name(model_cfg.get('type', '?'))} has no backbone; "
                            f"supported backbones: {SUPPORTED}")
    name = _type_name(backbone.get("type", "?"))
    if name in SWIN_TYPES:
        return "swin"
    if name not in RESNET_TYPES:
        raise BackboneError(f"{what}: backbone {name} is not supported; supported backbones: {SUPPORTED} "
                            "(RepQ-ViT / percentile quantization with QwT)")
    extras = [k for k in ("dcn", "plugins", "conv_cfg") if backbone.get(k) is not None]
    if extras:
        raise BackboneError(f"{what}: backbone {name} with {', '.join(extras)} is not supported (those layers "
                            f"are not plain Conv2d); supported: {SUPPORTED} with plain convolutions")
    return "resnet"


def check_evaluator(cfg: Any, what: str = "the config") -> None:
    """The test evaluator must be a CocoMetric (box and, when the detector has masks, mask AP)."""
    evs = cfg.test_evaluator if isinstance(cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    names = [_type_name(ev.get("type", "?")) for ev in evs]
    if not any(n in ("CocoMetric", "SubsetCocoMetric") for n in names):
        raise BackboneError(f"{what}: test evaluator {', '.join(names)} is not supported; the COCO suite "
                            "evaluates with CocoMetric (bbox / segm)")


def iou_types(cfg: Any) -> list[str]:
    """["bbox", "segm"] for a detector with a RoI mask head or a CocoMetric that scores masks,
    else ["bbox"] (RetinaNet, Faster R-CNN: their records have no segm metrics)."""
    roi_head = cfg.model.get("roi_head") or {}
    if roi_head.get("mask_head") is not None:
        return ["bbox", "segm"]
    evs = cfg.test_evaluator if isinstance(cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    for ev in evs:
        if _type_name(ev.get("type", "?")) in ("CocoMetric", "SubsetCocoMetric"):
            metric = ev.get("metric", "bbox")
            metric = [metric] if isinstance(metric, str) else list(metric)
            return ["bbox", "segm"] if "segm" in metric else ["bbox"]
    return ["bbox"]


def check_methods(kind: str, methods: tuple[str, ...] | list[str], what: str) -> None:
    """Methods of the other backbone kind, or two base methods at once, are refused."""
    allowed = ("fp",) + tuple(m + s for m in KIND_METHODS[kind] for s in ("", QWT))
    bad = [m for m in methods if m not in allowed]
    label = "Swin" if kind == "swin" else "ResNet"
    if bad:
        raise ExperimentMethodError(f"{what} has a {label} backbone: methods {','.join(bad)} do not apply; "
                                    f"choose from {','.join(allowed)}")
    bases = {m[: -len(QWT)] if m.endswith(QWT) else m for m in methods if m != "fp"}
    if len(bases) > 1:
        raise ExperimentMethodError(f"one quantization per run: {' and '.join(sorted(bases))} calibrate "
                                    "different models; run them separately")


class ExperimentMethodError(BackboneError):
    """Methods that do not fit the detector's backbone."""


def base_method(methods: tuple[str, ...] | list[str]) -> str | None:
    """The quantization method the run calibrates (``percentile`` for ``percentile+qwt``), or None."""
    for m in methods:
        if m != "fp":
            return m[: -len(QWT)] if m.endswith(QWT) else m
    return None
