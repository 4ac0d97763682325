"""One contender of the released-code figure, in its own process: the released QwT-cls-RepQ-ViT
(``--side released``, in the side environment with timm 0.4.12) or this suite's default path
(``--side suite``), on one model, timed round by round on command.

    PYTHONPATH=<side env>:<root> python -m benchmarks.perf.released_worker --side released --ref REF \\
        --family vit --model deit_small --arch deit_small_patch16_224 --export W.pt ...
    PYTHONPATH=<root> python -m benchmarks.perf.released_worker --side suite --weights W.pt ...

Set-up (not timed): the released side builds the seeded model exactly as ``make parity`` does
(:mod:`benchmarks.parity.reference`: the script imported with a synthetic argv, random init,
``perturb_norms``, ``seeded_inputs``) and writes the FP weights and images to ``--export``; the
suite side loads them through :func:`benchmarks.parity.suite.load_fp_model` (timm's own
checkpoint filter), so both calibrate the same weights on the same images. Each side then runs
one untimed FP forward of the calibration batch (warm-up), prints ``{"ready": ...}`` and answers
commands on stdin:

* ``calibrate`` (once): the timed RepQ-ViT calibration of a fresh copy of the FP model: quantize
  the model, one quantized pass over the calibration batch, the scale reparameterization, the
  re-calibration pass (ResNet: the released script's single percentile pass; the suite:
  ``calibrate_repq`` with the family's pairs, none for ResNet). The calibrated model is kept;
* ``fit`` (each round): the timed QwT fit of a fresh copy of it: the released
  ``generate_compensation_model`` on the QwT images / ``fit_qwt(..., QwTConfig())``, the default
  (``regression='rows'``), and, as information, the streaming preset on another copy.

Each stage reports process CPU seconds, wall seconds and its peak memory above the resident set
at its start (:class:`benchmarks.perf.measure.PeakMemory`: ``VmHWM`` reset through
``/proc/self/clear_refs``; on a GPU ``max_memory_allocated``). On a CPU the worker keeps freed
memory (:func:`benchmarks.perf.measure.keep_freed_memory`) so that the timings measure the
computation, not page faults, except in the first ``fit`` (the memory round): that one runs with
glibc's mmap threshold pinned at 1 MiB and the heap trimmed
(:func:`benchmarks.perf.measure.pin_mmap_threshold`), so that freed tensors leave the resident set
and its peak follows the live tensors. Answers are JSON lines on the original stdout; the
reference's own prints go to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import json
import os
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import nn

from .measure import PeakMemory, clock_for, keep_freed_memory, pin_mmap_threshold, sync

PASSES = ("calibration pass", "re-calibration pass")  # (each includes the quantizer inits timed within it)
INIT_CHANNEL, INIT_TENSOR, INIT_LOG = ("init: per-channel uniform quantizers", "init: per-tensor uniform quantizers",
                                       "init: log-sqrt(2) quantizers")


class Timers:
    """Process CPU seconds (synchronised wall seconds on a GPU) per label, of wrapped callables."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}

    def clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()

    def wrap(self, label: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` timed under ``label`` (or ``label(*args)``); a call inside another call of the same
        wrapper (recursion) is counted once, by the outermost call."""
        depth = [0]

        def timed(*args: Any, **kwargs: Any) -> Any:
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            t0 = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                key = label(*args, **kwargs) if callable(label) else label
                self.seconds[key] = self.seconds.get(key, 0.0) + self.clock() - t0
        return timed

    @contextlib.contextmanager
    def methods(self, patches: list[tuple[type, str, str | Callable[..., str]]]) -> Iterator[None]:
        """Time ``cls.name`` under ``label`` for the duration of the block (then restore it)."""
        saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
        for cls, name, label in patches:
            setattr(cls, name, self.wrap(label, cls.__dict__[name]))
        try:
            yield
        finally:
            for cls, name, fn in saved:
                setattr(cls, name, fn)


def stage(fn: Callable[[], Any], device: torch.device) -> tuple[Any, dict[str, Any]]:
    """``fn()`` timed (CPU and wall seconds; ``clock`` names the one the figure uses, as
    :func:`benchmarks.perf.measure.clock_for`) with its peak memory above the start (bytes)."""
    gc.collect()
    meter = PeakMemory(device)
    meter.start()
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, {"cpu": cpu, "wall": wall, "clock": clock_for(device), "peak_bytes": float(meter.peak()),
                 "resettable": meter.resettable}


class Contender:
    """What both sides share: ``fp`` (the FP model), ``calib`` (the calibration batch), ``device``,
    and their own ``calibrate(model, timers)``; the calibrated model is kept in ``q_model``."""

    fp: nn.Module
    calib: torch.Tensor
    device: torch.device
    q_model: nn.Module

    def calibrate(self, model: nn.Module, t: Timers) -> nn.Module:  # pragma: no cover - per side
        raise NotImplementedError

    def warm_up(self) -> None:
        """One untimed FP forward of the calibration batch (kernels, allocator), the same on both sides."""
        with torch.no_grad():
            self.fp(self.calib)

    def calibration(self) -> dict[str, Any]:
        """The timed RepQ-ViT calibration of a fresh copy of the FP model (kept for the fits)."""
        tc = Timers(self.device)
        self.q_model, calib = stage(lambda: self.calibrate(copy.deepcopy(self.fp), tc), self.device)
        return {"calibration": calib, "calibration_profile": profile(tc.seconds, calib, "the rest")}


# ------------------------------------------------------------------------------ the released code
class Released(Contender):
    """The released script, its seeded model and images (set-up as ``make parity`` does it)."""

    def __init__(self, a: argparse.Namespace) -> None:
        from benchmarks.parity import reference as R

        self.R, self.a = R, a
        self.device = torch.device(a.device)
        self.ref = Path(a.ref).resolve()
        if self.device.type == "cpu":
            R.install_cpu_shims()
        script = R.SCRIPTS[a.family]
        argv = ["--model", a.model, "--w_bits", str(a.w_bits), "--a_bits", str(a.a_bits), "--batch_size",
                str(a.batch_size), "--num_workers", "0", "--seed", str(a.seed), "--start_block", "0"]
        with tempfile.TemporaryDirectory(prefix="qwt_perf_released_") as workdir:
            # the released script as a module; its globals are patched below (Any: no declared shape)
            self.mod: Any = cast(Any, R.import_script(self.ref, script, argv, workdir))
        self.qm, timm = sys.modules["quant"], sys.modules["timm"]
        if not timm.__version__.startswith("0.4."):
            raise RuntimeError(f"the released code needs timm 0.4.12, this process imported timm {timm.__version__}: "
                               "put the side environment first on PYTHONPATH")
        self.mod.args.device = str(self.device)
        self.mod.LINEAR_COMPENSATION_SAMPLES = a.n_qwt
        self.mod._write = lambda *args, **kwargs: None  # it logs to a path relative to the cwd
        self.r2: list[float] = []
        solve = self.mod.lienar_regression

        def recording_solve(*args: Any, **kwargs: Any) -> Any:  # generate_compensation_model looks it up
            W, b, r2 = solve(*args, **kwargs)
            self.r2.append(float(r2))
            return W, b, r2
        self._solve = recording_solve
        self.reparam = None if a.family == "resnet" else self._reparam_code(self.ref / script)
        self.mod.seed(a.seed)
        if a.family == "resnet":
            model = getattr(self.mod, a.model)(num_classes=1000, pretrained=False)
        else:
            with R.random_init(timm):
                model = sys.modules["utils.build_model"].build_model(a.arch, SimpleNamespace(drop_path=0.0))
        R.perturb_norms(model, a.seed)
        self.fp = model.eval()
        calib, qwt_x, _ = R.seeded_inputs(a.seed, a.n_calib, a.n_qwt, 0)
        torch.save({"settings": {"model": a.model, "family": a.family, "arch": a.arch, "tiny": False,
                                 "seed": a.seed, "timm": timm.__version__},
                    "fp_state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                    "calib": calib, "qwt_inputs": qwt_x}, a.export)
        self.fp.to(self.device)
        self.calib = calib.to(self.device)
        self.loader = [(qwt_x[i:i + a.batch_size].to(self.device), torch.zeros(a.batch_size, dtype=torch.long))
                       for i in range(0, a.n_qwt, a.batch_size)]

    def _reparam_code(self, script: Path) -> Any:
        """The script's own scale-reparameterization block of ``main()``, compiled once."""
        src, R = script.read_text(), self.R
        if R.REPARAM_BEGIN not in src or R.REPARAM_END not in src:
            raise ValueError(f"{script.name} has no '{R.REPARAM_BEGIN}' block: not {R.REFERENCE_SOURCE}")
        i = src.rindex("\n", 0, src.index(R.REPARAM_BEGIN)) + 1
        j = src.rindex("\n", 0, src.index(R.REPARAM_END, i)) + 1
        return compile(textwrap.dedent(src[i:j]), f"{script}:reparameterization", "exec")

    @torch.no_grad()
    def calibrate(self, model: nn.Module, t: Timers) -> nn.Module:
        """quant_model, one quantized pass, reparameterization, re-calibration (as ``main()``)."""
        qm, a = self.qm, self.a
        wq = {"n_bits": a.w_bits, "channel_wise": True}
        aq = {"n_bits": a.a_bits, "channel_wise": False}
        quantize = qm.quant_model_resnet if a.family == "resnet" else qm.quant_model
        q_model = t.wrap("quantize", quantize)(model, input_quant_params=aq, weight_quant_params=wq).eval()
        qz = sys.modules["quant.quantizer"]
        init: list[tuple[type, str, str | Callable[..., str]]] = [
            (qz.UniformQuantizer, "init_quantization_scale",
             lambda q, x, channel_wise=False: INIT_CHANNEL if channel_wise else INIT_TENSOR),
            (qz.LogSqrt2Quantizer, "init_quantization_scale", INIT_LOG)]
        with t.methods(init):
            qm.set_quant_state(q_model, input_quant=True, weight_quant=True)
            t.wrap(PASSES[0], q_model)(self.calib)
            if self.reparam is not None:
                ns = {"torch": torch, "Parameter": nn.Parameter, "q_model": q_model,
                      "args": SimpleNamespace(model=a.model), "_write": lambda *x, **k: None}
                t.wrap("reparameterization", exec)(self.reparam, ns)
                qm.set_quant_state(q_model, input_quant=True, weight_quant=True)
                t.wrap(PASSES[1], q_model)(self.calib)
        return q_model

    def fit(self, q_model: nn.Module, t: Timers) -> nn.Module:
        """The released ``generate_compensation_model``, with timers around its solve, its
        embedding and its third (compensated) block pass; the rest is its FP and quantized block
        passes and the ``torch.cat`` of the features."""
        comp = self.mod.CompensationBlock
        forward = comp.forward
        self.mod.lienar_regression = t.wrap("solve (fp32 inverse)", self._solve)
        released: Any = q_model  # the released model class: forward_before_blocks is patched
        released.forward_before_blocks = t.wrap("embed", released.forward_before_blocks)
        comp.forward = t.wrap("third pass (compensated blocks)", forward)
        try:
            return self.mod.generate_compensation_model(q_model, self.loader, self.mod.args)
        finally:
            comp.forward = forward

    def fits(self) -> dict[str, Any]:
        """One timed QwT fit on a fresh copy of the calibrated model."""
        tf = Timers(self.device)
        q_model = copy.deepcopy(self.q_model)
        self.r2 = []
        _, fit = stage(lambda: self.fit(q_model, tf), self.device)
        return {"fit": fit, "r2": self.r2,
                "fit_profile": profile(tf.seconds, fit, "FP and quantized block passes, torch.cat (the rest)")}


def profile(seconds: dict[str, float], total: dict[str, Any], rest: str) -> dict[str, float]:
    """Timed components plus ``rest`` = the stage's seconds (its clock) minus their sum. The quantizer
    inits run inside the calibration passes: the passes are given without them."""
    out = dict(seconds)
    passes = [out.pop(p) for p in PASSES if p in out]
    if passes:
        out["quantized passes besides the inits"] = (sum(passes)
                                                     - sum(v for k, v in out.items() if k.startswith("init:")))
    return {**out, rest: total[total["clock"]] - sum(out.values())}


# ------------------------------------------------------------------------------ this suite's default path
class Suite(Contender):
    """This suite's public API on the released side's exported weights and images."""

    def __init__(self, a: argparse.Namespace) -> None:
        from benchmarks.parity.suite import load_fp_model
        from classification.adapters import for_family

        self.a, self.device = a, torch.device(a.device)
        dump = torch.load(a.weights, map_location="cpu", weights_only=False)
        with tempfile.TemporaryDirectory(prefix="qwt_perf_suite_") as work:
            fp, spec, _ = load_fp_model(dump, Path(work))
        self.fp = fp.eval().to(self.device)
        self.adapter = for_family(spec.family)
        self.method = next(m for m in self.adapter.default_methods if m != "fp" and "+qwt" not in m)
        self.calib = dump["calib"].to(self.device)
        qwt_x = dump["qwt_inputs"]
        self.batches = [qwt_x[i:i + a.batch_size].to(self.device) for i in range(0, qwt_x.shape[0], a.batch_size)]
        self.solvers = [s for s in a.solvers.split(",") if s]

    @torch.no_grad()
    def calibrate(self, model: nn.Module, t: Timers) -> nn.Module:
        """The adapter's quantization, then ``calibrate_repq`` (two passes around the reparameterization)."""
        from qwt_core import calibrate_repq
        from qwt_core.quant.quantizers import LogSqrt2Quantizer, UniformQuantizer

        t.wrap("quantize", self.adapter.quantize)(model, self.a.w_bits, self.a.a_bits, self.method)

        def forward(m: nn.Module, x: torch.Tensor) -> Any:
            return t.wrap(PASSES[min(len([k for k in t.seconds if k in PASSES]), 1)], m)(x)
        init: list[tuple[type, str, str | Callable[..., str]]] = [
            (UniformQuantizer, "initialise",
             lambda q, x: INIT_CHANNEL if getattr(q, "channel_dim", None) is not None else INIT_TENSOR),
            (LogSqrt2Quantizer, "initialise", INIT_LOG)]
        with t.methods(init):
            calibrate_repq(model, self.calib, self.adapter.reparam_pairs(model), forward=forward)
        return model

    def fit(self, model: nn.Module, solver: str, out: dict[str, Any]) -> list[float]:
        """``fit_qwt`` with ``QwTConfig()`` (or that solver), under :class:`FitProfile`."""
        from qwt_core import QwTConfig, fit_qwt
        from qwt_core.qwt.config import solver_preset

        from .profile import FitProfile

        cfg = QwTConfig(**solver_preset(solver))
        blockwise = self.adapter.blockwise(model)
        clock = Timers(self.device).clock
        with FitProfile(blockwise, clock) as prof:
            c0 = clock()
            reports = fit_qwt(blockwise, self.batches, cfg, device=self.device)
            out.update(prof.breakdown(clock() - c0))
        return [r.r2 for r in reports]

    def fits(self) -> dict[str, Any]:
        """One timed fit per solver, each on a fresh copy of the calibrated model."""
        out: dict[str, Any] = {}
        for solver in self.solvers:
            m = copy.deepcopy(self.q_model)
            prof: dict[str, float] = {}
            r2, res = stage(functools.partial(self.fit, m, solver, prof), self.device)
            res["weight_cache_mib"] = weight_cache_mib(m)
            out[f"fit_{solver}"], out[f"r2_{solver}"], out[f"fit_{solver}_profile"] = res, r2, prof
            del m
        return out


def weight_cache_mib(model: nn.Module) -> float:
    """MiB of quantized weights the model's layers hold in their cache (``qwt_core.quant.layers``:
    Q_w(W) is kept from the first quantized call on; the released code re-quantizes at every call)."""
    total = 0
    for m in model.modules():
        cache = m.__dict__.get("_wq_cache")
        if cache is not None and torch.is_tensor(cache[1]):
            total += cache[1].numel() * cache[1].element_size()
    return total / 2**20


# ------------------------------------------------------------------------------ the loop
def serve(make: Callable[[], Any], answer: Any) -> int:
    """Build the contender and warm it up, say ready, then answer ``calibrate`` (the timed
    calibration, once) and ``fit`` (one timed round of fits; the first is the memory round) lines
    until ``quit`` / EOF.

    On a CPU the process keeps freed memory (:func:`keep_freed_memory`) from the warm-up on, so
    that the timings measure the computation, except in the first ``fit``, which runs with the
    mmap threshold pinned again and the heap trimmed (:func:`pin_mmap_threshold`) so that its
    peak follows the live tensors."""
    def say(doc: dict[str, Any]) -> None:
        answer.write(json.dumps(doc) + "\n")
        answer.flush()

    try:
        t0 = time.perf_counter()
        contender = make()
        malloc = keep_freed_memory() if contender.device.type == "cpu" else None
        contender.warm_up()
        say({"ready": True, "setup_s": time.perf_counter() - t0, "threads": torch.get_num_threads(),
             "malloc": malloc})
    except Exception as e:  # reported to the orchestrator as one line
        traceback.print_exc()
        say({"error": f"set-up failed: {type(e).__name__}: {e}"})
        return 1
    fits = 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd not in ("calibrate", "fit"):
            say({"error": f"unknown command {cmd!r} (expected calibrate, fit or quit)"})
            continue
        if cmd == "fit" and not hasattr(contender, "q_model"):
            say({"error": "fit before calibrate"})
            continue
        try:
            if cmd == "calibrate":
                res = contender.calibration()
            else:
                memory_round = fits == 0 and contender.device.type == "cpu"
                pinned = pin_mmap_threshold() if memory_round else None
                res = contender.fits()
                if memory_round:
                    res["malloc"] = {"memory_round": pinned, "after": keep_freed_memory()}
                fits += 1
        except Exception as e:
            traceback.print_exc()
            say({"error": f"{type(e).__name__}: {e}"})
            return 1
        say(res)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="one contender of the released-code figure (started by "
                                            "benchmarks.perf.released)")
    p.add_argument("--side", required=True, choices=("released", "suite"))
    p.add_argument("--model", required=True, help="registry / released script model name")
    p.add_argument("--family", default="", help="released side: vit, swin or resnet")
    p.add_argument("--arch", default="", help="released side: timm 0.4.12 model name (ViT/DeiT/Swin)")
    p.add_argument("--ref", default="", help="released side: QwT-cls-RepQ-ViT folder")
    p.add_argument("--export", default="", help="released side: write the FP weights and images here")
    p.add_argument("--weights", default="", help="suite side: the released side's --export file")
    p.add_argument("--solvers", default="reference,streaming", help="suite side: QwTConfig.solver per fit")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--n-calib", type=int, default=32)
    p.add_argument("--n-qwt", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    with contextlib.redirect_stdout(sys.stderr):  # the released code prints its log
        return serve(lambda: Released(a) if a.side == "released" else Suite(a), answer)


if __name__ == "__main__":
    sys.exit(main())
