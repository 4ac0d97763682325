"""The reference's side of ``make parity-det``: QwT-det-RepQ-ViT's Swin backbone, ``tools/quant`` and
``tools/test.py``'s RepQ-ViT and QwT code, unchanged, on seeded weights and inputs; every stage
written to one ``torch.save`` file (the *dump*).

Runs in its own process (:mod:`benchmarks.parity_det.run` starts it)::

    python -m benchmarks.parity_det.reference --ref REF --arch swin_t --out DUMP [--w-bits 4 --a-bits 4 ...]

Imports torch, numpy, tqdm, timm (``timm.models.layers``) and, at run time, the fork's files from
``--ref`` behind the stand-ins of :mod:`benchmarks.parity_det.standins` (mmcv 1.x / mmdet 2.x are
not installed); nothing of the suite (``qwt_core``, ``detection``, mmdet 3). No reference code is
copied. What runs, in ``tools/test.py``'s order:

1. the fork's ``SwinTransformer`` (``mmdet/models/backbones/swin_transformer.py``) with the Swin-T /
   Swin-S settings of the fork's configs, random init under ``torch.manual_seed(seed)``, every
   LayerNorm perturbed as in ``make parity`` (:func:`benchmarks.parity.reference.perturb_norms`);
2. ``tools/quant``'s ``quant_model`` with ``tools/test.py``'s parameter dicts, ``set_quant_state``;
3. the calibration sequence of ``main()`` on the backbone: one quantized pass of the calibration
   image, the scale reparameterization (the ``with torch.no_grad():`` block of ``main()`` that walks
   ``q_model.module.backbone.layers``, executed from ``tools/test.py``'s own source), a second pass
   (``main()`` runs the whole detector; the backbone's quantizers see exactly the backbone's part);
4. QwT: ``tools/test.py``'s own ``generate_compensation_model`` (with its ``lienar_regression``,
   ``CompensationBlock``, ``enable_quant`` / ``disable_quant``, ``FeatureDataset``, executed from its
   source with ``LINEAR_COMPENSATION_SAMPLES`` = the QwT image count and ``args.start_block`` = the
   requested one: ``main()`` hard-codes 0; with several start blocks QwT runs on a deep copy of the
   RepQ-ViT model per start block, one dump each) on a loader yielding ``{"img": [batch]}``;
5. ``quant_model`` on a skeleton of the suite's detector neck and heads (same names and layer types,
   read from ``--skeleton``): the reference's plan for the rest of the detector.

Its unconditional CUDA calls (``.cuda()``, ``torch.cuda.synchronize()``) are no-ops on the CPU.

The dump (names as the fork's modules are named)::

    settings          arch, bits, seed, sizes, image counts, start_block, versions
    fp_state_dict     FP weights after the perturbation
    calib, qwt_inputs, test_inputs   (1, 3, H, W), (N, 3, 224, 224), (1, 3, H, W)
    outputs           {"fp", "repq", "repq_qwt"}: the four stage outputs on the test image;
                        {"repq_blocks", "repq_qwt_blocks"}: {block: (its input, its output)} on the way
    quant_initial     after the first pass / after the second pass (schema of make parity's dump)
    quant_final
    reparam           {linear: {norm, s, z, s_t, z_t, norm_weight, norm_bias, weight, bias}}
    quantizer_inputs  {"initial" | "final": {quantizer: the tensor it initialised on in that pass}}
                        (module name + "." + input_quantizer / weight_quantizer / quantizer_A / _B)
    repq_state_dict   the RepQ-ViT backbone's state dict
    qwt               per block in walk order: {name, W, b, r2 (lienar_regression's), kept, weight,
                        bias (the CompensationBlock's lora_weight / lora_bias), inputs (the block's
                        input features (N, L, C) that generate_compensation_model fed it)}
    detector_plan     {layer: (w_bits, a_bits, channel-wise input)} of quant_model on the skeleton
"""
from __future__ import annotations

import argparse
import ast
import copy
import importlib
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.parity.reference import (
    channel_wise_inputs,
    install_cpu_shims,
    perturb_norms,
    quant_record,
    reparam_record,
)

from .standins import install as install_standins

QWT_SIZE = 224  # the reference's QwT pipeline: Resize (224, 224) keep_ratio=False, Pad to /32
# Swin-T / Swin-S of the fork's configs (cascade_mask_rcnn_swin_{tiny,small}_...): window 7
ARCHS: dict[str, dict[str, Any]] = {
    "swin_t": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin_s": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "swin_micro": dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7),  # tests only
}
BACKBONE_KW = dict(ape=False, drop_path_rate=0.2, patch_norm=True, out_indices=(0, 1, 2, 3), use_checkpoint=False)
SWIN_FILE = "mmdet/models/backbones/swin_transformer.py"
TEST_FILE = "tools/test.py"
REFERENCE_FILES = (SWIN_FILE, "tools/quant/__init__.py", "tools/quant/quant_model.py",
                   "tools/quant/quant_modules.py", "tools/quant/quantizer.py", TEST_FILE)
# the definitions of tools/test.py that QwT runs (executed from its source)
TEST_DEFS = ("gather_tensor_from_multi_processes", "window_partition", "CompensationBlock", "enable_quant",
             "disable_quant", "FeatureDataset", "lienar_regression", "generate_compensation_model")
REPARAM_MARK = "backbone.layers.named_modules()"  # the reparameterization block of main() walks this
REFERENCE_SOURCE = "git archive 8be76ac QwT-det-RepQ-ViT of github.com/XJ19023/QwT-LLM"


def say(msg: str) -> None:
    print(f"[parity-det] {msg}", file=sys.stderr, flush=True)


def missing_files(ref: Path) -> list[str]:
    """The reference files this tool needs that ``ref`` lacks (empty: it is QwT-det-RepQ-ViT)."""
    return [f for f in REFERENCE_FILES if not (ref / f).is_file()]


# ------------------------------------------------------------------------------ loading the fork
def load_fork(ref: Path) -> tuple[ModuleType, ModuleType]:
    """(the fork's swin_transformer module, its tools/quant package), behind the stand-ins."""
    install_standins(ref)
    if str(ref / "tools") not in sys.path:
        sys.path.insert(0, str(ref / "tools"))
    swin = importlib.import_module("mmdet.models.backbones.swin_transformer")
    quant = importlib.import_module("quant")
    if not str(getattr(quant, "__file__", "")).startswith(str(ref)):
        raise RuntimeError(f"imported 'quant' from {quant.__file__}, not from {ref / 'tools'}")
    return swin, quant


def _test_tree(ref: Path) -> ast.Module:
    return ast.parse((ref / TEST_FILE).read_text(), filename=str(ref / TEST_FILE))


def test_namespace(ref: Path, quant: ModuleType, args: SimpleNamespace, n_samples: int) -> dict[str, Any]:
    """``tools/test.py``'s QwT definitions executed from its source, in a namespace holding what its
    imports would give them (``from quant import *`` and torch, numpy, tqdm, Dataset, dist)."""
    import numpy as np
    from torch.utils.data import Dataset
    from tqdm import tqdm

    tree = _test_tree(ref)
    nodes: list[ast.stmt] = [n for n in tree.body
                             if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in TEST_DEFS]
    missing = set(TEST_DEFS) - {n.name for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    if missing:
        raise ValueError(f"{TEST_FILE} defines no {sorted(missing)[0]}: not the reference this tool expects "
                         f"({REFERENCE_SOURCE})")
    ns: dict[str, Any] = {k: v for k, v in vars(quant).items() if not k.startswith("_")}  # from quant import *
    ns.update(__name__="reference_det_test", torch=torch, nn=nn, np=np, tqdm=tqdm, Dataset=Dataset,
              dist=torch.distributed, args=args, LINEAR_COMPENSATION_SAMPLES=n_samples)
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(ref / TEST_FILE), "exec"), ns)
    return ns


def reparam_block(ref: Path) -> ast.Module:
    """The ``with torch.no_grad():`` statement of ``main()`` that reparameterizes the backbone."""
    main = next((n for n in _test_tree(ref).body if isinstance(n, ast.FunctionDef) and n.name == "main"), None)
    found: list[ast.stmt] = [n for n in (main.body if main else [])
                             if isinstance(n, ast.With) and REPARAM_MARK in ast.unparse(n)]
    if len(found) != 1:
        raise ValueError(f"{TEST_FILE}: main() has {len(found)} blocks walking {REPARAM_MARK} (expected one): "
                         f"not the reference this tool expects ({REFERENCE_SOURCE})")
    return ast.Module(body=found, type_ignores=[])


# ------------------------------------------------------------------------------ seeded inputs
def seeded_inputs(seed: int, det_hw: tuple[int, int], n_qwt: int) -> tuple[Tensor, Tensor, Tensor]:
    """Calibration image (1, 3, H, W), QwT images (N, 3, 224, 224), test image (1, 3, H, W): N(0, 1)
    (normalized images) from ``Generator().manual_seed(seed + 1000)``, drawn in that order."""
    g = torch.Generator().manual_seed(seed + 1000)
    calib = torch.randn(1, 3, *det_hw, generator=g)
    qwt = torch.randn(n_qwt, 3, QWT_SIZE, QWT_SIZE, generator=g)
    test = torch.randn(1, 3, *det_hw, generator=g)
    return calib, qwt, test


def build_backbone(swin: ModuleType, arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = swin.SwinTransformer(**ARCHS[arch], **BACKBONE_KW)
    model.init_weights(None)
    perturb_norms(model, seed)
    model.eval()  # (the fork's train() returns None: not chained)
    return model


def outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        return [o.detach().clone() for o in model(x)]


def block_by_block(model: Any, x: Tensor) -> tuple[list[Tensor], dict[str, tuple[Tensor, Tensor]]]:
    """The stage outputs on ``x`` and every block's (input, output) on the way, by block name."""
    seen: dict[str, tuple[Tensor, Tensor]] = {}
    handles = []
    for i, layer in enumerate(model.layers):
        for j, blk in enumerate(layer.blocks):
            def hook(m: nn.Module, args: tuple[Any, ...], out: Tensor, name: str = f"layers.{i}.blocks.{j}") -> None:
                seen[name] = (args[0].detach().clone(), out.detach().clone())
            handles.append(blk.register_forward_hook(hook))
    try:
        return outputs(model, x), seen
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------ the stages
def reparameterize(ref: Path, backbone: nn.Module) -> dict[str, dict[str, Any]]:
    """Run main()'s reparameterization block on ``backbone``; what it did per Linear."""
    mods = dict(backbone.named_modules())
    before = channel_wise_inputs(mods, "layers")
    ns = {"torch": torch, "Parameter": nn.Parameter,
          "q_model": SimpleNamespace(module=SimpleNamespace(backbone=backbone))}
    exec(compile(reparam_block(ref), f"{ref / TEST_FILE}:main:reparameterization", "exec"), ns)
    return reparam_record(mods, before)


def run_qwt(ns: dict[str, Any], backbone: Any, qwt: Tensor, batch_size: int) -> list[dict[str, Any]]:
    """``generate_compensation_model`` on the QwT images; one record per block in walk order."""
    solved: list[tuple[Tensor, Tensor, float, Tensor]] = []
    regression: Callable[..., Any] = ns["lienar_regression"]

    def recording(X: Tensor, Y: Tensor, block_id: int = 0) -> Any:
        W, b, r2 = regression(X, Y, block_id=block_id)  # X: the block's inputs (N, L, C)
        solved.append((W.detach().clone(), b.detach().clone(), float(r2), X.detach().clone()))
        return W, b, r2

    ns["lienar_regression"] = recording
    loader = [{"img": [qwt[i:i + batch_size]]} for i in range(0, qwt.shape[0], batch_size)]
    ns["generate_compensation_model"](backbone, loader, ns["args"])
    blocks = [(f"layers.{i}.blocks.{j}", blk) for i, layer in enumerate(backbone.layers)
              for j, blk in enumerate(layer.blocks)]
    if len(blocks) != len(solved):
        raise RuntimeError(f"generate_compensation_model solved {len(solved)} blocks of {len(blocks)}")
    out = []
    for (name, comp), (W, b, r2, X) in zip(blocks, solved):
        w, bias = comp.lora_weight.detach().clone(), comp.lora_bias.detach().clone()
        out.append({"name": name, "W": W, "b": b, "r2": r2, "weight": w, "bias": bias, "inputs": X,
                    "kept": bool(w.abs().max() > 0 or bias.abs().max() > 0), "groups": None})
    return out


def skeleton_plan(quant: ModuleType, skeleton: list[list[Any]], w_bits: int, a_bits: int
                  ) -> dict[str, tuple[int, int, bool]]:
    """``quant_model`` (with tools/test.py's parameter dicts) on a module tree rebuilt from
    ``[name, kind, args]`` rows (kind conv: Conv2d(*args), linear: Linear(*args), else a container)."""
    root = nn.Module()
    mods: dict[str, nn.Module] = {"": root}
    for name, kind, args in skeleton:
        if kind == "conv":
            # (args[:7]: the seven positional parameters before bias; mypy cannot count a slice)
            m: nn.Module = nn.Conv2d(*args[:7], bias=bool(args[7]))  # type: ignore[misc]
        elif kind == "linear":
            m = nn.Linear(args[0], args[1], bias=bool(args[2]))
        else:
            m = nn.Module()
        parent, _, leaf = name.rpartition(".")
        mods[parent].add_module(leaf, m)
        mods[name] = m
    quant.quant_model(root, input_quant_params={"n_bits": a_bits, "channel_wise": False},
                      weight_quant_params={"n_bits": w_bits, "channel_wise": True})
    return {n: (int(m.weight_quantizer.n_bits), int(m.input_quantizer.n_bits), bool(m.input_quantizer.channel_wise))
            for n, m in root.named_modules() if isinstance(m, (quant.QuantConv2d, quant.QuantLinear))}


class QuantizerInputs:
    """Forward pre-hooks on every quantizer of the fork: the tensor each one initialises on
    (``inited`` False), per quantizer, for the pass that is running (the results are unchanged)."""

    def __init__(self, model: nn.Module, quant: ModuleType) -> None:
        self.seen: dict[str, Tensor] = {}
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, (quant.UniformQuantizer, quant.LogSqrt2Quantizer)):
                self.handles.append(m.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if not module.inited:
                self.seen[name] = args[0].detach().clone()
        return hook

    def take(self) -> dict[str, Tensor]:
        seen, self.seen = self.seen, {}
        return seen

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def run(a: argparse.Namespace) -> Iterator[tuple[int, dict[str, Any]]]:
    """(start_block, dump) per requested start_block; RepQ-ViT runs once, QwT once per start_block."""
    ref = Path(a.ref).resolve()
    torch.set_num_threads(a.threads)
    install_cpu_shims()
    swin, quant = load_fork(ref)
    det_hw = (a.det_h, a.det_w)
    calib, qwt, test = seeded_inputs(a.seed, det_hw, a.n_qwt)
    t0 = time.perf_counter()
    model = build_backbone(swin, a.arch, a.seed)
    fp_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    outs: dict[str, Any] = {"fp": outputs(model, test)}
    say(f"{a.arch}: quant_model W{a.w_bits}/A{a.a_bits}, calibration on one {det_hw[0]}x{det_hw[1]} image")
    q = quant.quant_model(model, input_quant_params={"n_bits": a.a_bits, "channel_wise": False},
                          weight_quant_params={"n_bits": a.w_bits, "channel_wise": True})
    quant.set_quant_state(q, input_quant=True, weight_quant=True)
    spy = QuantizerInputs(q, quant)
    with torch.no_grad():
        q(calib)
    quant_initial, inputs_initial = quant_record(q, quant), spy.take()
    reparam = reparameterize(ref, q)
    quant.set_quant_state(q, input_quant=True, weight_quant=True)
    with torch.no_grad():
        q(calib)
    quant_final, inputs_final = quant_record(q, quant), spy.take()
    spy.remove()
    repq_state = {k: v.detach().clone() for k, v in q.state_dict().items()}
    outs["repq"], steps = block_by_block(q, test)
    outs["repq_blocks"] = steps
    seconds = {"repq": time.perf_counter() - t0}
    skeleton = json.loads(Path(a.skeleton).read_text()) if a.skeleton else []
    plan = skeleton_plan(quant, skeleton, a.w_bits, a.a_bits) if skeleton else {}
    import numpy
    settings = {"arch": a.arch, "w_bits": a.w_bits, "a_bits": a.a_bits, "seed": a.seed, "det_hw": list(det_hw),
                "qwt_size": QWT_SIZE, "n_qwt": a.n_qwt, "batch_size": a.batch_size,
                "ref": str(ref), "threads": a.threads,
                "versions": {"python": platform.python_version(), "torch": torch.__version__,
                             "numpy": numpy.__version__}}
    common = {"fp_state_dict": fp_state, "calib": calib, "qwt_inputs": qwt, "test_inputs": test,
              "quant_initial": quant_initial, "quant_final": quant_final, "reparam": reparam,
              "repq_state_dict": repq_state, "quantizer_inputs": {"initial": inputs_initial, "final": inputs_final},
              "detector_plan": plan}
    for start_block in a.start_blocks:  # QwT on a copy of the RepQ-ViT model per start_block
        say(f"{a.arch}: QwT on {a.n_qwt} {QWT_SIZE}x{QWT_SIZE} images (start_block {start_block})")
        t0 = time.perf_counter()
        qq = copy.deepcopy(q)
        args = SimpleNamespace(world_size=1, device="cpu", batch_size=a.batch_size, start_block=start_block,
                               local_rank=0, distributed=False)
        ns = test_namespace(ref, quant, args, a.n_qwt)
        blocks = run_qwt(ns, qq, qwt, a.batch_size)
        o = dict(outs)
        o["repq_qwt"], o["repq_qwt_blocks"] = block_by_block(qq, test)
        yield start_block, {**common, "settings": {**settings, "start_block": start_block}, "outputs": o,
                            "qwt": blocks, "seconds": {**seconds, "qwt": time.perf_counter() - t0}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity_det.reference")
    p.add_argument("--ref", required=True)
    p.add_argument("--arch", choices=sorted(ARCHS), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--det-h", type=int, default=256)
    p.add_argument("--det-w", type=int, default=352)
    p.add_argument("--n-qwt", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--start-blocks", type=lambda t: [int(v) for v in t.split(",")], default=[0],
                   help="comma list; one dump per start_block, --out must then hold {start_block}")
    p.add_argument("--skeleton", default=None, help="JSON [name, kind, args] rows of the detector's neck and heads")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if len(a.start_blocks) > 1 and "{start_block}" not in a.out:
        raise SystemExit("--out must hold {start_block} when several start blocks are given")
    for start_block, dump in run(a):
        out = Path(a.out.replace("{start_block}", str(start_block)))
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(dump, out)
        say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
