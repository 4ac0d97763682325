"""The five figures of the perf benchmark and their targets."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    figure: int
    prefix: str  # metric name prefix ("<prefix>/<case>")
    title: str
    op: str  # "<=" or ">="
    value: float
    unit: str = "x"
    info: str = "none (ours must stay flat: figure 3)"  # the target column of an "info" figure

    def passes(self, measured: float) -> bool:
        if self.op == "info":
            return True
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def text(self) -> str:
        if self.op == "info":
            return self.info
        return f"{self.op} {self.value:g}{self.unit}"

    def miss_by(self, measured: float) -> str:
        """How far a measured value is from the target (factor)."""
        if self.passes(measured):
            return ""
        if self.op == "<=":
            return f"{measured / self.value:.2f}x over" if self.value > 0 else f"{measured:+.3f} over"
        return f"{self.value / measured:.2f}x short"


TARGETS: tuple[Target, ...] = (
    Target(1, "fit_over_floor", "QwT fit / (FP forward + fake-quantized forward) over the same images", "<=", 1.5),
    Target(1, "fit_over_fp", "QwT fit / one FP forward over the same images", "<=", 3.0),
    Target(1, "fit_flat_over_floor", "QwT fit with the block inputs on the flat-memory store / (FP + fake-quantized "
           "forward)", "info", 0.0, info="none (the memory option of figure 3)"),
    Target(2, "calib_over_released", "RepQ-ViT calibration time: ours / the released code", "<=", 0.1),
    Target(2, "fit_over_released", "QwT fit time, default solver: ours / the released code", "<=", 0.5),
    Target(2, "fit_mem_over_released", "QwT fit peak memory, default solver: ours / the released code", "<=", 1.0),
    Target(2, "fit_streaming_over_released", "QwT fit time, solver='streaming': ours / the released code", "info",
           0.0, info="none (information)"),
    Target(2, "fit_streaming_mem_over_released", "QwT fit peak memory, solver='streaming': ours / the released code",
           "info", 0.0, info="none (flat in the image count: figure 3)"),
    Target(2, "whole_calibration_s", "DeiT-S RepQ-ViT + QwT calibration on a GPU, ours (seconds)", "<=", 30.0,
           unit=" s"),
    Target(2, "fit_over_ref_time", "our fit / reference-style re-implementation of the released fit: time "
           "(cut-down model)", "info", 0.0, info="none (bounded by the shared passes; the released code is above)"),
    Target(2, "fit_over_ref_mem", "our fit / reference-style fit: peak memory", "info", 0.0),
    Target(3, "mem_growth", "peak memory growth of our fit, 128 -> 1024 images", "<=", 0.10, unit=""),
    Target(4, "eval_slowdown", "fake-quantized / FP evaluation time (RepQ-ViT)", "<=", 2.0),
    Target(4, "eval_slowdown_qwt", "fake-quantized / FP evaluation time (RepQ-ViT + QwT, half_arith='native', default)",
           "<=", 2.0),
    Target(4, "eval_slowdown_qwt_emulated",
           "fake-quantized / FP evaluation time (RepQ-ViT + QwT, half_arith='emulated')",
           "<=", 2.0),
    Target(5, "init_speedup", "quantizer initialisation: per-channel loop / vectorized", ">=", 10.0),
)


def target_of(metric: str) -> Target | None:
    prefix = metric.split("/", 1)[0]
    for t in TARGETS:
        if t.prefix == prefix:
            return t
    return None
