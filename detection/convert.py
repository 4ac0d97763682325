"""Checkpoint conversion: Swin-Transformer-Object-Detection (mmdet 2.x, official Swin key names)
-> mmdet 3.x ``SwinTransformer`` key names, and loading with automatic conversion.

Backbone key mapping (old -> new); every other key (neck, RPN, RoI heads, including the cascade's
``roi_head.bbox_head.i`` / ``roi_head.mask_head.i``) has the same name in mmdet 2.x and 3.x::

    backbone.patch_embed.proj.*            -> backbone.patch_embed.projection.*
    backbone.layers.N.blocks.M.attn.*      -> backbone.stages.N.blocks.M.attn.w_msa.*
                                              (qkv, proj, relative_position_bias_table/_index)
    backbone.layers.N.blocks.M.mlp.fc1.*   -> backbone.stages.N.blocks.M.ffn.layers.0.0.*
    backbone.layers.N.blocks.M.mlp.fc2.*   -> backbone.stages.N.blocks.M.ffn.layers.1.*
    backbone.layers.N.blocks.M.norm1/2.*   -> backbone.stages.N.blocks.M.norm1/2.*
    backbone.layers.N.downsample.*         -> backbone.stages.N.downsample.* (channels permuted)
    backbone.normK.*                       -> backbone.normK.*
    backbone.layers.N.blocks.M.attn_mask   -> dropped (mmdet builds the shift mask on the fly)

Patch merging. The official layer concatenates the 2x2 neighbours as
``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (offsets (dy, dx)), i.e. input feature ``k * C + c`` holds
neighbour k, channel c. mmdet's ``nn.Unfold`` orders features channel-major, ``c * 4 + p`` with
p = 2 * dy + dx, i.e. neighbours ``[(0,0), (0,1), (1,0), (1,1)]``. So unfold slot p holds official
neighbour ``[0, 2, 1, 3][p]`` and the reduction weight (O, 4C) / norm (4C,) are permuted
``(O, 4, C)[:, [0, 2, 1, 3]] -> (O, C, 4)`` -- the same permutation as mmdet's ``swin_converter``.
The permutation is its own inverse on the neighbour axis, so :func:`to_legacy` undoes it by the
transpose and the same index list.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from qwt_core.state_io import state_dict_mismatch

UNFOLD_ORDER = [0, 2, 1, 3]  # unfold slot p <- official neighbour UNFOLD_ORDER[p] (self-inverse)


from runtime.errors import CheckpointError  # noqa: E402  (the one checkpoint error of both suites)


def _reduction_to_unfold(w: Tensor) -> Tensor:  # (O, 4C) official -> (O, 4C) unfold
    o, c4 = w.shape
    return w.reshape(o, 4, c4 // 4)[:, UNFOLD_ORDER].transpose(1, 2).reshape(o, c4)


def _reduction_to_official(w: Tensor) -> Tensor:  # inverse of _reduction_to_unfold
    o, c4 = w.shape
    return w.reshape(o, c4 // 4, 4).transpose(1, 2)[:, UNFOLD_ORDER].reshape(o, c4)


def _norm_to_unfold(v: Tensor) -> Tensor:  # (4C,) official -> (4C,) unfold
    return v.reshape(4, -1)[UNFOLD_ORDER].transpose(0, 1).reshape(-1)


def _norm_to_official(v: Tensor) -> Tensor:
    return v.reshape(-1, 4).transpose(0, 1)[UNFOLD_ORDER].reshape(-1)


def is_legacy(state_dict: Mapping[str, Tensor]) -> bool:
    """True for the official-Swin key layout (Swin-Transformer-Object-Detection releases)."""
    return any(k.startswith(("backbone.layers.", "backbone.patch_embed.proj."))
               for k in state_dict)


# (official-Swin name part, mmdet 3.x name part) inside backbone stage keys, first match wins
BLOCK_RENAMES = ((".attn.", ".attn.w_msa."), (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1."))


def _rename(state_dict: Mapping[str, Tensor], to_mmdet3: bool) -> OrderedDict[str, Tensor]:
    """Map backbone keys (and patch-merging tensors) between the two layouts; other keys pass."""
    stages = ("backbone.layers.", "backbone.stages.")
    proj = (".proj.", ".projection.")
    src, dst = (0, 1) if to_mmdet3 else (1, 0)
    reduction = _reduction_to_unfold if to_mmdet3 else _reduction_to_official
    norm = _norm_to_unfold if to_mmdet3 else _norm_to_official
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith(stages[src]):
            if k.endswith(".attn_mask"):  # official Swin stores its shift masks; mmdet recomputes them
                continue
            nk = k.replace(stages[src], stages[dst], 1)
            for pair in BLOCK_RENAMES:
                if pair[src] in nk:
                    nk = nk.replace(pair[src], pair[dst], 1)
                    break
            else:
                if ".downsample.reduction." in nk:
                    v = reduction(v)
                elif ".downsample.norm." in nk:
                    v = norm(v)
            out[nk] = v
        elif k.startswith("backbone.patch_embed" + proj[src]):
            out[k.replace(proj[src], proj[dst], 1)] = v
        else:
            out[k] = v
    return out


def convert_legacy(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Swin-Transformer-Object-Detection state dict -> mmdet 3.x state dict (see module doc)."""
    return _rename(state_dict, to_mmdet3=True)


def to_legacy(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """mmdet 3.x state dict -> official-Swin layout (the inverse of :func:`convert_legacy`)."""
    return _rename(state_dict, to_mmdet3=False)


def read_state_dict(path: str | os.PathLike[str]) -> OrderedDict[str, Tensor]:
    """The state dict of a checkpoint file (``state_dict`` / ``model`` entry or the bare dict),
    without a DataParallel ``module.`` prefix."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found")
    # Release checkpoints (mmdet 2.x / mmengine Runner) pickle their ``meta`` (numpy values,
    # mmengine objects) which torch>=2.6's weights_only loader rejects. They are trusted release
    # files named by the user, so load them fully.
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        sd = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        sd = ckpt["model"]
    elif isinstance(ckpt, dict):
        sd = ckpt
    else:
        raise CheckpointError(f"{path}: not a checkpoint (a {type(ckpt).__name__})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a model state dict")
    return OrderedDict(sd)


def describe_state_dict(sd: Mapping[str, Tensor]) -> str:
    """A short guess of what detector a (converted) state dict belongs to."""
    kind = "cascade_mask_rcnn" if any(k.startswith("roi_head.bbox_head.0.") for k in sd) else (
        "mask_rcnn" if any(k.startswith("roi_head.mask_head.") for k in sd) else "unknown detector")
    blocks: dict[int, set[int]] = {}
    for k in sd:
        m = re.match(r"backbone\.stages\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    depths = tuple(len(blocks[i]) for i in sorted(blocks))
    w = sd.get("backbone.patch_embed.projection.weight")
    dims = int(w.shape[0]) if w is not None else None
    return f"{kind}, Swin embed_dims={dims}, depths={depths}"


def load_detector_weights(model: nn.Module, path: str | os.PathLike[str],
                          expected: str | None = None) -> dict[str, object]:
    """Load a detector checkpoint into ``model`` strictly, converting the official-Swin layout.

    Deterministic buffers the file may lack (``relative_position_index``, identical in both
    layouts) are taken from ``model``. Raises :class:`CheckpointError` with a one-line summary
    when the checkpoint belongs to another detector. Returns {"format": "legacy"|"mmdet3",
    "converted": bool}.
    """
    sd = read_state_dict(path)
    legacy = is_legacy(sd)
    if legacy:
        sd = convert_legacy(sd)
    own = model.state_dict()
    for k, v in own.items():
        if k.endswith("relative_position_index") and k not in sd:
            sd[k] = v
    parts = state_dict_mismatch(own, sd)
    if parts:
        raise CheckpointError(
            f"checkpoint {path} does not match detector {expected or 'of the config'} "
            f"({describe_state_dict(own)}): it looks like {describe_state_dict(sd)}; "
            + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return {"format": "legacy" if legacy else "mmdet3", "converted": legacy}
