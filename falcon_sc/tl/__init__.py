"""Tools: scanpy-style entry points."""

from ._conflicts import coarse_conflicts
from ._markers import fine_markers
from ._refine import refine
from ._refine_images import refine_images
from ._rename import rename

__all__ = ["coarse_conflicts", "fine_markers", "refine", "refine_images", "rename"]
