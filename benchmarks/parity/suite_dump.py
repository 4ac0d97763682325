"""A dump written by the suite itself, in the reference's schema: the comparison's own test.

Compared with :mod:`benchmarks.parity.compare`, such a dump must pass every deciding row, and a
perturbed one must fail the matching row (``tests/benchmarks/test_parity.py``); no reference code
is needed, so it runs on tiny models in CI. Weights and inputs are seeded as the reference side
seeds them (:func:`benchmarks.parity.reference.perturb_norms`, :func:`~benchmarks.parity.reference.seeded_inputs`)
with ``torch.manual_seed(seed)`` before the suite's constructor. Its "reference" QwT is the
reference's algorithm on the suite's blocks: block k's rows solved the reference's way, kept when
that R² is positive and k >= start_block, and propagated as the reference propagates.

    python -m benchmarks.parity.suite_dump --model deit_tiny --tiny --out DUMP
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from classification.build import construct, resolve_spec

from .reference import perturb_norms, seeded_inputs
from .suite import BlockFit, evaluate_with, run_suite


def suite_dump(model: str, tiny: bool = True, w_bits: int = 4, a_bits: int = 4, seed: int = 0, n_calib: int = 4,
               n_qwt: int = 8, n_test: int = 8, batch_size: int = 4, start_block: int = 0, kernel_size: int = 1,
               factor: int = 64) -> dict[str, Any]:
    """Every stage of the suite on seeded weights and inputs, as a dump (see the module docstring)."""
    t0 = time.perf_counter()
    spec = resolve_spec(model, tiny=tiny)
    torch.manual_seed(seed)
    net = construct(spec).eval()
    perturb_norms(net, seed)
    calib, qwt_x, test_x = seeded_inputs(seed, n_calib, n_qwt, n_test, size=spec.input_size)
    settings: dict[str, Any] = {"model": model, "family": spec.family, "arch": spec.arch, "script": None, "tiny": tiny,
                "image_size": spec.input_size, "w_bits": w_bits, "a_bits": a_bits, "seed": seed,
                "n_calib": n_calib, "n_qwt": n_qwt, "n_test": n_test, "batch_size": batch_size,
                "start_block": start_block, "kernel_size": kernel_size, "factor": factor,
                "threads": torch.get_num_threads(), "torch": torch.__version__, "writer": "suite"}
    fp_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    qwt: list[dict[str, Any]] = []

    def self_reference(k: int, fit: BlockFit) -> tuple[Tensor, Tensor, int | None]:
        assert fit.rows_weight is not None and fit.rows_bias is not None and fit.rows_r2 is not None
        kept = fit.rows_r2 > 0 and k >= start_block
        weight = fit.rows_weight if kept else torch.zeros_like(fit.rows_weight)
        bias = fit.rows_bias if kept else torch.zeros_like(fit.rows_bias)
        qwt.append({"name": fit.name, "W": fit.rows_weight, "b": fit.rows_bias, "r2": fit.rows_r2, "kept": kept,
                    "weight": weight, "bias": bias, "groups": fit.groups,
                    "kernel_size": kernel_size if fit.groups is not None else None})
        return weight, bias, fit.groups

    run = run_suite(net, spec, settings, calib, qwt_x, test_x, self_reference)
    qwt_logits = evaluate_with(run, [(b["weight"], b["bias"]) for b in qwt], test_x, batch_size)
    settings["seconds"] = time.perf_counter() - t0
    return {"settings": settings, "fp_state_dict": fp_state, "calib": calib, "qwt_inputs": qwt_x,
            "test_inputs": test_x, "quant_initial": run.quant_initial, "quant_final": run.quant_final,
            "reparam": run.reparam, "repq_state_dict": run.state_dict, "qwt": qwt,
            "logits": {"fp": run.fp_logits, "repq": run.repq_logits, "repq_qwt": qwt_logits}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a parity dump from the suite itself.")
    p.add_argument("--model", required=True)
    p.add_argument("--tiny", action="store_true", help="the registry's tiny variant")
    p.add_argument("--out", required=True)
    p.add_argument("--w-bits", type=int, default=4)
    p.add_argument("--a-bits", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-block", type=int, default=0)
    p.add_argument("--factor", type=int, default=64)
    a = p.parse_args(argv)
    dump = suite_dump(a.model, a.tiny, a.w_bits, a.a_bits, a.seed, start_block=a.start_block, factor=a.factor)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dump, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
