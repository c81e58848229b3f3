"""Sample sources the trainer draws from: image files read from local folders one minibatch at a time."""

from __future__ import annotations

from .images import ImageFiles

__all__ = ["ImageFiles"]
