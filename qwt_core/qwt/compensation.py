"""QwT compensation modules and the block wrapper ``out = block(x, ...) + compensation(x)``."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .accumulator import Solution


class LinearCompensation(nn.Module):
    """c(x) = x @ W + b on tokens x (..., D) -> (..., O).

    With ``fp16_eval`` (the reference for ViT/DeiT/Swin classification) the matmul runs in fp16
    at eval time and is added to the fp32 bias: ``(x.half() @ W.half()).float() + b``.
    """

    def __init__(self, in_dim: int, out_dim: int, fp16_eval: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(in_dim, out_dim))  # (D, O)
        self.bias = nn.Parameter(torch.zeros(out_dim))  # (O,)
        self.fp16_eval = fp16_eval

    @classmethod
    def from_solution(cls, sol: Solution, fp16_eval: bool) -> "LinearCompensation":
        m = cls(sol.weight.shape[1], sol.weight.shape[2], fp16_eval)
        m.weight.data.copy_(sol.weight[0])
        m.bias.data.copy_(sol.bias[0])
        return m

    def spec(self) -> dict[str, Any]:
        return {"kind": "linear", "in_dim": self.weight.shape[0], "out_dim": self.weight.shape[1],
                "fp16_eval": self.fp16_eval}

    def forward(self, x: Tensor) -> Tensor:
        if self.fp16_eval and not self.training:
            return (x.half() @ self.weight.half()).to(x.dtype) + self.bias
        return x @ self.weight + self.bias


class ConvCompensation(nn.Module):
    """c(x) = grouped Conv2d(x; W, b), kernel k, padding k // 2, stride s; x (B, C, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int, fp16_eval: bool = True) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups {groups}")
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.fp16_eval = fp16_eval

    @classmethod
    def from_solution(cls, sol: Solution, in_channels: int, kernel_size: int, stride: int,
                      fp16_eval: bool) -> "ConvCompensation":
        g, d, o = sol.weight.shape  # (G, cg*k*k, og)
        m = cls(in_channels, g * o, kernel_size, stride, g, fp16_eval)
        # unfold order within a group is (channel, ky, kx): matches Conv2d's (cg, k, k) weight
        w = sol.weight.permute(0, 2, 1).reshape(g * o, in_channels // g, kernel_size, kernel_size)
        m.weight.data.copy_(w)
        m.bias.data.copy_(sol.bias.reshape(-1))
        return m

    def spec(self) -> dict[str, Any]:
        return {"kind": "conv", "in_channels": self.weight.shape[1] * self.groups,
                "out_channels": self.weight.shape[0], "kernel_size": self.kernel_size,
                "stride": self.stride, "groups": self.groups, "fp16_eval": self.fp16_eval}

    def forward(self, x: Tensor) -> Tensor:
        pad = self.kernel_size // 2
        if self.fp16_eval and not self.training:
            y = F.conv2d(x.half(), self.weight.half(), None, self.stride, pad, 1, self.groups)
            return y.to(x.dtype) + self.bias[:, None, None]
        return F.conv2d(x, self.weight, self.bias, self.stride, pad, 1, self.groups)


def build_compensation(spec: dict[str, Any]) -> nn.Module:
    """Re-create an (empty) compensation module from its ``spec()``."""
    kind = spec["kind"]
    if kind == "linear":
        return LinearCompensation(spec["in_dim"], spec["out_dim"], spec["fp16_eval"])
    if kind == "conv":
        return ConvCompensation(spec["in_channels"], spec["out_channels"], spec["kernel_size"],
                                spec["stride"], spec["groups"], spec["fp16_eval"])
    raise ValueError(f"unknown compensation kind {kind!r} (expected 'linear' or 'conv')")


class CompensatedBlock(nn.Module):
    """out = block(x, *args, **kwargs) + compensation(x); extra arguments (Swin's hw_shape) pass
    through unchanged."""

    def __init__(self, block: nn.Module, compensation: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.compensation = compensation

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.block(x, *args, **kwargs) + self.compensation(x)


def unfold_groups(x: Tensor, kernel_size: int, stride: int, groups: int) -> Tensor:
    """Conv patches of x (B, C, H, W) as rows (B*L, G, (C/G)*k*k), L = H'*W' of the conv output."""
    cols = F.unfold(x, kernel_size, padding=kernel_size // 2, stride=stride)  # (B, C*k*k, L)
    b, ck, l = cols.shape
    return cols.transpose(1, 2).reshape(b * l, groups, ck // groups)


def conv_rows(y: Tensor, groups: int) -> Tensor:
    """Conv outputs y (B, O, H', W') as rows (B*H'*W', G, O/G)."""
    b, o = y.shape[:2]
    return y.permute(0, 2, 3, 1).reshape(-1, groups, o // groups)
