"""qwt_core: RepQ-ViT fake quantization and QwT (Quantization without Tears) compensation.

Imports torch only. Stages, one entry point each:
    quantize_layers(model, plan)              # swap Linear/Conv2d for fake-quantized twins
    calibrate_repq(model, images, pairs)      # RepQ-ViT: init, reparameterize, re-init
    fit_qwt(adapter, batches, QwTConfig())    # block-wise QwT compensation
    with eval_arithmetic(fp16, half_arith):   # how compensation multiplies at evaluation
    save_state / load_state                   # the calibrated state, bit-exact
    model_size(model)                         # MB report
"""
from .calibrate import calibrate_repq
from .quant.layers import QuantConv2d, QuantLinear, QuantMatMul
from .quant.primitives import (
    PERCENTILES,
    fake_quant_log_sqrt2,
    fake_quant_uniform,
    search_log_sqrt2_delta,
    search_uniform_range,
)
from .quant.quantizers import LogSqrt2Quantizer, UniformQuantizer, check_bits
from .quant.replace import LayerSpec, quantize_layers
from .quant.state import calibration, full_precision, quant_state, quantizers, set_quant_state, uncalibrated
from .qwt.accumulator import NormalEquations
from .qwt.arithmetic import eval_arithmetic
from .qwt.compensation import CompensatedBlock, ConvCompensation, LinearCompensation
from .qwt.config import SOLVER_PRESETS, QwTConfig
from .qwt.driver import BlockReport, BlockStep, BlockwiseAdapter, fit_qwt
from .qwt.regression import Regression, Solution, all_reduce_sum, gate
from .qwt.rows import ReferenceRows
from .reparam import reparameterize
from .size import SizeReport, model_size
from .state_io import load_state, save_state, weights_fingerprint

__all__ = [
    "calibrate_repq", "QuantConv2d", "QuantLinear", "QuantMatMul", "PERCENTILES",
    "fake_quant_log_sqrt2", "fake_quant_uniform", "search_log_sqrt2_delta", "search_uniform_range",
    "LogSqrt2Quantizer", "UniformQuantizer", "check_bits", "LayerSpec", "quantize_layers",
    "calibration", "full_precision", "quant_state", "quantizers", "set_quant_state", "uncalibrated",
    "NormalEquations", "Solution", "all_reduce_sum", "CompensatedBlock", "ConvCompensation",
    "LinearCompensation", "QwTConfig", "SOLVER_PRESETS", "eval_arithmetic", "ReferenceRows", "Regression", "gate",
    "BlockReport", "BlockStep", "BlockwiseAdapter", "fit_qwt",
    "reparameterize", "SizeReport", "model_size", "load_state", "save_state", "weights_fingerprint",
]
