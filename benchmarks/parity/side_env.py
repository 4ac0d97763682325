"""The side environment the reference runs in: timm 0.4.12 in a folder put first on PYTHONPATH.

The reference (QwT-cls-RepQ-ViT) was written against timm 0.4.12 and imports only timm, tqdm, numpy
and torch (and torchvision for its ResNet); the suite's own torch imports timm 0.4.12 cleanly, so
the side environment is timm alone, installed from the package registry with
``python -m pip install --no-deps --target DIR timm==0.4.12`` and reused while it is there.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIMM = "timm==0.4.12"


class SideEnvError(RuntimeError):
    """The side environment cannot be built; the message is one line saying why and what to do."""


def default_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "qwt" / "parity" / "timm-0.4.12"


def installed_version(path: Path) -> str | None:
    """The timm version installed in ``path`` (None when there is none)."""
    f = path / "timm" / "version.py"
    if not f.is_file():
        return None
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", f.read_text())
    return m.group(1) if m else None


def ensure(path: Path | None = None, python: str = sys.executable) -> Path:
    """``path`` (default :func:`default_dir`) with timm 0.4.12 in it, installed if it is not there.

    The install goes to a temporary folder beside ``path`` and is renamed into place, so an
    interrupted or failed install leaves nothing that looks ready.
    """
    path = Path(path or default_dir()).expanduser().resolve()
    version = installed_version(path)
    if version == TIMM.split("==")[1]:
        return path
    if version is not None or (path.exists() and any(path.iterdir())):
        raise SideEnvError(f"{path} exists but does not hold {TIMM} (found timm {version or 'none'}): "
                           "remove it or pass --side-env with another folder")
    print(f"[parity] installing {TIMM} into {path}", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".", dir=path.parent))
    cmd = [python, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
           "--quiet", "--target", str(tmp), TIMM]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or installed_version(tmp) != TIMM.split("==")[1]:
            lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            why = lines[-1] if lines else "no output"
            raise SideEnvError(f"could not install {TIMM} into {path} (pip exit {proc.returncode}: {why}); "
                               "check access to the package index, or pass --side-env DIR holding timm 0.4.12")
        if path.exists():
            path.rmdir()  # empty (checked above)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
