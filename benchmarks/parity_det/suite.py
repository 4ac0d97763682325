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
  with the detection pipeline's ``QwTConfig(start_block)`` (evaluated inside
  ``eval_arithmetic(fp16=False)``) on the inputs that the reference's compensation of blocks < k
  produces, through ``SwinBackboneAdapter``;
* the reference's W, b installed as the suite's ``CompensatedBlock(LinearCompensation)`` (fp32 product)
  (what ``fit_qwt`` installs for detection), and the backbone evaluated on the test image;
* the whole detector (neck, RPN, RoI heads) built from the same config for its plan
  (``build_plan``) and as the skeleton the reference's ``quant_model`` is run on.

Everything is returned in the suite's (mmdet 3) names; :func:`align` maps the dump to them.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from benchmarks.parity.suite import (
    BlockFit,
    OneBlock,
    _fit,
    exact_solve,
    installed,
    quant_record,
    recording_rows,
    reference_solve,
)
from detection.convert import BLOCK_RENAMES, _norm_to_unfold, _reduction_to_unfold, convert_legacy
from qwt_core import QwTConfig, eval_arithmetic, fit_qwt, quant_state, quantizers, reparameterize, set_quant_state
from qwt_core.quant.layers import QuantLinear
from qwt_core.quant.quantizers import Quantizer
from qwt_core.qwt.compensation import CompensatedBlock, LinearCompensation
from qwt_core.qwt.driver import BlockStep

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


FORK_QUANTIZERS = {"input_quantizer": "input", "weight_quantizer": "weight", "quantizer_A": "a", "quantizer_B": "b"}
SUITE_QUANTIZERS = {"input_quantizer": "input", "weight_quantizer": "weight", "quantizer_a": "a", "quantizer_b": "b"}


def align_input(name: str, x: Tensor) -> tuple[tuple[str, str], Tensor]:
    """((suite module, quantizer key), tensor) of a fork quantizer's input; a patch-merging
    reduction's input (..., 4C) and weight (O, 4C) in mmdet 3's unfold order."""
    module, attr = name.rsplit(".", 1)
    if module.endswith("downsample.reduction"):
        if attr == "weight_quantizer":
            x = _reduction_to_unfold(x)
        else:
            c4 = x.shape[-1]
            x = x.reshape(-1, 4, c4 // 4)[:, [0, 2, 1, 3]].transpose(1, 2).reshape(x.shape)
    return (suite_name(module), FORK_QUANTIZERS[attr]), x


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
    out["outputs"] = dict(dump["outputs"])
    for key in ("repq_blocks", "repq_qwt_blocks"):
        if key in dump["outputs"]:
            out["outputs"][key] = {"backbone." + suite_name(n): v for n, v in dump["outputs"][key].items()}
    out["quantizer_inputs"] = {stage: dict(align_input(n, x) for n, x in seen.items())
                               for stage, seen in dump.get("quantizer_inputs", {}).items()}
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
    backbone.eval()  # (mmdet's SwinTransformer.train() returns None: not chained)
    return backbone


def build_detector(arch: str) -> nn.Module:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    det = MODELS.build(detector_config(arch).model)
    det.eval()
    return det


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
    repq_qwt_ref_wb: list[Tensor]  # on the reference's RepQ-ViT state
    walk: list[Tensor]  # the suite's input of each block, one step from the reference's features
    repq_qwt_own: list[Tensor] | None  # reference W, b on the suite's own RepQ-ViT calibration
    rederived: dict[str, Any]  # the suite's quantizer init / reparameterization on the reference's inputs
    own_inputs: dict[str, dict[tuple[str, str], Tensor]]  # what each suite quantizer initialised on, per pass
    repq_ref_state: list[Tensor]  # RepQ-ViT outputs with the reference's RepQ-ViT state installed
    walk_near: list[Tensor | None]  # per block input through a merging: tokens near a rounding boundary
    steps_repq: dict[str, list[tuple[Any, ...]]]  # step_by_step on the test image, RepQ-ViT
    steps_qwt: dict[str, list[tuple[Any, ...]]]  # the same with the reference's W, b installed
    seconds: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def spying_calibration(snap: dict[str, Any], model: nn.Module) -> Iterator[None]:
    """``detection.quantize.calibrate_repq`` with a hook that records the first-pass quantizers and
    each pair's channel-wise range before the hook calibrate_detector passes runs."""
    import detection.quantize
    dq = cast(Any, detection.quantize)  # (its calibrate_repq is swapped for the spy below)
    original = dq.calibrate_repq

    handles = []
    for qname, q in quantizers(model):
        module, attr = qname.rsplit(".", 1)

        def pre_hook(mod: nn.Module, args: tuple[Any, ...], key: tuple[str, str] = (module, SUITE_QUANTIZERS[attr])
                     ) -> None:
            if not mod.inited:
                snap["inputs"][key] = args[0].detach().clone()
        handles.append(q.register_forward_pre_hook(pre_hook))

    def spy(m: nn.Module, batch: Any, pairs: Any, *args: Any, before_reparam: Any = None, **kw: Any) -> Any:
        def hook(norm_name: str, linear_name: str) -> None:
            if snap["initial"] is None:
                snap["initial"] = quant_record(model)
                snap["inputs_initial"], snap["inputs"] = snap["inputs"], {}
            q = cast(QuantLinear, model.get_submodule(linear_name)).input_quantizer
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
        for h in handles:
            h.remove()


QUANTIZER_ATTRS = {"input": "input_quantizer", "weight": "weight_quantizer", "a": "quantizer_a", "b": "quantizer_b"}


@torch.no_grad()
def install_reference_state(backbone: nn.Module, ref: dict[str, Any]) -> None:
    """The reference's RepQ-ViT result written into the suite's calibrated backbone: its weights
    (reparameterized LayerNorms and Linears) and every quantizer's final range."""
    res = backbone.load_state_dict(ref["repq_state_dict"], strict=False)
    if res.unexpected_keys:
        raise ValueError(f"the reference's RepQ-ViT state has keys the suite lacks: {res.unexpected_keys[:3]}")
    for name, rec in ref["quant_final"].items():
        module = backbone.get_submodule(name)
        for key, r in rec["quantizers"].items():
            q = getattr(module, QUANTIZER_ATTRS[key])
            if r["delta"] is None or r["delta"].numel() != q.delta.numel():
                raise ValueError(f"{name}.{key}: the reference's range has "
                                 f"{None if r['delta'] is None else r['delta'].numel()}"
                                 f" values, the suite's {q.delta.numel()}")
            zp = None if r["zero_point"] is None else r["zero_point"].reshape(q.zero_point.shape).to(q.zero_point)
            q.set_range(r["delta"].reshape(q.delta.shape).to(q.delta), zp)


@torch.no_grad()
def fit_on_reference_inputs(model: nn.Module, steps: list[BlockStep], blocks: list[dict[str, Any]], cfg: QwTConfig,
                            batch_size: int) -> list[BlockFit]:
    """Block k fitted by ``fit_qwt`` alone (a one-block walk) on exactly the inputs the reference's
    ``generate_compensation_model`` fed block k; the regression rows the suite accumulates are
    also solved the reference's way and in float64. ``cfg.start_block`` is global."""
    fits = []
    for k, (step, b) in enumerate(zip(steps, blocks)):
        block = model.get_submodule(step.name)
        x = b["inputs"]
        feats = [x[i:i + batch_size] for i in range(0, x.shape[0], batch_size)]
        with recording_rows() as systems:
            report = fit_qwt(OneBlock(model, dataclasses.replace(step, after=None)), feats,
                             dataclasses.replace(cfg, start_block=0 if k >= cfg.start_block else 1))[0]
        fit = _fit(step.name, report, *installed(model, step.name, block))
        model.set_submodule(step.name, block)  # unwrap
        if len(systems) != 1:
            raise RuntimeError(f"fit_qwt solved {len(systems)} systems for the one block {step.name}")
        fit.rows_weight, fit.rows_bias, fit.rows_r2 = reference_solve(*systems[0], 1, x.shape[0])
        fit.exact_weight, fit.exact_bias, fit.cond = exact_solve(*systems[0], 1)
        fits.append(fit)
    return fits


BOUNDARY = 1e-3  # of a quantization step: a reduction input this close to a rounding boundary can flip


@torch.no_grad()
def merge_near_boundary(backbone: nn.Module, step: BlockStep, y: Tensor) -> tuple[Tensor, Tensor]:
    """(the step's patch merging of ``y``, (B, L') the output tokens whose reduction input has an
    element within ``BOUNDARY`` of a step of its input quantizer from a rounding boundary, i.e.
    round(x / delta) could come out one step apart under a ~1e-7 difference)."""
    stage = int(step.name.split(".stages.")[1].split(".")[0])
    reduction = cast(QuantLinear, backbone.get_submodule(f"stages.{stage}.downsample.reduction"))
    seen: dict[str, Tensor] = {}
    handle = reduction.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach()))
    try:
        z = step.after(y)  # type: ignore[misc]
    finally:
        handle.remove()
    v = seen["x"] / reduction.input_quantizer.delta
    near = ((v - v.floor()) - 0.5).abs().lt(BOUNDARY).any(-1)
    return z, near


@torch.no_grad()
def walk_inputs(model: nn.Module, embed: Any, steps: list[BlockStep], blocks: list[dict[str, Any]],
                images: Tensor, backbone: nn.Module) -> tuple[list[Tensor], list[Tensor | None]]:
    """The suite's walk, one step at a time from the reference's features: block 0's input from
    ``embed(images)``, block k+1's from the reference's block-k input through the block, the
    reference's compensation ``(out + x @ W) + b`` and (after a stage's last block) patch merging.
    Also, per block input that comes through a merging, its tokens near a rounding boundary."""
    with quant_state(model, weight=True, act=True):
        out: list[Tensor] = [embed(images)]
        near: list[Tensor | None] = [None]
        for step, b in zip(steps[:-1], blocks[:-1]):
            block = model.get_submodule(step.name)
            x = b["inputs"]
            y = step.call(block, x) + x @ b["weight"] + b["bias"]
            if step.after is not None:
                z, n = merge_near_boundary(backbone, step, y)
                out.append(z)
                near.append(n)
            else:
                out.append(y)
                near.append(None)
    return out, near


def _record(q: Quantizer) -> dict[str, Any]:
    from benchmarks.parity.suite import quantizer_record
    return quantizer_record(q)


@torch.no_grad()
def rederive_quantizers(backbone: nn.Module, inputs: dict[tuple[str, str], Tensor], channel_wise: set[str]
                        ) -> dict[str, Any]:
    """Each of the suite's quantizers initialised afresh (its own ``initialise``) on the tensor the
    reference's quantizer initialised on, in the quant-record schema. ``channel_wise``: the modules
    whose input quantizer is channel-wise in that pass (qkv, fc1, reduction before the
    reparameterization)."""
    out: dict[str, Any] = {}
    for (module, key), x in inputs.items():
        q = copy.deepcopy(getattr(backbone.get_submodule(module), QUANTIZER_ATTRS[key]))
        if key == "input" and module in channel_wise:
            q.channel_dim = -1
        q.inited = False
        q.initialise(x)
        out.setdefault(module, {"kind": "matmul" if key in ("a", "b") else "linear", "quantizers": {}})
        out[module]["quantizers"][key] = _record(q)
    return out


@torch.no_grad()
def rederive_reparam(fp_state: dict[str, Tensor], ref: dict[str, Any], w_bits: int, a_bits: int
                     ) -> dict[str, dict[str, Any]]:
    """qwt_core's ``reparameterize`` on the reference's inputs of each pair: the FP LayerNorm and
    Linear, and the reference's channel-wise range (s, z) of the Linear's input."""
    from qwt_core import QuantLinear
    out = {}
    for lin_name, r in ref["reparam"].items():
        norm_name = r["norm"]
        w = fp_state[f"{lin_name}.weight"]
        lin = nn.Linear(w.shape[1], w.shape[0], bias=f"{lin_name}.bias" in fp_state)
        lin.weight.data.copy_(w)
        if lin.bias is not None:
            lin.bias.data.copy_(fp_state[f"{lin_name}.bias"])
        norm = nn.LayerNorm(w.shape[1])
        norm.weight.data.copy_(fp_state[f"{norm_name}.weight"])
        norm.bias.data.copy_(fp_state[f"{norm_name}.bias"])
        qlin = QuantLinear(lin, w_bits, a_bits, True)
        qlin.input_quantizer.set_range(r["s"].reshape(-1), r["z"].reshape(-1))
        reparameterize(norm, qlin)
        out[lin_name] = {"norm": norm_name, "s": r["s"], "z": r["z"], "s_t": qlin.input_quantizer.delta.clone(),
                         "z_t": qlin.input_quantizer.zero_point.clone(), "norm_weight": norm.weight.detach().clone(),
                         "norm_bias": norm.bias.detach().clone(), "weight": qlin.weight.detach().clone(),
                         "bias": qlin.bias.detach().clone()}
    return out


@torch.no_grad()
def step_by_step(backbone: nn.Module, image: Tensor, io: dict[str, tuple[Tensor, Tensor]],
                 stage_outputs: list[Tensor]) -> dict[str, list[tuple[Any, ...]]]:
    """The suite's backbone (quantized) one step at a time from the reference's tensors on ``image``:
    the patch embedding; each block on the reference's input of that block; each patch merging on the
    reference's output of the stage's last block; each output norm on it too. (name, suite, reference)
    by kind: ``embed``, ``blocks``, ``merges`` (+ the tokens near a rounding boundary), ``norms``."""
    from detection.adapters import SwinBackboneAdapter
    adapter = SwinBackboneAdapter(backbone)
    out: dict[str, list[tuple[Any, ...]]] = {"embed": [], "blocks": [], "merges": [], "norms": []}
    steps = list(adapter.steps())
    with quant_state(backbone, weight=True, act=True):
        x0 = adapter.embed(image)
        out["embed"].append(("patch_embed", x0, io[steps[0].name][0]))
        stage = 0
        for k, step in enumerate(steps):
            x_ref, y_ref = io[step.name]
            block = adapter.model.get_submodule(step.name)
            out["blocks"].append((step.name, step.call(block, x_ref), y_ref))
            last = k + 1 == len(steps) or steps[k + 1].name.split(".blocks.")[0] != step.name.split(".blocks.")[0]
            if last:
                norm = getattr(backbone, f"norm{stage}")
                ref_out = stage_outputs[stage]  # (1, C, H, W)
                out["norms"].append((f"norm{stage}", norm(y_ref), ref_out.permute(0, 2, 3, 1).reshape(y_ref.shape)))
                if step.after is not None:
                    z, near = merge_near_boundary(backbone, step, y_ref)
                    out["merges"].append((step.name.split(".blocks.")[0] + ".downsample", z,
                                          io[steps[k + 1].name][0], near))
                stage += 1
    return out


@torch.no_grad()
def backbone_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    return [o.detach().clone() for o in model(x)]


def run_on_dump(dump: dict[str, Any]) -> tuple[dict[str, Any], DetSuiteRun]:
    """:func:`_run_on_dump` in the detection pipeline's evaluation arithmetic (fp32 compensation)."""
    with eval_arithmetic(fp16=False):
        return _run_on_dump(dump)


def _run_on_dump(dump: dict[str, Any]) -> tuple[dict[str, Any], DetSuiteRun]:
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
    fp_state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    quantize_detector(backbone, s["w_bits"], s["a_bits"])
    snap: dict[str, Any] = {"initial": None, "pairs": {}, "inputs": {}, "inputs_initial": {}}
    with spying_calibration(snap, backbone):
        calibrate_detector(backbone, dump["calib"], forward=lambda m, b: m(b))
    set_quant_state(backbone, weight=True, act=True)
    quant_final = quant_record(backbone)
    initial = snap["initial"] or quant_final
    plan = {n: (r["quantizers"]["weight"]["n_bits"], r["quantizers"]["input"]["n_bits"],
                r["quantizers"]["input"]["channel_wise"]) for n, r in initial.items() if r["kind"] != "matmul"}
    reparam = {}
    for lin_name, (norm_name, s_c, z_c) in snap["pairs"].items():
        lin, norm = cast(QuantLinear, backbone.get_submodule(lin_name)), backbone.get_submodule(norm_name)
        reparam[lin_name] = {"norm": norm_name, "s": s_c, "z": z_c,
                             "s_t": lin.input_quantizer.delta.detach().clone(),
                             "z_t": lin.input_quantizer.zero_point.detach().clone(),
                             "norm_weight": norm.get_parameter("weight").detach().clone(),
                             "norm_bias": norm.get_parameter("bias").detach().clone(),
                             "weight": lin.weight.detach().clone(),
                             "bias": None if lin.bias is None else lin.bias.detach().clone()}
    state = {k: v.detach().clone() for k, v in backbone.state_dict().items() if torch.is_tensor(v)}
    ref_inputs = ref.get("quantizer_inputs", {})
    cw = {n for n, p in plan.items() if p[2]}
    rederived = {"initial": rederive_quantizers(backbone, ref_inputs.get("initial", {}), cw),
                 "final": rederive_quantizers(backbone, ref_inputs.get("final", {}), set()),
                 "reparam": rederive_reparam(fp_state, ref, s["w_bits"], s["a_bits"])}
    own_inputs = {"initial": snap["inputs_initial"], "final": snap["inputs"]}
    repq = backbone_outputs(backbone, test)
    seconds["repq"] = time.perf_counter() - t0

    # QwT on the reference's RepQ-ViT result: the ranges agree to ~1e-6 (mmdet 3's patch merging sums
    # in another order), and Y = FP - Q turns such differences into whole-step rounding flips
    own = copy.deepcopy(backbone.state_dict())
    own_outputs = None
    t0 = time.perf_counter()
    adapter = SwinBackboneAdapter(backbone)
    cfg = QwTConfig(start_block=s["start_block"])  # detection/pipeline.py's QwT settings
    steps = list(adapter.steps())
    blocks = ref["qwt"]
    if [st.name for st in steps] != [b["name"] for b in blocks]:
        raise ValueError(f"QwT walks {len(steps)} blocks in the suite ({steps[0].name}...), {len(blocks)} in the "
                         f"reference ({blocks[0]['name']}...)")
    install_reference_state(backbone, ref)
    with quant_state(backbone, weight=True, act=True):
        repq_ref_state = backbone_outputs(backbone, test)
    steps_repq = step_by_step(backbone, test, ref["outputs"]["repq_blocks"], ref["outputs"]["repq"])
    walk, walk_near = walk_inputs(adapter.model, adapter.embed, steps, blocks, dump["qwt_inputs"], backbone)
    tf = fit_on_reference_inputs(adapter.model, steps, blocks, cfg, s["batch_size"])
    seconds["qwt_teacher_forced"] = time.perf_counter() - t0
    comps = []
    for st, b in zip(steps, blocks):  # the reference's W, b in the suite's compensation modules
        comp = LinearCompensation(b["weight"].shape[0], b["weight"].shape[1])
        comp.weight.data.copy_(b["weight"])
        comp.bias.data.copy_(b["bias"])
        adapter.model.set_submodule(st.name, CompensatedBlock(adapter.model.get_submodule(st.name), comp.eval()))
        comps.append(comp)
    with quant_state(backbone, weight=True, act=True):
        with_ref = backbone_outputs(backbone, test)
    steps_qwt = step_by_step(backbone, test, ref["outputs"]["repq_qwt_blocks"], ref["outputs"]["repq_qwt"])
    # the same on the suite's own RepQ-ViT calibration (information)
    for st in steps:
        adapter.model.set_submodule(st.name, cast(CompensatedBlock, adapter.model.get_submodule(st.name)).block)
    backbone.load_state_dict(own, strict=True)
    with quant_state(backbone, weight=True, act=True):
        for st, comp in zip(steps, comps):
            adapter.model.set_submodule(st.name, CompensatedBlock(adapter.model.get_submodule(st.name), comp))
        own_outputs = backbone_outputs(backbone, test)
    return ref, DetSuiteRun(fp, plan, initial, quant_final, reparam, state, repq, tf, with_ref, walk, own_outputs,
                            rederived, own_inputs, repq_ref_state,
                            walk_near,
                            steps_repq, steps_qwt, seconds)
