"""Models: the user-facing :class:`FalconModel` and the torch networks it trains."""

from ._falcon import FalconModel
from .mlp import MLPClassifier

__all__ = ["FalconModel", "MLPClassifier"]
