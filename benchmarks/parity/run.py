"""``make parity REF=<QwT-cls-RepQ-ViT>``: the released reference and this suite on the same seeded
weights and inputs, stage by stage (see docs/parity.md).

    python -m benchmarks.parity --ref REF [--models deit_tiny,swin_tiny,resnet18] [--w-bits 4 --a-bits 4]
        [--seed 0] [--start-block 0] [--kernel-size 1] [--factor 64] [--n-calib 8 --n-qwt 32 --n-test 16]
        [--batch-size 8] [--side-env DIR] [--keep-dumps DIR] [--json FILE]
    python -m benchmarks.parity --dumps DUMP...      # compare dumps written before (--keep-dumps)

For each model: the reference runs in a subprocess of the side environment (timm 0.4.12 first on
PYTHONPATH, :mod:`benchmarks.parity.reference`) and writes a dump; the suite runs here on the
dump's weights and inputs (:mod:`benchmarks.parity.suite`); :mod:`benchmarks.parity.compare` gives
one row per stage. Prints the table, then ``parity: N deciding rows failed of M (...)``.
Exit status: 0 when no deciding row failed, 1 when one did, 2 on bad input (one line: a missing or
wrong REF, an unknown model, a side environment that cannot be built). Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import ast
import collections
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from .reference import REFERENCE_SOURCE, SCRIPTS, missing_files
from .table import ModelResult, render, summary, write_json

ROOT = Path(__file__).resolve().parents[2]  # the project checkout this tool compares
NEEDS_REF = f"parity: needs REF=<path to QwT-cls-RepQ-ViT> ({REFERENCE_SOURCE})"
DEFAULT_MODELS = "deit_tiny,swin_tiny,resnet18"


class BadInput(ValueError):
    """Bad input: one line for the user, exit status 2."""


def say(msg: str) -> None:
    print(f"[parity] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parity",
                                description="The released QwT reference and this suite, stage by stage.")
    p.add_argument("--ref", default="", help="QwT-cls-RepQ-ViT folder (make: REF=...)")
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list of registry names (default {DEFAULT_MODELS})")
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-block", type=int, default=0, help="QwT start_block (reference default 0)")
    p.add_argument("--kernel-size", type=int, default=1, help="ResNet QwT conv kernel (reference default 1)")
    p.add_argument("--factor", type=int, default=64, help="ResNet QwT groups = C // factor (reference default 64)")
    p.add_argument("--n-calib", type=int, default=8, help="RepQ-ViT calibration images (reference: a batch of 32)")
    p.add_argument("--n-qwt", type=int, default=32, help="QwT images (reference: 512)")
    p.add_argument("--n-test", type=int, default=16, help="test images for the logits")
    p.add_argument("--batch-size", type=int, default=8, help="QwT / eval batch size (reference: 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides (the rows check "
                   "re-solves the reference's fp32 system: keep both sides alike)")
    p.add_argument("--side-env", default=None, help="folder for timm 0.4.12 (default ~/.cache/qwt/parity/timm-0.4.12; "
                   "installed with pip when missing, reused when present)")
    p.add_argument("--keep-dumps", default=None, help="keep the reference's dumps in this folder (100-450 MB each)")
    p.add_argument("--dumps", nargs="+", default=None, help="compare these dumps instead of running the reference")
    p.add_argument("--qwt-solver", choices=("reference", "streaming", "lstsq"), default="reference",
                   help="the suite's QwT solver (default: its default, the reference's fp32 solve on all rows); "
                        "streaming / lstsq show where those named options depart from the reference")
    p.add_argument("--json", default=None, help="write the rows and timings here")
    p.add_argument("--traceback", action="store_true", help="print the full traceback of a failed side")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ input checks
def check_ref_folder(ref: str, needs: str, folder: str, missing: Callable[[Path], list[str]]) -> Path:
    """``REF`` as a resolved path, or :class:`BadInput` with one line: ``needs`` (``"<tool>: needs ..."``)
    when it is empty, else what is wrong with it (not a folder, not ``folder``: ``missing`` names the
    first expected file it lacks)."""
    tool, _, what = needs.partition(": ")
    if not ref:
        raise BadInput(needs)
    path = Path(ref).expanduser().resolve()
    if not path.is_dir():
        raise BadInput(f"{tool}: REF={ref} is not a folder; {what}")
    lacks = missing(path)
    if lacks:
        raise BadInput(f"{tool}: REF={ref} is not {folder} (no {lacks[0]}); {what}")
    return path


def check_ref(ref: str) -> Path:
    return check_ref_folder(ref, NEEDS_REF, "QwT-cls-RepQ-ViT", missing_files)


def script_models(script: Path) -> list[str] | None:
    """The ``--model`` choices of a reference script (None when they cannot be read)."""
    for node in ast.walk(ast.parse(script.read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--model"):
            for kw in node.keywords:
                if kw.arg == "choices":
                    try:
                        return list(ast.literal_eval(kw.value))
                    except ValueError:
                        return None
    return None


def resolve_models(names: str, ref: Path | None) -> list[tuple[str, str, str]]:
    """(registry name, family, timm arch) per model; each must be registered here and, with a REF,
    supported by the reference script of its family."""
    from classification.registry import UnknownModelError, get
    out: list[tuple[str, str, str]] = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        try:
            spec = get(name)
        except UnknownModelError as e:
            raise BadInput(f"parity: {e}") from None
        if ref is not None:
            choices = script_models(ref / SCRIPTS[spec.family])
            if choices is not None and name not in choices:
                raise BadInput(f"parity: the reference's {SCRIPTS[spec.family]} does not run {name} "
                               f"(it runs {', '.join(choices)})")
        out.append((name, spec.family, spec.arch))
    if not out:
        raise BadInput("parity: --models is empty")
    return out


# ------------------------------------------------------------------------------ the two sides
def run_reference(a: argparse.Namespace, ref: Path, side: Path, model: tuple[str, str, str], out: Path) -> str | None:
    """The reference side in its own process; None on success, else the last line it printed."""
    name, family, arch = model
    cmd = [sys.executable, "-m", "benchmarks.parity.reference", "--ref", str(ref), "--family", family,
           "--model", name, "--arch", arch, "--out", str(out), "--w-bits", str(a.w_bits), "--a-bits", str(a.a_bits),
           "--seed", str(a.seed), "--n-calib", str(a.n_calib), "--n-qwt", str(a.n_qwt), "--n-test", str(a.n_test),
           "--batch-size", str(a.batch_size), "--start-block", str(a.start_block),
           "--kernel-size", str(a.kernel_size), "--factor", str(a.factor), "--threads", str(a.threads)]
    return run_side(cmd, [side])


def run_side(cmd: list[str], pythonpath: list[Path], echo: Callable[[str], bool] = lambda line: True) -> str | None:
    """Run one side's process (``pythonpath`` first, then this checkout), its output to stderr where
    ``echo(line)``; None on success, else ``exit N: <its last line>``."""
    path = os.pathsep.join([*map(str, pythonpath), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = dict(os.environ, PYTHONPATH=path, TQDM_DISABLE="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    tail: collections.deque[str] = collections.deque(maxlen=40)
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if echo(line) or proc.poll() is not None:
                sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
    if proc.returncode == 0:
        return None
    return f"exit {proc.returncode}: {tail[-1] if tail else 'no output'}"


def one_line(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if str(ROOT) in f.filename]
    where = f" (at {Path(ours[-1].filename).relative_to(ROOT)}:{ours[-1].lineno})" if ours else ""
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}{where}"


def compare_dump(dump_path: Path, a: argparse.Namespace, label: str) -> ModelResult:
    from .compare import Row, compare
    from .suite import run_on_dump
    t0 = time.perf_counter()
    try:
        dump = torch.load(dump_path, map_location="cpu", weights_only=False)
        with tempfile.TemporaryDirectory(prefix="qwt_parity_") as work:
            ref, run, with_ref = run_on_dump(dump, Path(work), a.qwt_solver)
        rows = compare(ref, run, with_ref)
        return ModelResult(dump["settings"]["model"], rows, {"suite": time.perf_counter() - t0})
    except Exception as e:  # a crash of the suite's side is one FAIL row of that model
        if a.traceback:
            traceback.print_exc()
        say(f"{label}: the suite's side failed: {one_line(e)}")
        return ModelResult(label, [Row("suite run", None, "-", "FAIL", one_line(e))],
                           {"suite": time.perf_counter() - t0})


def run_models(a: argparse.Namespace, ref: Path, side: Path, models: list[tuple[str, str, str]]) -> list[ModelResult]:
    from .compare import Row
    results = []
    keep = Path(a.keep_dumps).resolve() if a.keep_dumps else None
    with tempfile.TemporaryDirectory(prefix="qwt_parity_dumps_") as tmp:
        for model in models:
            name = model[0]
            dump = (keep or Path(tmp)) / f"{name}_w{a.w_bits}a{a.a_bits}_s{a.seed}.pt"
            dump.parent.mkdir(parents=True, exist_ok=True)
            say(f"{name}: the reference (side environment {side})")
            t0 = time.perf_counter()
            failed = run_reference(a, ref, side, model, dump)
            took = {"reference": time.perf_counter() - t0}
            if failed:
                results.append(ModelResult(name, [Row("reference run", None, "-", "FAIL", failed)], took))
                continue
            say(f"{name}: the suite on the same weights and inputs")
            res = compare_dump(dump, a, name)
            res.seconds = {**took, "suite": res.seconds["suite"]}
            results.append(res)
            if keep is None:
                dump.unlink(missing_ok=True)
    return results


def keeping_threads(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``body(args)`` with torch's thread count restored afterwards (the tools set ``--threads``)."""
    threads = torch.get_num_threads()
    try:
        return body(args)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    return keeping_threads(_main, parse_args(argv))


def _main(a: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    torch.set_num_threads(a.threads)
    ref = side = None
    try:
        if a.dumps:
            missing = [d for d in a.dumps if not Path(d).is_file()]
            if missing:
                raise BadInput(f"parity: no dump {missing[0]}")
        else:
            ref = check_ref(a.ref)
            models = resolve_models(a.models, ref)
            if a.n_qwt % a.batch_size:
                raise BadInput(f"parity: --n-qwt {a.n_qwt} must be a multiple of --batch-size {a.batch_size}")
            from .side_env import SideEnvError, ensure
            try:
                side = ensure(Path(a.side_env) if a.side_env else None)
            except SideEnvError as e:
                raise BadInput(f"parity: {e}") from None
    except BadInput as e:
        print(str(e), flush=True)
        return 2
    if a.dumps:
        results = [compare_dump(Path(d), a, Path(d).stem) for d in a.dumps]
    else:
        say(f"reference {ref}; suite {ROOT}; W{a.w_bits}/A{a.a_bits}, seed {a.seed}; {a.n_calib} calibration, "
            f"{a.n_qwt} QwT, {a.n_test} test images")
        results = run_models(a, ref, side, models)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    print()
    print(render(results))
    if a.json:
        write_json(a.json, a, results, seconds, "benchmarks.parity", ref=ref, side_env=side)
    print(f"total {seconds:.0f} s")
    print(summary(results), flush=True)
    return 1 if any(r.failed for r in results) else 0
