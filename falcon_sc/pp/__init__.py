"""Preprocessing: expression matrix -> model-ready inputs."""

from ._prepare import Prepared, batch_scaled_pca, detect_input_kind, prepare, within_class_pca

__all__ = ["Prepared", "batch_scaled_pca", "detect_input_kind", "prepare", "within_class_pca"]
