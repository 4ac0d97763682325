"""Stand-ins for the mmcv 1.x / mmdet 2.x imports on the paths of QwT-det-RepQ-ViT that the parity
check runs, installed as ``sys.modules`` entries in the side process only (never in the suite's).

The fork's files run unchanged; only these imports are answered differently:

=========================================  ==========================================================
import in the fork                          stand-in
=========================================  ==========================================================
``from mmcv_custom import load_checkpoint``  a module whose ``load_checkpoint`` raises (the backbone
  (swin_transformer.py)                       is built with ``init_weights(None)``: never called)
``from mmdet.utils import get_root_logger``  ``logging.getLogger("mmdet")`` (called only with a
  (swin_transformer.py)                       checkpoint path: never called)
``from ..builder import BACKBONES``          a registry whose ``register_module()`` returns the class
  (swin_transformer.py)                       unchanged (the backbone is built by its constructor)
package ``mmdet``, ``mmdet.models``,         empty packages whose ``__path__`` is the fork's folder, so
  ``mmdet.models.backbones``                  that ``mmdet.models.backbones.swin_transformer`` (and
                                              ``tools/quant``'s import of its ``MatMul``) load the
                                              fork's own file, without running the fork's
                                              ``__init__.py`` files (they import mmcv 1.x)
=========================================  ==========================================================

``timm.models.layers`` (``DropPath``, ``to_2tuple``, ``trunc_normal_``) is the suite's timm 1.x: the
same helpers as timm 0.4's (``DropPath`` is the identity in eval mode; ``trunc_normal_`` draws the
random initial weights, which are dumped and loaded by the suite, so its draws need not match
anything). ``tools/test.py`` imports mmcv 1.x at module level and parses
``sys.argv``: it is not imported; its functions and its reparameterization block are executed from
its own source (:mod:`benchmarks.parity_det.reference`).
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

STOOD_IN = ("mmcv_custom", "mmdet", "mmdet.models", "mmdet.models.backbones", "mmdet.models.builder",
            "mmdet.utils")


class StandInRegistry:
    """``BACKBONES`` of mmdet 2.x, reduced to what the fork's decorator needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.modules: dict[str, type] = {}

    def register_module(self, *args: Any, **kwargs: Any) -> Callable[[type], type]:
        def register(cls: type) -> type:
            self.modules[cls.__name__] = cls
            return cls
        return register


def _load_checkpoint(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("parity-det stand-in: mmcv_custom.load_checkpoint is not available in the side "
                       "process (the backbone is built with random weights)")


def install(ref: Path) -> None:
    """Put the stand-ins into ``sys.modules`` (refuses when a real mmdet is already imported)."""
    if "mmdet" in sys.modules and not getattr(sys.modules["mmdet"], "__parity_det_standin__", False):
        raise RuntimeError("parity-det: a real mmdet is already imported in this process; the fork's "
                           "stand-ins must be installed in a fresh side process")

    def package(name: str, path: Path | None) -> ModuleType:
        m = ModuleType(name)
        m.__path__ = [str(path)] if path is not None else []
        m.__parity_det_standin__ = True  # type: ignore[attr-defined]
        sys.modules[name] = m
        return m

    mmdet = package("mmdet", ref / "mmdet")
    models = package("mmdet.models", ref / "mmdet" / "models")
    backbones = package("mmdet.models.backbones", ref / "mmdet" / "models" / "backbones")
    mmdet.models = models  # type: ignore[attr-defined]
    models.backbones = backbones  # type: ignore[attr-defined]
    builder = ModuleType("mmdet.models.builder")
    builder.BACKBONES = StandInRegistry("backbone")  # type: ignore[attr-defined]
    sys.modules["mmdet.models.builder"] = builder
    models.builder = builder  # type: ignore[attr-defined]
    utils = ModuleType("mmdet.utils")
    utils.get_root_logger = lambda *a, **k: logging.getLogger("mmdet")  # type: ignore[attr-defined]
    sys.modules["mmdet.utils"] = utils
    mmdet.utils = utils  # type: ignore[attr-defined]
    custom = ModuleType("mmcv_custom")
    custom.load_checkpoint = _load_checkpoint  # type: ignore[attr-defined]
    sys.modules["mmcv_custom"] = custom
