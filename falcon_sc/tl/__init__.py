"""Tools: scanpy-style entry points."""

from ._conflicts import coarse_conflicts
from ._markers import fine_markers
from ._mixed_lineage import mixed_lineage
from ._refine import refine
from ._refine_images import refine_images
from ._rename import rename

__all__ = ["coarse_conflicts", "fine_markers", "mixed_lineage", "refine", "refine_images", "rename"]
