"""Tools: scanpy-style entry points."""

from ._refine import refine

__all__ = ["refine"]
