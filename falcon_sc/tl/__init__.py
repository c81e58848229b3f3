"""Tools: scanpy-style entry points."""

from ._refine import refine
from ._refine_images import refine_images

__all__ = ["refine", "refine_images"]
