"""QwT configuration (one dataclass; validated on construction) and the named solver presets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict


class SolverPreset(TypedDict):
    """The QwTConfig fields a named preset sets."""

    regression: Literal["rows", "sums"]
    gate: Literal["reference", "float64"]


#: the named choices of ``--qwt-solver``: which regression keeps the block's statistics and which
#: R² gates a block (see :mod:`qwt_core.qwt.regression`)
SOLVER_PRESETS: dict[str, SolverPreset] = {
    "reference": {"regression": "rows", "gate": "reference"},  # the released code, bit for bit
    "streaming": {"regression": "sums", "gate": "reference"},  # constant memory, the reference's decision
    "lstsq": {"regression": "sums", "gate": "float64"},  # constant memory, float64 decision
}


def solver_preset(name: str) -> SolverPreset:
    """``regression`` / ``gate`` of a named preset (ValueError naming the presets otherwise)."""
    if name not in SOLVER_PRESETS:
        raise ValueError(f"unknown QwT solver {name!r}; choose one of {', '.join(SOLVER_PRESETS)}")
    return SOLVER_PRESETS[name].copy()


@dataclass(frozen=True)
class QwTConfig:
    start_block: int = 0  # blocks with a smaller index keep zero compensation (reference: 0)
    kernel_size: int = 1  # grouped-conv compensation kernel (ResNet; reference default 1)
    factor: int = 64  # grouped-conv: groups = max(C_in // factor, 1) (reference default 64)
    conv_ridge: float = 1e-3  # ridge λ of the grouped-conv fit (reference 1e-3)
    linear_ridge: float = 0.0  # ridge λ of the token fit (reference: none, plain inverse(XᵀX))
    store: Literal["device", "cpu", "disk"] = "device"  # where block inputs of the calibration set live
    # rows: every row of a block kept and solved with the released fp32 operations (its W, b bit for
    #   bit; memory grows with the images); sums: float64 normal equations (constant memory)
    regression: Literal["rows", "sums"] = "rows"
    # which R² keeps a block: reference = R² of the reference's fp32 solution; float64 = R² of the
    #   float64 (minimum-norm) solution, which also compensates numerically singular blocks (sums only)
    gate: Literal["reference", "float64"] = "reference"

    def __post_init__(self) -> None:
        if self.start_block < 0:
            raise ValueError(f"start_block must be >= 0, got {self.start_block}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        if self.conv_ridge < 0 or self.linear_ridge < 0:
            raise ValueError("ridge must be >= 0")
        if self.store not in ("device", "cpu", "disk"):
            raise ValueError(f"store must be 'device', 'cpu' or 'disk', got {self.store!r}")
        if self.regression not in ("rows", "sums"):
            raise ValueError(f"regression must be 'rows' or 'sums', got {self.regression!r}")
        if self.gate not in ("reference", "float64"):
            raise ValueError(f"gate must be 'reference' or 'float64', got {self.gate!r}")
        if self.gate == "float64" and self.regression != "sums":
            raise ValueError("gate='float64' needs regression='sums' (the rows regression solves in fp32 only)")

    @property
    def solver(self) -> str:
        """The preset name of (regression, gate), what records write as ``solver``."""
        return next(n for n, p in SOLVER_PRESETS.items()
                    if p == {"regression": self.regression, "gate": self.gate})

    def conv_groups(self, in_channels: int, out_channels: int) -> int:
        """groups = max(C_in // factor, 1), lowered until it divides both channel counts."""
        g = max(in_channels // self.factor, 1)
        while in_channels % g or out_channels % g:
            g -= 1
        return g
