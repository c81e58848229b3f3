"""Models: the user-facing :class:`FalconModel` and the torch networks it trains (MLP for cells, ResNets for images)."""

from ._falcon import FalconModel
from ._params import FitParams, SetupParams
from .checkpoint import load_backbone
from .mlp import MLPClassifier
from .resnet import ResNet, resnet18, resnet50

__all__ = [
    "FalconModel",
    "FitParams",
    "MLPClassifier",
    "SetupParams",
    "ResNet",
    "load_backbone",
    "resnet18",
    "resnet50",
]
