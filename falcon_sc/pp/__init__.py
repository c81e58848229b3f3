"""Preprocessing: expression matrix -> model-ready inputs."""

from ._checks import INPUT_KINDS as INPUT_KINDS
from ._checks import check_values as check_values
from ._checks import check_variation as check_variation
from ._features import CellFeatures, unit_rows
from ._input_kind import detect_input_kind
from ._normalise import Prepared, prepare
from ._pca import ScaledPCA, batch_scaled_pca, within_class_pca
from ._transform import FeatureTransform, cell_features

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
