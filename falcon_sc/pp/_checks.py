"""Checks of the inputs of ``pp``: the expression matrix, its values, per-row codes and the input kind."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from .._checks import check_choice
from ..errors import DegenerateInputError
from ._chunks import is_out_of_core, row_blocks

#: allowed values of ``input_kind`` (``"auto"`` detects the kind from the data)
INPUT_KINDS = ("auto", "counts", "normalized", "lognorm")

#: elements per chunk of the full scan of a dense matrix (:func:`check_values`)
_SCAN_ELEMENTS = 1 << 22


def expression_matrix(adata: ad.AnnData, layer: str | None) -> Any:
    """``adata.X``, or ``adata.layers[layer]``; a ``KeyError`` naming the available layers when it is missing."""
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} not found in adata.layers (available: {list(adata.layers)}); "
            "pass one of them or None for adata.X."
        )
    return adata.layers[layer]


def matrix_source(layer: str | None) -> str:
    """Name of the expression matrix in messages: ``"X"`` or ``"layers['name']"``."""
    return f"layers[{layer!r}]" if layer is not None else "X"


def check_matrix(X: Any, name: str = "X") -> int:
    """Number of rows of a cells x genes matrix (2-d array or sparse); a ``ValueError`` naming it otherwise."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        what = f"shape {tuple(shape)}" if shape is not None else type(X).__name__
        raise ValueError(f"{name} must be a 2-d cells x genes matrix (numpy array or scipy sparse), got {what}.")
    return int(shape[0])


def check_codes(name: str, codes: Any, n_rows: int, rows: str = "row of X") -> np.ndarray:
    """``codes`` as an array of one non-negative integer code per row of the matrix; a ``ValueError`` otherwise."""
    arr = np.asarray(codes)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must hold one code per {rows} ({n_rows}), got shape {arr.shape}.")
    if arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
        raise ValueError(
            f"{name} must hold non-negative integer codes (e.g. pandas.Categorical(...).codes), got dtype {arr.dtype}"
            + (f" with minimum {arr.min()}" if arr.dtype.kind in "iu" else "")
            + "."
        )
    return arr


def obs_batch_codes(adata: ad.AnnData, batch_key: str | None) -> np.ndarray:
    """Integer batch code per cell from ``adata.obs[batch_key]`` (category order; all 0 without ``batch_key``)."""
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if batch_key not in adata.obs:
        raise KeyError(f"batch_key={batch_key!r} is not a column of adata.obs; pass an existing column or None.")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(f"batch_key={batch_key!r} has missing values; fill them before calling.")
    return batch_categories(col).codes.astype(np.int64)


def batch_categories(col: pd.Series) -> pd.Categorical:
    """The batches of an obs column as a categorical of the batches that hold cells (unused categories dropped)."""
    return pd.Categorical(col).remove_unused_categories()


def check_input_kind(input_kind: Any) -> None:
    """Raise a ``ValueError`` naming ``input_kind`` unless it is one of :data:`INPUT_KINDS`."""
    check_choice("input_kind", input_kind, INPUT_KINDS)


def _value_counts(vals: np.ndarray) -> tuple[int, int, int]:
    """Numbers of NaN, infinite and negative entries of ``vals`` (fast path: one min and one max)."""
    if vals.size == 0:
        return 0, 0, 0
    lo, hi = vals.min(), vals.max()
    if vals.dtype.kind in "biu":
        return 0, 0, int((vals < 0).sum()) if lo < 0 else 0
    if np.isfinite(lo) and np.isfinite(hi) and lo >= 0:
        return 0, 0, 0
    return int(np.isnan(vals).sum()), int(np.isinf(vals).sum()), int((vals < 0).sum())


def _value_chunks(X: Any) -> Iterable[np.ndarray]:
    """The stored values of ``X`` in pieces: sparse, its ``data``; dense, row chunks (never a second copy of ``X``).

    An out-of-core ``X`` (backed or dask) is read in row chunks of :data:`~falcon_sc.pp._chunks.CHUNK_CELLS` cells.
    """
    if is_out_of_core(X):
        return (np.asarray(b.data) if sparse.issparse(b) else b.ravel() for _, _, b in row_blocks(X))
    if sparse.issparse(X):
        if X.format not in ("csr", "csc", "coo", "bsr"):
            X = X.tocsr()
        return [np.asarray(X.data)]
    step = max(1, _SCAN_ELEMENTS // max(1, X.shape[1])) if len(X.shape) == 2 else max(1, X.shape[0])
    return (np.asarray(X[start : start + step]) for start in range(0, X.shape[0], step))


def check_values(X: Any, source: str = "X") -> None:
    """Raise a ``ValueError`` when ``X`` holds NaN, infinite or negative values, counted over the whole matrix.

    Every stored value is checked (sparse: the stored ``data``; dense: row chunks, never a second copy of ``X``),
    unlike :func:`~falcon_sc.pp.detect_input_kind`, which probes some rows. Counts, normalised and log-normalised
    values are all finite and non-negative.

    Parameters
    ----------
    X
        Cells x genes, dense or sparse.
    source
        Name of the matrix in the message, e.g. ``"X"`` or ``"layers['counts']"``.

    Raises
    ------
    ValueError
        If ``X`` is not numeric, or holds NaN, infinite or negative values (the message gives how many).

    Examples
    --------
    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> fal.pp.check_values(np.array([[0.0, 1.5], [2.0, 3.0]]))  # clean: nothing happens
    >>> fal.pp.check_values(np.array([[0.0, np.nan], [-1.0, 3.0]]))
    Traceback (most recent call last):
    ...
    ValueError: adata.X holds 1 NaN values (and 1 negative); expression values must be finite: ...
    """
    if X is None:
        raise ValueError(f"adata.{source} is None: there is no expression matrix; pass layer=... or use_rep=....")
    n_nan = n_inf = n_neg = 0
    for vals in _value_chunks(X):
        if vals.dtype.kind not in "biuf":
            raise ValueError(
                f"adata.{source} holds {vals.dtype} values; the expression matrix must be numeric (counts, normalised "
                "or log-normalised values)."
            )
        a, b, c = _value_counts(vals)
        n_nan, n_inf, n_neg = n_nan + a, n_inf + b, n_neg + c
    if n_nan or n_inf:
        what = " and ".join(f"{n:,} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
        more = f" (and {n_neg:,} negative)" if n_neg else ""
        raise ValueError(
            f"adata.{source} holds {what} values{more}; expression values must be finite: replace them (e.g. by 0) "
            "or pass another layer=..., or an embedding via use_rep=...."
        )
    if n_neg:
        raise ValueError(
            f"adata.{source} holds {n_neg:,} negative values (it looks scaled/centred). Pass raw counts, normalised or "
            "log-normalised values via layer=..., or an existing embedding via use_rep=...."
        )


def canonical(X: Any) -> Any:
    """``X`` itself, or for a sparse matrix with duplicate entries or unsorted indices a canonical copy.

    scipy sums duplicates in place in some methods (``max``, ``min``, ``sum_duplicates``); working on this copy
    leaves the user's matrix byte-identical. A canonical matrix is returned as it is (no copy).
    """
    if not sparse.issparse(X):
        return X
    if X.format not in ("csr", "csc"):
        return X.tocsr()  # a new matrix, duplicates summed
    if X.has_canonical_format:
        return X
    out = X.copy()
    out.sum_duplicates()
    return out


def matrix_max(X: Any) -> float:
    """Largest value of a non-negative matrix (0 when empty), without modifying a sparse ``X`` in place."""
    if X.shape[0] == 0 or X.shape[1] == 0:
        return 0.0
    if is_out_of_core(X):
        return max(0.0, *(float(v.max()) for v in _value_chunks(X) if v.size))
    if sparse.issparse(X):
        data = canonical(X).data
        return float(max(0.0, data.max())) if data.size else 0.0
    return float(np.max(X))


def _differs(values: np.ndarray, ref: np.ndarray, rtol: float) -> np.ndarray:
    """Where ``values`` differ from ``ref`` (exactly, or by more than ``rtol`` of the larger magnitude)."""
    if rtol == 0:
        return values != ref
    return np.abs(values - ref) > rtol * np.maximum(np.abs(values), np.abs(ref))


def _varying_sparse(X: Any, rtol: float) -> tuple[np.ndarray, bool]:
    """Per gene, whether its values differ between cells, and whether any value is non-zero (sparse ``X``)."""
    X = canonical(X)
    n_cells, n_genes = X.shape
    if X.format == "csr":
        gene = np.asarray(X.indices)
    else:  # csc: the stored values of gene j are data[indptr[j]:indptr[j + 1]]
        gene = np.repeat(np.arange(n_genes), np.diff(X.indptr))
    data = np.asarray(X.data)
    some = np.zeros(n_genes, dtype=data.dtype)
    some[gene] = data  # one stored value of each gene (any one of them)
    differs = np.zeros(n_genes, dtype=bool)
    differs[gene[_differs(data, some[gene], rtol)]] = True
    stored = np.bincount(gene, minlength=n_genes)
    nonzero = np.bincount(gene[data != 0], minlength=n_genes) > 0
    return differs | (nonzero & (stored < n_cells)), bool(nonzero.any())


def block_range(block: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the smallest and largest value of an in-memory block of rows (implicit zeros of CSR count)."""
    if sparse.issparse(block):
        block = sparse.csr_matrix(block)
        lo = np.asarray(block.min(axis=0).todense()).ravel()
        hi = np.asarray(block.max(axis=0).todense()).ravel()
        return lo.astype(np.float64), hi.astype(np.float64)
    return block.min(axis=0).astype(np.float64), block.max(axis=0).astype(np.float64)


def column_range(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the smallest and largest value of an out-of-core ``X``, read in row chunks."""
    lo = np.full(X.shape[1], np.inf)
    hi = np.full(X.shape[1], -np.inf)
    for _, _, block in row_blocks(X):
        b_lo, b_hi = block_range(block)
        np.minimum(lo, b_lo, out=lo)
        np.maximum(hi, b_hi, out=hi)
    return lo, hi


def varying_genes(X: Any, rtol: float = 0.0) -> tuple[np.ndarray, bool]:
    """Per gene (column), whether it takes at least two values across the cells (rows); and whether ``X`` is non-zero.

    Exact (or, with ``rtol > 0``, values within ``rtol`` of each other count as equal: the rounding of computed
    values), one pass over the stored values: a sparse matrix is never densified (and, with duplicate entries, summed
    on a copy), a dense one is read in row chunks; an out-of-core ``X`` (backed, dask) is read in row chunks and each
    gene's smallest and largest values compared. ``X`` is never modified. NaN values must have been refused first
    (:func:`check_values`).
    """
    if sparse.issparse(X):
        return _varying_sparse(X, rtol)
    if is_out_of_core(X):
        lo, hi = column_range(X)
        return _differs(hi, lo, rtol), bool((hi != 0).any() or (lo != 0).any())
    n_cells, n_genes = X.shape
    varies = np.zeros(n_genes, dtype=bool)
    if n_cells == 0:
        return varies, False
    first = np.asarray(X[:1]).ravel()
    nonzero = bool((first != 0).any())
    step = max(1, _SCAN_ELEMENTS // max(1, n_genes))
    for start in range(0, n_cells, step):
        block = np.asarray(X[start : start + step])
        varies |= _differs(block, first, rtol).any(axis=0)
    return varies, nonzero or bool(varies.any())


def check_variation(
    X: Any,
    source: str = "X",
    *,
    what: str = "every cell has the same values",
    names: Any = None,
    rtol: float = 0.0,
    ranges: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Raise :class:`~falcon_sc.errors.DegenerateInputError` unless at least 2 genes of ``X`` vary across cells.

    All-zero and constant matrices (no gene takes two values) and a single varying gene hold nothing a principal
    component analysis, and so FALCON, can learn from. Returns, per gene, whether it varies
    (:func:`varying_genes`; sparse input is not densified and never modified).

    Parameters
    ----------
    X
        Cells x genes, dense or sparse, finite and non-negative.
    source
        Name of the matrix in the message, e.g. ``"X"`` or ``"layers['counts']"``.
    what
        Why no gene varies, for the message.
    names
        Gene names (``adata.var_names``), to name a single varying gene.
    rtol
        Values within this relative distance count as equal (for computed values, e.g. normalised ones).
    ranges
        Per gene, the smallest and largest value, already computed (e.g. over row chunks, :func:`block_range`):
        ``X`` is then not read (only its shape is used).
    """
    if ranges is None:
        varies, nonzero = varying_genes(X, rtol)
    else:
        lo, hi = ranges
        varies, nonzero = _differs(hi, lo, rtol), bool((hi != 0).any() or (lo != 0).any())
    n_varying = int(varies.sum())
    if n_varying >= 2:
        return varies
    where = f"adata.{source}"
    fix = (
        "there is nothing to learn from. Pass the layer that holds the expression values (layer=...) or an "
        "embedding (use_rep=...)."
    )
    if not nonzero:
        raise DegenerateInputError(f"{where} is all zero ({X.shape[0]:,} cells x {X.shape[1]:,} genes): {fix}")
    if n_varying == 0:
        raise DegenerateInputError(f"no gene of {where} varies across the {X.shape[0]:,} cells ({what}): {fix}")
    column = int(np.flatnonzero(varies)[0])
    gene = repr(str(names[column])) if names is not None else f"column {column}"
    raise DegenerateInputError(
        f"only 1 gene ({gene}) of {where} varies across the cells; a principal "
        f"component analysis needs at least 2: {fix}"
    )
