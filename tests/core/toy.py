"""Small pure-torch models for the core tests (no timm): a pre-norm transformer and a conv net."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from qwt_core import BlockStep, LayerSpec, QuantMatMul, quantize_layers


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.matmul1: nn.Module | None = None
        self.matmul2: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, d)
        mm1 = self.matmul1 or torch.matmul
        mm2 = self.matmul2 or torch.matmul
        attn = (mm1(q, k.transpose(-2, -1)) * self.scale).softmax(-1)  # (B, H, N, N)
        return self.proj(mm2(attn, v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int = 2, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyTransformer(nn.Module):
    """Tokens (B, N, in_dim) -> logits (B, classes)."""

    def __init__(self, in_dim: int = 12, dim: int = 32, depth: int = 3, classes: int = 10,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.blocks = nn.ModuleList([Block(dim, qkv_bias=qkv_bias) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def features(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for b in self.blocks:
            x = b(x)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(1))


def quantize_transformer(model: TinyTransformer, bits: int) -> list[tuple[str, str]]:
    """RepQ-ViT style plan on the toy transformer; returns the reparameterization pairs."""
    plan = {n: LayerSpec(bits, bits, act_channel_wise=n.endswith(("qkv", "fc1")))
            for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize_layers(model, plan)
    for b in model.blocks:
        b.attn.matmul1, b.attn.matmul2 = QuantMatMul(bits), QuantMatMul(bits, log_a=True)
    return [p for i in range(len(model.blocks))
            for p in ((f"blocks.{i}.norm1", f"blocks.{i}.attn.qkv"), (f"blocks.{i}.norm2", f"blocks.{i}.fc1"))]


class TransformerAdapter:
    def __init__(self, model: TinyTransformer) -> None:
        self.model = model

    def embed(self, images: Tensor) -> Tensor:
        return self.model.embed(images)

    def steps(self) -> list[BlockStep]:
        return [BlockStep(f"blocks.{i}") for i in range(len(self.model.blocks))]


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.down = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.down(x))


class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.layers = nn.Sequential(ConvBlock(8, 8, 1), ConvBlock(8, 16, 2), ConvBlock(16, 16, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(torch.relu(self.stem(x)))


class ConvAdapter:
    def __init__(self, model: TinyConvNet) -> None:
        self.model = model

    def embed(self, images: Tensor) -> Tensor:
        return torch.relu(self.model.stem(images))

    def steps(self) -> list[BlockStep]:
        return [BlockStep(f"layers.{i}", kind="conv") for i in range(len(self.model.layers))]


def quantize_convnet(model: TinyConvNet, bits: int) -> None:
    quantize_layers(model, {n: LayerSpec(bits, bits) for n, m in model.named_modules()
                            if isinstance(m, nn.Conv2d)})
