"""Shared pieces of the baselines: result type, input checks, shared embedding, cluster allotment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


@dataclass
class BaselineResult:
    """Fine labels found by a method.

    Attributes
    ----------
    labels
        One fine label per cell (``str``), named ``"<coarse>/<i>"``.
    relation
        Fine label -> coarse label.
    info
        Method specific extras (e.g. the Leiden resolution and the cluster count reached).
    """

    labels: np.ndarray
    relation: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_fine(self) -> int:
        """Number of distinct fine labels."""
        return len(np.unique(self.labels))


def coarse_labels(adata: AnnData, coarse_key: str) -> pd.Categorical:
    """Return ``adata.obs[coarse_key]`` as a string categorical (observed categories only).

    Raises
    ------
    KeyError
        If ``coarse_key`` is not a column of ``adata.obs``.
    ValueError
        If some cells have no coarse label.
    """
    if coarse_key not in adata.obs.columns:
        raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    col = adata.obs[coarse_key]
    if col.isna().any():
        raise ValueError(f"coarse_key {coarse_key!r}: {int(col.isna().sum())} cells have no coarse label")
    values = col.astype(str).to_numpy()
    return pd.Categorical(values, categories=sorted(pd.unique(values)))


def check_n_fine(n_fine: int, n_coarse: int, n_obs: int) -> int:
    """Validate the requested number of fine classes."""
    n_fine = int(n_fine)
    if n_fine < n_coarse:
        raise ValueError(f"n_fine={n_fine} is smaller than the number of coarse classes ({n_coarse})")
    if n_fine > n_obs:
        raise ValueError(f"n_fine={n_fine} is larger than the number of cells ({n_obs})")
    return n_fine


def allot_clusters(sizes: Sequence[int], n_fine: int) -> np.ndarray:
    """Share ``n_fine`` clusters among classes in proportion to their sizes.

    Largest-remainder (Hamilton) apportionment, with every class getting at least one cluster and never
    more clusters than it has cells.

    Parameters
    ----------
    sizes
        Number of cells per class (all > 0).
    n_fine
        Total number of clusters, ``len(sizes) <= n_fine <= sum(sizes)``.

    Returns
    -------
    Number of clusters per class, summing to ``n_fine``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or len(sizes) == 0 or (sizes <= 0).any():
        raise ValueError("sizes must be a non-empty list of positive counts")
    if not len(sizes) <= n_fine <= sizes.sum():
        raise ValueError(f"n_fine={n_fine} must lie between {len(sizes)} and {int(sizes.sum())}")
    quota = n_fine * sizes / sizes.sum()
    alloc = np.clip(np.floor(quota).astype(np.int64), 1, sizes)
    order = np.arange(len(sizes))
    while alloc.sum() < n_fine:  # give to the largest remainder that still has room
        rem = np.where(alloc < sizes, quota - alloc, -np.inf)
        alloc[np.lexsort((order, -rem))[0]] += 1
    while alloc.sum() > n_fine:  # take from the most over-served class that can spare one
        rem = np.where(alloc > 1, quota - alloc, np.inf)
        alloc[np.lexsort((order, rem))[0]] -= 1
    return alloc


def _looks_like_counts(X: Any, n_check: int = 2000) -> bool:
    """Whether ``X`` looks like raw counts (non-negative integers), judged on a few rows."""
    sub = X[: min(n_check, X.shape[0])]
    vals = sub.data if sp.issparse(sub) else np.asarray(sub).ravel()
    if vals.size == 0:
        return False
    vals = np.asarray(vals, dtype=np.float64)
    return bool((vals >= 0).all() and np.allclose(vals, np.round(vals)) and vals.max() > 1)


def _prepare_fallback(
    adata: AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    random_state: int = 0,
) -> np.ndarray:
    """Scanpy PCA embedding on a copy: counts -> normalise+log1p, HVG (seurat), scale(10), PCA."""
    import scanpy as sc

    X = adata.layers[layer] if layer is not None else adata.X
    X = X.copy() if sp.issparse(X) else np.array(X, dtype=np.float32, copy=True)
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    ad = AnnData(X=X, obs=pd.DataFrame(index=adata.obs_names.astype(str)))
    ad.var_names = adata.var_names.astype(str)
    ad.var_names_make_unique()
    if batch_key is not None:
        ad.obs[batch_key] = adata.obs[batch_key].astype(str).astype("category").to_numpy()
    if _looks_like_counts(ad.X):
        sc.pp.normalize_total(ad, target_sum=1e4)
        sc.pp.log1p(ad)
    if ad.n_vars > n_top_genes:
        hvg_batch = batch_key if batch_key is not None and ad.obs[batch_key].nunique() > 1 else None
        sc.pp.highly_variable_genes(ad, n_top_genes=n_top_genes, flavor="seurat", batch_key=hvg_batch)
        ad = ad[:, ad.var["highly_variable"].to_numpy()].copy()
    sc.pp.scale(ad, max_value=10)
    n_comps = max(1, min(n_comps, ad.n_obs - 1, ad.n_vars - 1))
    sc.pp.pca(ad, n_comps=n_comps, random_state=random_state)
    return np.asarray(ad.obsm["X_pca"], dtype=np.float32)


def embed(adata: AnnData, *, batch_key: str | None = None, random_state: int = 0) -> np.ndarray:
    """Shared PCA embedding of ``adata`` (cells x comps), without touching ``adata``.

    Uses :func:`falcon_sc.pp.prepare` when available, else a scanpy fallback doing the same.
    """
    try:
        from falcon_sc.pp import prepare
    except ImportError:
        prepare = _prepare_fallback
    out = prepare(adata, batch_key=batch_key, random_state=random_state)
    return np.asarray(getattr(out, "embedding", out))  # ``prepare`` returns a ``Prepared`` or an array


def fine_names(coarse: str, cluster_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Name clusters ``"<coarse>/<i>"``, ``i = 0, 1, ...`` by decreasing size (ties by first id)."""
    ids, counts = np.unique(cluster_ids, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    rank = {c: i for i, c in enumerate(order)}
    names = [f"{coarse}/{i}" for i in range(len(order))]
    return np.array([names[rank[c]] for c in cluster_ids], dtype=object), names
