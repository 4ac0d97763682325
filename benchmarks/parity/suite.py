"""The suite's side of ``make parity``: a dump's weights and inputs through the suite's public API.

What a user's run does, in the same order, on the dump's tensors (``classification.pipeline``
cannot take given tensors): ``classification.build.build_model(name, pretrained=False,
checkpoint=...)`` with the dump's FP weights mapped to timm 1.x names by timm's own
``checkpoint_filter_fn``; the family adapter's default method (``quantize``, ``reparam_pairs``);
``qwt_core.calibrate_repq`` (its ``before_reparam`` hook records the first-pass quantizers and each
pair's channel-wise ranges); ``qwt_core.fit_qwt`` with ``QwTConfig(start_block, kernel_size,
factor)``, every other field the default. Everything is recorded in the dump's neutral schema (see
:mod:`benchmarks.parity.reference`) so that :mod:`benchmarks.parity.compare` compares like with like.

QwT is fitted twice:

* **teacher-forced** (decides): block k alone (``fit_qwt`` on a one-block walk) on the inputs that
  the *reference's* compensation of blocks < k produces, propagated in fp32 as the reference does
  while fitting: ``(out + x @ W) + b`` for tokens, ``out + conv2d(x, W, b)`` for ResNet. The regression
  rows the suite's fit accumulates are recorded (:func:`recording_rows`) and solved the reference's
  way (:func:`reference_solve`), so the comparison can tell "same rows" from "same solution";
* **free-running** (information): ``fit_qwt`` over all blocks, what a user gets. Then the reference's
  installed W, b are written into the compensation modules that fit installed and the test images
  are evaluated through the suite's eval path (:func:`evaluate_with`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classification.adapters import for_family
from classification.build import build_model, construct, resolve_spec
from classification.registry import ModelSpec
from qwt_core import (
    BlockStep,
    CompensatedBlock,
    LogSqrt2Quantizer,
    QuantConv2d,
    QuantLinear,
    QuantMatMul,
    QwTConfig,
    calibrate_repq,
    fit_qwt,
    quant_state,
    quantizers,
    set_quant_state,
)
from qwt_core.quant.quantizers import Quantizer
from qwt_core.qwt import driver
from qwt_core.qwt.config import solver_preset

from .reference import logits as logits_of

REFERENCE_CONV_RIDGE = 1e-3  # the reference's grouped-conv lienar_regression: XᵀX + 1e-3 I

# (W, b, groups) of the reference's installed compensation of block k, given the suite's fit of it
ReferenceComp = Callable[[int, "BlockFit"], tuple[Tensor, Tensor, int | None]]


@dataclass
class BlockFit:
    """One block's QwT: the suite's installed compensation and its rows solved the reference's way.
    Weights in the reference's layout: tokens (D, O), convolutions (O, C/G, k, k)."""

    name: str
    r2: float  # the suite's R² (its keep / zero statistic)
    kept: bool  # the suite installed a non-zero compensation
    weight: Tensor
    bias: Tensor
    rows_weight: Tensor | None = None  # the suite's regression rows, solved as the reference solves
    rows_bias: Tensor | None = None
    rows_r2: float | None = None  # the reference's R² formula on those rows and that solution
    cond: float | None = None  # cond of the matrix the reference inverts, from the rows in float64
    exact_weight: Tensor | None = None  # the same system solved in float64 (to explain a W, b difference)
    exact_bias: Tensor | None = None
    groups: int | None = None


@dataclass
class SuiteRun:
    """Every stage of the suite on one dump's weights and inputs (names as in the suite)."""

    method: str
    fp_logits: Tensor
    plan: dict[str, tuple[int, int, bool]]  # layer -> (w_bits, a_bits, input channel-wise) as quantized
    quant_initial: dict[str, Any]
    quant_final: dict[str, Any]
    reparam: dict[str, dict[str, Any]]
    state_dict: dict[str, Tensor]  # the quantized model's weights and buffers, quantizer ranges excepted
    repq_logits: Tensor
    teacher_forced: list[BlockFit]
    free_running: list[BlockFit]
    free_logits: Tensor
    model: nn.Module  # the quantized model with the free-running compensation installed
    steps: list[BlockStep]
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------ names and weights
def map_state_dict(family: str, state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """A timm 0.4.12 / reference ResNet state dict in the suite's names, by timm's own
    ``checkpoint_filter_fn`` (Swin: patch merging moves to the start of the next stage, ``head`` ->
    ``head.fc``); the identity on a state dict that already has the suite's names."""
    if family == "swin":
        from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn
        return checkpoint_filter_fn(dict(state), cast(SwinTransformer, model))
    if family == "vit":
        from timm.models.vision_transformer import VisionTransformer
        from timm.models.vision_transformer import checkpoint_filter_fn as vit_filter
        return vit_filter(dict(state), cast(VisionTransformer, model))
    return dict(state)  # the reference's ResNet has torchvision's names


class NameMap:
    """Module names of the dump -> the suite's, learned from the state-dict mapping: a module takes the
    new name of its longest prefix that owns a parameter (``layers.0.downsample.reduction`` ->
    ``layers.1.downsample.reduction``; ``head`` -> ``head.fc``); unknown names map to themselves."""

    def __init__(self, src: dict[str, Tensor], dst: dict[str, Tensor]) -> None:
        new_key = {id(v): k for k, v in dst.items()}
        self.prefix: dict[str, str] = {}
        for k, v in src.items():
            k2 = new_key.get(id(v))
            if k2 is not None and "." in k and "." in k2 and k.rsplit(".", 1)[1] == k2.rsplit(".", 1)[1]:
                self.prefix[k.rsplit(".", 1)[0]] = k2.rsplit(".", 1)[0]

    def __call__(self, name: str) -> str:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            head = ".".join(parts[:i])
            if head in self.prefix:
                return ".".join([self.prefix[head], *parts[i:]])
        return name


def align(dump: dict[str, Any], names: NameMap, model: nn.Module) -> dict[str, Any]:
    """The dump with every module name and state-dict key in the suite's names."""
    out = dict(dump)
    for key in ("quant_initial", "quant_final"):
        out[key] = {names(n): v for n, v in dump[key].items()}
    out["reparam"] = {names(n): dict(r, norm=names(r["norm"])) for n, r in dump["reparam"].items()}
    out["repq_state_dict"] = map_state_dict(dump["settings"]["family"], dump["repq_state_dict"], model)
    out["qwt"] = [dict(b, name=names(b["name"])) for b in dump["qwt"]]
    return out


def load_fp_model(dump: dict[str, Any], workdir: Path) -> tuple[nn.Module, ModelSpec, NameMap]:
    """The suite's model with the dump's FP weights, as a user loads a checkpoint (strictly)."""
    s = dump["settings"]
    spec = resolve_spec(s["model"], tiny=bool(s.get("tiny")))
    skeleton = construct(spec)
    mapped = map_state_dict(spec.family, dump["fp_state_dict"], skeleton)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = workdir / f"{s['model']}_fp_mapped.pth"
    torch.save(mapped, ckpt)
    try:
        model, spec = build_model(s["model"], pretrained=False, checkpoint=str(ckpt), tiny=bool(s.get("tiny")))
    finally:
        ckpt.unlink()
    return model.eval(), spec, NameMap(dump["fp_state_dict"], mapped)


# ------------------------------------------------------------------------------ quantizer records
def quantizer_record(q: Quantizer) -> dict[str, Any]:
    log = isinstance(q, LogSqrt2Quantizer)
    return {"n_bits": int(q.n_bits), "channel_wise": getattr(q, "channel_dim", None) is not None,
            "delta": q.delta.detach().clone().cpu(), "zero_point": None if log else q.zero_point.detach().clone().cpu()}


def quant_record(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every quantized layer's quantizers in the dump's schema (``quantizer_a`` -> "a", ...)."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            out[name] = {"kind": "linear" if isinstance(m, QuantLinear) else "conv",
                         "quantizers": {"input": quantizer_record(m.input_quantizer),
                                        "weight": quantizer_record(m.weight_quantizer)}}
        elif isinstance(m, QuantMatMul):
            out[name] = {"kind": "matmul", "quantizers": {"a": quantizer_record(m.quantizer_a),
                                                          "b": quantizer_record(m.quantizer_b)}}
    return out


def plan_of(record: dict[str, dict[str, Any]]) -> dict[str, tuple[int, int, bool]]:
    """(w_bits, a_bits, input channel-wise) of every quantized Linear / Conv2d of a quant record."""
    return {n: (r["quantizers"]["weight"]["n_bits"], r["quantizers"]["input"]["n_bits"],
                r["quantizers"]["input"]["channel_wise"])
            for n, r in record.items() if r["kind"] != "matmul"}


# ------------------------------------------------------------------------------ QwT rows
@contextlib.contextmanager
def recording_rows() -> Iterator[list[tuple[list[Tensor], list[Tensor]]]]:
    """Inside the block, every regression that ``fit_qwt`` builds (``ReferenceRows`` or
    ``NormalEquations``, replaced in :mod:`qwt_core.qwt.driver`) also records the rows (x, y) it
    is given by ``update``: one ``(xs, ys)`` per system, in order. Changes no result."""
    systems: list[tuple[list[Tensor], list[Tensor]]] = []
    names = ("ReferenceRows", "NormalEquations")
    bases = {name: getattr(driver, name) for name in names}

    def recording(base: type) -> type:
        class Recording(base):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.recorded: tuple[list[Tensor], list[Tensor]] = ([], [])
                systems.append(self.recorded)

            def update(self, x: Tensor, y: Tensor) -> None:
                self.recorded[0].append(x.detach().float().cpu().clone())
                self.recorded[1].append(y.detach().float().cpu().clone())
                super().update(x, y)

            def update_columns(self, x: Tensor, y: Tensor) -> None:
                # the grouped conv's columns (B, G, D, *S) as rows (b, *s) x (G, D), as the reference unfolds them
                order = (0, *range(3, x.dim()), 1, 2)
                for t, kept in ((x, self.recorded[0]), (y, self.recorded[1])):
                    kept.append(t.detach().permute(order).reshape(-1, t.shape[1], t.shape[2]).float().cpu().clone())
                super().update_columns(x, y)
        return Recording

    for name, base in bases.items():
        setattr(driver, name, recording(base))
    try:
        yield systems
    finally:
        for name, base in bases.items():
            setattr(driver, name, base)


def _inverse(a: Tensor) -> Tensor:
    try:
        return torch.inverse(a)
    except RuntimeError:  # exactly singular in fp32: the reference would stop here
        return torch.full_like(a, math.nan)


@torch.no_grad()
def reference_solve(xs: Sequence[Tensor], ys: Sequence[Tensor], kernel_size: int,
                    n_images: int) -> tuple[Tensor, Tensor, float]:
    """Regression rows solved with the reference's arithmetic (fp32, its operation order).

    Tokens, x (n, D), y (n, O): W_aug = inverse(X_augᵀ X_aug) @ X_augᵀ @ Y, R² = 1 - SS_res / SS_tot
    around the column means. Grouped conv, x (n, G, D), y (n, G, o): per group with XᵀX + 1e-3 I,
    W (G·o, D / k², k, k), R² with SS_tot around the per-position means over the images (the
    reference takes ``Y.mean(dim=0)`` of (B, C, H, W)). Returns W, b, R².
    """
    X, Y = torch.cat(list(xs)).float(), torch.cat(list(ys)).float()
    if X.dim() == 2:
        Xa = torch.cat([X, torch.ones(X.shape[0], 1)], dim=-1)
        XaT = Xa.t()
        A = XaT @ Xa
        W_all = _inverse(A) @ XaT @ Y
        W, b = W_all[:-1], W_all[-1]
        r2 = 1 - torch.sum((Y - (X @ W + b)).pow(2)) / torch.sum((Y - Y.mean(dim=0)).pow(2))
        return W, b, float(r2)
    n, G, D = X.shape
    Ws, bs, preds = [], [], []
    for g in range(G):
        Xg = torch.cat([X[:, g], torch.ones(n, 1)], dim=1)
        A = Xg.T @ Xg
        A_reg = A + REFERENCE_CONV_RIDGE * torch.eye(A.shape[0])
        Wg = _inverse(A_reg) @ Xg.T @ Y[:, g]  # (D + 1, o)
        Ws.append(Wg[:-1, :].T)
        bs.append(Wg[-1, :])
        preds.append(X[:, g] @ Wg[:-1] + Wg[-1])
    W = torch.cat(Ws).reshape(G * Y.shape[2], D // kernel_size**2, kernel_size, kernel_size)
    Yn = Y.reshape(n_images, n // n_images, -1)  # (B, H'W', C) of the (B, C, H', W') output
    Pn = torch.stack(preds, 1).reshape(n_images, n // n_images, -1)
    r2 = 1 - torch.sum((Yn - Pn).pow(2)) / torch.sum((Yn - Yn.mean(dim=0)).pow(2))
    return W, torch.cat(bs), float(r2)


@torch.no_grad()
def exact_solve(xs: Sequence[Tensor], ys: Sequence[Tensor], kernel_size: int) -> tuple[Tensor, Tensor, float]:
    """The system :func:`reference_solve` inverts, in float64 (same ridge, same layout): its exact
    solution W, b (how far the reference's fp32 inverse is from it where XᵀX is ill-conditioned) and
    its condition number (largest over the groups), from the float64 Gram matrix of the rows."""
    X, Y = torch.cat(list(xs)).double(), torch.cat(list(ys)).double()
    if X.dim() == 2:
        X, Y = X[:, None], Y[:, None]
    n, G, D = X.shape
    Xa = torch.cat([X, torch.ones(n, G, 1, dtype=X.dtype)], dim=-1).transpose(0, 1)  # (G, n, D + 1)
    A = Xa.transpose(1, 2) @ Xa
    if xs[0].dim() == 3:  # grouped conv: the reference adds its ridge
        A = A + REFERENCE_CONV_RIDGE * torch.eye(D + 1, dtype=A.dtype)
    ev = torch.linalg.eigvalsh(A)  # (G, D + 1), ascending
    cond = float((ev[:, -1] / ev[:, 0].abs().clamp_min(1e-300)).max())
    W = torch.linalg.lstsq(A, Xa.transpose(1, 2) @ Y.transpose(0, 1)).solution  # (G, D + 1, o)
    if xs[0].dim() == 2:
        return W[0, :-1].float(), W[0, -1].float(), cond
    weight = W[:, :-1].transpose(1, 2).reshape(G * Y.shape[2], D // kernel_size**2, kernel_size, kernel_size)
    return weight.float(), W[:, -1].reshape(-1).float(), cond


def reference_compensation(x: Tensor, out: Tensor, weight: Tensor, bias: Tensor, groups: int | None) -> Tensor:
    """out + c(x) as the reference's ``CompensationBlock`` computes it while QwT is fitted (a fresh
    module is in training mode: fp32): ``(out + x @ W) + b``; ResNet ``out + conv2d(x, W, b)``."""
    if weight.dim() == 2:
        return out + x @ weight.float() + bias
    stride = 1 if x.shape[-1] == out.shape[-1] else 2
    return out + F.conv2d(x, weight, bias, stride=stride, padding=int(weight.size(-1) // 2), groups=groups or 1)


def installed(model: nn.Module, name: str, original: nn.Module) -> tuple[Tensor, Tensor, int | None]:
    """W (reference layout), b and groups of the compensation ``fit_qwt`` installed at ``name``
    (zeros of unknown shape when it left the block alone)."""
    wrapped = model.get_submodule(name)
    if wrapped is original or not isinstance(wrapped, CompensatedBlock):
        return torch.zeros(0), torch.zeros(0), None
    comp = wrapped.compensation
    return (comp.weight.detach().float().clone(), comp.bias.detach().float().reshape(-1).clone(),
            getattr(comp, "groups", None))


def _fit(name: str, report: Any, weight: Tensor, bias: Tensor, groups: int | None) -> BlockFit:
    kept = bool(weight.numel() and (weight.abs().max() > 0 or bias.abs().max() > 0))
    return BlockFit(name, float(report.r2), kept, weight, bias, groups=groups)


@dataclass
class OneBlock:
    """A walk of one block for ``fit_qwt`` (the batches given are that block's inputs)."""

    model: nn.Module
    step: BlockStep

    def embed(self, x: Tensor) -> Tensor:
        return x

    def steps(self) -> list[BlockStep]:
        return [self.step]


@torch.no_grad()
def teacher_forced(model: nn.Module, embed: Callable[[Tensor], Tensor], steps: Sequence[BlockStep],
                   batches: list[Tensor], cfg: QwTConfig, reference_comp: ReferenceComp) -> list[BlockFit]:
    """Block k fitted by ``fit_qwt`` alone on the inputs the reference's compensation of blocks < k
    produces; the suite's model is left as it was. ``cfg.start_block`` is global: block k runs as the
    only block of its walk with start_block 0 (k >= start_block) or 1 (k < start_block)."""
    n_images = sum(b.shape[0] for b in batches)
    fits: list[BlockFit] = []
    with quant_state(model, weight=True, act=True):
        feats = [embed(b) for b in batches]
    for k, step in enumerate(steps):
        block = model.get_submodule(step.name)
        one = OneBlock(model, dataclasses.replace(step, after=None))
        with recording_rows() as systems:
            report = fit_qwt(one, feats, dataclasses.replace(cfg, start_block=0 if k >= cfg.start_block else 1))[0]
        fit = _fit(step.name, report, *installed(model, step.name, block))
        model.set_submodule(step.name, block)  # unwrap: later blocks see the reference's compensation
        if len(systems) != 1:
            raise RuntimeError(f"fit_qwt solved {len(systems)} systems for the one block {step.name}")
        fit.rows_weight, fit.rows_bias, fit.rows_r2 = reference_solve(*systems[0], cfg.kernel_size, n_images)
        fit.exact_weight, fit.exact_bias, fit.cond = exact_solve(*systems[0], cfg.kernel_size)
        fits.append(fit)
        weight, bias, groups = reference_comp(k, fit)
        nxt = []
        with quant_state(model, weight=True, act=True):
            for x in feats:
                out = reference_compensation(x, step.call(block, x), weight, bias, groups)
                nxt.append(step.after(out) if step.after is not None else out)
        feats = nxt
    return fits


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_with(run: SuiteRun, blocks: Sequence[tuple[Tensor, Tensor]], x: Tensor, batch_size: int) -> Tensor:
    """Logits of the suite's compensated model with the given (W, b) per block written into the
    compensation modules its own fit installed (its eval path and settings); restored afterwards."""
    comps = []
    for step, (weight, bias) in zip(run.steps, blocks):
        wrapped = run.model.get_submodule(step.name)
        if not isinstance(wrapped, CompensatedBlock):
            raise ValueError(f"fit_qwt left {step.name} without a CompensatedBlock: nowhere to install W, b")
        comp = wrapped.compensation
        if tuple(comp.weight.shape) != tuple(weight.shape) or comp.bias.numel() != bias.numel():
            raise ValueError(f"{step.name}: the suite's compensation is {tuple(comp.weight.shape)} + "
                             f"{comp.bias.numel()}, the reference's {tuple(weight.shape)} + {bias.numel()}")
        comps.append((comp, comp.weight.detach().clone(), comp.bias.detach().clone()))
        comp.weight.copy_(weight)
        comp.bias.copy_(bias.reshape(comp.bias.shape))
    try:
        return logits_of(run.model, x, batch_size)
    finally:
        for comp, w, b in comps:
            comp.weight.copy_(w)
            comp.bias.copy_(b)


# ------------------------------------------------------------------------------ the run
def run_suite(fp_model: nn.Module, spec: ModelSpec, settings: dict[str, Any], calib: Tensor, qwt_inputs: Tensor,
              test_inputs: Tensor, reference_comp: ReferenceComp, solver: str = "reference") -> SuiteRun:
    """Every stage of the suite on the given FP model and images (see the module docstring);
    ``solver``: the suite's ``QwTConfig.solver`` (default: its default, the reference's)."""
    s, bs = settings, settings["batch_size"]
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fp_logits = logits_of(fp_model, test_inputs, bs)
    adapter = for_family(spec.family)
    method = next(m for m in adapter.default_methods if m != "fp" and "+qwt" not in m)
    qmodel = copy.deepcopy(fp_model).eval()
    adapter.quantize(qmodel, s["w_bits"], s["a_bits"], method)

    snap: dict[str, Any] = {"initial": None, "pairs": {}}

    def before_reparam(norm_name: str, linear_name: str) -> None:
        if snap["initial"] is None:
            snap["initial"] = quant_record(qmodel)
        q = cast(QuantLinear, qmodel.get_submodule(linear_name)).input_quantizer
        snap["pairs"][linear_name] = (norm_name, q.delta.detach().reshape(-1).clone(),
                                      q.zero_point.detach().reshape(-1).clone())

    calibrate_repq(qmodel, calib, adapter.reparam_pairs(qmodel), before_reparam=before_reparam)
    set_quant_state(qmodel, weight=True, act=True)
    quant_final = quant_record(qmodel)
    reparam = {}
    for linear_name, (norm_name, s_c, z_c) in snap["pairs"].items():
        lin, norm = cast(QuantLinear, qmodel.get_submodule(linear_name)), qmodel.get_submodule(norm_name)
        reparam[linear_name] = {"norm": norm_name, "s": s_c, "z": z_c,
                                "s_t": lin.input_quantizer.delta.detach().clone(),
                                "z_t": lin.input_quantizer.zero_point.detach().clone(),
                                "norm_weight": norm.get_parameter("weight").detach().clone(),
                                "norm_bias": norm.get_parameter("bias").detach().clone(),
                                "weight": lin.weight.detach().clone(), "bias": lin.bias.detach().clone()}
    qnames = {n for n, _ in quantizers(qmodel)}  # their ranges are the quantizer rows' business
    state = {k: v.detach().clone() for k, v in qmodel.state_dict().items()
             if torch.is_tensor(v) and k.rsplit(".", 1)[0] not in qnames}
    repq_logits = logits_of(qmodel, test_inputs, bs)
    seconds["repq"] = time.perf_counter() - t0

    cfg = QwTConfig(start_block=s["start_block"], kernel_size=s["kernel_size"] or 1, factor=s["factor"] or 64,
                    **solver_preset(solver))
    batches = [qwt_inputs[i:i + bs] for i in range(0, qwt_inputs.shape[0], bs)]
    blockwise = adapter.blockwise(qmodel)
    steps = list(blockwise.steps())
    t0 = time.perf_counter()
    tf = teacher_forced(qmodel, blockwise.embed, steps, batches, cfg, reference_comp)
    seconds["qwt_teacher_forced"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    originals = {st.name: qmodel.get_submodule(st.name) for st in steps}
    reports = fit_qwt(blockwise, batches, cfg)
    free = [_fit(st.name, rep, *installed(qmodel, st.name, originals[st.name])) for st, rep in zip(steps, reports)]
    free_logits = logits_of(qmodel, test_inputs, bs)
    seconds["qwt_free_running"] = time.perf_counter() - t0
    initial = snap["initial"] or quant_final  # no reparameterization (ResNet): one pass
    return SuiteRun(method, fp_logits, plan_of(initial), initial, quant_final, reparam, state, repq_logits, tf,
                    free, free_logits, qmodel, steps, seconds)


def run_on_dump(dump: dict[str, Any], workdir: Path, solver: str = "reference"
                ) -> tuple[dict[str, Any], SuiteRun, Tensor]:
    """The suite on a dump: (the dump in the suite's names, the run, RepQ+QwT logits with the
    reference's installed W, b in the suite's eval path); ``solver`` as in :func:`run_suite`."""
    fp_model, spec, names = load_fp_model(dump, workdir)
    ref = align(dump, names, fp_model)
    qwt = ref["qwt"]

    def reference_comp(k: int, fit: BlockFit) -> tuple[Tensor, Tensor, int | None]:
        if k >= len(qwt) or qwt[k]["name"] != fit.name:
            have = qwt[k]["name"] if k < len(qwt) else "nothing"
            raise ValueError(f"QwT block {k}: the suite walks {fit.name}, the reference {have} "
                             f"({len(qwt)} reference blocks)")
        return qwt[k]["weight"], qwt[k]["bias"], qwt[k]["groups"]

    s = dump["settings"]
    run = run_suite(fp_model, spec, s, dump["calib"], dump["qwt_inputs"], dump["test_inputs"], reference_comp,
                    solver)
    if len(run.steps) != len(qwt):
        raise ValueError(f"QwT walks {len(run.steps)} blocks in the suite, {len(qwt)} in the reference")
    t0 = time.perf_counter()
    with_ref = evaluate_with(run, [(b["weight"], b["bias"]) for b in qwt], dump["test_inputs"], s["batch_size"])
    run.seconds["qwt_reference_wb"] = time.perf_counter() - t0
    return ref, run, with_ref


__all__ = ["BlockFit", "NameMap", "SuiteRun", "align", "evaluate_with", "load_fp_model", "map_state_dict",
           "quant_record", "reference_solve", "run_on_dump", "run_suite", "teacher_forced"]
