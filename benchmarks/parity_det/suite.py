"""The suite's side of ``make parity-det``: a dump's weights and inputs through the suite's default
detection path (mmdet 3's ``SwinTransformer``, :mod:`detection.quantize`, :mod:`detection.adapters`,
``qwt_core``), in the order a user's run takes.

* the backbone is built from the registered detector config (``detection/configs/*_3x_coco.py``,
  ``MODELS.build(cfg.model.backbone)``) and loads the dump's FP weights through
  :func:`detection.convert.convert_legacy` (official Swin names -> mmdet 3, patch merging permuted),
  strictly;
* ``quantize_detector`` (the plan, the quantizable attention), ``calibrate_detector`` with its
  defaults (zero window padding, as the reference) on the calibration image; a spy on the
  ``calibrate_repq`` it calls records the first-pass quantizers and each pair's channel-wise ranges
  just before the pair is reparameterized (the hook it passes still runs);
* QwT teacher-forced (:func:`benchmarks.parity.suite.teacher_forced`): block k fitted by ``fit_qwt``
  with the detection pipeline's ``QwTConfig(start_block, fp16_eval=False)`` on the inputs that the
  reference's compensation of blocks < k produces, through ``SwinBackboneAdapter``;
* the reference's W, b installed as the suite's ``CompensatedBlock(LinearCompensation(fp16_eval=False))``
  (what ``fit_qwt`` installs for detection), and the backbone evaluated on the test image;
* the whole detector (neck, RPN, RoI heads) built from the same config for its plan
  (``build_plan``) and as the skeleton the reference's ``quant_model`` is run on.

Everything is returned in the suite's (mmdet 3) names; :func:`align` maps the dump to them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from benchmarks.parity.suite import BlockFit, quant_record, teacher_forced
from detection.convert import BLOCK_RENAMES, _norm_to_unfold, _reduction_to_unfold, convert_legacy
from qwt_core import QwTConfig, quant_state, set_quant_state
from qwt_core.qwt.compensation import CompensatedBlock, LinearCompensation

# the registered detector whose config gives each backbone (swin_micro: Swin-T's with tiny widths, for tests)
DETECTORS = {"swin_t": "cascade_mask_rcnn_swin_t", "swin_s": "cascade_mask_rcnn_swin_s",
             "swin_micro": "cascade_mask_rcnn_swin_t"}


# ------------------------------------------------------------------------------ names
def suite_name(name: str) -> str:
    """A module name of the fork's backbone in mmdet 3's names (detection.convert's renames)."""
    k = f"backbone.{name}."
    if k.startswith("backbone.layers."):
        k = k.replace("backbone.layers.", "backbone.stages.", 1)
        for old, new in BLOCK_RENAMES:
            if old in k:
                k = k.replace(old, new, 1)
                break
    elif k.startswith("backbone.patch_embed.proj."):
        k = k.replace(".proj.", ".projection.", 1)
    return k[len("backbone."):-1]


def _unfold(v: Tensor | None) -> Tensor | None:
    """A per-channel (4C) tensor of a patch-merging input in mmdet 3's unfold order."""
    return None if v is None or v.numel() <= 1 else _norm_to_unfold(v.reshape(-1))


def _merging_quantizers(rec: dict[str, Any]) -> dict[str, Any]:
    rec = {**rec, "quantizers": dict(rec["quantizers"])}
    q = dict(rec["quantizers"]["input"])
    if q["channel_wise"]:
        q["delta"], q["zero_point"] = _unfold(q["delta"]), _unfold(q["zero_point"])
    rec["quantizers"]["input"] = q
    return rec


def convert_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The fork's backbone state dict in mmdet 3's names (a reparameterized reduction's bias (O,)
    needs no permutation and is carried past convert_legacy, which permutes (O, 4C) weights)."""
    biases = {k: v for k, v in state.items() if k.endswith("downsample.reduction.bias")}
    out = convert_legacy({f"backbone.{k}": v for k, v in state.items() if k not in biases})
    out.update({f"backbone.{suite_name(k.rsplit('.', 1)[0])}.bias": v for k, v in biases.items()})
    return {k[len("backbone."):]: v for k, v in out.items()}


def align(dump: dict[str, Any]) -> dict[str, Any]:
    """The dump with every backbone module name and tensor in the suite's names and layouts."""
    out = dict(dump)
    for key in ("quant_initial", "quant_final"):
        out[key] = {suite_name(n): (_merging_quantizers(r) if n.endswith("downsample.reduction") else r)
                    for n, r in dump[key].items()}
    rp = {}
    for n, r in dump["reparam"].items():
        r = dict(r, norm=suite_name(r["norm"]))
        if n.endswith("downsample.reduction"):
            r.update(s=_unfold(r["s"]), z=_unfold(r["z"]), norm_weight=_unfold(r["norm_weight"]),
                     norm_bias=_unfold(r["norm_bias"]), weight=_reduction_to_unfold(r["weight"]))
        rp[suite_name(n)] = r
    out["reparam"] = rp
    out["repq_state_dict"] = convert_state(dump["repq_state_dict"])
    out["qwt"] = [dict(b, name="backbone." + suite_name(b["name"])) for b in dump["qwt"]]
    return out


# ------------------------------------------------------------------------------ building
def detector_config(arch: str) -> Any:
    """The registered config of ``arch``'s detector; its backbone must be the reference side's
    (``swin_micro`` gets the tiny widths written in)."""
    from mmengine.config import Config

    from detection.registry import get_detector

    from .reference import ARCHS
    cfg = Config.fromfile(str(get_detector(DETECTORS[arch]).config_path))
    a, bb = ARCHS[arch], cfg.model.backbone
    if arch == "swin_micro":
        bb.update(embed_dims=a["embed_dim"], depths=a["depths"], num_heads=a["num_heads"])
        cfg.model.neck.in_channels = [a["embed_dim"] * 2**i for i in range(len(a["depths"]))]
    theirs = (a["embed_dim"], list(a["depths"]), list(a["num_heads"]), a["window_size"])
    ours = (bb.embed_dims, list(bb.depths), list(bb.num_heads), bb.window_size)
    if ours != theirs:
        raise ValueError(f"{arch}: the suite's config has backbone {ours}, the reference side builds {theirs}")
    return cfg


def build_backbone(arch: str, fp_state: dict[str, Tensor]) -> nn.Module:
    """mmdet 3's SwinTransformer of the registered config with the fork's FP weights (strict)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    backbone = MODELS.build(detector_config(arch).model.backbone)
    backbone.load_state_dict(convert_state(fp_state), strict=True)
    return backbone.eval()


def build_detector(arch: str) -> nn.Module:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = detector_config(arch)
    return MODELS.build(cfg.model).eval()


def skeleton(detector: nn.Module) -> list[list[Any]]:
    """``[name, kind, args]`` of every module of the detector's neck and heads (not the backbone),
    parents first: kind conv (Conv2d subclasses: in, out, kernel, stride, padding, dilation, groups,
    bias), linear (in, out, bias) or module."""
    rows: list[list[Any]] = []
    for name, m in detector.named_modules():
        if not name or name == "backbone" or name.startswith("backbone."):
            continue
        if isinstance(m, nn.Conv2d):
            rows.append([name, "conv", [m.in_channels, m.out_channels, list(m.kernel_size), list(m.stride),
                                        list(m.padding) if isinstance(m.padding, tuple) else m.padding,
                                        list(m.dilation), m.groups, m.bias is not None]])
        elif isinstance(m, nn.Linear):
            rows.append([name, "linear", [m.in_features, m.out_features, m.bias is not None]])
        else:
            rows.append([name, "module", []])
    return rows


def detector_plan(arch: str, w_bits: int, a_bits: int) -> tuple[dict[str, tuple[int, int, bool]], list[list[Any]]]:
    """(the suite's plan of the neck and heads, the skeleton for the reference's quant_model)."""
    from detection.quantize import build_plan
    det = build_detector(arch)
    plan = {n: (s.w_bits, s.a_bits, s.act_channel_wise) for n, s in build_plan(det, w_bits, a_bits).items()
            if not n.startswith("backbone.")}
    return plan, skeleton(det)


# ------------------------------------------------------------------------------ the run
@dataclass
class DetSuiteRun:
    """Every stage of the suite on one dump (backbone names as mmdet 3 names them)."""

    fp: list[Tensor]
    plan: dict[str, tuple[int, int, bool]]
    quant_initial: dict[str, Any]
    quant_final: dict[str, Any]
    reparam: dict[str, dict[str, Any]]
    state_dict: dict[str, Tensor]
    repq: list[Tensor]
    teacher_forced: list[BlockFit]
    repq_qwt_ref_wb: list[Tensor]
    seconds: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def spying_calibration(snap: dict[str, Any], model: nn.Module) -> Iterator[None]:
    """``detection.quantize.calibrate_repq`` with a hook that records the first-pass quantizers and
    each pair's channel-wise range before the hook calibrate_detector passes runs."""
    import detection.quantize as dq
    original = dq.calibrate_repq

    def spy(m: nn.Module, batch: Any, pairs: Any, *args: Any, before_reparam: Any = None, **kw: Any) -> Any:
        def hook(norm_name: str, linear_name: str) -> None:
            if snap["initial"] is None:
                snap["initial"] = quant_record(model)
            q = model.get_submodule(linear_name).input_quantizer
            snap["pairs"][linear_name] = (norm_name, q.delta.detach().reshape(-1).clone(),
                                          q.zero_point.detach().reshape(-1).clone())
            if before_reparam is not None:
                before_reparam(norm_name, linear_name)
        return original(m, batch, pairs, *args, before_reparam=hook, **kw)

    dq.calibrate_repq = spy
    try:
        yield
    finally:
        dq.calibrate_repq = original


@torch.no_grad()
def backbone_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    return [o.detach().clone() for o in model(x)]


def run_on_dump(dump: dict[str, Any]) -> tuple[dict[str, Any], DetSuiteRun]:
    """(the dump in the suite's names, the suite's run on its weights and inputs)."""
    from detection.adapters import SwinBackboneAdapter
    from detection.quantize import calibrate_detector, quantize_detector

    s = dump["settings"]
    ref = align(dump)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    backbone = build_backbone(s["arch"], dump["fp_state_dict"])
    test = dump["test_inputs"]
    fp = backbone_outputs(backbone, test)
    quantize_detector(backbone, s["w_bits"], s["a_bits"])
    snap: dict[str, Any] = {"initial": None, "pairs": {}}
    with spying_calibration(snap, backbone):
        calibrate_detector(backbone, dump["calib"], forward=lambda m, b: m(b))
    set_quant_state(backbone, weight=True, act=True)
    quant_final = quant_record(backbone)
    initial = snap["initial"] or quant_final
    plan = {n: (r["quantizers"]["weight"]["n_bits"], r["quantizers"]["input"]["n_bits"],
                r["quantizers"]["input"]["channel_wise"]) for n, r in initial.items() if r["kind"] != "matmul"}
    reparam = {}
    for lin_name, (norm_name, s_c, z_c) in snap["pairs"].items():
        lin, norm = backbone.get_submodule(lin_name), backbone.get_submodule(norm_name)
        reparam[lin_name] = {"norm": norm_name, "s": s_c, "z": z_c,
                             "s_t": lin.input_quantizer.delta.detach().clone(),
                             "z_t": lin.input_quantizer.zero_point.detach().clone(),
                             "norm_weight": norm.weight.detach().clone(), "norm_bias": norm.bias.detach().clone(),
                             "weight": lin.weight.detach().clone(),
                             "bias": None if lin.bias is None else lin.bias.detach().clone()}
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items() if torch.is_tensor(v)}
    repq = backbone_outputs(backbone, test)
    seconds["repq"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    adapter = SwinBackboneAdapter(backbone)
    cfg = QwTConfig(start_block=s["start_block"], fp16_eval=False)  # detection/pipeline.py's QwT settings
    bs = s["batch_size"]
    qwt = dump["qwt_inputs"]
    batches = [qwt[i:i + bs] for i in range(0, qwt.shape[0], bs)]
    steps = list(adapter.steps())
    blocks = ref["qwt"]
    if [st.name for st in steps] != [b["name"] for b in blocks]:
        raise ValueError(f"QwT walks {len(steps)} blocks in the suite ({steps[0].name}...), {len(blocks)} in the "
                         f"reference ({blocks[0]['name']}...)")

    def reference_comp(k: int, fit: BlockFit) -> tuple[Tensor, Tensor, None]:
        return blocks[k]["weight"], blocks[k]["bias"], None

    tf = teacher_forced(adapter.model, adapter.embed, steps, batches, dataclasses.replace(cfg), reference_comp)
    seconds["qwt_teacher_forced"] = time.perf_counter() - t0
    for st, b in zip(steps, blocks):  # the reference's W, b in the suite's compensation modules
        comp = LinearCompensation(b["weight"].shape[0], b["weight"].shape[1], fp16_eval=cfg.fp16_eval)
        comp.weight.data.copy_(b["weight"])
        comp.bias.data.copy_(b["bias"])
        adapter.model.set_submodule(st.name, CompensatedBlock(adapter.model.get_submodule(st.name), comp.eval()))
    with quant_state(backbone, weight=True, act=True):
        with_ref = backbone_outputs(backbone, test)
    return ref, DetSuiteRun(fp, plan, initial, quant_final, reparam, state, repq, tf, with_ref, seconds)
