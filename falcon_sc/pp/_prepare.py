"""Expression matrix -> model input: detect counts, normalise, select HVGs, batch-aware scaled PCA."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scanpy import logging as logg
from scipy import sparse

_CHUNK = 8192


@dataclass
class Prepared:
    """Model-ready views of an expression matrix.

    Attributes
    ----------
    embedding
        Cells x ``n_comps`` PCA of the scaled (per batch) log-normalised HVGs, float32.
    lognorm
        Cells x HVG log-normalised matrix (sparse stays sparse), float32.
    genes
        Names of the selected genes.
    input_kind
        ``"counts"`` or ``"lognorm"``: what was detected in the input.
    batches
        Integer batch code per cell.
    """

    embedding: np.ndarray
    lognorm: sparse.csr_matrix | np.ndarray
    genes: pd.Index
    input_kind: str
    batches: np.ndarray


def _matrix(adata: ad.AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} not found in adata.layers (available: {list(adata.layers)}); "
            "pass one of them or None for adata.X."
        )
    return adata.layers[layer]


def detect_input_kind(X, *, n_probe: int = 2000, random_state: int = 0) -> str:
    """Tell raw counts from log-normalised values by probing rows.

    Parameters
    ----------
    X
        Cells x genes, dense or sparse.
    n_probe
        Number of rows inspected.
    random_state
        Seed for the probed rows.

    Returns
    -------
    ``"counts"`` when every probed value is a non-negative integer, ``"lognorm"`` when values are non-negative but
    not all integers.

    Raises
    ------
    ValueError
        If the matrix holds negative or non-finite values (scaled data cannot be normalised again).
    """
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(X.shape[0], size=min(n_probe, X.shape[0]), replace=False))
    sub = X[rows]
    vals = sub.data if sparse.issparse(sub) else np.asarray(sub).ravel()
    vals = np.asarray(vals, dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        raise ValueError("The expression matrix holds NaN or infinite values; clean it or pass another layer=.")
    if vals.size and vals.min() < 0:
        raise ValueError(
            "The expression matrix holds negative values (it looks scaled/centred). Pass raw counts or "
            "log-normalised values via layer=..., or an existing embedding via use_rep=..."
        )
    return "counts" if np.allclose(vals, np.round(vals)) else "lognorm"


def _batch_codes(adata: ad.AnnData, batch_key: str | None) -> np.ndarray:
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if batch_key not in adata.obs:
        raise KeyError(f"batch_key={batch_key!r} is not a column of adata.obs; pass an existing column or None.")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(f"batch_key={batch_key!r} has missing values; fill them before calling.")
    return pd.Categorical(col).codes.astype(np.int64)


def _dense_rows(X, start: int, stop: int) -> np.ndarray:
    block = X[start:stop]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def _top_eigenvectors(sym: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenvalues (descending) and eigenvectors of a symmetric matrix (LAPACK ``evr`` on that subset)."""
    from scipy.linalg import eigh

    m = sym.shape[0]
    evals, evecs = eigh(sym, subset_by_index=[m - k, m - 1], driver="evr")
    return evals[::-1], evecs[:, ::-1]


def batch_scaled_pca(X, batches: np.ndarray, n_comps: int) -> np.ndarray:
    """PCA of ``X`` after centring and scaling every gene within each batch, without densifying ``X``.

    The covariance of the per-batch standardised matrix is accumulated in row chunks (genes x genes), its top
    eigenvectors give the loadings, and cells are projected chunk by chunk. Centring within batches removes additive
    (log-scale multiplicative) batch shifts before the components are found.

    Parameters
    ----------
    X
        Cells x genes (log-normalised), dense or CSR.
    batches
        Integer batch code per cell.
    n_comps
        Number of components.

    Returns
    -------
    Cells x ``n_comps`` float32 scores.
    """
    n, g = X.shape
    n_comps = min(n_comps, g - 1, n - 1)
    n_batches = int(batches.max()) + 1
    order = np.argsort(batches, kind="stable")
    mean = np.zeros((n_batches, g))
    scale = np.ones((n_batches, g))
    for b in range(n_batches):
        idx = order[batches[order] == b]
        xb = X[idx]
        mu = np.asarray(xb.mean(axis=0)).ravel()
        sq = np.asarray(xb.multiply(xb).mean(axis=0)).ravel() if sparse.issparse(xb) else (xb**2).mean(axis=0)
        sd = np.sqrt(np.maximum(sq - mu**2, 0.0))
        mean[b] = mu
        scale[b] = np.where(sd > 1e-8, 1.0 / np.maximum(sd, 1e-12), 0.0)
    Xo = X[order]
    bo = batches[order]
    if n <= g:
        # fewer cells than genes: eigenvectors of the cells x cells Gram matrix are cheaper and exact
        z = (_dense_rows(Xo, 0, n) - mean[bo]) * scale[bo]
        evals, u = _top_eigenvectors(z @ z.T, n_comps)
        top = z.T @ (u / np.sqrt(np.clip(evals, 1e-12, None)))
    else:
        cov = np.zeros((g, g))
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            z = (_dense_rows(Xo, start, stop) - mean[bo[start:stop]]) * scale[bo[start:stop]]
            cov += z.T @ z
        top = _top_eigenvectors(cov, n_comps)[1]
    # deterministic sign: largest absolute loading positive
    signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    top = top * np.where(signs == 0, 1.0, signs)
    out = np.empty((n, n_comps), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        b = batches[start:stop]
        out[start:stop] = ((_dense_rows(X, start, stop) - mean[b]) * scale[b]) @ top
    return out


def prepare(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    random_state: int = 0,
) -> Prepared:
    """Turn counts or log-normalised values into model inputs, leaving ``adata`` untouched.

    Counts get ``normalize_total(1e4)`` + ``log1p``; highly variable genes are selected (``seurat`` flavour on the
    log data, per batch when ``batch_key`` is given); genes are centred and scaled within each batch and projected on
    their top principal components.

    Parameters
    ----------
    adata
        Annotated data matrix; never modified.
    layer
        Layer holding the expression values; ``None`` uses ``adata.X``.
    batch_key
        Column of ``adata.obs`` with batches/donors.
    n_top_genes
        Number of highly variable genes (all genes when there are fewer).
    n_comps
        Number of principal components.
    random_state
        Seed for the probe of the input kind.

    Returns
    -------
    :class:`Prepared` with the embedding, the log-normalised HVG matrix and the detected input kind.
    """
    if n_top_genes < 2:
        raise ValueError(f"n_top_genes={n_top_genes} must be at least 2.")
    if n_comps < 2:
        raise ValueError(f"n_comps={n_comps} must be at least 2.")
    X = _matrix(adata, layer)
    batches = _batch_codes(adata, batch_key)
    kind = detect_input_kind(X, random_state=random_state)
    source = f"layers[{layer!r}]" if layer is not None else "X"
    X = sparse.csr_matrix(X, dtype=np.float32) if sparse.issparse(X) else np.asarray(X, dtype=np.float32)
    tmp = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"batch": pd.Categorical(batches)}, index=adata.obs_names))
    tmp.var_names = adata.var_names
    if kind == "counts":
        logg.info(f"    {source} holds raw counts: normalize_total(1e4) + log1p")
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
    else:
        logg.info(f"    {source} holds log-normalised values: used as they are")
    if tmp.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(
            tmp, n_top_genes=n_top_genes, flavor="seurat", batch_key="batch" if batch_key is not None else None
        )
        tmp = tmp[:, tmp.var["highly_variable"].to_numpy()]
    emb = batch_scaled_pca(tmp.X, batches, n_comps)
    lognorm = tmp.X if not sparse.issparse(tmp.X) else sparse.csr_matrix(tmp.X)
    return Prepared(embedding=emb, lognorm=lognorm, genes=tmp.var_names.copy(), input_kind=kind, batches=batches)


def within_class_pca(X, groups: np.ndarray, batches: np.ndarray, n_comps: int) -> np.ndarray:
    """PCA computed separately inside each group (coarse class), stacked into one cells x ``n_comps`` array.

    Each group's cells get coordinates on that group's own top components (scaled within batches), which resolve
    the variation *inside* a coarse class far better than a global PCA dominated by differences between classes.
    Coordinates of different groups are not comparable: use them only for searches inside a group. Groups too
    small for ``n_comps`` components get fewer, zero-padded.

    Parameters
    ----------
    X
        Cells x genes log-normalised matrix (dense or CSR).
    groups
        Group per cell.
    batches
        Batch code per cell (centring and scaling are done per batch inside each group).
    n_comps
        Components per group.

    Returns
    -------
    Cells x ``n_comps`` float32 array.
    """
    out = np.zeros((X.shape[0], n_comps), dtype=np.float32)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        k = min(n_comps, idx.size - 1, X.shape[1] - 1)
        if k < 1:
            continue
        _, local = np.unique(batches[idx], return_inverse=True)
        out[idx, :k] = batch_scaled_pca(X[idx], local.astype(np.int64), k)
    return out
