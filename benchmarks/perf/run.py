"""Calibration speed and memory of QwT, measured against the floor and a reference-style fit.

    python -m benchmarks.perf.run [--quick | --full | --tiny] [--device cpu|cuda] [--threads N]
                                  [--ref QwT-cls-RepQ-ViT] [--results-dir results/records] [--out results/perf.md]

Every figure is a ratio of two measurements taken in this run (the machine may be shared: timings
are min-of-N with the contenders interleaved; peak memory comes from one fresh subprocess per
measurement). Prints each ratio with its target, writes a suite "perf" record and renders
``results/perf.md`` from the newest perf record (see :mod:`benchmarks.perf.report`).

1. QwT fit time / (FP forward + fake-quantized forward) and / one FP forward, same images;
2. this suite's default path / the released code (:mod:`benchmarks.perf.released`, with ``--ref``):
   RepQ-ViT calibration time, QwT fit time and peak memory on the same weights and images; as
   information, our fit / the reference-style re-implementation (:mod:`benchmarks.perf.reference_fit`):
   time on the cut-down model at 512 images, peak memory;
3. peak memory of our fit at 128, 512, 1024 calibration images (flat);
4. fake-quantized / FP evaluation time: RepQ-ViT, RepQ-ViT + QwT in both fp16 arithmetics;
5. quantizer initialisation, per-channel loop / vectorized.
Plus, not a target: where the fit's time goes (:mod:`benchmarks.perf.profile`) and the fp16
product's kernels on this device (:func:`half_kernels`).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from qwt_core import QwTConfig, eval_arithmetic, fit_qwt, native, quant_state, save_state
from qwt_core.quant.primitives import per_channel_loop_search, search_uniform_range
from qwt_core.qwt import halfdot
from qwt_core.qwt.config import solver_preset
from runtime.records import RECORDS_DIR, make_record, write_record

from . import report
from .cases import Batches, Built, Case, Plan, build, mmdet_available, plan_for
from .measure import MiB, clock_for, interleaved_min, keep_freed_memory, probe, process_clock
from .profile import FitProfile
from .reference_fit import reference_fit
from .released import ReleasedFigure, batch_of
from .targets import target_of

OUT = Path(__file__).resolve().parents[2] / "results" / "perf.md"


#: the solver of "our fit" in every figure: float64 normal equations, memory independent of the image
#: count. The default (``solver="reference"``) keeps every row of a block, as the released code does:
#: its memory grows with the images like the reference-style fit's.
OUR_SOLVER = "streaming"

#: where our fit keeps the block inputs in the time figures (1 and 2): QwTConfig's default. The
#: flat-memory store of figure 3 (``flat_store``) is timed beside it in figure 1 (info only).
TIME_STORE = "device"


def flat_store(device: torch.device) -> str:
    """Where our fit keeps the block inputs so that the measured memory stays flat:
    host memory when fitting on a GPU, files on disk when fitting on the CPU."""
    return "cpu" if device.type == "cuda" else "disk"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _show(metric: str, value: float, extra: str = "") -> None:
    t = target_of(metric)
    status = "" if t is None else (f"target {t.text()}" + ("" if t.op == "info" else ": PASS" if t.passes(value)
                                                          else f": MISS ({t.miss_by(value)})"))
    _say(f"  {metric} = {value:.3f}  {status}{'  ' + extra if extra else ''}")


@torch.no_grad()
def _forward_all(built: Built, model: torch.nn.Module, images: list[torch.Tensor]) -> None:
    for x in images:
        built.forward(model, x)


def time_case(case: Case, plan: Plan, device: torch.device, state_dir: Path,
              metrics: dict[str, float], raw: dict[str, Any]) -> None:
    """Figures 1 and 4 for one model, and the profile of its fit."""
    t0 = time.perf_counter()
    built = build(case, device)
    calib = next(iter(Batches(plan.calib_images, plan.calib_images, case.size, seed=1, device=device)))
    tc = time.perf_counter()
    built.calibrate(built.quant, calib)
    calib_s = time.perf_counter() - tc
    save_state(built.quant, state_dir / f"{case.key}.pt")
    images = list(Batches(plan.images, plan.batch, case.size, seed=2, device=device))
    store = TIME_STORE
    cfg = QwTConfig(store=store, **solver_preset(OUR_SOLVER))  # type: ignore[arg-type]
    flat_cfg = QwTConfig(store=flat_store(device), **solver_preset(OUR_SOLVER))  # type: ignore[arg-type]
    fitted: dict[str, Any] = {}
    clock = process_clock(device)

    def fit_with(c: QwTConfig, key: str) -> Callable[[torch.nn.Module], None]:
        """A timed fit contender with config ``c``; keeps the profile of its fastest fit under ``key``."""
        def run(m: torch.nn.Module) -> None:
            adapter = built.blockwise(m)
            with FitProfile(adapter, clock) as prof:
                c0 = clock()
                reports = fit_qwt(adapter, images, c, device=device)
                total = clock() - c0
            if total < fitted.get(f"{key}_s", float("inf")):
                fitted[f"{key}_s"], fitted[key] = total, prof.breakdown(total)
                fitted[f"{key}_counts"] = dict(prof.counts)
            if c is cfg:  # the evaluations time the model of the default-store fit
                fitted["model"] = m
                raw.setdefault("r2_ours", {})[case.key] = [round(r.r2, 6) for r in reports]
        return run

    def fp(_: Any) -> None:
        _forward_all(built, built.fp, images)

    def quant(m: torch.nn.Module) -> None:
        with quant_state(m):
            _forward_all(built, m, images)

    def qwt_eval(arith: str) -> Any:
        def run(_: Any) -> None:
            m = fitted["model"]
            with quant_state(m), eval_arithmetic(True, arith):
                _forward_all(built, m, images)
        return run

    with FlopCounterMode(display=False) as flops:  # also the warm-up (allocator, kernels)
        _forward_all(built, built.fp, images[:1])
    fp_flop = flops.get_total_flops() * plan.images / images[0].shape[0]  # matmul/conv FLOPs (2 per MAC)
    with quant_state(built.quant):
        _forward_all(built, built.quant, images[:1])
    qm = built.quant
    both: dict[str, dict[str, float]] = {}
    forwards = [("fp", lambda: None, fp), ("quant", lambda: qm, quant),
                ("qwt_native", lambda: None, qwt_eval("native")), ("qwt_emulated", lambda: None, qwt_eval("emulated"))]
    # the evaluations time the model that the (earlier) "fit" contender produced; the reversed
    # second round runs them before "fit" again, on the model of round one
    fits = [("fit", lambda: copy.deepcopy(built.quant), fit_with(cfg, "profile")),
            ("fit_flat", lambda: copy.deepcopy(built.quant), fit_with(flat_cfg, "flat_profile"))]
    t = interleaved_min(fits + forwards, plan.repeats, device, both)
    if plan.forward_rounds:  # the forwards are cheap next to the fit: more interleaved rounds of them
        more: dict[str, dict[str, float]] = {}
        extra = interleaved_min(forwards, plan.forward_rounds, device, more)
        for name, sec in extra.items():
            t[name] = min(t[name], sec)
            both[name] = {c: min(both[name][c], more[name][c]) for c in ("wall", "cpu")}
    raw.setdefault("wall_and_cpu_seconds", {})[case.key] = both
    raw["forward_extra_repeats"] = plan.forward_rounds
    fp_s = t["fp"]
    raw.setdefault("seconds", {})[case.key] = {
        "fp_forward": fp_s, "quant_forward": t["quant"], "qwt_forward": t["qwt_native"],
        "qwt_forward_emulated": t["qwt_emulated"], "fit": t["fit"], "fit_flat": t["fit_flat"],
        "repq_calibration": calib_s,
        "case_total": time.perf_counter() - t0}
    raw.setdefault("fit_profile", {})[case.key] = fitted["profile"]
    raw.setdefault("fit_flat_profile", {})[case.key] = fitted["flat_profile"]
    raw.setdefault("fit_counts", {})[case.key] = {**fitted["profile_counts"], "fp_forward_flop": fp_flop}
    metrics[f"fit_over_floor/{case.key}"] = t["fit"] / (fp_s + t["quant"])
    metrics[f"fit_over_fp/{case.key}"] = t["fit"] / fp_s
    metrics[f"fit_flat_over_floor/{case.key}"] = t["fit_flat"] / (fp_s + t["quant"])
    metrics[f"eval_slowdown/{case.key}"] = t["quant"] / fp_s
    metrics[f"eval_slowdown_qwt/{case.key}"] = t["qwt_native"] / fp_s
    metrics[f"eval_slowdown_qwt_emulated/{case.key}"] = t["qwt_emulated"] / fp_s
    _say(f"[{case.key}] {plan.images} images of {case.size[0]}x{case.size[1]}, batch {plan.batch}, "
         f"store={store}: FP forward {fp_s:.2f}s, quantized forward {t['quant']:.2f}s, fit {t['fit']:.2f}s "
         f"({t['fit_flat']:.2f}s with store={flat_cfg.store}), "
         f"RepQ+QwT forward {t['qwt_native']:.2f}s native / {t['qwt_emulated']:.2f}s emulated "
         f"(RepQ-ViT calibration {calib_s:.1f}s)")
    _say("  fit profile: " + ", ".join(f"{k} {v:.2f}s" for k, v in fitted["profile"].items()))
    for name in ("fit_over_floor", "fit_over_fp", "fit_flat_over_floor", "eval_slowdown", "eval_slowdown_qwt",
                 "eval_slowdown_qwt_emulated"):
        _show(f"{name}/{case.key}", metrics[f"{name}/{case.key}"])


def reference_time(plan: Plan, device: torch.device, metrics: dict[str, float], raw: dict[str, Any]) -> None:
    """Figure 2 (time): our fit vs the reference-style fit on the cut-down model at
    ``plan.ref_images`` images (images generated before timing; contenders interleaved)."""
    case = plan.mem_case
    built = build(case, device)
    calib = next(iter(Batches(plan.calib_images, plan.calib_images, case.size, seed=1, device=device)))
    built.calibrate(built.quant, calib)
    images = list(Batches(plan.ref_images, plan.mem_batch, case.size, seed=2, device=device))
    cfg = QwTConfig(store=TIME_STORE, **solver_preset(OUR_SOLVER))  # type: ignore[arg-type]
    r2: dict[str, list[float]] = {}
    clock = process_clock(device)
    best: dict[str, Any] = {}

    def ours(m: torch.nn.Module) -> None:
        adapter = built.blockwise(m)
        with FitProfile(adapter, clock) as prof:
            c0 = clock()
            r2["ours"] = [r.r2 for r in fit_qwt(adapter, images, cfg, device=device)]
            total = clock() - c0
        if total < best.get("s", float("inf")):
            best["s"], best["profile"] = total, prof.breakdown(total)

    def reference(m: torch.nn.Module) -> None:
        r2["reference"] = reference_fit(built.blockwise(m), images, cfg, batch_size=plan.mem_batch)

    fresh = lambda: copy.deepcopy(built.quant)  # noqa: E731
    both: dict[str, dict[str, float]] = {}
    t = interleaved_min([("ours", fresh, ours), ("reference", fresh, reference)], max(plan.repeats, 2), device, both)
    key = f"{case.key}@{plan.ref_images}"
    metrics[f"fit_over_ref_time/{key}"] = t["ours"] / t["reference"]
    diff = max(abs(a - b) for a, b in zip(r2["ours"], r2["reference"]))
    raw["reference_time"] = {"case": case.key, "images": plan.ref_images, "batch": plan.mem_batch,
                             "seconds": t, "wall_and_cpu_seconds": both, "r2_ours": r2["ours"],
                             "r2_reference": r2["reference"], "max_abs_r2_diff": diff, "profile": best["profile"]}
    _say(f"[{case.key}] {plan.ref_images} images, batch {plan.mem_batch}: our fit {t['ours']:.2f}s, "
         f"reference-style fit {t['reference']:.2f}s (max |R² ours - reference| = {diff:.1e})")
    _show(f"fit_over_ref_time/{key}", metrics[f"fit_over_ref_time/{key}"])


def half_kernels(plan: Plan, device: torch.device, raw: dict[str, Any]) -> None:
    """Not a target: the fp16 compensation product of one block on this device, three ways:
    PyTorch's native fp16 kernel, ``half_arith='native'`` as computed here (on a CPU the ordered
    fp32 re-implementation of that kernel, checked bit for bit) and ``'emulated'``."""
    if device.type != "cpu" or plan.mode == "tiny":
        return
    g = torch.Generator().manual_seed(0)
    rows = plan.images * 197  # deit_small tokens of the calibration images
    cases = {f"linear (deit_small block, {rows} tokens x 384 -> 384)":
             (torch.randn(rows, 384, generator=g), torch.randn(384, 384, generator=g) * 0.05, None),
             f"grouped 1x1 conv (resnet50 stage 1, {plan.batch} x 256 x 56 x 56, 4 groups)":
             (torch.randn(plan.batch, 256, 56, 56, generator=g), torch.randn(256, 64, 1, 1, generator=g) * 0.05, 4)}
    out = {}
    for name, (x, w, groups) in cases.items():
        if groups is None:
            torch_native = lambda: (x.half() @ w.half()).float()  # noqa: E731
            ours = {a: (lambda a=a: halfdot.half_matmul(x, w, a)) for a in halfdot.HALF_ARITHS}
        else:
            torch_native = lambda: torch.nn.functional.conv2d(x.half(), w.half(), None, 1, 0, 1, groups).float()  # noqa: E731
            ours = {a: (lambda a=a: halfdot.half_conv2d(x, w, 1, 0, groups, a)) for a in halfdot.HALF_ARITHS}
        ours["native"]()  # the per-geometry probe runs outside the timing
        res: dict[str, Any] = {}
        t = interleaved_min([("torch fp16 kernel", lambda: None, lambda _: res.__setitem__("torch", torch_native())),
                             ("native", lambda: None, lambda _: res.__setitem__("native", ours["native"]())),
                             ("emulated", lambda: None, lambda _: res.__setitem__("emulated", ours["emulated"]()))],
                            1, device)
        same = bool(torch.equal(res["torch"].view(torch.int32), res["native"].view(torch.int32)))
        differ = float((res["torch"] != res["emulated"]).float().mean())
        macs = res["torch"].numel() * (w.shape[0] if groups is None else w.shape[1] * w.shape[2] * w.shape[3])
        out[name] = {"seconds": t, "native_bits_equal_torch": same, "emulated_fraction_differing": differ,
                     "macs": macs}
        _say(f"[fp16 product] {name}: PyTorch fp16 kernel {t['torch fp16 kernel']:.3f}s, half_arith='native' "
             f"{t['native']:.3f}s (bit-identical: {same}), 'emulated' {t['emulated']:.3f}s "
             f"({differ:.3%} of outputs differ from the fp16 kernel)")
    raw["half_kernels"] = out


def _calibrated_state(case: Case, plan: Plan, device: torch.device, state_dir: Path) -> Path:
    path = state_dir / f"{case.key}.pt"
    if not path.exists():
        built = build(case, device)
        calib = next(iter(Batches(plan.calib_images, plan.calib_images, case.calib_size or case.size, seed=1,
                                  device=device)))
        built.calibrate(built.quant, calib)
        save_state(built.quant, path)
    return path


def _probe(case: Case, state: Path, fit: str, images: int, batch: int, store: str, device: torch.device,
           raw: dict[str, Any]) -> float | None:
    res = probe({"case": case.key, "state": str(state), "fit": fit, "images": images, "batch": batch,
                 "store": store, "device": str(device), "threads": torch.get_num_threads()})
    key = f"{case.key}/{fit}/{images}"
    raw.setdefault("memory", {})[key] = res
    if "error" in res:
        _say(f"  memory probe {key}: FAILED ({res['error']})")
        return None
    mb = res["peak_bytes"] / MiB
    _say(f"  memory probe {key}: peak {mb:.1f} MiB above baseline ({res['seconds']:.1f}s"
         f"{'' if res['resettable'] else ', peak not resettable: includes set-up'})")
    return mb


def memory_figures(plan: Plan, device: torch.device, state_dir: Path, metrics: dict[str, float],
                   raw: dict[str, Any]) -> None:
    """Figure 2 (memory) and figure 3 on ``plan.mem_case``; the real models on GPU / --full."""
    store = flat_store(device)
    case = plan.mem_case
    state = _calibrated_state(case, plan, device, state_dir)
    _say(f"[memory] {case.describe()}: our fit (store={store}) at {plan.mem_counts} images, "
         f"reference-style fit alongside")
    ours: dict[int, float | None] = {}
    ref: dict[int, float | None] = {}
    ref_counts = plan.mem_counts
    for n in plan.mem_counts:
        ours[n] = _probe(case, state, "ours", n, plan.mem_batch, store, device, raw)
        ref[n] = _probe(case, state, "reference", n, plan.mem_batch, store, device, raw) if n in ref_counts else None
    lo, hi = min(plan.mem_counts), max(plan.mem_counts)
    if ours[lo] and ours[hi] is not None:
        metrics[f"mem_growth/{case.key}"] = ours[hi] / ours[lo] - 1  # type: ignore[operator]
        _show(f"mem_growth/{case.key}", metrics[f"mem_growth/{case.key}"],
              f"(ours {ours[lo]:.1f} -> {ours[hi]:.1f} MiB)")
    for n in plan.mem_counts:
        if ours[n] is not None and ref[n]:
            metrics[f"fit_over_ref_mem/{case.key}@{n}"] = ours[n] / ref[n]  # type: ignore[operator]
            _show(f"fit_over_ref_mem/{case.key}@{n}", metrics[f"fit_over_ref_mem/{case.key}@{n}"])
    real = device.type == "cuda" or plan.mode == "full"
    for c in plan.cases if real else ():
        st = _calibrated_state(c, plan, device, state_dir)
        o = _probe(c, st, "ours", plan.mem_images, plan.batch, store, device, raw)
        r = _probe(c, st, "reference", plan.mem_images, plan.batch, store, device, raw)
        if o is not None and r:
            metrics[f"fit_over_ref_mem/{c.key}@{plan.mem_images}"] = o / r
            _show(f"fit_over_ref_mem/{c.key}@{plan.mem_images}", o / r)


def detector_memory(plan: Plan, device: torch.device, state_dir: Path, metrics: dict[str, float],
                    raw: dict[str, Any]) -> None:
    """Peak memory of our fit vs the reference-style fit on the Swin-T detector backbone, 800x1333."""
    case = plan.det_case
    if case is None:
        return
    why = mmdet_available()
    if why is not None:
        raw["detector_skipped"] = f"skipped: mmdet not installed ({why})"
        _say(f"[{case.key}] {raw['detector_skipped']}")
        return
    _say(f"[{case.key}] {case.describe()}: {plan.det_images} images, batch {plan.det_batch}")
    try:
        _detector_probes(case, plan, device, state_dir, metrics, raw)
    except Exception as e:  # a broken optional row must not lose the other figures
        raw["detector_skipped"] = f"failed: {type(e).__name__}: {e}"
        _say(f"[{case.key}] {raw['detector_skipped']}")


def _detector_probes(case: Case, plan: Plan, device: torch.device, state_dir: Path, metrics: dict[str, float],
                     raw: dict[str, Any]) -> None:
    store = flat_store(device)
    tc = time.perf_counter()
    state = _calibrated_state(case, dataclass_replace(plan, calib_images=1), device, state_dir)
    raw["detector_calibration_s"] = time.perf_counter() - tc
    o = _probe(case, state, "ours", plan.det_images, plan.det_batch, store, device, raw)
    if not plan.det_reference:
        raw["detector_note"] = (f"reference-style fit not probed in mode {plan.mode} on {device.type} "
                                "(minutes per 800x1333 fit on a CPU): run with --full")
        _say(f"  {raw['detector_note']}")
        return
    r = _probe(case, state, "reference", plan.det_images, plan.det_batch, store, device, raw)
    if o is not None and r:
        metrics[f"fit_over_ref_mem/{case.key}@{plan.det_images}"] = o / r
        _show(f"fit_over_ref_mem/{case.key}@{plan.det_images}", o / r)


def dataclass_replace(plan: Plan, **kw: Any) -> Plan:
    import dataclasses
    return dataclasses.replace(plan, **kw)


def init_figure(plan: Plan, device: torch.device, metrics: dict[str, float], raw: dict[str, Any]) -> None:
    """Figure 5: ViT-B fc1 weight (3072, 768) per output channel and a 32-image fc1 input
    (32, 197, 768) per channel (scaled by ``plan.init_scale`` in quick/tiny modes)."""
    s = plan.init_scale
    g = torch.Generator().manual_seed(0)
    c_out, c_in, tokens, imgs = max(int(3072 * s), 8), max(int(768 * s), 8), max(int(197 * s), 4), max(int(32 * s), 2)
    tensors = {"weight": (torch.randn(c_out, c_in, generator=g) * 0.02, 0),
               "activation": (torch.randn(imgs, tokens, c_in, generator=g) * torch.rand(c_in, generator=g) * 4, -1)}
    raw["init_shapes"] = {k: list(v[0].shape) for k, v in tensors.items()}
    for name, (x, dim) in tensors.items():
        x = x.to(device)
        search_uniform_range(x, 4, dim)  # warm-up (first-call kernel set-up is not timed)
        out: dict[str, Any] = {}
        both: dict[str, dict[str, float]] = {}
        t = interleaved_min([("vectorized", lambda: None,
                              lambda _: out.__setitem__("vec", search_uniform_range(x, 4, dim)))],
                            plan.init_repeats, device, both)
        # the loop takes seconds to minutes (far above the timing noise): timed once
        t.update(interleaved_min([("loop", lambda: None,
                                   lambda _: out.__setitem__("loop", per_channel_loop_search(x, 4, dim)))],
                                 1, device, both))
        (d1, z1), (d2, z2) = out["vec"], out["loop"]
        same = bool(torch.allclose(d1, d2, rtol=1e-6, atol=0) and torch.equal(z1, z2))
        raw.setdefault("init", {})[name] = {"vectorized_s": t["vectorized"], "loop_s": t["loop"], "same_ranges": same,
                                            "wall_and_cpu_seconds": both}
        metrics[f"init_speedup/{name}"] = t["loop"] / t["vectorized"]
        _say(f"[init] {name} {tuple(x.shape)}: vectorized {t['vectorized']:.3f}s, loop {t['loop']:.3f}s, "
             f"identical ranges: {same}")
        _show(f"init_speedup/{name}", metrics[f"init_speedup/{name}"])


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    # whether this suite's CPU kernels ran (fused fake quantization; else torch operations)
    info["cpu_kernels"] = native.library() is not None
    return info


PARTS = ("init", "kernels", "time", "released", "reference", "memory", "detector")


def run(mode: str, device_name: str, results_dir: str | None, out: str | None, command: str | None = None,
        skip: tuple[str, ...] = (), threads: int | None = None, malloc: str = "keep",
        ref: str | None = None, released: dict[str, int] | None = None) -> dict[str, Any]:
    device = torch.device(device_name)
    plan = plan_for(mode, device_name)
    if threads is not None:
        plan = dataclass_replace(plan, threads=threads)
    if released:  # figure 2's image counts / rounds from the command line
        plan = dataclass_replace(plan, **released)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    unknown = set(skip) - set(PARTS)
    if unknown:
        raise ValueError(f"--skip: unknown part(s) {sorted(unknown)}; parts: {', '.join(PARTS)}")
    metrics: dict[str, float] = {}
    raw: dict[str, Any] = {"load_before": list(os.getloadavg()), "clock": clock_for(device)}
    if device.type == "cpu" and malloc == "keep":
        raw["malloc"] = keep_freed_memory()
    else:
        raw["malloc"] = {"applied": False, "why": "GPU run" if device.type != "cpu" else "--malloc default"}
    t0 = time.perf_counter()
    _say(f"perf benchmark, mode {plan.mode}, device {device} ({torch.get_num_threads()} threads, "
         f"load average {raw['load_before'][0]:.1f}, freed memory kept: {raw['malloc']['applied']})")
    with tempfile.TemporaryDirectory(prefix="qwt-perf-") as tmp:
        state_dir = Path(tmp)
        figure2: ReleasedFigure | None = None
        if "released" not in skip:  # first: on two cores the released side runs beside the rest
            if plan.rel_repeats:
                figure2 = ReleasedFigure(plan, device, ref, _say, _show)
                figure2.start(raw)
            else:
                raw["released_skipped"] = (f"skipped: not run in mode {plan.mode} "
                                           "(the released code runs the real models only)")
                _say(f"[released] {raw['released_skipped']}")
        try:
            if "init" not in skip:
                init_figure(plan, device, metrics, raw)
            if "kernels" not in skip:
                half_kernels(plan, device, raw)
            if "time" not in skip:
                for case in plan.cases:
                    time_case(case, plan, device, state_dir, metrics, raw)
            if "reference" not in skip:
                reference_time(plan, device, metrics, raw)
            if "memory" not in skip:
                memory_figures(plan, device, state_dir, metrics, raw)
            if "detector" not in skip:
                detector_memory(plan, device, state_dir, metrics, raw)
        finally:
            if figure2 is not None:
                figure2.finish(metrics)
    raw["load_after"] = list(os.getloadavg())
    raw["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # (Linux: KiB)
    total = time.perf_counter() - t0
    config = {"mode": plan.mode, "plan": report.plan_dict(plan), "machine": machine(device),
              "store": flat_store(device), "time_store": TIME_STORE, "solver": OUR_SOLVER, "raw": raw}
    rec = make_record(suite="perf", model="perf", method="bench", w_bits=4, a_bits=4, metrics=metrics,
                      images=plan.images, partial=plan.mode in ("tiny", "quick"), seed=0, config=config,
                      times={"total_s": total}, command=command, device=str(device))
    if results_dir is not None:
        path = write_record(rec, results_dir)
        _say(f"record {path}")
    if out is not None and results_dir is not None:
        report.render_file(results_dir, out)
        _say(f"wrote {out}")
    _say(f"perf benchmark done in {total:.0f}s")
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf.run", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", dest="mode", const="quick", help="fewer images, 1 repeat")
    g.add_argument("--full", action="store_const", dest="mode", const="full", help="more images and repeats")
    g.add_argument("--tiny", action="store_const", dest="mode", const="tiny", help="tiny models (smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--results-dir", default=str(RECORDS_DIR), help="records root (written to <dir>/perf/)")
    ap.add_argument("--out", default=str(OUT), help="the rendered table")
    ap.add_argument("--skip", default="", help=f"comma-separated parts to skip: {','.join(PARTS)}")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 on CPU, where CPU seconds of several threads on a shared "
                         "machine count their spin-waits; torch's default on GPU)")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="CPU: 'keep' tells glibc to keep freed memory for reuse (measure the computation, not "
                         "page faults; see benchmarks/perf/measure.py), 'default' leaves glibc as it is")
    ap.add_argument("--ref", default="", help="QwT-cls-RepQ-ViT folder: figure 2 times the released code beside "
                    "this suite's default path (make bench REF=...); without it figure 2 is skipped")
    ap.add_argument("--released-calib", type=int, default=None, metavar="N",
                    help="figure 2: RepQ-ViT calibration images (default: the mode's; the reference's batch is 32)")
    ap.add_argument("--released-images", type=int, default=None, metavar="N",
                    help="figure 2: QwT images (default: the mode's; a multiple of the batch, 32)")
    ap.add_argument("--released-repeats", type=int, default=None, metavar="N",
                    help="figure 2: interleaved rounds per contender (>= 2: the first is the memory round)")
    ap.add_argument("--render-only", action="store_true", help="only re-render --out from the newest record")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda requested but CUDA is not available (use --device cpu)", file=sys.stderr)
        return 2
    released = {k: v for k, v in (("rel_calib_images", args.released_calib), ("rel_images", args.released_images),
                                  ("rel_repeats", args.released_repeats)) if v is not None}
    if any(v < 1 for v in released.values()):
        print("error: --released-calib, --released-images and --released-repeats must be >= 1", file=sys.stderr)
        return 2
    plan = dataclass_replace(plan_for(args.mode or "default", args.device), **released)
    if plan.rel_images % batch_of(plan):
        print(f"error: --released-images {plan.rel_images} must be a multiple of the QwT batch, {batch_of(plan)} "
              "(the released code drops the rest)", file=sys.stderr)
        return 2
    if args.ref:
        from benchmarks.parity.run import BadInput, check_ref
        try:
            check_ref(args.ref)
        except BadInput as e:
            print(f"error: --ref: {e}", file=sys.stderr)
            return 2
    if args.render_only:
        report.render_file(args.results_dir, args.out)
        print(f"wrote {args.out}")
        return 0
    command = " ".join(["python -m benchmarks.perf.run",
                        shlex.join(argv if argv is not None else sys.argv[1:])]).strip()
    run(args.mode or "default", args.device, args.results_dir, args.out, command,
        tuple(s for s in args.skip.split(",") if s), args.threads, args.malloc, args.ref or None, released)
    return 0


if __name__ == "__main__":
    sys.exit(main())
