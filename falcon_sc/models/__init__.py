"""Models: the user-facing :class:`FalconModel` and the torch networks it trains (MLP for cells, ResNets for images)."""

from ._falcon import FalconModel
from .checkpoint import load_backbone
from .mlp import MLPClassifier
from .resnet import ResNet, resnet18, resnet50

__all__ = ["FalconModel", "MLPClassifier", "ResNet", "load_backbone", "resnet18", "resnet50"]
