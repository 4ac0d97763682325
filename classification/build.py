"""Build a registered model: timm / torchvision constructor, then pretrained weights, a local
checkpoint, or random init.

Weights, in order of precedence:
1. ``checkpoint``: a local state dict of the same architecture (any model; ``{"state_dict": ..}``,
   ``{"model": ..}`` and ``module.`` prefixes are unwrapped); loaded strictly.
2. ``checkpoint_dir`` (default ``checkpoints/``, Make's ``CKPT_DIR``): the spec's
   ``checkpoint_name`` in that folder (the reference ResNet files), or for a timm model
   ``<arch>.<tag>.safetensors`` / ``.pth`` when such a file is there (offline use).
3. ``pretrained=True``: timm pretrained weights of the pinned tag (HF hub cache; no ResNet). When
   they are not cached, the hub is probed first (a few seconds) so that an offline machine gets
   one clear message instead of a minute of download retries.
4. random init (``pretrained=False``): tests and tiny models.
"""
from __future__ import annotations

import json
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qwt_core.state_io import state_dict_mismatch
from runtime.config import DEFAULT_CHECKPOINT_DIR  # one default for Make (CKPT_DIR), both CLIs and the docs

from . import registry
from .errors import CheckpointError, ClassificationError, PretrainedUnavailableError, first_sentence
from .registry import ModelSpec

TORCHVISION_RESNETS = {"resnet18": ("BasicBlock", [2, 2, 2, 2]), "resnet34": ("BasicBlock", [3, 4, 6, 3]),
                       "resnet50": ("Bottleneck", [3, 4, 6, 3]), "resnet101": ("Bottleneck", [3, 4, 23, 3]),
                       "resnet152": ("Bottleneck", [3, 8, 36, 3])}
LOCAL_WEIGHT_SUFFIXES = (".safetensors", ".pth")  # <arch>.<tag><suffix> in the checkpoint folder (timm models)
HUB_PROBE_TIMEOUT_S = 5.0


def resolve_spec(model: str | ModelSpec, overrides: dict[str, Any] | None = None, tiny: bool = False) -> ModelSpec:
    """Registry lookup, then the tiny variant and/or constructor overrides."""
    spec = registry.get(model) if isinstance(model, str) else model
    if tiny:
        spec = spec.tiny()
    if overrides:
        spec = spec.with_overrides(overrides)
    return spec


def construct(spec: ModelSpec) -> nn.Module:
    """The architecture with random weights."""
    if callable(spec.builder):
        return spec.builder(**spec.kwargs)
    if spec.builder == "timm":
        import timm
        return timm.create_model(spec.arch, pretrained=False, **spec.kwargs)
    if spec.builder == "torchvision":
        from torchvision.models import resnet as tv_resnet
        if spec.arch in TORCHVISION_RESNETS:
            block_name, layers = TORCHVISION_RESNETS[spec.arch]
            kwargs = dict(spec.kwargs)
            layers = kwargs.pop("layers", layers)
            return tv_resnet.ResNet(getattr(tv_resnet, block_name), layers, **kwargs)
        import torchvision
        return torchvision.models.get_model(spec.arch, weights=None, **spec.kwargs)
    raise ValueError(f"{spec.name}: unknown builder {spec.builder!r} (expected 'timm', 'torchvision' or a callable)")


def check_constructor_kwargs(spec: ModelSpec, overrides: dict[str, Any]) -> None:
    """Build ``spec`` on the meta device (no memory, no weights) to check that its constructor
    accepts the ``overrides`` (``--model-kwargs``); raises ClassificationError naming the problem."""
    import torch

    try:
        with torch.device("meta"):
            construct(spec)
    except (TypeError, ValueError, AssertionError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ClassificationError(f"--model-kwargs {json.dumps(overrides)}: the constructor of {spec.name} "
                                  f"({spec.arch}) rejects them: {reason}") from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state dict from a local file (``.pth``, ``.pth.tar``, ``.safetensors``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj: Any = load_file(str(path))
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as e:
                if "weights_only" not in str(e):  # not a pickle at all (text, truncated, ...)
                    raise
                # old checkpoints holding non-tensor objects (trusted local file named by the user)
                obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # whatever a foreign file makes the unpickler raise
        raise CheckpointError(f"checkpoint {path} cannot be read as a state dict "
                              f"({type(e).__name__}: {first_sentence(e)})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], spec: ModelSpec) -> None:
    """Load strictly; a mismatch raises :class:`CheckpointError` naming a few differing keys."""
    state = read_state_dict(path)
    parts = state_dict_mismatch(model.state_dict(), state, examples=2)
    if parts:
        raise CheckpointError(f"checkpoint {path} does not match the architecture of {spec.name} "
                              f"({spec.arch}): {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def local_weight_files(spec: ModelSpec, checkpoint_dir: str | os.PathLike[str]) -> list[Path]:
    """Where a timm model's weights may lie in the checkpoint folder (``<arch>.<tag>.safetensors``, ``.pth``)."""
    return [Path(checkpoint_dir) / f"{spec.timm_name}{suffix}" for suffix in LOCAL_WEIGHT_SUFFIXES]


def checkpoint_for(spec: ModelSpec, checkpoint: str | None, checkpoint_dir: str | None) -> str | None:
    """The checkpoint file to load, or None for pretrained/random weights."""
    if checkpoint:
        return checkpoint
    if checkpoint_dir and spec.checkpoint_name:
        return str(Path(checkpoint_dir) / spec.checkpoint_name)
    if checkpoint_dir and spec.builder == "timm":
        found = [p for p in local_weight_files(spec, checkpoint_dir) if p.is_file()]
        if found:
            return str(found[0])
    return None


def missing_checkpoint_message(spec: ModelSpec, checkpoint_dir: str | None) -> str:
    where = Path(checkpoint_dir or DEFAULT_CHECKPOINT_DIR) / (spec.checkpoint_name or f"{spec.name}.pth")
    src = f" (get it from {spec.checkpoint_source})" if spec.checkpoint_source else ""
    return (f"{spec.name} needs a checkpoint: {where} not found{src}; pass --checkpoint FILE or "
            "--checkpoint-dir DIR (make: CKPT_DIR=DIR)")


def build_model(model: str | ModelSpec, pretrained: bool = True, checkpoint: str | None = None,
                checkpoint_dir: str | None = None, overrides: dict[str, Any] | None = None,
                tiny: bool = False) -> tuple[nn.Module, ModelSpec]:
    """Build ``model`` (a registry name or a spec) in eval mode; returns (model, resolved spec).

    ``tiny=True`` builds the small random-init variant of the same classes (tests).
    """
    spec = resolve_spec(model, overrides, tiny)
    # the checkpoint folder holds pretrained weights: not for random init / tiny models
    ckpt = checkpoint_for(spec, checkpoint, checkpoint_dir if pretrained and not tiny else None)
    if ckpt is not None:
        if not Path(ckpt).is_file():
            if checkpoint:
                raise CheckpointError(f"checkpoint {ckpt} does not exist")
            raise CheckpointError(missing_checkpoint_message(spec, checkpoint_dir))
        net = construct(spec)
        load_checkpoint(net, ckpt, spec)
    elif pretrained and not tiny:
        if spec.builder != "timm":  # torchvision ResNets: the reference checkpoints only
            raise CheckpointError(missing_checkpoint_message(spec, checkpoint_dir))
        net = _timm_pretrained(spec)
    else:
        net = construct(spec)
    return net.eval(), spec


def _unavailable(spec: ModelSpec, why: str) -> PretrainedUnavailableError:
    local = local_weight_files(spec, f"<{DEFAULT_CHECKPOINT_DIR}>")[0].name
    return PretrainedUnavailableError(
        f"pretrained weights {spec.timm_name} are not reachable ({why}); offline, pass --checkpoint FILE "
        f"(a local state dict), or put {local} in the checkpoint folder (--checkpoint-dir DIR, make: "
        f"CKPT_DIR=DIR, default {DEFAULT_CHECKPOINT_DIR}/), or fill the Hugging Face hub cache (HF_HOME) on a "
        f"connected machine with `timm.create_model('{spec.timm_name}', pretrained=True)`")


def _hub_cached(spec: ModelSpec) -> bool | None:
    """Whether the hub cache holds the weights of ``spec`` (None: they do not come from the hub)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    names = [getattr(cfg, "hf_hub_filename", None), "model.safetensors", "pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names if n)


def check_hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None when the Hugging Face hub answers within ``timeout`` seconds, else why not (offline
    mode set, no network, no name resolution). Any HTTP answer counts as reachable."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT)
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the server answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"{endpoint} does not answer: {' '.join(str(reason).split())}"
    return None


def _timm_pretrained(spec: ModelSpec) -> nn.Module:
    import timm
    if _hub_cached(spec) is False:
        why = check_hub_reachable()
        if why is not None:
            raise _unavailable(spec, f"not in the hub cache and {why}")
    try:
        return timm.create_model(spec.timm_name, pretrained=True, **spec.kwargs)
    except (OSError, RuntimeError, ValueError, ImportError) as e:
        # huggingface_hub's offline / not-in-cache errors subclass OSError or ValueError;
        # requests' connection errors subclass OSError.
        raise _unavailable(spec, type(e).__name__) from e
