"""The errors a run raises on bad input, shared by both suites.

Every bad request (options, data, checkpoint, state) is a :class:`BadInput`; the CLIs print
:func:`one_line` of it as ``<prog>: error: ...`` and exit with status 2, before any work when the
check can be made before any work. :class:`CheckpointError` is the one checkpoint / calibrated
state error of both suites.
"""
from __future__ import annotations

import re

EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """A bad request (options, data, checkpoint, state); the message says what to do."""


class CheckpointError(BadInput):
    """A checkpoint or calibrated state that is missing, unreadable or does not match the run."""


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
