"""RepQ-ViT scale reparameterization of LayerNorm -> next Linear.

With the next layer's channel-wise input ranges (delta s_c, zero point z_c), set
s* = mean(s), z* = mean(z), r = s / s*, b = (-z s) / r - (-z* s*). Then

    LayerNorm: gamma <- gamma / r,  beta <- beta / r - b
    Linear:    W <- W * r (per input column),  bias <- bias + W_new @ b

so that Linear(LN'(x)) = Linear(LN(x)) exactly in real arithmetic, while the Linear's input is now
quantizable per tensor with (s*, z*). The Linear's weight quantizer must be re-calibrated.
"""
from __future__ import annotations

import torch
from torch import nn

from .quant.layers import QuantLinear


@torch.no_grad()
def reparameterize(norm: nn.LayerNorm, linear: QuantLinear) -> None:
    """Apply the reparameterization in place. ``linear.input_quantizer`` must be channel-wise and
    calibrated; afterwards it is per-tensor and the weight quantizer is marked uncalibrated."""
    iq = linear.input_quantizer
    if iq.channel_dim is None or not iq.inited:
        raise ValueError("reparameterize needs a calibrated channel-wise input quantizer")
    if norm.weight is None or norm.bias is None:
        raise ValueError("reparameterize needs a LayerNorm with elementwise affine weight and bias")
    s = iq.delta.reshape(-1).to(norm.weight.dtype)  # (C,)
    z = iq.zero_point.reshape(-1).to(norm.weight.dtype)  # (C,)
    s_t, z_t = s.mean(), z.mean()
    r = s / s_t  # (C,)
    b = (-z * s) / r - (-z_t * s_t)  # (C,)
    norm.weight.div_(r)
    norm.bias.copy_(norm.bias / r - b)
    linear.weight.mul_(r)  # (out, C) * (C,)
    shift = linear.weight @ b  # (out,)
    if linear.bias is None:
        linear.bias = nn.Parameter(shift.clone())
    else:
        linear.bias.add_(shift)
    iq.make_per_tensor(s_t, z_t)
    linear.weight_quantizer.inited = False
