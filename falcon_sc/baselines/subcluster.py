"""Subclustering: each coarse class re-analysed on its own (HVG, PCA, neighbours), then Leiden at one resolution."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._docs import baseline_inputs_counts, doc_params
from ..pp import prepare
from ._common import BaselineResult, coarse_labels, resolve_n_fine
from .leiden_within import leiden_at_count


@doc_params(baseline_inputs_counts=baseline_inputs_counts)
def subcluster(
    adata: AnnData,
    coarse_key: str,
    n_fine: int | Mapping[str, int],
    *,
    batch_key: str | None = None,
    random_state: int = 0,
    n_neighbors: int = 15,
    n_comps: int = 30,
    max_evals: int = 30,
) -> BaselineResult:
    """The usual scanpy subclustering workflow, with one resolution for all coarse classes.

    Every coarse class is subset and re-processed on its own cells (:func:`falcon_sc.pp.prepare`: its own highly
    variable genes and PCA, per batch when ``batch_key`` is given), a kNN graph is built inside it
    (:func:`scanpy.pp.neighbors`), and Leiden runs on the union of these graphs with one resolution searched so that
    the total number of clusters is ``n_fine``. With ``n_fine`` a mapping (known counts), each coarse class is
    clustered on its own graph with its own searched resolution and gets exactly its count
    (:func:`~falcon_sc.baselines._common.leiden_each_class`: merges or splits where the search falls short).
    ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs_counts}
    random_state
        Seed for neighbours and Leiden.
    n_neighbors
        Neighbourhood size inside each coarse class.
    n_comps
        Principal components per coarse class.
    max_evals
        Most Leiden runs of the resolution search.

    Returns
    -------
    Fine labels ``"<coarse>/<i>"``, the fine -> coarse relation and ``info`` (resolution, clusters reached; with a
    mapping, one resolution per coarse class and ``fixed_up``, the classes whose count needed merges or splits).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> res = fal.baselines.subcluster(adata, "coarse", 6)
    >>> res.n_fine, res.info["n_clusters"]
    (6, 6)
    >>> fal.metrics.evaluate(adata.obs["fine"], res.labels).keys()
    dict_keys(['accuracy', 'macro_accuracy', 'ari', 'nmi'])
    >>> res = fal.baselines.subcluster(adata, "coarse", {"C0": 1, "C1": 2, "C2": 3})  # known counts
    >>> res.n_fine, res.info["resolution"]["C0"]
    (6, None)
    """
    import scanpy as sc

    coarse = coarse_labels(adata, coarse_key)
    classes = list(coarse.categories)
    codes = np.asarray(coarse.codes)
    n_fine, counts = resolve_n_fine(n_fine, coarse, coarse_key)
    rows, cols, vals = [], [], []
    for c in range(len(classes)):
        idx = np.flatnonzero(codes == c)
        if idx.size < 3:  # too small to re-analyse: its cells stay one cluster
            continue
        sub = adata[idx]
        emb = prepare(sub, batch_key=batch_key, n_comps=min(n_comps, idx.size - 1, sub.n_vars - 1)).embedding
        tmp = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(idx.size).astype(str)))
        tmp.obsm["X_pca"] = emb
        sc.pp.neighbors(tmp, n_neighbors=min(n_neighbors, idx.size - 1), use_rep="X_pca", random_state=random_state)
        conn = sp.coo_matrix(tmp.obsp["connectivities"])
        rows.append(idx[conn.row])
        cols.append(idx[conn.col])
        vals.append(conn.data)
    adjacency = sp.csr_matrix(
        (
            np.concatenate(vals or [[]]),
            (np.concatenate(rows or [[]]).astype(int), np.concatenate(cols or [[]]).astype(int)),
        ),
        shape=(adata.n_obs, adata.n_obs),
    )
    return leiden_at_count(
        adjacency, codes, classes, n_fine, counts=counts, random_state=random_state, max_evals=max_evals
    )
