"""QwT compensation modules and the block wrapper ``out = block(x, ...) + compensation(x)``.

The modules hold W, b and the geometry only; how they multiply at evaluation (fp16 or fp32, and
which fp16 arithmetic) is read at forward time from :func:`qwt_core.eval_arithmetic`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arithmetic import EvalArithmetic, current_arithmetic
from .halfdot import half_conv2d, half_matmul
from .regression import Solution


def _add_into(fresh: Tensor, out: Tensor) -> Tensor:
    """``out + fresh``, written into ``fresh`` (a temporary this module just computed) when the
    shapes and dtypes allow: IEEE addition commutes, so the bits are those of ``out + fresh``,
    without allocating another full-size tensor."""
    if fresh.shape == out.shape and fresh.dtype == out.dtype and fresh.device == out.device:
        return fresh.add_(out)
    return out + fresh


def _half(module: nn.Module) -> EvalArithmetic | None:
    """The fp16 arithmetic a compensation module evaluates with now; None for fp32 (training
    mode, or an ``eval_arithmetic(fp16=False)`` context)."""
    if module.training:
        return None
    arith = current_arithmetic()
    return arith if arith.fp16 else None


class LinearCompensation(nn.Module):
    """c(x) = x @ W + b on tokens x (..., D) -> (..., O); W (D, O), b (O,).

    Added to a block output ``out`` in the reference's order (:meth:`add_to`):
    ``(out + x @ W) + b`` in fp32, and at evaluation (``not self.training``) with an fp16
    :func:`~qwt_core.eval_arithmetic` ``(out + (x.half() @ W.half()).float()) + b``, the reference's
    setting for ViT/DeiT/Swin classification (:func:`.halfdot.half_matmul` computes that product).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_dim, out_dim))  # (D, O)
        self.bias = nn.Parameter(torch.zeros(out_dim))  # (O,)

    @classmethod
    def from_solution(cls, sol: Solution) -> LinearCompensation:
        m = cls(sol.weight.shape[1], sol.weight.shape[2])
        m.weight.data.copy_(sol.weight[0])
        m.bias.data.copy_(sol.bias[0])
        return m

    def spec(self) -> dict[str, Any]:
        return {"kind": "linear", "in_dim": self.weight.shape[0], "out_dim": self.weight.shape[1]}

    def forward(self, x: Tensor) -> Tensor:
        """c(x) alone (the arithmetic of :meth:`add_to`, without the block output)."""
        half = _half(self)
        if half is not None:
            return half_matmul(x, self.weight, half.half_arith).to(x.dtype) + self.bias
        return x @ self.weight + self.bias

    def add_to(self, out: Tensor, x: Tensor, fp32: bool = False) -> Tensor:
        """out + c(x) as the reference adds it: (out + x @ W) + b; ``fp32=True`` forces the fp32
        product (the reference propagates features in fp32 while fitting)."""
        half = None if fp32 else _half(self)
        if half is not None:
            p = half_matmul(x, self.weight, half.half_arith).to(out.dtype)
        else:
            p = x @ self.weight
        return _add_into(p, out).add_(self.bias)


class ConvCompensation(nn.Module):
    """c(x) = grouped Conv2d(x; W, b), kernel k, padding k // 2, stride s; x (B, C, H, W).

    Added as the reference does (:meth:`add_to`): ``out + conv2d(x, W, b)`` in fp32, and at
    evaluation with an fp16 :func:`~qwt_core.eval_arithmetic` ``out + (conv2d(x.half(), W.half()).float() + b)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups {groups}")
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    @classmethod
    def from_solution(cls, sol: Solution, in_channels: int, kernel_size: int, stride: int) -> ConvCompensation:
        g, d, o = sol.weight.shape  # (G, cg*k*k, og)
        m = cls(in_channels, g * o, kernel_size, stride, g)
        # unfold order within a group is (channel, ky, kx): matches Conv2d's (cg, k, k) weight
        w = sol.weight.permute(0, 2, 1).reshape(g * o, in_channels // g, kernel_size, kernel_size)
        m.weight.data.copy_(w)
        m.bias.data.copy_(sol.bias.reshape(-1))
        return m

    def spec(self) -> dict[str, Any]:
        return {"kind": "conv", "in_channels": self.weight.shape[1] * self.groups,
                "out_channels": self.weight.shape[0], "kernel_size": self.kernel_size,
                "stride": self.stride, "groups": self.groups}

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, w, b, self.stride, self.kernel_size // 2, 1, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        """c(x) alone, in the arithmetic of :meth:`add_to`."""
        half = _half(self)
        if half is not None:
            return half_conv2d(x, self.weight, self.stride, self.kernel_size // 2, self.groups,
                               half.half_arith).to(x.dtype) + self.bias[:, None, None]
        return self._conv(x, self.weight, self.bias)

    def add_to(self, out: Tensor, x: Tensor, fp32: bool = False) -> Tensor:
        """out + c(x) as the reference adds it; ``fp32=True`` forces the fp32 convolution."""
        if fp32:
            return _add_into(self._conv(x, self.weight, self.bias), out)
        half = _half(self)
        if half is not None:
            c = half_conv2d(x, self.weight, self.stride, self.kernel_size // 2, self.groups, half.half_arith)
            return _add_into(c.to(x.dtype).add_(self.bias[:, None, None]), out)
        return out + self(x)


# what a CompensatedBlock adds: either kind has ``add_to(out, x)`` and ``spec()``
Compensation = LinearCompensation | ConvCompensation


def build_compensation(spec: dict[str, Any]) -> Compensation:
    """Re-create an (empty) compensation module from its ``spec()`` (the evaluation settings that
    older state files carry, ``fp16_eval`` / ``half_arith``, are ignored)."""
    kind = spec["kind"]
    if kind == "linear":
        return LinearCompensation(spec["in_dim"], spec["out_dim"])
    if kind == "conv":
        return ConvCompensation(spec["in_channels"], spec["out_channels"], spec["kernel_size"],
                                spec["stride"], spec["groups"])
    raise ValueError(f"unknown compensation kind {kind!r} (expected 'linear' or 'conv')")


class CompensatedBlock(nn.Module):
    """out = block(x, *args, **kwargs) + compensation(x), added in the reference's order by the
    compensation's ``add_to``; extra arguments (Swin's hw_shape) pass through unchanged."""

    def __init__(self, block: nn.Module, compensation: Compensation) -> None:
        super().__init__()
        self.block = block
        self.compensation = compensation

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.compensation.add_to(self.block(x, *args, **kwargs), x)
