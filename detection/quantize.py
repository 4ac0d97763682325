"""RepQ-ViT on an mmdet detector with a Swin backbone: the quantization plan, the attention
matmul quantizers inside mmdet's ``WindowMSA``, the window padding, and calibration.

Plan (SPEC "Detection"): every ``nn.Conv2d`` and ``nn.Linear`` of backbone, FPN, RPN and RoI heads
gets per-output-channel n-bit weights and per-tensor n-bit inputs, except the patch-embedding conv
whose input is 8-bit. The inputs of ``qkv``, ``fc1`` and the patch-merging ``reduction`` start
channel-wise and become per-tensor by the scale reparameterization of the LayerNorm before them.
(``ConvTranspose2d`` -- the mask head's upsample -- is neither, and stays in float as in the
reference.) In every ``WindowMSA``: ``matmul1(q * scale, kᵀ)`` with both inputs uniform n-bit
(mmdet scales q before the product, as RepQ-ViT's Swin does) and ``matmul2(attn, v)`` with the
post-softmax ``attn`` log-sqrt(2) n-bit and ``v`` uniform n-bit. The log-sqrt(2) quantizer takes
``log2(attn / delta)`` with no floor on the ratio, as the detection reference's
``tools/quant/quantizer.py`` does (``ATTN_RATIO_FLOOR = None``: zero and tiny probabilities, e.g. the
shift-masked ones, map to 0 at every bit width); the 1e-6 floor of qwt_core's default belongs to the
classification reference only.

Window padding. mmdet's ``ShiftWindowMSA`` zero-pads the *normalized* tokens (after ``norm1``) up
to a multiple of the window. After the reparameterization, norm1' = norm1 / r - b, so the padded
zeros no longer stand for norm1's zeros: qkv'(0) = qkv(0) + W'b, and the real tokens attending to
padded ones change. The reference code keeps the zeros; so does the default here
(``exact_padding=False``, ``--window-pad zero``). The named improvement ``exact_padding=True``
(``--window-pad exact``) pads with the value norm1' maps norm1's zero to, -b:
:class:`PadAwareShiftWindowMSA` pads with a per-channel ``pad_value`` buffer (zeros unless the
reparameterization sets it to -b, with b = s*·(z* - z) from the qkv input quantizer's per-channel
ranges (s, z) and s* = mean(s), z* = mean(z), exactly qwt_core.reparam's b). The full-precision
function is then unchanged for any feature-map size; the quantized qkv input sees the padded
positions at -b, the image of norm1's zeros. (Patch merging pads *before* its norm, so it needs
nothing.)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, cast

import torch
from mmdet.models.backbones.swin import ShiftWindowMSA, SwinTransformer, WindowMSA
from torch import Tensor, nn

from qwt_core import LayerSpec, LogSqrt2Quantizer, QuantLinear, QuantMatMul, calibrate_repq, quantize_layers

PATCH_EMBED_A_BITS = 8  # the patch-embedding conv sees 8-bit (normalized image) inputs
ATTN_RATIO_FLOOR = None  # log-sqrt(2) of attn: no floor on attn / delta (QwT-det-RepQ-ViT's quantizer)


class QuantWindowMSA(WindowMSA):
    """mmdet's WindowMSA with the two attention products through ``QuantMatMul``."""

    matmul1: QuantMatMul
    matmul2: QuantMatMul

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape  # (num_windows * B, Wh * Ww, C)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, C / heads)
        q = q * self.scale
        attn = self.matmul1(q, k.transpose(-2, -1))  # (B, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
        attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        x = self.matmul2(attn, v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class PadAwareShiftWindowMSA(ShiftWindowMSA):
    """mmdet's ShiftWindowMSA padding with ``pad_value`` (C,) instead of zeros (see module doc)."""

    pad_value: Tensor

    def forward(self, query: Tensor, hw_shape: tuple[int, int]) -> Tensor:
        B, L, C = query.shape
        H, W = hw_shape
        assert L == H * W, "input feature has wrong size"
        query = query.view(B, H, W, C)
        pad_r = (self.window_size - W % self.window_size) % self.window_size
        pad_b = (self.window_size - H % self.window_size) % self.window_size
        if pad_r or pad_b:
            padded = self.pad_value.to(query.dtype).expand(B, H + pad_b, W + pad_r, C).clone()
            padded[:, :H, :W] = query
            query = padded  # (B, H_pad, W_pad, C)
        H_pad, W_pad = query.shape[1], query.shape[2]
        if self.shift_size > 0:
            shifted = torch.roll(query, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            img_mask = torch.zeros((1, H_pad, W_pad, 1), device=query.device)
            slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                      slice(-self.shift_size, None))
            cnt = 0
            for h in slices:
                for w in slices:
                    img_mask[:, h, w, :] = cnt
                    cnt += 1
            mask_windows = self.window_partition(img_mask).view(-1, self.window_size**2)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
        else:
            shifted, attn_mask = query, None
        windows = self.window_partition(shifted).view(-1, self.window_size**2, C)
        attn_windows = self.w_msa(windows, mask=attn_mask).view(-1, self.window_size, self.window_size, C)
        shifted = self.window_reverse(attn_windows, H_pad, W_pad)  # (B, H_pad, W_pad, C)
        if self.shift_size > 0:
            x = torch.roll(shifted, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        else:
            x = shifted
        if pad_r or pad_b:
            x = x[:, :H, :W, :].contiguous()
        return self.drop(x.view(B, H * W, C))


def find_swin(model: nn.Module) -> tuple[str, SwinTransformer]:
    """(qualified name, module) of the detector's mmdet SwinTransformer backbone."""
    for name, m in model.named_modules():
        if isinstance(m, SwinTransformer):
            return name, m
    raise TypeError("the detector has no mmdet SwinTransformer backbone")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def build_plan(model: nn.Module, w_bits: int, a_bits: int) -> dict[str, LayerSpec]:
    """LayerSpec for every Linear / Conv2d of the detector (see module doc)."""
    swin_name, swin = find_swin(model)
    patch_conv = _join(swin_name, "patch_embed.projection")
    channel_wise = (".attn.w_msa.qkv", ".ffn.layers.0.0", ".downsample.reduction")
    plan: dict[str, LayerSpec] = {}
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear,)):
            raise ValueError(f"{name} is already quantized: build a fresh model")
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            in_swin = name.startswith(swin_name + ".") if swin_name else True
            cw = isinstance(m, nn.Linear) and in_swin and name.endswith(channel_wise)
            a = PATCH_EMBED_A_BITS if name == patch_conv else a_bits
            plan[name] = LayerSpec(w_bits, a, cw)
    return plan


def reparam_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(LayerNorm, Linear) pairs of the backbone, in execution order: norm1 -> qkv,
    norm2 -> fc1 per block, downsample.norm -> downsample.reduction per stage."""
    swin_name, swin = find_swin(model)
    pairs = []
    for i, stage in enumerate(swin.stages):
        for j in range(len(stage.blocks)):
            b = _join(swin_name, f"stages.{i}.blocks.{j}")
            pairs.append((f"{b}.norm1", f"{b}.attn.w_msa.qkv"))
            pairs.append((f"{b}.norm2", f"{b}.ffn.layers.0.0"))
        if stage.downsample is not None and stage.downsample.norm is not None:
            d = _join(swin_name, f"stages.{i}.downsample")
            pairs.append((f"{d}.norm", f"{d}.reduction"))
    return pairs


def install_attention(model: nn.Module, a_bits: int) -> None:
    """Swap every WindowMSA / ShiftWindowMSA of the backbone for the quantizable, pad-aware
    subclasses (in place; parameters are kept, new modules and the pad buffer are added)."""
    _, swin = find_swin(model)
    for m in swin.modules():
        if isinstance(m, ShiftWindowMSA) and not isinstance(m, PadAwareShiftWindowMSA):
            m.__class__ = PadAwareShiftWindowMSA
            c = m.w_msa.embed_dims
            m.register_buffer("pad_value", torch.zeros(c, device=m.w_msa.qkv.weight.device))
        if isinstance(m, WindowMSA) and not isinstance(m, QuantWindowMSA):
            m.__class__ = QuantWindowMSA
            dev = m.relative_position_bias_table.device
            m.matmul1 = QuantMatMul(a_bits).to(dev)
            m.matmul2 = QuantMatMul(a_bits, log_a=True).to(dev)
            m.matmul2.quantizer_a = LogSqrt2Quantizer(a_bits, ratio_floor=ATTN_RATIO_FLOOR).to(dev)


def quantize_detector(model: nn.Module, w_bits: int, a_bits: int) -> dict[str, LayerSpec]:
    """Fake-quantize the whole detector in place (quantizers start disabled and uncalibrated).
    Returns the layer plan."""
    plan = build_plan(model, w_bits, a_bits)
    install_attention(model, a_bits)
    quantize_layers(model, plan)
    return plan


def pad_shift(linear: QuantLinear) -> Tensor:
    """-b of the reparameterization of ``linear``'s input, from its channel-wise input quantizer:
    b = (-z·s)/r - (-z*·s*) with r = s/s* reduces to b = s*·(z* - z)."""
    iq = linear.input_quantizer
    s = iq.delta.reshape(-1).float()
    z = iq.zero_point.reshape(-1).float()
    return s.mean() * (z - z.mean())  # = -b, shape (C,)


@torch.no_grad()
def calibrate_detector(model: nn.Module, batch: object, forward: Callable[[nn.Module, object], object],
                       pairs: Iterable[tuple[str, str]] | None = None, exact_padding: bool = False,
                       unreached: Literal["lazy", "error"] = "lazy") -> list[str]:
    """RepQ-ViT calibration on one batch (qwt_core.calibrate_repq's three steps) that also sets
    each block's pad value before its norm1 -> qkv reparameterization.

    1. quantized pass: every quantizer initialises (qkv/fc1/reduction inputs per channel);
    2. reparameterize each (LayerNorm, Linear) pair; with ``exact_padding`` set the attention's
       ``pad_value`` to -b before each norm1 -> qkv pair;
    3. quantized pass: re-initialise the reset weight quantizers.

    ``exact_padding=False`` (default) keeps zero padding after the reparameterized norm1, as the
    reference code does (the full-precision function then changes on padded feature maps);
    ``exact_padding=True`` is the named improvement that keeps it exact.

    Quantizers the calibration image does not reach (the mask head when it yields no detection)
    initialise on the first evaluation data that reaches them (``unreached="lazy"``, as in the
    reference; logged); their names are returned. ``unreached="error"`` raises instead.
    """
    def set_pad_value(norm_name: str, linear_name: str) -> None:
        if exact_padding and norm_name.endswith(".norm1"):
            attn = model.get_submodule(norm_name[: -len("norm1")] + "attn")
            if isinstance(attn, PadAwareShiftWindowMSA):
                # (the pair's linear is a QuantLinear: quantize_layers ran before the reparameterization)
                qkv = cast(QuantLinear, model.get_submodule(linear_name))
                attn.pad_value.copy_(pad_shift(qkv).to(attn.pad_value))

    pairs = list(reparam_pairs(model) if pairs is None else pairs)
    return calibrate_repq(model, batch, pairs, forward=forward, before_reparam=set_pad_value,  # type: ignore[arg-type]
                          unreached=unreached)
