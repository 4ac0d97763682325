"""The reference's side of ``make parity``: the released QwT-cls-RepQ-ViT code, unchanged, on
seeded weights and inputs; every stage written to one ``torch.save`` file (the *dump*).

Runs in the side environment, one model per process (:mod:`benchmarks.parity.run` starts it)::

    PYTHONPATH=<side env with timm 0.4.12>:<project root> python -m benchmarks.parity.reference \\
        --ref REF --family vit --model deit_tiny --arch deit_tiny_patch16_224 --out DUMP

It imports torch and, at run time, the reference from ``--ref``; nothing of the suite (qwt_core and
classification need timm 1.x). No reference code is copied. The reference scripts parse ``sys.argv``
and write logs relative to the working directory when imported, so each is imported as a module with
a synthetic argv inside a temporary directory; its unconditional CUDA calls become no-ops on the CPU.
Two parts of the scripts' ``main()`` are not importable and are run as ``main()`` runs them: the
calibration sequence (one quantized pass, the RepQ-ViT scale reparameterization, a second pass) and
the reparameterization itself, executed from the script's own source text between its
``# Scale reparameterization`` and ``# Re-calibration`` comments. QwT is the script's own
``generate_compensation_model`` with ``LINEAR_COMPENSATION_SAMPLES`` set to the QwT image count.

Seeded weights and inputs (the same recipe as the shared oracle, so dumps agree bit for bit):
the reference's ``seed(seed)``, its model constructor with random init; then every affine
LayerNorm and every BatchNorm2d perturbed in module order from ``Generator().manual_seed(seed +
12345)`` (LN: w = 1 + 0.2 n, b = 0.2 n; BN: w = 1 + 0.1 n, b = 0.1 n, mean = 0.1 n, var = 0.5 + u);
inputs ``torch.randn(N, 3, 224, 224)`` from ``Generator().manual_seed(seed + 1000)``: calibration,
then QwT, then test images.

The dump (names as the reference's modules are named, timm 0.4.12 / the reference's ResNet)::

    settings           model, family, arch, script, bits, seed, image counts, QwT options, versions
    fp_state_dict      FP weights after the perturbation
    calib, qwt_inputs, test_inputs
    quant_initial      after the first quantized pass: {layer: {"kind": "linear"|"conv"|"matmul",
    quant_final          "quantizers": {"input"|"weight"|"a"|"b": {n_bits, channel_wise, delta,
                         zero_point (None for log-sqrt(2))}}}}; quant_final after the re-calibration
    reparam            {linear: {norm, s, z (per channel, before), s_t, z_t (after), norm_weight,
                         norm_bias, weight, bias (after)}}
    repq_state_dict    the RepQ-ViT model's state dict
    qwt                one entry per block in walk order: {name, W, b (the regression's solution,
                         reference layout), r2, kept, weight, bias (installed), groups, kernel_size}
    logits             fp, repq, repq_qwt on the test images (the reference's eval: fp16 QwT product)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import torch
from torch import Tensor, nn

IMAGE_SIZE = 224  # the reference's models are the 224-px ImageNet ones
SCRIPTS = {"vit": "qwt_vit_and_deit.py", "swin": "qwt_swin.py", "resnet": "qwt_resnet_group_conv_only_percentile.py"}
REPARAM_BEGIN, REPARAM_END = "# Scale reparameterization", "# Re-calibration"  # markers in main()
REFERENCE_FILES = (*SCRIPTS.values(), "quant/quantizer.py", "quant/quant_modules.py", "quant/quant_model.py",
                   "quant/quant_model_resnet.py", "utils/build_model.py", "utils/resnet.py")
REFERENCE_SOURCE = ("git archive 8be76ac QwT-cls-RepQ-ViT of github.com/XJ19023/QwT-LLM")


def say(msg: str) -> None:
    print(f"[parity] {msg}", file=sys.stderr, flush=True)


def missing_files(ref: Path) -> list[str]:
    """The reference files this tool needs that ``ref`` lacks (empty: it is QwT-cls-RepQ-ViT)."""
    return [f for f in REFERENCE_FILES if not (ref / f).is_file()]


# ------------------------------------------------------------------------------ importing the reference
def install_cpu_shims() -> None:
    """The reference calls ``.cuda()`` and ``torch.cuda.synchronize()`` unconditionally: no-ops here."""
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.cuda.synchronize = lambda *a, **k: None


def import_script(ref: Path, script: str, argv: list[str], workdir: str) -> ModuleType:
    """Import a reference script as a module (its ``main()`` does not run) with ``argv`` in ``workdir``."""
    if str(ref) not in sys.path:
        sys.path.insert(0, str(ref))
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    sys.argv = [script, *argv]
    os.chdir(workdir)
    try:
        spec = importlib.util.spec_from_file_location(f"reference_{Path(script).stem}", ref / script)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(mod)
        except SystemExit as e:  # its argparse rejected the arguments (e.g. a model it does not support)
            raise ValueError(f"{script} rejected {' '.join(argv)} "
                             f"(exit {e.code}; see its usage message above)") from None
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    return mod


@contextlib.contextmanager
def random_init(timm_module: Any) -> Iterator[None]:  # (the reference's timm module, patched)
    """The reference's ``build_model`` asks timm for pretrained weights: random init instead."""
    create = timm_module.create_model

    def create_random(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create(name, pretrained=False, **kwargs)
    timm_module.create_model = create_random
    try:
        yield
    finally:
        timm_module.create_model = create


# ------------------------------------------------------------------------------ seeded weights and inputs
@torch.no_grad()
def perturb_norms(model: nn.Module, seed: int) -> None:
    """Move the norm layers off their init values (makes the reparameterization checks discriminative)."""
    g = torch.Generator().manual_seed(seed + 12345)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(1.0 + 0.1 * torch.randn(m.weight.shape, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            assert m.running_mean is not None and m.running_var is not None  # (track_running_stats)
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def seeded_inputs(seed: int, n_calib: int, n_qwt: int, n_test: int,
                  size: int = IMAGE_SIZE) -> tuple[Tensor, Tensor, Tensor]:
    """Calibration, QwT and test images (N, 3, size, size), N(0, 1), drawn in that order."""
    g = torch.Generator().manual_seed(seed + 1000)
    return tuple(torch.randn(n, 3, size, size, generator=g) for n in (n_calib, n_qwt, n_test))  # type: ignore[return-value]


# ------------------------------------------------------------------------------ reading the reference's state
def clone(x: Any) -> Tensor | None:
    return None if x is None else (x.detach().clone().cpu() if torch.is_tensor(x) else torch.tensor(x))


def quantizer_record(q: Any) -> dict[str, Any]:  # (a quantizer of the reference's code)
    return {"n_bits": int(q.n_bits), "channel_wise": bool(q.channel_wise), "delta": clone(q.delta),
            "zero_point": clone(getattr(q, "zero_point", None))}


def quant_record(model: nn.Module, qm: ModuleType) -> dict[str, dict[str, Any]]:
    """Every quantized layer's quantizers, in the neutral schema of the dump."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, (qm.QuantLinear, qm.QuantConv2d)):
            out[name] = {"kind": "linear" if isinstance(m, qm.QuantLinear) else "conv",
                         "quantizers": {"input": quantizer_record(m.input_quantizer),
                                        "weight": quantizer_record(m.weight_quantizer)}}
        elif isinstance(m, qm.QuantMatMul):
            out[name] = {"kind": "matmul", "quantizers": {"a": quantizer_record(m.quantizer_A),
                                                          "b": quantizer_record(m.quantizer_B)}}
    return out


def norm_of(linear: str) -> str:
    """The LayerNorm the reference's reparameterization pairs with a Linear (its naming rule:
    ``norm1`` -> ``attn.qkv``, ``norm2`` -> ``mlp.fc1``, ``norm`` -> the sibling ``reduction``)."""
    parent = linear.rsplit(".", 1)[0]
    if linear.endswith("attn.qkv"):
        return parent.rsplit(".", 1)[0] + ".norm1"
    if linear.endswith("mlp.fc1"):
        return parent.rsplit(".", 1)[0] + ".norm2"
    return parent + ".norm"


def channel_wise_inputs(mods: dict[str, Any], prefix: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Before the reparameterization: (delta, zero point), flattened copies, of every Linear under
    ``prefix`` whose input quantizer is channel-wise (the ones the reparameterization rewrites)."""
    return {n: (m.input_quantizer.delta.reshape(-1).clone(), m.input_quantizer.zero_point.reshape(-1).clone())
            for n, m in mods.items()
            if n.startswith(prefix + ".") and getattr(getattr(m, "input_quantizer", None), "channel_wise", False)}


def reparam_record(mods: dict[str, Any], before: dict[str, tuple[Tensor, Tensor]]) -> dict[str, dict[str, Any]]:
    """After the reparameterization: per Linear, its norm's name, the scales and zero points before
    (s, z) and after (s_t, z_t), and the rewritten norm affine and Linear weight and bias."""
    out: dict[str, dict[str, Any]] = {}
    for name, (s, z) in before.items():
        lin, norm = mods[name], mods[norm_of(name)]
        out[name] = {"norm": norm_of(name), "s": s, "z": z,
                     "s_t": clone(lin.input_quantizer.delta), "z_t": clone(lin.input_quantizer.zero_point),
                     "norm_weight": clone(norm.weight), "norm_bias": clone(norm.bias),
                     "weight": clone(lin.weight), "bias": clone(lin.bias)}
    return out


@torch.no_grad()
def reparameterize(q_model: nn.Module, model: str, script: Path) -> dict[str, dict[str, Tensor | str | None]]:
    """Run the script's own scale-reparameterization block (``model``: the script's ``args.model``);
    return what it did per Linear."""
    src = script.read_text()
    if REPARAM_BEGIN not in src or REPARAM_END not in src:
        raise ValueError(f"{script.name} has no '{REPARAM_BEGIN}' ... '{REPARAM_END}' block in main(): "
                         f"not the reference this tool expects ({REFERENCE_SOURCE})")
    i = src.rindex("\n", 0, src.index(REPARAM_BEGIN)) + 1  # from the start of the line (indentation)
    j = src.rindex("\n", 0, src.index(REPARAM_END, i)) + 1
    block = textwrap.dedent(src[i:j])
    prefix = "layers" if "swin" in model else "blocks"  # the block's q_model_slice
    mods = dict(q_model.named_modules())
    before = channel_wise_inputs(mods, prefix)
    ns = {"torch": torch, "Parameter": nn.Parameter, "q_model": q_model,
          "args": SimpleNamespace(model=model), "_write": lambda *a, **k: None}
    exec(compile(block, f"{script}:reparameterization", "exec"), ns)
    return reparam_record(mods, before)


@torch.no_grad()
def logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    """The reference's eval: ``_, output = model(input)`` in eval mode (the last output of a tuple);
    the suite's side uses it too (``benchmarks.parity.suite``)."""
    model.eval()
    outs = []
    for i in range(0, x.shape[0], batch_size):
        o = model(x[i:i + batch_size])
        outs.append((o[-1] if isinstance(o, (tuple, list)) else o).detach().float().cpu())
    return torch.cat(outs)


# ------------------------------------------------------------------------------ the run
def run(a: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    ref = Path(a.ref).resolve()
    install_cpu_shims()
    script = SCRIPTS[a.family]
    argv = ["--model", a.model, "--w_bits", str(a.w_bits), "--a_bits", str(a.a_bits), "--batch_size",
            str(a.batch_size), "--num_workers", "0", "--seed", str(a.seed), "--start_block", str(a.start_block)]
    if a.family == "resnet":
        argv += ["--kernel_size", str(a.kernel_size), "--factor", str(a.factor)]
    with tempfile.TemporaryDirectory(prefix="qwt_parity_ref_") as workdir:
        mod: Any = cast(Any, import_script(ref, script, argv, workdir))  # (its globals are patched below)
    qm = sys.modules["quant"]  # the reference's package, imported by the script
    timm = sys.modules["timm"]
    if not timm.__version__.startswith("0.4."):
        raise RuntimeError(f"the reference needs timm 0.4.12, this process imported timm {timm.__version__} "
                           f"from {timm.__file__}: put the side environment first on PYTHONPATH")
    mod.args.device = "cpu"
    mod.LINEAR_COMPENSATION_SAMPLES = a.n_qwt
    mod._write = lambda *args, **kwargs: None  # it logs to a path relative to the cwd
    regressions: list[dict[str, Any]] = []
    solve = mod.lienar_regression

    def recording_solve(X: Tensor, Y: Tensor, *args: Any, **kwargs: Any) -> Any:
        W, b, r2 = solve(X, Y, *args, **kwargs)
        regressions.append({"W": clone(W), "b": clone(b), "r2": float(r2), "groups": kwargs.get("groups"),
                            "kernel_size": kwargs.get("kernel_size")})
        return W, b, r2
    mod.lienar_regression = recording_solve  # generate_compensation_model looks it up at call time

    mod.seed(a.seed)
    if a.family == "resnet":  # the script's own import of utils.resnet.<model>
        model = getattr(mod, a.model)(num_classes=1000, pretrained=False)
    else:
        with random_init(timm):
            model = sys.modules["utils.build_model"].build_model(a.arch, SimpleNamespace(drop_path=0.0))
    perturb_norms(model, a.seed)
    model.eval()
    fp_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    calib, qwt_x, test_x = seeded_inputs(a.seed, a.n_calib, a.n_qwt, a.n_test)
    say(f"reference {a.model}: FP logits")
    fp_logits = logits(copy.deepcopy(model), test_x, a.batch_size)

    say(f"reference {a.model}: {'percentile' if a.family == 'resnet' else 'RepQ-ViT'} calibration")
    wq = {"n_bits": a.w_bits, "channel_wise": True}
    aq = {"n_bits": a.a_bits, "channel_wise": False}
    quantize = qm.quant_model_resnet if a.family == "resnet" else qm.quant_model
    q_model = quantize(model, input_quant_params=aq, weight_quant_params=wq).eval()
    qm.set_quant_state(q_model, input_quant=True, weight_quant=True)
    with torch.no_grad():
        q_model(calib)
    quant_initial = quant_record(q_model, qm)
    reparam: dict[str, Any] = {}
    if a.family != "resnet":  # the ResNet script only calibrates the percentiles once
        reparam = reparameterize(q_model, mod.args.model, ref / script)
        qm.set_quant_state(q_model, input_quant=True, weight_quant=True)
        with torch.no_grad():
            q_model(calib)
    quant_final = quant_record(q_model, qm)
    repq_state = {k: v.detach().clone() for k, v in q_model.state_dict().items()}
    repq_logits = logits(q_model, test_x, a.batch_size)

    say(f"reference {a.model}: QwT ({a.n_qwt} images)")
    loader = [(qwt_x[i:i + a.batch_size], torch.zeros(a.batch_size, dtype=torch.long))
              for i in range(0, a.n_qwt, a.batch_size)]
    q_model = mod.generate_compensation_model(q_model, loader, mod.args)
    blocks = [(n, m) for n, m in q_model.named_modules() if type(m).__name__ == "CompensationBlock"]
    if len(blocks) != len(regressions):
        raise RuntimeError(f"{len(blocks)} compensation blocks but {len(regressions)} regressions recorded")
    qwt = [dict(rg, name=n, kept=rg["r2"] > 0 and k >= a.start_block, weight=clone(m.lora_weight),
                bias=clone(m.lora_bias)) for k, ((n, m), rg) in enumerate(zip(blocks, regressions))]
    qwt_logits = logits(q_model, test_x, a.batch_size)

    settings = {
        "model": a.model, "family": a.family, "arch": a.arch, "script": script, "tiny": False,
        "image_size": IMAGE_SIZE, "w_bits": a.w_bits, "a_bits": a.a_bits, "seed": a.seed,
        "n_calib": a.n_calib, "n_qwt": a.n_qwt, "n_test": a.n_test, "batch_size": a.batch_size,
        "start_block": a.start_block, "kernel_size": a.kernel_size, "factor": a.factor,
        "threads": a.threads, "torch": torch.__version__, "timm": timm.__version__, "ref": str(ref),
        "seconds": time.perf_counter() - t0,
    }
    return {"settings": settings, "fp_state_dict": fp_state, "calib": calib, "qwt_inputs": qwt_x,
            "test_inputs": test_x, "quant_initial": quant_initial, "quant_final": quant_final,
            "reparam": reparam, "repq_state_dict": repq_state, "qwt": qwt,
            "logits": {"fp": fp_logits, "repq": repq_logits, "repq_qwt": qwt_logits}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the released QwT-cls-RepQ-ViT code on seeded weights and "
                                            "inputs and write every stage (side environment only).")
    p.add_argument("--ref", required=True, help="QwT-cls-RepQ-ViT folder")
    p.add_argument("--family", required=True, choices=sorted(SCRIPTS), help="which reference script")
    p.add_argument("--model", required=True, help="the script's --model name (e.g. deit_tiny, resnet18)")
    p.add_argument("--arch", default="", help="timm 0.4.12 model name (ViT/DeiT/Swin)")
    p.add_argument("--out", required=True, help="dump file to write")
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-calib", type=int, default=8, help="RepQ-ViT calibration images (reference: a batch of 32)")
    p.add_argument("--n-qwt", type=int, default=32, help="QwT images (reference: 512)")
    p.add_argument("--n-test", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8, help="QwT / eval batch size (reference: 32)")
    p.add_argument("--start-block", type=int, default=0)
    p.add_argument("--kernel-size", type=int, default=1, help="ResNet QwT conv kernel (reference default 1)")
    p.add_argument("--factor", type=int, default=64, help="ResNet QwT groups = C // factor (reference default 64)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.n_qwt % a.batch_size:
        p.error(f"--n-qwt {a.n_qwt} must be a multiple of --batch-size {a.batch_size} (the reference drops the rest)")
    if a.family != "resnet" and not a.arch:
        p.error("--arch (the timm model name) is needed for ViT/DeiT/Swin")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the reference's own log prints
        dump = run(a)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dump, out)
    say(f"reference {a.model}: wrote {out} ({out.stat().st_size / 2**20:.0f} MiB) "
        f"in {dump['settings']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
