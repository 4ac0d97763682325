"""QwT compensation modules and the block wrapper ``out = block(x, ...) + compensation(x)``."""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .accumulator import Solution
from .halfdot import HALF_ARITHS, half_conv2d, half_matmul  # noqa: F401 (HALF_ARITHS re-exported)


HalfArith = Literal["native", "emulated"]  # see :mod:`qwt_core.qwt.halfdot`


def _add_into(fresh: Tensor, out: Tensor) -> Tensor:
    """``out + fresh``, written into ``fresh`` (a temporary this module just computed) when the
    shapes and dtypes allow: IEEE addition commutes, so the bits are those of ``out + fresh``,
    without allocating another full-size tensor."""
    if fresh.shape == out.shape and fresh.dtype == out.dtype and fresh.device == out.device:
        return fresh.add_(out)
    return out + fresh


class LinearCompensation(nn.Module):
    """c(x) = x @ W + b on tokens x (..., D) -> (..., O); W (D, O), b (O,).

    Added to a block output ``out`` in the reference's order (:meth:`add_to`):
    ``(out + x @ W) + b`` in fp32, and with ``fp16_eval`` at evaluation (``not self.training``)
    ``(out + (x.half() @ W.half()).float()) + b``, the reference's setting for ViT/DeiT/Swin
    classification; ``half_arith`` says how that fp16 product is computed (:func:`.halfdot.half_matmul`).
    """

    def __init__(self, in_dim: int, out_dim: int, fp16_eval: bool = True, half_arith: HalfArith = "native") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_dim, out_dim))  # (D, O)
        self.bias = nn.Parameter(torch.zeros(out_dim))  # (O,)
        self.fp16_eval = fp16_eval
        self.half_arith = half_arith

    @classmethod
    def from_solution(cls, sol: Solution, fp16_eval: bool, half_arith: HalfArith = "native") -> "LinearCompensation":
        m = cls(sol.weight.shape[1], sol.weight.shape[2], fp16_eval, half_arith)
        m.weight.data.copy_(sol.weight[0])
        m.bias.data.copy_(sol.bias[0])
        return m

    def spec(self) -> dict[str, Any]:
        return {"kind": "linear", "in_dim": self.weight.shape[0], "out_dim": self.weight.shape[1],
                "fp16_eval": self.fp16_eval, "half_arith": self.half_arith}

    def _half(self) -> bool:
        return self.fp16_eval and not self.training

    def forward(self, x: Tensor) -> Tensor:
        """c(x) alone (the arithmetic of :meth:`add_to`, without the block output)."""
        if self._half():
            return half_matmul(x, self.weight, self.half_arith).to(x.dtype) + self.bias
        return x @ self.weight + self.bias

    def add_to(self, out: Tensor, x: Tensor, fp32: bool = False) -> Tensor:
        """out + c(x) as the reference adds it: (out + x @ W) + b; ``fp32=True`` forces the fp32
        product (the reference propagates features in fp32 while fitting)."""
        if self._half() and not fp32:
            p = half_matmul(x, self.weight, self.half_arith).to(out.dtype)
        else:
            p = x @ self.weight
        return _add_into(p, out).add_(self.bias)


class ConvCompensation(nn.Module):
    """c(x) = grouped Conv2d(x; W, b), kernel k, padding k // 2, stride s; x (B, C, H, W).

    Added as the reference does (:meth:`add_to`): ``out + conv2d(x, W, b)`` in fp32, and with
    ``fp16_eval`` at evaluation ``out + (conv2d(x.half(), W.half()).float() + b)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int, fp16_eval: bool = True, half_arith: HalfArith = "native") -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups {groups}")
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.fp16_eval = fp16_eval
        self.half_arith = half_arith

    @classmethod
    def from_solution(cls, sol: Solution, in_channels: int, kernel_size: int, stride: int,
                      fp16_eval: bool, half_arith: HalfArith = "native") -> "ConvCompensation":
        g, d, o = sol.weight.shape  # (G, cg*k*k, og)
        m = cls(in_channels, g * o, kernel_size, stride, g, fp16_eval, half_arith)
        # unfold order within a group is (channel, ky, kx): matches Conv2d's (cg, k, k) weight
        w = sol.weight.permute(0, 2, 1).reshape(g * o, in_channels // g, kernel_size, kernel_size)
        m.weight.data.copy_(w)
        m.bias.data.copy_(sol.bias.reshape(-1))
        return m

    def spec(self) -> dict[str, Any]:
        return {"kind": "conv", "in_channels": self.weight.shape[1] * self.groups,
                "out_channels": self.weight.shape[0], "kernel_size": self.kernel_size,
                "stride": self.stride, "groups": self.groups, "fp16_eval": self.fp16_eval,
                "half_arith": self.half_arith}

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
        return F.conv2d(x, w, b, self.stride, self.kernel_size // 2, 1, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        """c(x) alone, in the arithmetic of :meth:`add_to`."""
        if self.fp16_eval and not self.training:
            return half_conv2d(x, self.weight, self.stride, self.kernel_size // 2, self.groups,
                               self.half_arith).to(x.dtype) + self.bias[:, None, None]
        return self._conv(x, self.weight, self.bias)

    def add_to(self, out: Tensor, x: Tensor, fp32: bool = False) -> Tensor:
        """out + c(x) as the reference adds it; ``fp32=True`` forces the fp32 convolution."""
        if fp32:
            return _add_into(self._conv(x, self.weight, self.bias), out)
        if self.fp16_eval and not self.training:
            c = half_conv2d(x, self.weight, self.stride, self.kernel_size // 2, self.groups, self.half_arith)
            return _add_into(c.to(x.dtype).add_(self.bias[:, None, None]), out)
        return out + self(x)


def build_compensation(spec: dict[str, Any]) -> nn.Module:
    """Re-create an (empty) compensation module from its ``spec()``."""
    kind = spec["kind"]
    arith = spec.get("half_arith", "native")
    if kind == "linear":
        return LinearCompensation(spec["in_dim"], spec["out_dim"], spec["fp16_eval"], arith)
    if kind == "conv":
        return ConvCompensation(spec["in_channels"], spec["out_channels"], spec["kernel_size"],
                                spec["stride"], spec["groups"], spec["fp16_eval"], arith)
    raise ValueError(f"unknown compensation kind {kind!r} (expected 'linear' or 'conv')")


class CompensatedBlock(nn.Module):
    """out = block(x, *args, **kwargs) + compensation(x), added in the reference's order by the
    compensation's ``add_to``; extra arguments (Swin's hw_shape) pass through unchanged."""

    def __init__(self, block: nn.Module, compensation: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.compensation = compensation

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.compensation.add_to(self.block(x, *args, **kwargs), x)


def unfold_groups(x: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    """Conv patches of x (B, C, H, W) as rows (B*L, G, (C/G)*k*k), L = H'*W' of the conv output."""
    cols = F.unfold(x, kernel_size, padding=kernel_size // 2, stride=stride)  # (B, C*k*k, L)
    b, ck, l = cols.shape
    return cols.transpose(1, 2).reshape(b * l, groups, ck // groups)


def conv_rows(y: Tensor, groups: int) -> Tensor:
    """Conv outputs y (B, O, H', W') as rows (B*H'*W', G, O/G)."""
    b, o = y.shape[:2]
    return y.permute(0, 2, 3, 1).reshape(-1, groups, o // groups)
