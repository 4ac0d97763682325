"""Stage by stage: the detection reference's dump against the suite's run (same weights and inputs).

The rows and measures of ``make parity`` (:mod:`benchmarks.parity.compare`), on the Swin backbone:

* FP backbone outputs, all four stages (max over stages of rel = max|a - b| / max|b| <= 1e-5);
* the plan of the backbone (w_bits, a_bits, channel-wise input per layer, the 8-bit patch-embedding
  input included) and of the neck / RPN / RoI heads against the reference's ``quant_model`` on the
  same module tree (identical);
* quantizers after the first pass and at the end (delta <= 1e-5, integer zero points exact,
  RepQ-ViT's fractional zero points <= 1e-5); the reparameterized LayerNorm / next Linear (<= 1e-5);
  the RepQ-ViT backbone state dict (<= 1e-5);
* backbone outputs after RepQ-ViT (rel <= 1e-4 on each stage);
* QwT teacher-forced: rows solved the reference's way (<= 1e-5 where cond(XᵀX) <= 1e10), keep/zero
  per block (identical, with ``start_block``), W, b (<= 1e-2 on kept blocks with cond < 1e7), R²
  (information), as ``make parity`` decides them;
* backbone outputs after RepQ-ViT + QwT with the reference's W, b installed (rel <= 1e-4).
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from benchmarks.parity.compare import (Row, fmt, plan_row, quant_row, reparam_row, rel_inf, state_dict_row,
                                       teacher_forced_rows, verdict)
from benchmarks.parity.suite import plan_of

from .suite import DetSuiteRun

TOL = {"fp_outputs": 1e-5, "repq_outputs": 1e-4, "qwt_outputs": 1e-4}


def outputs_row(stage: str, got: Sequence[Tensor], ref: Sequence[Tensor], tol: float) -> Row:
    """The worst stage's rel = max|a - b| / max|b| over the backbone's outputs."""
    errs = [rel_inf(g, r) for g, r in zip(got, ref)]
    if len(got) != len(ref):
        errs.append(float("inf"))
    worst = max(errs, default=float("inf"))
    shapes = " ".join("x".join(str(d) for d in r.shape[1:]) for r in ref)
    return Row(stage, worst, f"rel <= {tol:.0e} per stage", verdict(worst <= tol),
               "stages " + " ".join(f"{k}:{fmt(e)}" for k, e in enumerate(errs)) + f" ({shapes})")


def named_plan_row(stage: str, ref_plan: dict[str, Any], suite_plan: dict[str, Any]) -> Row:
    row = plan_row({k: tuple(v) for k, v in ref_plan.items()}, {k: tuple(v) for k, v in suite_plan.items()})
    row.stage = stage
    if not ref_plan and not suite_plan:
        row.verdict, row.detail = "FAIL", "no layers on either side"
    return row


def compare(ref: dict[str, Any], run: DetSuiteRun, suite_det_plan: dict[str, Any] | None) -> list[Row]:
    """Every stage's row: ``ref`` a dump in the suite's names (:func:`.suite.align`), ``run`` the suite
    on its tensors, ``suite_det_plan`` the suite's plan of the neck and heads (None: not compared)."""
    out = ref["outputs"]
    rows = [outputs_row("FP backbone outputs", run.fp, out["fp"], TOL["fp_outputs"]),
            named_plan_row("plan: backbone (w_bits, a_bits, channel-wise input)", plan_of(ref["quant_initial"]),
                           run.plan)]
    if suite_det_plan is not None:
        rows.append(named_plan_row("plan: neck, RPN, RoI heads (reference quant_model, same tree)",
                                   ref["detector_plan"], suite_det_plan))
    rows += [quant_row("quantizers after the first pass", ref["quant_initial"], run.quant_initial),
             reparam_row(ref["reparam"], run.reparam),
             quant_row("quantizers, final", ref["quant_final"], run.quant_final),
             state_dict_row(ref["repq_state_dict"], run.state_dict),
             outputs_row("RepQ-ViT backbone outputs", run.repq, out["repq"], TOL["repq_outputs"])]
    rows += teacher_forced_rows(ref["qwt"], run.teacher_forced, ref["settings"]["start_block"])
    rows.append(outputs_row("RepQ+QwT backbone outputs, reference W,b installed", run.repq_qwt_ref_wb,
                            out["repq_qwt"], TOL["qwt_outputs"]))
    return rows
