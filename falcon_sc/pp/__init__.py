"""Preprocessing: expression matrix -> model-ready inputs."""

from ._features import CellFeatures, cell_features, unit_rows
from ._prepare import Prepared, ScaledPCA, batch_scaled_pca, detect_input_kind, prepare, within_class_pca
from ._transform import FeatureTransform

__all__ = [
    "CellFeatures",
    "FeatureTransform",
    "Prepared",
    "ScaledPCA",
    "batch_scaled_pca",
    "cell_features",
    "detect_input_kind",
    "prepare",
    "unit_rows",
    "within_class_pca",
]
