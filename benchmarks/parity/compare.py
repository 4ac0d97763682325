"""Stage by stage: the reference's dump against the suite's run on the same weights and inputs.

One :class:`Row` per stage; ``PASS`` / ``FAIL`` rows decide, ``INFO`` rows inform. Pure functions
of a dump (in the suite's names, :func:`benchmarks.parity.suite.align`) and a
:class:`~benchmarks.parity.suite.SuiteRun`.

Error measures: tensors ``rel`` = max|a - b| / max|b|; quantizer ranges: max over elements of
|a - b| / |b|; QwT W, b: ||a - b||_F / ||b||_F; integer zero points: exact.

Deciding stages and tolerances:

* FP logits (rel <= 1e-5); the quantization plan (w_bits, a_bits, channel-wise input per layer);
  every quantizer's delta / zero point after the first pass and at the end (delta <= 1e-5; integer
  zero points exact, RepQ-ViT's fractional ones <= 1e-5); the reparameterization (per-channel and
  target ranges, LayerNorm and next Linear after it, <= 1e-5); the RepQ-ViT state dict (<= 1e-5);
  RepQ-ViT logits (rel <= 1e-4 and the same top-1 on every image);
* QwT, teacher-forced (block k fitted on the inputs the reference's compensation of blocks < k
  produces): the suite's regression rows solved the reference's way give the reference's W, b
  (<= 1e-5) wherever XᵀX is not numerically singular (cond <= 1e10); the suite keeps (non-zero) or
  zeroes exactly the blocks the reference does; its W, b are within 1e-2 of the reference's on
  kept blocks with cond(XᵀX) < 1e7 (the fp32 inverse of the reference is accurate to ~6e-8 cond);
* RepQ+QwT logits with the reference's W, b installed in the suite's eval path (rel <= 1e-4, same
  top-1).

Free-running QwT (each block on the suite's own compensated outputs) only informs: on random-weight
W4/A4 models the block-by-block fit is chaotic. Fake quantization turns a last-bit difference of
one block's compensation into whole-step rounding flips in the next block's inputs (in the shared
oracle's measurement, scaling the reference's earlier W by 1 + 2^-22 moved the next DeiT block's W
by 1.7e-3 and the W three blocks later by 3.4e-2), so only a bit-identical fp32 inverse could
match the reference there; the teacher-forced rows test each block on the reference's inputs.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor

from .suite import BlockFit, SuiteRun, plan_of

TOL = {
    "fp_logits": 1e-5,
    "delta": 1e-5,  # also RepQ-ViT's fractional zero points
    "reparam": 1e-5,
    "state_dict": 1e-5,
    "repq_logits": 1e-4,
    "qwt_rows": 1e-5,
    "qwt_wb": 1e-2,
    "qwt_logits": 1e-4,
}
COND_WB = 1e7  # W, b decide below this cond(XᵀX)
SINGULAR_COND = 1e10  # beyond this the reference's fp32 inverse is rounding noise: rows not compared
REPARAM_KEYS = ("s", "z", "s_t", "z_t", "norm_weight", "norm_bias", "weight", "bias")


@dataclass
class Row:
    """One stage: what was measured, against which tolerance, and the verdict (PASS / FAIL / INFO)."""

    stage: str
    measured: float | None
    tolerance: str
    verdict: str
    detail: str = ""

    @property
    def deciding(self) -> bool:
        return self.verdict in ("PASS", "FAIL")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(self.measured, float) and not math.isfinite(self.measured):
            d["measured"] = str(self.measured)
        return d


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e6):
        return str(int(x))
    return f"{x:.2e}" if math.isfinite(x) else str(x)


# ------------------------------------------------------------------------------ measures
def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
    a, b = a.detach().double().cpu().reshape(-1), b.detach().double().cpu().reshape(-1)
    return (a, b) if a.shape == b.shape else None


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def rel_inf(a: Tensor, b: Tensor) -> float:
    """max|a - b| / max|b| (inf when the shapes differ)."""
    p = _pair(a, b)
    if p is None:
        return math.inf
    if not p[1].numel():
        return 0.0
    return _ratio((p[0] - p[1]).abs().max().item(), p[1].abs().max().item())


def rel_elem(a: Tensor, b: Tensor) -> float:
    """max over elements of |a - b| / |b| (an element with b = 0 counts 0 if a = 0, else inf)."""
    p = _pair(a, b)
    if p is None:
        return math.inf
    if not p[1].numel():
        return 0.0
    d, den = (p[0] - p[1]).abs(), p[1].abs()
    r = torch.where(den > 0, d / den.clamp_min(1e-300), torch.where(d > 0, math.inf, 0.0))
    return float(r.max())


def rel_fro(a: Tensor, b: Tensor) -> float:
    """||a - b||_F / ||b||_F."""
    p = _pair(a, b)
    return math.inf if p is None else _ratio((p[0] - p[1]).norm().item(), p[1].norm().item())


# ------------------------------------------------------------------------------ stages
def logits_row(stage: str, got: Tensor, ref: Tensor, tol: float | None) -> Row:
    r = rel_inf(got, ref)
    same = int((got.argmax(1) == ref.argmax(1)).sum()) if got.shape == ref.shape else 0
    n = ref.shape[0]
    detail = f"top-1 agrees on {same}/{n} images"
    if tol is None:
        return Row(stage, r, "info", "INFO", detail)
    return Row(stage, r, f"rel <= {tol:.0e}, top-1 {n}/{n}", verdict(r <= tol and same == n), detail)


def plan_row(ref_plan: dict[str, tuple[int, int, bool]], suite_plan: dict[str, tuple[int, int, bool]]) -> Row:
    diff = [f"{n}: reference {ref_plan.get(n)}, suite {suite_plan.get(n)}"
            for n in sorted(set(ref_plan) | set(suite_plan)) if ref_plan.get(n) != suite_plan.get(n)]
    return Row("plan (w_bits, a_bits, channel-wise input)", float(len(diff)), "identical", verdict(not diff),
               f"{len(ref_plan)} layers, {len(diff)} differ" + ("; " + "; ".join(diff[:3]) if diff else ""))


def quantizer_error(ref: dict[str, Any], ours: dict[str, Any]) -> tuple[float, str | None]:
    """(delta / fractional zero point error, why it fails or None) of one quantizer."""
    if ref["n_bits"] != ours["n_bits"]:
        return math.inf, f"n_bits reference {ref['n_bits']}, suite {ours['n_bits']}"
    if ref["channel_wise"] != ours["channel_wise"]:
        return math.inf, f"channel-wise reference {ref['channel_wise']}, suite {ours['channel_wise']}"
    if ref["delta"] is None or ours["delta"] is None:
        return math.inf, "not calibrated"
    err = rel_elem(ours["delta"], ref["delta"])
    why = f"delta {fmt(err)}" if err > TOL["delta"] else None
    rz = ref.get("zero_point")
    if rz is not None and why is None:
        oz = ours.get("zero_point")
        if oz is None or _pair(oz, rz) is None:
            return math.inf, "zero point shape differs"
        if bool((rz == rz.round()).all()):  # integer zero points: exact
            n = int((oz.reshape(-1).double() != rz.reshape(-1).double()).sum())
            why = f"{n} integer zero points differ" if n else None
        else:  # RepQ-ViT's mean zero point after the reparameterization
            zerr = rel_elem(oz, rz)
            err = max(err, zerr)
            why = f"fractional zero point {fmt(zerr)}" if zerr > TOL["delta"] else None
    return err, why


def quant_row(stage: str, ref: dict[str, Any], ours: dict[str, Any]) -> Row:
    worst, fails, n = 0.0, [], 0
    for name in [*ours, *(k for k in ref if k not in ours)]:
        if name not in ref or name not in ours:
            fails.append(f"{name} only in the {'suite' if name in ours else 'reference'}")
            continue
        rq, oq = ref[name]["quantizers"], ours[name]["quantizers"]
        for key in sorted(set(rq) | set(oq)):
            n += 1
            if key not in rq or key not in oq:
                fails.append(f"{name}.{key} only in the {'suite' if key in oq else 'reference'}")
                continue
            err, why = quantizer_error(rq[key], oq[key])
            worst = max(worst, err)
            if why:
                fails.append(f"{name}.{key}: {why}")
    detail = f"{n} quantizers, {len(fails)} outside tolerance" + (f"; first {fails[0]}" if fails else "")
    return Row(stage, worst, f"delta <= {TOL['delta']:.0e}, integer zp exact", verdict(not fails), detail)


def reparam_row(ref: dict[str, Any], ours: dict[str, Any]) -> Row:
    worst: dict[str, float] = {}
    fails = [f"{n} only in the {'suite' if n in ours else 'reference'}" for n in set(ref) ^ set(ours)]
    for name in (n for n in ref if n in ours):
        r, o = ref[name], ours[name]
        if r["norm"] != o["norm"]:
            fails.append(f"{name}: paired with {o['norm']} in the suite, {r['norm']} in the reference")
        for key in REPARAM_KEYS:
            if r.get(key) is None and o.get(key) is None:
                continue
            e = math.inf if r.get(key) is None or o.get(key) is None else rel_inf(o[key], r[key])
            worst[key] = max(worst.get(key, 0.0), e)
            if e > TOL["reparam"]:
                fails.append(f"{name} {key} {fmt(e)}")
    w = max(worst.values(), default=0.0)
    detail = f"{len(ref)} LayerNorm -> Linear pairs; worst " + ", ".join(f"{k} {fmt(v)}" for k, v in worst.items())
    if fails:
        detail = f"{len(fails)} outside tolerance, first {fails[0]}; " + detail
    return Row("reparameterization (s, z, s*, z*, LN, next Linear)", w, f"rel <= {TOL['reparam']:.0e}",
               verdict(not fails), detail)


def state_dict_row(ref: dict[str, Tensor], ours: dict[str, Tensor]) -> Row:
    worst, where, missing, n = 0.0, "", [], 0
    for k, v in ref.items():
        if not (torch.is_tensor(v) and v.is_floating_point()):
            continue
        n += 1
        if k not in ours or tuple(ours[k].shape) != tuple(v.shape):
            missing.append(k)
            continue
        e = rel_inf(ours[k], v)
        if e > worst:
            worst, where = e, k
    ok = worst <= TOL["state_dict"] and not missing
    detail = f"{n} float tensors; " + (f"worst {where}" if where else "bit-identical")
    if missing:
        detail += f"; not in the suite (or shaped differently): {', '.join(missing[:3])}"
    return Row("RepQ-ViT state dict", worst, f"rel <= {TOL['state_dict']:.0e}", verdict(ok), detail)


def kept_string(flags: Iterable[bool]) -> str:
    return "".join("K" if f else "0" for f in flags)


def _wb(fit: BlockFit, weight: Tensor, bias: Tensor) -> float:
    return max(rel_fro(fit.weight, weight), rel_fro(fit.bias, bias))


def _exact(fit: BlockFit, ref: dict[str, Any]) -> str:
    """How far the suite's and the reference's W, b are from the float64 solution of the same rows."""
    if fit.exact_weight is None or fit.exact_bias is None:
        return "no float64 solution"
    suite = max(rel_fro(fit.weight, fit.exact_weight), rel_fro(fit.bias, fit.exact_bias))
    theirs = max(rel_fro(ref["weight"], fit.exact_weight), rel_fro(ref["bias"], fit.exact_bias))
    return f"from the float64 solution of the same rows: suite {fmt(suite)}, reference {fmt(theirs)}"


def teacher_forced_rows(ref: Sequence[dict[str, Any]], fits: Sequence[BlockFit], start_block: int) -> list[Row]:
    rows = []
    blocks = list(zip(ref, fits))
    # rows: the suite's regression rows, solved as the reference solves, against the reference's solution
    # (rows_weight and rows_bias are set together: the cast only drops the Optional)
    errs = [(k, max(rel_fro(f.rows_weight, r["W"]), rel_fro(cast(Tensor, f.rows_bias), r["b"]))
             if f.rows_weight is not None else math.inf)
            for k, (r, f) in enumerate(blocks) if (f.cond or 0.0) <= SINGULAR_COND]
    singular = [k for k, (_, f) in enumerate(blocks) if (f.cond or 0.0) > SINGULAR_COND]
    bad = [(k, e) for k, e in errs if e > TOL["qwt_rows"]]
    rows.append(Row("QwT teacher-forced: rows solved the reference's way", max((e for _, e in errs), default=0.0),
                    f"fro rel <= {TOL['qwt_rows']:.0e}", verdict(not bad),
                    (f"first outside tolerance: block {bad[0][0]} ({fmt(bad[0][1])}); " if bad else "")
                    + f"{len(errs)} blocks" + (f", blocks {singular} not compared (singular XᵀX, cond > "
                                               f"{SINGULAR_COND:.0e})" if singular else "")))
    # keep / zero
    mis = [k for k, (r, f) in enumerate(blocks) if bool(r["kept"]) != f.kept]
    rows.append(Row("QwT teacher-forced: keep/zero per block", float(len(mis)), "identical", verdict(not mis),
                    f"reference {kept_string(r['kept'] for r, _ in blocks)}, "
                    f"suite {kept_string(f.kept for _, f in blocks)}"
                    f" (K kept, 0 zero; start_block {start_block})"
                    + ("; differ at " + ", ".join(f"block {k} (reference R² {blocks[k][0]['r2']:.3f}, suite "
                                                  f"{blocks[k][1].r2:.3f}, cond {blocks[k][1].cond or 0:.1e})"
                                                  for k in mis[:3]) if mis else "")))
    # W, b where the reference's fp32 solution is accurate
    kept = [(k, r, f) for k, (r, f) in enumerate(blocks) if r["kept"]]
    dec = [(k, _wb(f, r["weight"], r["bias"]), f.cond or 0.0) for k, r, f in kept if (f.cond or 0.0) < COND_WB]
    bad_wb = [(k, e, c) for k, e, c in dec if e > TOL["qwt_wb"]]
    rows.append(Row(f"QwT teacher-forced: W,b (kept, cond < {COND_WB:.0e})", max((e for _, e, _ in dec), default=0.0),
                    f"fro rel <= {TOL['qwt_wb']:.0e}", verdict(not bad_wb),
                    (f"first outside tolerance: block {bad_wb[0][0]} ({fmt(bad_wb[0][1])}, cond {bad_wb[0][2]:.0e}; "
                     f"{_exact(blocks[bad_wb[0][0]][1], blocks[bad_wb[0][0]][0])}); " if bad_wb else "")
                    + f"{len(dec)} blocks" + (": " + " ".join(f"{k}:{fmt(e)}" for k, e, _ in dec) if dec else "")
                    + " | cond " + " ".join(f"{k}:{f.cond or 0:.0e}" for k, (_, f) in enumerate(blocks))))
    ill = [(k, _wb(f, r["weight"], r["bias"]), f.cond) for k, r, f in kept if (f.cond or 0.0) >= COND_WB]
    if ill:
        rows.append(Row(f"QwT teacher-forced: W,b (kept, cond >= {COND_WB:.0e})", max(e for _, e, _ in ill), "info",
                        "INFO", "the reference's fp32 inverse is inaccurate here; " +
                        " ".join(f"{k}:{fmt(e)} (cond {c:.0e})" for k, e, c in ill)))
    rows.append(Row("QwT teacher-forced: R² per block", max((abs(f.r2 - r["r2"]) for r, f in blocks), default=0.0),
                    "info", "INFO", "reference " + " ".join(f"{r['r2']:.3f}" for r, _ in blocks)
                    + " | suite " + " ".join(f"{f.r2:.3f}" for _, f in blocks)))
    return rows


FREE_RUNNING_WHY = ("information only: block by block the fit is chaotic on random W4/A4 weights "
                    "(last-bit differences become rounding flips downstream)")


def free_running_rows(ref: Sequence[dict[str, Any]], fits: Sequence[BlockFit], logits: Tensor,
                      ref_logits: Tensor) -> list[Row]:
    mis = [k for k, (r, f) in enumerate(zip(ref, fits)) if bool(r["kept"]) != f.kept]
    wb = [(k, _wb(f, r["weight"], r["bias"])) for k, (r, f) in enumerate(zip(ref, fits)) if r["kept"]]
    row = logits_row("QwT free-running: RepQ+QwT logits", logits, ref_logits, None)
    row.detail += f"; {FREE_RUNNING_WHY}"
    return [Row("QwT free-running: keep/zero per block", float(len(mis)), "info", "INFO",
                f"reference {kept_string(r['kept'] for r in ref)}, suite {kept_string(f.kept for f in fits)}"),
            Row("QwT free-running: W,b (reference kept)", max((e for _, e in wb), default=0.0), "info", "INFO",
                " ".join(f"{k}:{fmt(e)}" for k, e in wb)),
            row]


def compare(ref: dict[str, Any], run: SuiteRun, ref_wb_logits: Tensor) -> list[Row]:
    """Every stage's row: ``ref`` a dump in the suite's names, ``run`` the suite on its tensors,
    ``ref_wb_logits`` the suite's RepQ+QwT logits with the reference's W, b installed."""
    lg = ref["logits"]
    rows = [logits_row("FP logits", run.fp_logits, lg["fp"], TOL["fp_logits"]),
            plan_row(plan_of(ref["quant_initial"]), run.plan),
            quant_row("quantizers after the first pass", ref["quant_initial"], run.quant_initial)]
    if ref["reparam"] or run.reparam:
        rows.append(reparam_row(ref["reparam"], run.reparam))
    rows += [quant_row("quantizers, final", ref["quant_final"], run.quant_final),
             state_dict_row(ref["repq_state_dict"], run.state_dict),
             logits_row("RepQ-ViT logits", run.repq_logits, lg["repq"], TOL["repq_logits"])]
    rows += teacher_forced_rows(ref["qwt"], run.teacher_forced, ref["settings"]["start_block"])
    rows.append(logits_row("RepQ+QwT logits, reference W,b installed", ref_wb_logits, lg["repq_qwt"],
                           TOL["qwt_logits"]))
    rows += free_running_rows(ref["qwt"], run.free_running, run.free_logits, lg["repq_qwt"])
    return rows
