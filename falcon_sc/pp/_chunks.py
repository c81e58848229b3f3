"""Row chunks of an expression matrix that may live on disk (backed AnnData) or in a dask array.

Out-of-core matrices are never read whole: every statistic of the streamed preprocessing
(:mod:`falcon_sc.pp._streamed`) is accumulated over :data:`CHUNK_CELLS` rows at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse

#: cells read at a time from an out-of-core matrix (backed ``.h5ad`` or dask). Memory of one chunk of 2,000 genes
#: read as float64 dense rows: 20,000 x 2,000 x 8 bytes = 320 MB; a few such buffers bound the streamed path.
CHUNK_CELLS = 20_000


def _is_dask(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "dask"


def is_out_of_core(X: Any) -> bool:
    """Whether ``X`` is a matrix on disk (a backed AnnData's ``X``: h5py/zarr dataset) or a dask array."""
    if X is None or isinstance(X, np.ndarray) or sparse.issparse(X):
        return False
    if _is_dask(X):
        return True
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata < 0.11
        CSCDataset = CSRDataset = ()  # noqa: N806
    if isinstance(X, CSRDataset | CSCDataset):
        return True
    module = type(X).__module__.split(".")[0]
    return module in ("h5py", "zarr")


def _in_memory(block: Any) -> Any:
    """A block read from an out-of-core matrix as a CSR matrix or a numpy array, never a view of user memory.

    h5py and zarr reads are new arrays; a dask block may be a view of the array the dask matrix wraps, so it is
    copied (the streamed normalisation works in place).
    """
    if _is_dask(block):
        block = block.compute()
        block = block.copy() if sparse.issparse(block) else np.array(block, copy=True)
    if sparse.issparse(block):
        return sparse.csr_matrix(block)
    return np.asarray(block)


def read_rows(X: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of ``X`` in memory (CSR for sparse storage, else a numpy array)."""
    return _in_memory(X[start:stop])


def read_row_set(X: Any, rows: np.ndarray) -> Any:
    """The rows ``rows`` (sorted indices) of ``X`` in memory (CSR for sparse storage, else a numpy array)."""
    if is_out_of_core(X) and not _is_dask(X) and not hasattr(X, "format"):
        return np.asarray(X[np.asarray(rows)])  # h5py needs increasing indices: ``rows`` is sorted
    return _in_memory(X[np.asarray(rows)])


def row_blocks(X: Any, chunk: int = CHUNK_CELLS) -> Iterator[tuple[int, int, Any]]:
    """``(start, stop, rows)`` for consecutive chunks of ``chunk`` rows of ``X`` (each read into memory)."""
    n = int(X.shape[0])
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        yield start, stop, read_rows(X, start, stop)
