"""RepQ-ViT calibration: initialise, reparameterize, re-initialise the weight quantizers."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .quant.layers import QuantLinear
from .quant.state import calibration, uncalibrated
from .reparam import reparameterize

Forward = Callable[[nn.Module, Tensor], object]
BeforeReparam = Callable[[str, str], None]  # (LayerNorm name, Linear name), called before each pair


def _default_forward(model: nn.Module, images: Tensor) -> object:
    return model(images)


@torch.no_grad()
def calibrate_repq(model: nn.Module, images: Tensor, reparam_pairs: Sequence[tuple[str, str]] = (),
                   forward: Forward = _default_forward, before_reparam: BeforeReparam | None = None) -> None:
    """Two quantized passes over one calibration batch, as RepQ-ViT does.

    1. every quantizer initialises on the first tensor it sees (inputs of ``qkv``/``fc1``/
       ``reduction`` per channel);
    2. each (LayerNorm name, Linear name) of ``reparam_pairs`` is reparameterized so that the
       Linear's input becomes per-tensor, and its weight quantizer is reset;
    3. a second pass re-initialises the reset weight quantizers.
    ``forward`` runs the model on the batch (detectors need more than ``model(images)``);
    ``before_reparam(norm_name, linear_name)`` runs just before each pair is reparameterized, while
    the Linear's input quantizer is still channel-wise (e.g. to set Swin's window pad value).
    """
    model.eval()
    with calibration(model):
        forward(model, images)
    for norm_name, linear_name in reparam_pairs:
        norm, linear = model.get_submodule(norm_name), model.get_submodule(linear_name)
        if not isinstance(linear, QuantLinear):
            raise TypeError(f"{linear_name} is a {type(linear).__name__}, expected QuantLinear")
        if before_reparam is not None:
            before_reparam(norm_name, linear_name)
        reparameterize(norm, linear)  # type: ignore[arg-type]
    if reparam_pairs:
        with calibration(model):
            forward(model, images)
    missing = uncalibrated(model)
    if missing:
        raise RuntimeError(f"{len(missing)} quantizers saw no data during calibration, e.g. "
                           f"{missing[:3]}: the forward pass does not reach them")
