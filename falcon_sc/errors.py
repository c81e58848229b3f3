"""The errors falcon_sc raises on its own account, beside the plain ``ValueError`` / ``TypeError`` / ``KeyError`` of a
bad argument.

Each is a ``ValueError`` too (code that caught ``ValueError`` keeps working) and a :class:`FalconError`, so one
``except falcon_sc.errors.FalconError`` catches every file or input that falcon_sc refused. The message names the
file (and the field, line or entry) and says what to do.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DatasetFileError", "DegenerateInputError", "FalconError", "SavedModelError"]


class FalconError(Exception):
    """Base of the errors below."""


class SavedModelError(FalconError, ValueError):
    """A saved-model folder is incomplete, damaged, edited inconsistently or not a model of this class."""


class CheckpointError(FalconError, ValueError):
    """A training checkpoint cannot be resumed: damaged, not a falcon_sc checkpoint, or written for other data or
    other settings (the message says what differs)."""


class DatasetFileError(FalconError, ValueError):
    """A dataset file on disk is empty, damaged, of another format, or would need code to run to be read."""


class DegenerateInputError(FalconError, ValueError):
    """The input holds nothing to learn from: no variable feature, a batch per cell, too few cells for the classes
    asked for, and the like (detected before any training)."""
