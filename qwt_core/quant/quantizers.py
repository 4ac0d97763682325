"""Fake-quantizer modules: they hold state (bits, range, enabled/calibrating flags) and call the
pure functions of :mod:`qwt_core.quant.primitives`.

A quantizer is in one of three situations:
- disabled (full precision): ``forward(x) = x``;
- calibrating and not yet initialised: initialise the range from ``x``, then quantize ``x``
  (RepQ-ViT initialises every quantizer on its first quantized forward, in order);
- enabled and initialised: fake-quantize ``x``.
An enabled, uninitialised quantizer outside calibration raises, naming what to do -- unless it
was marked with :meth:`Quantizer.allow_init_on_first_use` (a quantizer the calibration pass never
reached, e.g. a detector's mask head when the calibration image yields no detection): it then
initialises on the first tensor that reaches it, as the reference's quantizers do, and logs that
once (logger ``qwt_core.quant``).

The range (``delta``, ``zero_point``) is stored in buffers and the configuration in
``get_extra_state`` so that ``state_dict`` round-trips exactly whatever shapes the range has.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from .primitives import (
    LOG_RATIO_FLOOR,
    PERCENTILES,
    fake_quant_log_sqrt2,
    fake_quant_uniform,
    search_log_sqrt2_delta,
    search_uniform_range,
)

logger = logging.getLogger("qwt_core.quant")


def check_bits(n_bits: int) -> int:
    """Validate a bit width (2..8)."""
    if not isinstance(n_bits, int) or not 2 <= n_bits <= 8:
        raise ValueError(f"bit width must be an integer in 2..8, got {n_bits!r}")
    return n_bits


class Quantizer(nn.Module):
    """Base class: enable / calibrate flags, range buffers, state round-trip."""

    delta: Tensor  # the range buffers (registered in __init__; declared for the type checker)
    zero_point: Tensor

    def __init__(self, n_bits: int) -> None:
        super().__init__()
        self.n_bits = check_bits(n_bits)
        self.enabled = False
        self.calibrating = False
        self.inited = False
        self.init_on_first_use = False  # initialise outside calibration (allow_init_on_first_use)
        self.label = ""  # the quantizer's name in the model, for the log line of a late init
        self.register_buffer("delta", torch.zeros(()))
        self.register_buffer("zero_point", torch.zeros(()))

    def initialise(self, x: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def quantize(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def allow_init_on_first_use(self, label: str) -> None:
        """Let this (uninitialised) quantizer initialise on the first tensor that reaches it outside
        calibration, logging ``label`` when it does."""
        self.init_on_first_use, self.label = True, label

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        if not self.inited:
            if not (self.calibrating or self.init_on_first_use):
                raise RuntimeError(
                    f"{type(self).__name__} is enabled but not calibrated: run the model once "
                    "inside `qwt_core.calibration(model)` first"
                )
            self.initialise(x)
            self.inited = True
            if not self.calibrating:
                logger.warning("quantizer %s saw no data during calibration: initialised now, on "
                               "the first data that reached it (shape %s)",
                               self.label or type(self).__name__, tuple(x.shape))
        return self.quantize(x)

    def set_range(self, delta: Tensor, zero_point: Tensor | None = None) -> None:
        """Replace the range buffers (any shape) and mark the quantizer initialised."""
        self.delta = delta.detach().clone().to(self.delta.device)
        if zero_point is not None:
            self.zero_point = zero_point.detach().clone().to(self.delta.device)
        self.inited = True

    def get_extra_state(self) -> dict[str, Any]:
        return {"n_bits": self.n_bits, "inited": self.inited,
                "init_on_first_use": self.init_on_first_use, "label": self.label}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.n_bits = int(state["n_bits"])
        self.inited = bool(state["inited"])
        self.init_on_first_use = bool(state.get("init_on_first_use", False))  # absent in older files
        self.label = str(state.get("label", ""))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Range buffers change shape between per-channel and per-tensor: adopt the saved shape.
        for name in ("delta", "zero_point"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.delta.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class UniformQuantizer(Quantizer):
    """Uniform asymmetric quantizer, per-tensor or per-channel along ``channel_dim``.

    Weights use ``channel_dim=0`` (output channels); RepQ-ViT's post-LayerNorm activations use
    ``channel_dim=-1`` (the feature dim of (..., C) tokens).
    """

    def __init__(
        self, n_bits: int, channel_dim: int | None = None, percentiles: tuple[float, ...] = PERCENTILES
    ) -> None:
        super().__init__(n_bits)
        self.channel_dim = channel_dim
        self.percentiles = tuple(percentiles)

    def initialise(self, x: Tensor) -> None:
        delta, zp = search_uniform_range(x, self.n_bits, self.channel_dim, self.percentiles)
        self.delta, self.zero_point = delta, zp

    def _broadcast(self, t: Tensor, x: Tensor) -> Tensor:
        if t.dim() == 0 or self.channel_dim is None:
            return t
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return t.reshape(shape)

    def quantize(self, x: Tensor) -> Tensor:
        delta = self._broadcast(self.delta, x)
        zp = self._broadcast(self.zero_point, x)
        return fake_quant_uniform(x, delta, zp, self.n_bits)

    def make_per_tensor(self, delta: Tensor, zero_point: Tensor) -> None:
        """Switch to a per-tensor range (RepQ-ViT after reparameterization)."""
        self.channel_dim = None
        self.set_range(delta.reshape(()), zero_point.reshape(()))

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "channel_dim": self.channel_dim,
                "percentiles": self.percentiles}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self.channel_dim = state["channel_dim"]
        self.percentiles = tuple(state["percentiles"])

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}, channel_dim={self.channel_dim}, inited={self.inited}"


class LogSqrt2Quantizer(Quantizer):
    """Log-sqrt(2) quantizer for post-softmax attention probabilities (per tensor).

    ``ratio_floor``: x / delta is floored there before log2 (default ``LOG_RATIO_FLOOR`` = 1e-6, the
    classification reference's ``Log2STE``); None: no floor, as the detection reference computes
    (zero probabilities map to 0 at every bit width). Used in the range search and in quantizing.
    """

    def __init__(self, n_bits: int, percentiles: tuple[float, ...] = PERCENTILES,
                 ratio_floor: float | None = LOG_RATIO_FLOOR) -> None:
        super().__init__(n_bits)
        if ratio_floor is not None and not ratio_floor > 0:
            raise ValueError(f"ratio_floor must be > 0 or None, got {ratio_floor}")
        self.percentiles = tuple(percentiles)
        self.ratio_floor = ratio_floor

    def initialise(self, x: Tensor) -> None:
        self.delta = search_log_sqrt2_delta(x, self.n_bits, self.percentiles, self.ratio_floor)

    def quantize(self, x: Tensor) -> Tensor:
        return fake_quant_log_sqrt2(x, self.delta, self.n_bits, self.ratio_floor)

    def extra_repr(self) -> str:
        return f"n_bits={self.n_bits}, log-sqrt2, ratio_floor={self.ratio_floor}, inited={self.inited}"
