"""QwT configuration (one dataclass; validated on construction)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


SOLVERS = ("reference", "streaming", "lstsq")


@dataclass(frozen=True)
class QwTConfig:
    start_block: int = 0  # blocks with a smaller index keep zero compensation (reference: 0)
    fp16_eval: bool = True  # compensation matmul in fp16 at eval (reference: on for classification, off for detection)
    kernel_size: int = 1  # grouped-conv compensation kernel (ResNet; reference default 1)
    factor: int = 64  # grouped-conv: groups = max(C_in // factor, 1) (reference default 64)
    conv_ridge: float = 1e-3  # ridge λ of the grouped-conv fit (reference 1e-3)
    linear_ridge: float = 0.0  # ridge λ of the token fit (reference: none, plain inverse(XᵀX))
    store: Literal["device", "cpu", "disk"] = "device"  # where block inputs of the calibration set live
    # reference: every row of a block kept and solved with the released fp32 operations (its W, b
    #   bit for bit; memory grows with the images); streaming: float64 normal equations, constant
    #   memory, keep/zero by the R² of an fp32 inverse (the reference's decision); lstsq: streaming,
    #   keep/zero by the float64 minimum-norm solution's R² (compensates numerically singular blocks)
    solver: Literal["reference", "streaming", "lstsq"] = "reference"
    half_arith: Literal["native", "emulated"] = "native"  # fp16 product at eval: native fp16 (reference, bit-exact) or fp16 operands/result with an fp32 product (fast on CPU)

    def __post_init__(self) -> None:
        if self.start_block < 0:
            raise ValueError(f"start_block must be >= 0, got {self.start_block}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.conv_ridge < 0 or self.linear_ridge < 0:
            raise ValueError("ridge must be >= 0")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.half_arith not in ("native", "emulated"):
            raise ValueError(f"half_arith must be 'native' or 'emulated', got {self.half_arith!r}")
        if self.store not in ("device", "cpu", "disk"):
            raise ValueError(f"store must be 'device', 'cpu' or 'disk', got {self.store!r}")

    def conv_groups(self, in_channels: int, out_channels: int) -> int:
        """groups = max(C_in // factor, 1), lowered until it divides both channel counts."""
        g = max(in_channels // self.factor, 1)
        while in_channels % g or out_channels % g:
            g -= 1
        return g
