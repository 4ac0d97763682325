"""RepQ-ViT calibration: initialise, reparameterize, re-initialise the weight quantizers."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .quant.layers import QuantLinear
from .quant.state import calibration, quantizers
from .reparam import reparameterize

logger = logging.getLogger("qwt_core.calibrate")
UNREACHED = ("error", "lazy")

Forward = Callable[[nn.Module, Tensor], object]
BeforeReparam = Callable[[str, str], None]  # (LayerNorm name, Linear name), called before each pair


def _default_forward(model: nn.Module, images: Tensor) -> object:
    return model(images)


@torch.no_grad()
def calibrate_repq(model: nn.Module, images: Tensor, reparam_pairs: Sequence[tuple[str, str]] = (),
                   forward: Forward = _default_forward, before_reparam: BeforeReparam | None = None,
                   unreached: Literal["error", "lazy"] = "error") -> list[str]:
    """Two quantized passes over one calibration batch, as RepQ-ViT does.

    1. every quantizer initialises on the first tensor it sees (inputs of ``qkv``/``fc1``/
       ``reduction`` per channel);
    2. each (LayerNorm name, Linear name) of ``reparam_pairs`` is reparameterized so that the
       Linear's input becomes per-tensor, and its weight quantizer is reset;
    3. a second pass re-initialises the reset weight quantizers.
    ``forward`` runs the model on the batch (detectors need more than ``model(images)``);
    ``before_reparam(norm_name, linear_name)`` runs just before each pair is reparameterized, while
    the Linear's input quantizer is still channel-wise (e.g. to set Swin's window pad value).

    Quantizers that neither pass reached (e.g. a detector's mask head when the calibration image
    yields no detection): ``unreached="error"`` raises; ``unreached="lazy"`` lets each initialise
    on the first data that reaches it later (:meth:`Quantizer.allow_init_on_first_use`, as the
    reference's quantizers do), logs their count and examples, and returns their names
    (otherwise []).
    """
    if unreached not in UNREACHED:
        raise ValueError(f"unreached must be one of {UNREACHED}, got {unreached!r}")
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
    missing = [(n, q) for n, q in quantizers(model) if not q.inited]
    names = [n for n, _ in missing]
    if missing and unreached == "error":
        raise RuntimeError(f"{len(missing)} quantizers saw no data during calibration, e.g. "
                           f"{names[:3]}: the forward pass does not reach them")
    for name, q in missing:
        q.allow_init_on_first_use(name)
    if missing:
        logger.warning("%d quantizers saw no data during calibration (e.g. %s): each initialises "
                       "on the first data that reaches it", len(missing), ", ".join(names[:3]))
    return names
