"""``make gpu-check``: the GPU path of the suite, end to end, against the same run on the CPU.

    python -m benchmarks.gpu_check [--device cuda|cuda:N|cpu] [--quick] [--no-torchrun]

On a machine without CUDA (and ``--device`` left at ``cuda``) it prints one line and exits 0.
Otherwise, on seeded random weights of real architectures (the registry's tiny DeiT, Swin and
ResNet; timm / torchvision classes) and seeded random images:

1. **API, one process** per model: quantize -> RepQ-ViT / percentile calibration -> QwT fit ->
   evaluation, on the device and on the CPU. After every stage every parameter and buffer must be
   on the device (:func:`misplaced`); the logits must agree with the CPU run within
   :data:`TOLERANCE` (fake quantization turns the devices' last-bit differences into a few flipped
   rounding decisions, so the check is on the relative L2 distance of the logits and top-1
   agreement, not bits). ``save_state`` on the device, ``load_state`` into a fresh quantized model
   on the device (bit-identical logits) and into one on the CPU (placement).
2. **Pipeline, one process**: ``classification.pipeline.run_experiment`` (the code behind
   ``make imagenet-...``) on a small synthetic ImageFolder with ``--save-state``, then again with
   ``--load-state`` and ``fp`` in the methods (the compensation modules built by the loader must
   follow the model to the device), on ``cuda:N`` for the last GPU N (a device other than the
   current one, when there are several).
3. **Pipeline, two processes** (``torchrun --nproc_per_node 2``, one GPU each; skipped with one line
   on a machine with fewer than 2 GPUs): the same run; its records must equal the one-process ones
   within the tolerance.

Prints one line per check (``PASS`` / ``FAIL``) with its timing, then ``gpu-check: N failed of M``;
exit status 1 when any failed. ``--device cpu`` runs the same checks on the CPU (a self-test of
this script; the numbers then agree exactly).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
MODELS = ("deit_small", "swin_tiny", "resnet18")
#: logits on the device vs the CPU: relative L2 distance and top-1 agreement (quantized models)
TOLERANCE = {"fp_rel": 1e-4, "q_rel": 5e-2, "q_top1_agree": 0.9}


@dataclass
class Report:
    """PASS / FAIL lines, each with what was measured."""

    rows: list[tuple[str, bool, str]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.rows.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else ""), flush=True)
        return ok

    @property
    def failed(self) -> int:
        return sum(not ok for _, ok, _ in self.rows)


def misplaced(model: nn.Module, device: torch.device) -> list[str]:
    """Names of the parameters and buffers of ``model`` that are not on ``device``."""
    want = torch.device(device)
    out = []
    for kind, items in (("param", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.device.type != want.type or (want.index is not None and t.device.index != want.index):
                out.append(f"{kind} {name} on {t.device}")
    return out


def _place_ok(report: Report, what: str, model: nn.Module, device: torch.device) -> None:
    bad = misplaced(model, device)
    report.check(f"{what}: every parameter and buffer on {device}", not bad,
                 f"{len(bad)} elsewhere, e.g. {bad[0]}" if bad else "")


def _compare(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(relative L2 distance of the logits, top-1 agreement) of a against b (both on the CPU)."""
    a, b = a.float().cpu(), b.float().cpu()
    rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    return rel, agree


@dataclass
class ApiRun:
    """One model through the API on one device: logits after each stage, the state file, times."""

    logits: dict[str, torch.Tensor]
    times: dict[str, float]
    state: Path


def _timed(times: dict[str, float], key: str, device: torch.device) -> Callable[[], None]:
    t0 = time.perf_counter()

    def done() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times[key] = time.perf_counter() - t0
    return done


def api_run(name: str, device: torch.device, tmp: Path, report: Report | None, n: int, seed: int = 0) -> ApiRun:
    """quantize -> calibrate -> QwT -> evaluate -> save / load on ``device``; with ``report``, the
    placement of every tensor is checked after each stage."""
    from classification.adapters import for_family
    from classification.build import build_model
    from qwt_core import QwTConfig, calibrate_repq, fit_qwt, load_state, save_state, set_quant_state

    torch.manual_seed(seed)
    model, spec = build_model(name, tiny=True)
    gen = torch.Generator().manual_seed(seed + 1000)
    size = spec.input_size
    calib = torch.randn(n, 3, size, size, generator=gen)
    qwt_imgs = torch.randn(2 * n, 3, size, size, generator=gen)
    test = torch.randn(n, 3, size, size, generator=gen)
    adapter = for_family(spec.family)
    method = adapter.methods[0]
    times: dict[str, float] = {}
    logits: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model.to(device)
        logits["fp"] = model(test.to(device)).cpu()
    adapter.quantize(model, 4, 4, method)
    model.to(device)
    done = _timed(times, "calibration_s", device)
    calibrate_repq(model, calib.to(device), adapter.reparam_pairs(model))
    set_quant_state(model, weight=True, act=True)
    done()
    if report is not None:
        _place_ok(report, f"{name} {device} after calibration", model, device)
    with torch.no_grad():
        logits["q"] = model(test.to(device)).cpu()
    done = _timed(times, "qwt_s", device)
    batches = list(qwt_imgs.to(device).split(n))
    fit_qwt(adapter.blockwise(model), batches, QwTConfig(), device=device)
    done()
    if report is not None:
        _place_ok(report, f"{name} {device} after QwT", model, device)
    model.eval()
    done = _timed(times, "eval_s", device)
    with torch.no_grad():
        logits["qwt"] = model(test.to(device)).cpu()
    done()
    state = tmp / f"{name}_{device.type}.pt"
    save_state(model, state, {"model": name})
    for where in dict.fromkeys((device, torch.device("cpu"))):
        fresh, _ = build_model(name, tiny=True)
        adapter.quantize(fresh, 4, 4, method)
        fresh.to(where)
        load_state(fresh, state)
        set_quant_state(fresh, weight=True, act=True)  # quantizers are built disabled
        fresh.eval()
        if report is not None:
            _place_ok(report, f"{name} state saved on {device}, loaded on {where}", fresh, where)
        if where == device:
            with torch.no_grad():
                again = fresh(test.to(device)).cpu()
            if report is not None:
                report.check(f"{name} {device}: reloaded state gives the same logits bit for bit",
                             torch.equal(again, logits["qwt"]))
    return ApiRun(logits, times, state)


def check_api(report: Report, device: torch.device, models: tuple[str, ...], n: int, tmp: Path) -> None:
    for name in models:
        t0 = time.perf_counter()
        dev = api_run(name, device, tmp, report, n)
        cpu = api_run(name, torch.device("cpu"), tmp, None, n) if device.type != "cpu" else dev
        rel_fp, _ = _compare(dev.logits["fp"], cpu.logits["fp"])
        report.check(f"{name}: FP logits {device} vs cpu", rel_fp <= TOLERANCE["fp_rel"],
                     f"rel L2 {rel_fp:.2e} <= {TOLERANCE['fp_rel']:.0e}")
        for stage in ("q", "qwt"):
            rel, agree = _compare(dev.logits[stage], cpu.logits[stage])
            report.check(f"{name}: {'RepQ' if stage == 'q' else 'RepQ+QwT'} logits {device} vs cpu",
                         rel <= TOLERANCE["q_rel"] and agree >= TOLERANCE["q_top1_agree"],
                         f"rel L2 {rel:.2e} <= {TOLERANCE['q_rel']:.0e}, top-1 agreement {agree:.2f}")
        times = ", ".join(f"{k} {dev.times[k]:.2f}/{cpu.times[k]:.2f}" for k in dev.times)
        print(f"      {name} times {device}/cpu: {times} (whole check {time.perf_counter() - t0:.1f}s)", flush=True)


def _image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 40) -> Path:
    """A small ImageFolder (train/ and val/) of seeded random PNGs."""
    from PIL import Image

    gen = torch.Generator().manual_seed(7)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                px = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8).numpy()
                Image.fromarray(px).save(d / f"{i}.png")
    return root


def _pipeline_args(data: Path, results: Path, device: str, extra: list[str]) -> list[str]:
    return ["--model", "deit_small", "--tiny", "--data-dir", str(data), "--w-bits", "4", "--a-bits", "4",
            "--methods", "fp,repq,repq+qwt", "--device", device, "--results-dir", str(results),
            "--calib-size", "4", "--qwt-size", "8", "--batch-size", "4", "--workers", "0", *extra]


def _metrics(results: Path) -> dict[str, dict[str, float]]:
    out = {}
    for p in sorted(results.rglob("*.json")):
        rec = json.loads(p.read_text())
        out[rec["method"]] = rec["metrics"]
    return out


def _run_cli(args: list[str], env: dict[str, str] | None = None, torchrun: int = 0) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "classification", *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "classification", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return p.returncode, (p.stdout + p.stderr)[-2000:], time.perf_counter() - t0


def _close(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> tuple[bool, str]:
    """Records agree: top-1 within one image's worth of agreement loss, KL within 5 % (relative)."""
    worst = []
    for method in a:
        if method not in b:
            return False, f"method {method} missing"
        for k in ("top1", "agreement_fp", "kl_fp"):
            if k in a[method] and k in b[method]:
                x, y = a[method][k], b[method][k]
                worst.append((abs(x - y) / max(abs(y), 1e-12) if k == "kl_fp" else abs(x - y) / 100, method, k))
    w = max(worst) if worst else (0.0, "", "")
    return w[0] <= 0.1, f"largest difference {w[0]:.3f} ({w[1]} {w[2]})"


def check_pipeline(report: Report, device: torch.device, tmp: Path, torchrun: bool) -> None:
    data = _image_folder(tmp / "imagefolder")
    last = f"cuda:{torch.cuda.device_count() - 1}" if device.type == "cuda" else "cpu"
    state = tmp / "pipeline_state.pt"
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for label, dev, extra in (("cpu", "cpu", []), (f"{last} save", last, ["--save-state", str(state)]),
                              (f"{last} load", last, ["--load-state", str(state)])):
        if label == "cpu" and device.type == "cpu":
            continue
        results = tmp / f"records_{label.replace(' ', '_').replace(':', '')}"
        rc, out, secs = _run_cli(_pipeline_args(data, results, dev, extra))
        ok = report.check(f"pipeline {label}: python -m classification ... --device {dev}", rc == 0,
                          f"{secs:.1f}s" + ("" if rc == 0 else f", exit {rc}: {out.strip().splitlines()[-1:]}"))
        if ok:
            runs[label] = _metrics(results)
    base = runs.get("cpu") or runs.get(f"{last} save")
    for label in (f"{last} save", f"{last} load"):
        if base is not None and label in runs and runs[label] is not base:
            ok, detail = _close(runs[label], base)
            report.check(f"pipeline {label}: records agree with {'cpu' if 'cpu' in runs else 'the saving run'}", ok,
                         detail)
    if not torchrun:
        return
    n = torch.cuda.device_count() if device.type == "cuda" else 2
    if n < 2:
        print("SKIP  pipeline torchrun x2: this machine has 1 GPU (one process per GPU)", flush=True)
        return
    results = tmp / "records_torchrun"
    rc, out, secs = _run_cli(_pipeline_args(data, results, device.type, []), torchrun=2)
    ok = report.check(f"pipeline torchrun x2 --device {device.type}", rc == 0,
                      f"{secs:.1f}s" + ("" if rc == 0 else f", exit {rc}: {out.strip().splitlines()[-1:]}"))
    if ok and base is not None:
        ok, detail = _close(_metrics(results), base)
        report.check("pipeline torchrun x2: records agree with one process", ok, detail)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (a self-test of this script)")
    ap.add_argument("--quick", action="store_true", help="one model (DeiT), no pipeline runs")
    ap.add_argument("--no-torchrun", action="store_true", help="skip the two-process run")
    ap.add_argument("--images", type=int, default=8, help="calibration / test images per model (QwT: twice)")
    args = ap.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"gpu-check: --device {args.device!r} is not a device (cuda, cuda:N or cpu)", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: torch {torch.__version__} sees no CUDA device on this machine; nothing to check "
              "(run it where a GPU is, or --device cpu for a self-test)")
        return 0
    if device.type == "cuda":
        from runtime.distributed import bind_device

        device = bind_device(device)
        print(f"gpu-check on {torch.cuda.get_device_name(device)} ({device}), torch {torch.__version__}, "
              f"{torch.cuda.device_count()} GPU(s)", flush=True)
    torch.manual_seed(0)
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="qwt-gpu-check-"))
    t0 = time.perf_counter()
    try:
        check_api(report, device, MODELS[:1] if args.quick else MODELS, args.images, tmp)
        if not args.quick:
            check_pipeline(report, device, tmp, torchrun=not args.no_torchrun)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"gpu-check: {report.failed} failed of {len(report.rows)} ({time.perf_counter() - t0:.0f}s)")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
