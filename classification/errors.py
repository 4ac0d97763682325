"""Errors raised on bad input. The CLI prints :func:`one_line` of the error and exits with status 2."""
from __future__ import annotations

import re


class ClassificationError(Exception):
    """Bad input (model, bits, data, checkpoint, weights, options); the message says what to do."""


class DataLayoutError(ClassificationError):
    """The dataset folder is missing or not in the ``train/`` + ``val/`` class-folder layout."""


class ImageReadError(DataLayoutError):
    """An image file that cannot be decoded; the message names the file."""


class CheckpointError(ClassificationError):
    """A checkpoint or calibrated state that is missing, unreadable or does not match."""


class PretrainedUnavailableError(ClassificationError):
    """Pretrained weights cannot be fetched (offline, empty cache)."""


class MethodError(ClassificationError):
    """A method that does not exist for the model's family."""


_WORKER_TRACEBACK = re.compile(r"^(?:[\w.]+\.)?(\w+Error): (.*)$")


def one_line(error: BaseException) -> str:
    """The error's message on one line.

    An error raised in a DataLoader worker process reaches the main process with the worker's
    traceback in its message ("Caught ImageReadError in DataLoader worker process 0. Original
    Traceback ..."); its last line holds the original message, which is what the user needs."""
    text = str(error)
    if "Original Traceback" in text:
        for line in reversed(text.strip().splitlines()):
            m = _WORKER_TRACEBACK.match(line.strip())
            if m:
                text = m.group(2)
                break
    return " ".join(text.split())


def first_sentence(error: BaseException, limit: int = 120) -> str:
    """The first sentence of an error's message, on one line (library messages can be long)."""
    text = " ".join(str(error).split()) or type(error).__name__
    head = text.split(". ")[0]
    return head if len(head) <= limit else head[:limit - 3] + "..."
