"""Save / load the whole calibrated state: quantizer ranges and configuration, reparameterized
weights (and biases created by the reparameterization), and QwT compensation.

The file holds ``{"format", "state_dict", "compensated": {block name: compensation spec},
"meta"}``. Loading needs a model built and quantized the same way (same plan); the loader re-wraps
the compensated blocks and then loads the state dict strictly, so the reloaded model gives
bit-identical outputs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .qwt.compensation import CompensatedBlock, build_compensation

FORMAT = "qwt-state/1"


def state_dict_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                        examples: int = 1) -> list[str]:
    """How ``state`` differs from a model's ``own`` state dict: missing keys, unexpected keys and
    shape mismatches, each with a count and examples; [] when it would load strictly."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]

    def eg(keys: list[str]) -> object:
        return keys[0] if examples == 1 else keys[:examples]

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {eg(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {eg(unexpected)})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs "
                     f"{tuple(own[k].shape)})")
    return parts


def weights_fingerprint(state: Mapping[str, torch.Tensor] | nn.Module) -> str:
    """SHA-256 (hex, first 16 digits) of a state dict's names, shapes, dtypes and bytes.

    Taken of the full-precision weights before quantization and stored in a calibrated state's
    ``meta``, it tells whether a state is loaded onto the weights it was calibrated from.
    """
    if isinstance(state, nn.Module):
        state = state.state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def save_state(model: nn.Module, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
    """Write the calibrated state atomically (temporary file, then rename)."""
    compensated = {name: m.compensation.spec() for name, m in model.named_modules()
                   if isinstance(m, CompensatedBlock)}
    payload = {"format": FORMAT, "state_dict": model.state_dict(), "compensated": compensated,
               "meta": meta or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_state(model: nn.Module, path: str | os.PathLike[str],
               map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a state written by :func:`save_state` into an identically quantized ``model``.

    Returns the saved ``meta``. Raises ``ValueError`` naming the file on a wrong format or a model
    that does not match.
    """
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a QwT calibrated state (expected format {FORMAT})")
    for name, spec in payload["compensated"].items():
        block = model.get_submodule(name)
        if not isinstance(block, CompensatedBlock):
            # the new wrapper takes the block's mode: its compensation uses the fp16 product in
            # eval mode and fp32 in training mode, as the reference's CompensationBlock
            model.set_submodule(name, CompensatedBlock(block, build_compensation(spec)).train(block.training))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: calibrated state does not match this model: {e}") from e
    return payload["meta"]
