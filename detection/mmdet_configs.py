"""mmdet's own configs: ``--config`` accepts a file, ``mmdet::<dir>/<file>.py`` (mmengine's scope
syntax) or ``configs/<dir>/<file>.py`` (mmdet's repository layout); the last two are looked up in
the installed mmdet package (``mmdet/.mim/configs``), whose ``_base_`` files come with them.
"""
from __future__ import annotations

from pathlib import Path

SCOPE = "mmdet::"
REPO_PREFIX = "configs/"


class ConfigNotFound(ValueError):
    """A ``--config`` that names no file; the message says where it was looked for."""


def mmdet_config_dir() -> Path:
    """``<site-packages>/mmdet/.mim/configs`` of the installed mmdet."""
    import mmdet

    return Path(mmdet.__file__).resolve().parent / ".mim" / "configs"


def resolve_config(spec: str) -> Path:
    """The config file ``spec`` names (see module doc); ConfigNotFound otherwise."""
    path = Path(spec)
    if not spec.startswith(SCOPE) and path.is_file():
        return path
    rel = spec[len(SCOPE):] if spec.startswith(SCOPE) else (
        spec[len(REPO_PREFIX):] if spec.startswith(REPO_PREFIX) else None)
    if rel is not None:
        found = mmdet_config_dir() / rel
        if found.is_file():
            return found
        raise ConfigNotFound(f"config {spec} not found: no {rel} under mmdet's configs ({mmdet_config_dir()}); "
                             f"give a file or {SCOPE}<dir>/<file>.py, "
                             f"e.g. {SCOPE}mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    raise ConfigNotFound(f"config file {spec} not found (or use {SCOPE}<dir>/<file>.py for mmdet's own configs)")
