"""Shared fixtures for the detection tests: a synthetic COCO 2017 folder and tiny detectors.

Everything is skipped (with the reason) when mmdet / mmcv's compiled ops are not importable.
"""
from __future__ import annotations

import pytest

try:
    import mmcv.ops  # noqa: F401  (compiled RoIAlign / nms)
    import mmdet  # noqa: F401
except ImportError as e:  # pragma: no cover - CI installs the detection extra
    pytest.skip(f"mmdet / mmcv with ops not importable ({e}): install the detection extra",
                allow_module_level=True)

from .helpers import tiny_checkpoint, tiny_config, write_synthetic_coco


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory):
    return write_synthetic_coco(tmp_path_factory.mktemp("coco"), n_val=3, n_train=8)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, coco_root):
    """name -> (config path, legacy-format checkpoint path) for each registered detector."""
    from detection.registry import DETECTORS

    d = tmp_path_factory.mktemp("tiny")
    out = {}
    for name in DETECTORS:
        cfg_path = tiny_config(name, d)
        out[name] = (cfg_path, tiny_checkpoint(cfg_path, d / f"{name}.pth", legacy=True))
    return out
