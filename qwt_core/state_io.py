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
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .qwt.compensation import CompensatedBlock, build_compensation

FORMAT = "qwt-state/1"


class StateFileError(ValueError):
    """A calibrated-state file that cannot be used; the message names the file, in one line."""


@dataclass(frozen=True)
class StateInfo:
    """What a calibrated-state file says about itself, read before a model is built."""

    meta: dict[str, Any]  # what save_state was given (model / detector, method, bits, fingerprint, ...)
    compensated: tuple[str, ...]  # names of the blocks that carry QwT compensation

    @property
    def has_qwt(self) -> bool:
        return bool(self.compensated)


def read_state_info(path: str | os.PathLike[str], what: str = "state file") -> StateInfo:
    """Open a state written by :func:`save_state` without a model: its meta and compensated blocks.

    Raises :class:`StateFileError` (one line naming the file) for a missing, truncated or foreign
    file. The file is read with ``weights_only=True`` (tensors, dicts, lists, numbers, strings),
    so reading a foreign pickle runs no code."""
    path = Path(path)
    if not path.is_file():
        raise StateFileError(f"{what} {path}: "
                             + ("is a folder, not a state file" if path.is_dir() else "does not exist"))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, ImportError, IndexError, KeyError, TypeError, struct.error) as e:
        reason = (" ".join(str(e).split()).split(". ")[0] or type(e).__name__)[:120]
        raise StateFileError(f"{what} {path}: not a readable calibrated state written by save_state "
                             f"(truncated or another kind of file: {type(e).__name__}: {reason})") from None
    if (not isinstance(payload, dict) or payload.get("format") != FORMAT
            or not isinstance(payload.get("compensated"), dict) or not isinstance(payload.get("meta", {}), dict)):
        raise StateFileError(f"{what} {path}: not a calibrated state written by save_state "
                             f"(expected format {FORMAT})")
    return StateInfo(dict(payload.get("meta") or {}), tuple(payload["compensated"]))


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
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed save leaves no partial file behind


def module_device(module: nn.Module) -> torch.device:
    """Where ``module`` lives: the device of its first parameter (else buffer; CPU when it has none)."""
    for t in module.parameters():
        return t.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def load_state(model: nn.Module, path: str | os.PathLike[str],
               map_location: str | torch.device | None = None) -> dict[str, Any]:
    """Load a state written by :func:`save_state` into an identically quantized ``model``.

    Everything the state adds follows the model: each compensation module is built on the device of
    the block it wraps, and the saved tensors are copied into the model's own tensors wherever those
    live (``map_location`` only says where the file is read to, CPU by default). The evaluation
    arithmetic is not part of the state (:func:`qwt_core.eval_arithmetic`; the ``fp16_eval`` /
    ``half_arith`` keys of older files are ignored). Returns the saved ``meta``. Raises ``ValueError`` naming
    the file on a wrong format or a model that does not match.
    """
    payload = torch.load(path, map_location=map_location or "cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a QwT calibrated state (expected format {FORMAT})")
    for name, spec in payload["compensated"].items():
        block = model.get_submodule(name)
        if not isinstance(block, CompensatedBlock):
            # the new wrapper takes the block's mode (its compensation uses the fp16 product in
            # eval mode and fp32 in training mode, as the reference's CompensationBlock) and device
            comp = build_compensation(spec).to(module_device(block))
            model.set_submodule(name, CompensatedBlock(block, comp).train(block.training))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: calibrated state does not match this model: {e}") from e
    return payload["meta"]
