"""Where does a demo verdict move between machines: the kernels, or the QwT solve?

    python -m benchmarks.demo.solve_spread run --model demo_swin --bits 6 --seed 0 --out DIR
    env ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \\
        python -m benchmarks.demo.solve_spread run --model demo_swin --bits 6 --seed 0 --out DIR_CAPPED
    python -m benchmarks.demo.solve_spread compare DIR DIR_CAPPED

``run`` calls the demo's classification pipeline twice for one (model, bits, seed): with the
reference's fp32 solve and with the float64 solve (``lstsq``), saving each calibrated state and
record. ``compare`` reads two such folders (e.g. the default ISA and a capped one: another rounding
in every kernel, as on another machine) and prints, per QwT block, the relative difference of the
installed W between the two runs for each solver, next to the difference of the RepQ-ViT state
(quantizer ranges and weights, no solve involved), and the KL(FP‖Q) of each method in both runs.
A W that moves far more with the fp32 solve than with the float64 one, on the same RepQ-ViT
state, is the fp32 inverse amplifying the kernels' last bits.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

SOLVERS = ("reference", "lstsq")


def run(model: str, bits: int, seed: int, out: Path) -> None:
    from classification.pipeline import ExperimentConfig, run_experiment
    from qwt_core import QwTConfig
    from qwt_core.qwt.config import SOLVER_PRESETS

    from . import data
    from .models import CHECKPOINTS, CLASSIFIERS, register_classifiers

    data.build()
    register_classifiers()
    base = CLASSIFIERS[model].methods[1]  # "repq" / "percentile"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    for solver in SOLVERS:
        cfg = ExperimentConfig(
            model=model, data_dir=str(data.DEFAULT_ROOT), w_bits=bits, a_bits=bits,
            methods=("fp", base, base + "+qwt"), checkpoint=str(CHECKPOINTS / f"{model}.pth"), workers=0,
            device="cpu", seed=seed, calib_size=32, qwt_size=256, results_dir=str(out / f"records_{solver}"),
            suite="demo", command="solve_spread", progress=False, qwt=QwTConfig(**SOLVER_PRESETS[solver]),
            save_state=str(out / f"state_{solver}.pt"))
        recs = run_experiment(cfg)
        kl = {r["method"]: r["metrics"].get("kl_fp") for r in recs}
        (out / f"kl_{solver}.json").write_text(json.dumps(kl, indent=1))
        print(f"{solver}: KL(FP‖Q) {kl}")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def compare(a: Path, b: Path) -> None:
    states = {(side, s): torch.load(d / f"state_{s}.pt", weights_only=False)["state_dict"]
              for side, d in (("a", a), ("b", b)) for s in SOLVERS}
    sa, sb = states[("a", "reference")], states[("b", "reference")]
    repq = [k for k in sa
            if ".compensation." not in k and isinstance(sa[k], torch.Tensor) and sa[k].is_floating_point()]
    diff = [_rel(sb[k], sa[k]) for k in repq if sa[k].numel() and sa[k].norm() > 0]
    print(f"RepQ-ViT state (no solve): {sum(d > 0 for d in diff)} of {len(diff)} tensors differ, "
          f"largest relative difference {max(diff):.2e}")
    comps = sorted({k.rsplit(".compensation.", 1)[0] for k in sa if ".compensation.weight" in k})
    print(f"{'block':<24} {'|W| fp32 solve':>14} {'A vs B fp32':>12} {'A vs B f64':>12}")
    for blk in comps:
        key = f"{blk}.compensation.weight"
        w32a, w32b = states[("a", "reference")][key], states[("b", "reference")][key]
        w64a, w64b = states[("a", "lstsq")][key], states[("b", "lstsq")][key]
        d32 = _rel(w32b, w32a) if w32a.norm() > 0 else float(w32b.norm() > 0)
        d64 = _rel(w64b, w64a) if w64a.norm() > 0 else float(w64b.norm() > 0)
        print(f"{blk:<24} {float(w32a.norm()):>14.3e} {d32:>12.2e} {d64:>12.2e}")
    for solver in SOLVERS:
        ka = json.loads((a / f"kl_{solver}.json").read_text())
        kb = json.loads((b / f"kl_{solver}.json").read_text())
        print(f"KL(FP‖Q) {solver}: A {ka} | B {kb}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.demo.solve_spread", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", default="demo_swin")
    r.add_argument("--bits", type=int, default=6)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True, type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.action == "run":
        run(args.model, args.bits, args.seed, args.out)
    else:
        compare(args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
