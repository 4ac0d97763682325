"""Model size report: quantized weights at their bit width, QwT parameters in fp16 (as the
reference reports), every other parameter and buffer-free weight in fp32. 1 MB = 2^20 bytes."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .quant.layers import QUANT_LAYERS
from .qwt.compensation import ConvCompensation, LinearCompensation

MB = 8 * 2**20  # bits per MB


@dataclass
class SizeReport:
    quantized_params: int  # weights of quantized Linear/Conv2d layers
    float_params: int  # biases, norms, embeddings, unquantized layers (fp32)
    qwt_params: int  # compensation weights and biases (fp16)
    quantized_mb: float
    float_mb: float
    qwt_mb: float
    total_mb: float
    fp32_mb: float  # the same model without quantization and without QwT
    bits_per_weight: float  # average bits of the quantized weights

    def to_dict(self) -> dict:
        return asdict(self)


def model_size(model: nn.Module, qwt_bits: int = 16, float_bits: int = 32) -> SizeReport:
    q_bits = q_n = f_n = c_n = 0
    for module in model.modules():
        params = dict(module.named_parameters(recurse=False))
        if isinstance(module, (LinearCompensation, ConvCompensation)):
            c_n += sum(p.numel() for p in params.values())
            continue
        for pname, p in params.items():
            if isinstance(module, QUANT_LAYERS) and pname == "weight":
                q_n += p.numel()
                q_bits += p.numel() * module.weight_quantizer.n_bits
            else:
                f_n += p.numel()
    q_mb, f_mb, c_mb = q_bits / MB, f_n * float_bits / MB, c_n * qwt_bits / MB
    return SizeReport(q_n, f_n, c_n, q_mb, f_mb, c_mb, q_mb + f_mb + c_mb,
                      (q_n + f_n) * float_bits / MB, q_bits / q_n if q_n else 0.0)
