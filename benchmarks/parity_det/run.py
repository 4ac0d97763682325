"""``make parity-det REF=<QwT-det-RepQ-ViT>``: the released detection reference's Swin backbone,
RepQ-ViT and QwT code and this suite's default detection path on the same seeded weights and
inputs, stage by stage (see docs/parity_det.md).

    python -m benchmarks.parity_det --ref REF [--archs swin_t,swin_s] [--w-bits 4 --a-bits 4] [--seed 0]
        [--start-block 0[,3]] [--det-size 256x352] [--n-qwt 16 --batch-size 8] [--keep-dumps DIR] [--json FILE]
    python -m benchmarks.parity_det --dumps DUMP...      # compare dumps written before (--keep-dumps)

For each backbone: the suite builds the detector of the registered config for its plan and a
skeleton of its neck and heads; the reference runs in a subprocess behind the stand-ins of
:mod:`benchmarks.parity_det.standins` (:mod:`benchmarks.parity_det.reference`) and writes a dump; the
suite runs here on the dump's weights and inputs (:mod:`benchmarks.parity_det.suite`);
:mod:`benchmarks.parity_det.compare` gives one row per stage. Prints the table, then
``parity-det: N deciding rows failed of M (...)``. Exit status: 0 when no deciding row failed, 1
when one did, 2 on bad input (one line). Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmarks.parity.compare import Row
from benchmarks.parity.run import BadInput, check_ref_folder, keeping_threads, one_line, run_side
from benchmarks.parity.table import ModelResult, render, write_json
from benchmarks.parity.table import summary as table_summary

from .reference import ARCHS, REFERENCE_SOURCE, missing_files

ROOT = Path(__file__).resolve().parents[2]
NEEDS_REF = f"parity-det: needs REF=<path to QwT-det-RepQ-ViT> ({REFERENCE_SOURCE})"
PATCH, WINDOW = 4, 7  # Swin-T/S patch size and window


def say(msg: str) -> None:
    print(f"[parity-det] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity_det",
                                description="The released QwT-det reference and this suite, stage by stage.")
    p.add_argument("--ref", default="", help="QwT-det-RepQ-ViT folder (make: REF=...)")
    p.add_argument("--archs", default="swin_t", help=f"comma list of backbones ({', '.join(ARCHS)}; default swin_t)")
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-block", default="0",
                   help="QwT start_block, or a comma list (one calibration, QwT and a result per start_block; "
                        "the reference's main() uses 0)")
    p.add_argument("--det-size", default="256x352",
                   help="HxW of the calibration and test image (feature maps must not be a multiple of the window)")
    p.add_argument("--n-qwt", type=int, default=16, help="QwT images, 224x224 (reference: 512)")
    p.add_argument("--batch-size", type=int, default=8, help="QwT batch size")
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides")
    p.add_argument("--no-detector-plan", action="store_true", help="skip the neck / heads plan row")
    p.add_argument("--keep-dumps", default=None, help="keep the reference's dumps in this folder")
    p.add_argument("--dumps", nargs="+", default=None, help="compare these dumps instead of running the reference")
    p.add_argument("--json", default=None, help="write the rows and timings here")
    p.add_argument("--traceback", action="store_true", help="print the full traceback of a failed side")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ input checks
def check_ref(ref: str) -> Path:
    return check_ref_folder(ref, NEEDS_REF, "QwT-det-RepQ-ViT", missing_files)


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` whose stage-0 token grid (ceil(H/4) x ceil(W/4)) is not a multiple of the window."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInput(f"parity-det: --det-size {text!r} is not HxW (e.g. 256x352)") from None
    if h < 32 or w < 32:
        raise BadInput(f"parity-det: --det-size {text} is too small (at least 32x32)")
    gh, gw = -(-h // PATCH), -(-w // PATCH)
    if gh % WINDOW == 0 and gw % WINDOW == 0:
        raise BadInput(f"parity-det: --det-size {text} gives a {gh}x{gw} token grid, a multiple of the window "
                       f"{WINDOW}: the eval padding would not be exercised (e.g. use 256x352)")
    return h, w


def resolve_archs(text: str) -> list[str]:
    archs = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHS]
    if unknown or not archs:
        raise BadInput(f"parity-det: unknown backbone {unknown[0] if unknown else '(none)'}; "
                       f"known: {', '.join(ARCHS)}")
    return archs


# ------------------------------------------------------------------------------ the two sides
def label(settings: dict[str, Any]) -> str:
    s = settings
    return f"{s['arch']} W{s['w_bits']}/A{s['a_bits']} seed {s['seed']} start_block {s['start_block']}"


def run_reference(a: argparse.Namespace, ref: Path, arch: str, hw: tuple[int, int], skeleton: Path | None,
                  out: Path, start_blocks: list[int]) -> str | None:
    """The reference side in its own process; None on success, else the last line it printed."""
    cmd = [sys.executable, "-m", "benchmarks.parity_det.reference", "--ref", str(ref), "--arch", arch,
           "--out", str(out), "--w-bits", str(a.w_bits), "--a-bits", str(a.a_bits), "--seed", str(a.seed),
           "--det-h", str(hw[0]), "--det-w", str(hw[1]), "--n-qwt", str(a.n_qwt),
           "--batch-size", str(a.batch_size), "--start-blocks", ",".join(map(str, start_blocks)),
           "--threads", str(a.threads)]
    if skeleton is not None:
        cmd += ["--skeleton", str(skeleton)]
    return run_side(cmd, [], echo=lambda line: line.startswith(("[parity-det]", "Traceback", "block ")))


def compare_dump(dump_path: Path, a: argparse.Namespace, det_plan: dict[str, Any] | None,
                 fallback: str) -> ModelResult:
    from .compare import compare
    from .suite import run_on_dump
    t0 = time.perf_counter()
    name = fallback
    try:
        dump = torch.load(dump_path, map_location="cpu", weights_only=False)
        name = label(dump["settings"])
        ref, run = run_on_dump(dump)
        rows = compare(ref, run, det_plan)
        secs = {"reference": sum(dump.get("seconds", {}).values()), "suite": time.perf_counter() - t0}
        return ModelResult(name, rows, secs)
    except Exception as e:  # a crash of the suite's side is one FAIL row
        if a.traceback:
            traceback.print_exc()
        say(f"{name}: the suite's side failed: {one_line(e)}")
        return ModelResult(name, [Row("suite run", None, "-", "FAIL", one_line(e))],
                           {"suite": time.perf_counter() - t0})


def run_archs(a: argparse.Namespace, ref: Path, archs: list[str], hw: tuple[int, int],
              start_blocks: list[int]) -> list[ModelResult]:
    from .suite import detector_plan
    results = []
    keep = Path(a.keep_dumps).resolve() if a.keep_dumps else None
    with tempfile.TemporaryDirectory(prefix="qwt_parity_det_") as tmp:
        for arch in archs:
            base = f"{arch} W{a.w_bits}/A{a.a_bits} seed {a.seed}"
            det_plan, skel_path = None, None
            if not a.no_detector_plan:
                say(f"{base}: the suite's detector (plan, neck / heads skeleton)")
                det_plan, skel = detector_plan(arch, a.w_bits, a.a_bits)
                skel_path = Path(tmp) / f"{arch}_skeleton.json"
                skel_path.write_text(json.dumps(skel))
            folder = keep or Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            template = str(folder / f"{arch}_w{a.w_bits}a{a.a_bits}_s{a.seed}_b{{start_block}}.pt")
            say(f"{base}: the reference ({ref})")
            t0 = time.perf_counter()
            failed = run_reference(a, ref, arch, hw, skel_path, Path(template), start_blocks)
            took = time.perf_counter() - t0
            for sb in start_blocks:
                name = f"{base} start_block {sb}"
                dump = Path(template.replace("{start_block}", str(sb)))
                if failed or not dump.is_file():
                    results.append(ModelResult(name, [Row("reference run", None, "-", "FAIL",
                                                          failed or f"no dump {dump.name}")], {"reference": took}))
                    continue
                say(f"{name}: the suite on the same weights and inputs")
                res = compare_dump(dump, a, det_plan, name)
                res.seconds = {"reference": took / len(start_blocks), "suite": res.seconds["suite"]}
                results.append(res)
                if keep is None:
                    dump.unlink(missing_ok=True)
    return results


def summary(results: list[ModelResult]) -> str:
    """``parity-det: N deciding rows failed of M (label failed/deciding, ...)``."""
    return table_summary(results, "parity-det")


def main(argv: list[str] | None = None) -> int:
    return keeping_threads(_main, parse_args(argv))


def _main(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    ref = None
    try:
        if a.dumps:
            missing = [d for d in a.dumps if not Path(d).is_file()]
            if missing:
                raise BadInput(f"parity-det: no dump {missing[0]}")
        else:
            ref = check_ref(a.ref)
            archs = resolve_archs(a.archs)
            hw = parse_size(a.det_size)
            if a.n_qwt < 1 or a.batch_size < 1 or a.n_qwt % a.batch_size:
                raise BadInput(f"parity-det: --n-qwt {a.n_qwt} must be a positive multiple of --batch-size "
                               f"{a.batch_size}")
            try:
                start_blocks = sorted({int(v) for v in str(a.start_block).split(",")})
            except ValueError:
                raise BadInput(f"parity-det: --start-block {a.start_block!r} "
                               "is not an integer or a comma list") from None
            if start_blocks[0] < 0:
                raise BadInput(f"parity-det: --start-block must be >= 0, got {a.start_block}")
            for bits in (a.w_bits, a.a_bits):
                if not 2 <= bits <= 8:
                    raise BadInput(f"parity-det: bit widths must be 2..8 (the reference's quantizers), got {bits}")
    except BadInput as e:
        print(str(e), flush=True)
        return 2
    if a.dumps:
        results = [compare_dump(Path(d), a, None, Path(d).stem) for d in a.dumps]
    else:
        say(f"reference {ref}; suite {ROOT}; W{a.w_bits}/A{a.a_bits}, seed {a.seed}, start_block {a.start_block}; "
            f"one {hw[0]}x{hw[1]} calibration image, {a.n_qwt} QwT images")
        results = run_archs(a, ref, archs, hw, start_blocks)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    print()
    print(render(results))
    if a.json:
        write_json(a.json, a, results, seconds, "benchmarks.parity_det", "parity-det", ref=ref)
    print(f"total {seconds:.0f} s")
    print(summary(results), flush=True)
    return 1 if any(r.failed for r in results) else 0
