"""Tools: scanpy-style entry points."""

from ._markers import fine_markers
from ._refine import refine
from ._refine_images import refine_images
from ._rename import rename

__all__ = ["fine_markers", "refine", "refine_images", "rename"]
