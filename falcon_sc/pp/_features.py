"""Per-cell network inputs and the space where within-class neighbours are searched (shared by all networks)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ._normalise import Prepared


@dataclass
class CellFeatures:
    """What a network sees of each cell, and where its neighbours are searched.

    Attributes
    ----------
    features
        Cells x inputs of the network (dense float32, or CSR for ``model_input="hvg"``).
    neighbour_space
        Cells x dimensions whose cosine similarity defines within-coarse-class neighbours.
    prepared
        The preprocessing output (``None`` with ``use_rep``).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> coarse = adata.obs["coarse"].cat.codes.to_numpy()
    >>> feats = fal.pp.cell_features(adata, coarse, n_top_genes=100, n_comps=10, n_comps_within=5)
    >>> feats.features.shape, feats.neighbour_space.shape, type(feats.prepared).__name__
    ((300, 15), (300, 15), 'Prepared')
    """

    features: np.ndarray | sparse.csr_matrix
    neighbour_space: np.ndarray
    prepared: Prepared | None = None


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so that the cosine of concatenated blocks averages the blocks' cosines.

    Examples
    --------
    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> fal.pp.unit_rows(np.array([[3.0, 4.0], [0.0, 2.0]]))
    array([[0.6, 0.8],
           [0. , 1. ]])
    """
    if np.ndim(X) != 2:
        raise ValueError(f"X must be a 2-d array (rows to scale), got shape {np.shape(X)}.")
    return X / np.clip(np.linalg.norm(X, axis=1, keepdims=True), 1e-12, None)
