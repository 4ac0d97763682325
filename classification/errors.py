"""Errors raised on bad input: the classification kinds of :class:`runtime.errors.BadInput`
(the CLI prints :func:`runtime.errors.one_line` of the error and exits with status 2)."""
from __future__ import annotations

from runtime.errors import BadInput, CheckpointError, first_sentence, one_line

__all__ = ["ClassificationError", "DataLayoutError", "ImageReadError", "CheckpointError",
           "PretrainedUnavailableError", "MethodError", "one_line", "first_sentence"]

ClassificationError = BadInput  # bad input (model, bits, data, checkpoint, weights, options)


class DataLayoutError(BadInput):
    """The dataset folder is missing or not in the ``train/`` + ``val/`` class-folder layout."""


class ImageReadError(DataLayoutError):
    """An image file that cannot be decoded; the message names the file."""


class PretrainedUnavailableError(BadInput):
    """Pretrained weights cannot be fetched (offline, empty cache)."""


class MethodError(BadInput):
    """A method that does not exist for the model's family."""
