"""Errors raised on bad input. The CLI prints ``str(error)`` as one line and exits non-zero."""
from __future__ import annotations


class ClassificationError(Exception):
    """Bad input (model, bits, data, checkpoint, weights); the message says what to do."""


class DataLayoutError(ClassificationError):
    """The dataset folder is missing or not in the ``train/`` + ``val/`` class-folder layout."""


class CheckpointError(ClassificationError):
    """A checkpoint that is missing, unreadable or does not match the architecture."""


class PretrainedUnavailableError(ClassificationError):
    """Pretrained weights cannot be fetched (offline, empty cache)."""


class MethodError(ClassificationError):
    """A method that does not exist for the model's family."""
