"""Checks a run makes before any work starts (shared by the classification and detection CLIs).

Each check raises :class:`PreflightError` with one line that says what is wrong and what to do;
the pipelines turn it into their own error type (printed as ``error: ...``, exit status 2).

- :func:`writable_dir` / :func:`state_file_target`: an output folder / file can be written (a
  temporary file is created and removed in the folder, or in its nearest existing parent when the
  folder does not exist yet: nothing is left behind);
- :func:`parse_device`: ``cpu``, ``cuda`` or ``cuda:N`` that torch can use; :func:`default_device`;
- :func:`check_seed`, :func:`check_workers`, :func:`default_workers`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .errors import BadInput


class PreflightError(BadInput):
    """A run option that cannot work; the message is one line for the user."""


def _existing_parent(path: Path) -> Path:
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    return p


def _probe(folder: Path, what: str) -> None:
    """Create and remove a temporary file in ``folder``."""
    try:
        fd, name = tempfile.mkstemp(prefix=".qwt-write-probe-", dir=folder)
    except OSError as e:
        raise PreflightError(f"{what}: cannot write in {folder} ({e.strerror or e}); "
                             "choose a writable location") from None
    os.close(fd)
    os.unlink(name)


def writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Check that ``path`` is (or can be created as) a writable folder; returns it.

    ``what`` names the option in the message (e.g. ``"--results-dir results/records"``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PreflightError(f"{what}: {path} is a file, not a folder")
    base = _existing_parent(path)
    if not base.is_dir():
        raise PreflightError(f"{what}: {base} is a file, so the folder {path} cannot be created")
    _probe(base, what)
    return path


def state_file_target(path: str | os.PathLike[str], what: str = "--save-state") -> Path:
    """Check that a file can be written at ``path`` (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep):
        raise PreflightError(f"{what} {path}: is a folder; give a file name, e.g. {path / 'state.pt'}")
    writable_dir(path.parent if str(path.parent) else Path("."), f"{what} {path}")
    return path


def check_outputs(results_dir: str | os.PathLike[str] | None, save_state: str | os.PathLike[str] | None) -> None:
    """The record folder (when records are written) and the ``--save-state`` file can be written."""
    if results_dir is not None:
        writable_dir(results_dir, f"--results-dir {results_dir}")
    if save_state:
        state_file_target(save_state)


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(text: str, what: str = "--device") -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` as torch parses it, usable on this machine; returns the
    normalized string (``str(torch.device(text))``)."""
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise PreflightError(f"{what} {text!r} is not a device: use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise PreflightError(f"{what} {text}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise PreflightError(f"{what} {text} requested but CUDA is not available (use {what} cpu)")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PreflightError(f"{what} {text}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return str(dev)


def check_seed(seed: int, what: str = "--seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise PreflightError(f"{what} must be an integer >= 0, got {seed!r}")
    return seed


def available_cpus() -> int:
    """CPUs this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def default_workers(preferred: int) -> int:
    """``preferred`` data-loader workers, capped by the CPUs available (torch warns beyond that)."""
    return max(0, min(preferred, available_cpus()))


def check_workers(workers: int, what: str = "--workers") -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise PreflightError(f"{what} must be an integer >= 0 (0: load in the main process), got {workers!r}")
    return workers
