"""What a fitted :class:`~falcon_sc.FalconModel` keeps, and digests of the data it was fitted on.

:class:`FittedState` is everything :meth:`~falcon_sc.FalconModel.save` writes; :func:`input_digests` tells whether an
AnnData holds the cells a model was fitted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse
from torch import nn

from ..pp import FeatureTransform


@dataclass
class FittedState:
    """The fitted preprocessing, networks, relation and records of a model.

    ``schemes``: with several coarse schemes, their keys, class names and relations (``coarse_names`` and
    ``relation`` are then those of the joint groups).
    """

    transform: FeatureTransform
    coarse_names: list[str]
    fine_names: list[str]  # per network output
    relation: np.ndarray  # fine x coarse, 0/1
    use_warm: np.ndarray  # per coarse class: predictions of the warm-fitted network
    network: nn.Module
    warm_network: nn.Module | None
    hidden: list[int]
    params: dict[str, Any]
    history: list[dict]
    schemes: dict[str, Any] | None = None


def warm_copy(make_network: Any, state: dict[str, torch.Tensor] | None, n_fine: int) -> nn.Module | None:
    """The network fitted to the warm start, rebuilt from its weights (``None`` without a warm start)."""
    if state is None:
        return None
    warm = make_network(n_fine)
    warm.load_state_dict(state)
    return warm.eval()


#: rows of a matrix hashed at a time by :func:`input_digests` (about 4 million values per chunk)
_HASH_VALUES = 1 << 22


def _matrix_digest(matrix: Any) -> str:
    """Digest of a cells x features matrix's values, the same for dense, CSR and CSC storage of the same numbers.

    Rows are hashed in chunks as canonical CSR (per row: number of non-zeros, their columns, their values as float64),
    so no second copy of the whole matrix is made.
    """
    h = hashlib.blake2b(digest_size=16)
    n_rows, n_cols = matrix.shape
    h.update(np.array([n_rows, n_cols], dtype=np.int64).tobytes())
    if sparse.issparse(matrix) and matrix.format != "csr":
        matrix = sparse.csr_matrix(matrix)
    step = max(1, _HASH_VALUES // max(1, n_cols))
    for start in range(0, n_rows, step):
        rows = matrix[start : start + step]
        chunk = sparse.csr_matrix(rows, dtype=np.float64, copy=True) if sparse.issparse(rows) else None
        if chunk is None:
            chunk = sparse.csr_matrix(np.asarray(rows, dtype=np.float64))
        chunk.sum_duplicates()
        chunk.eliminate_zeros()
        h.update(np.diff(chunk.indptr).astype(np.int64).tobytes())
        h.update(chunk.indices.astype(np.int64).tobytes())
        h.update(chunk.data.tobytes())
    return h.hexdigest()


def _labels_digest(values: pd.Index | pd.Series) -> str:
    hashed = pd.util.hash_pandas_object(pd.Series(np.asarray(values).astype(str)), index=False)
    return hashlib.blake2b(hashed.to_numpy().tobytes(), digest_size=16).hexdigest()


def input_digests(adata: ad.AnnData, setup: Any) -> dict[str, str | None]:
    """Digest of each part of ``adata`` a fit with ``setup`` reads (``None``: the part is missing).

    The parts are ``obs_names``, the input matrix (``X``, ``layers[layer]`` or ``obsm[use_rep]``) and the coarse and
    batch columns of ``obs``. Two AnnDatas with the same digests hold the same cells with the same data, whatever
    their storage (dense or sparse) and other contents.
    """
    if setup.use_rep is not None:
        where, matrix = f"obsm[{setup.use_rep!r}]", adata.obsm.get(setup.use_rep)
    elif setup.layer is not None:
        where, matrix = f"layers[{setup.layer!r}]", adata.layers.get(setup.layer)
    else:
        where, matrix = "X", adata.X
    digests: dict[str, str | None] = {"obs_names": _labels_digest(adata.obs_names)}
    digests[where] = None if matrix is None else _matrix_digest(matrix)
    keys = [setup.coarse_key] if isinstance(setup.coarse_key, str) else list(setup.coarse_key)
    for key in [*keys, *([] if setup.batch_key is None else [setup.batch_key])]:
        digests[f"obs[{key!r}]"] = _labels_digest(adata.obs[key]) if key in adata.obs else None
    return digests
