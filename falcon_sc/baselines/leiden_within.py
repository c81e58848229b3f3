"""Leiden inside each coarse class, one global resolution tuned to reach the requested cluster count."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._docs import baseline_inputs_counts, doc_params
from ..core.resolution import search_resolution
from ._common import BaselineResult, coarse_labels, embed, leiden_each_class, nested_labels, resolve_n_fine


def _within_graph(conn: sp.spmatrix, codes: np.ndarray) -> sp.csr_matrix:
    """Drop the kNN edges that join cells of different coarse classes."""
    coo = sp.coo_matrix(conn)
    keep = codes[coo.row] == codes[coo.col]
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape)


@doc_params(baseline_inputs_counts=baseline_inputs_counts)
def leiden_within(
    adata: AnnData,
    coarse_key: str,
    n_fine: int | Mapping[str, int],
    *,
    batch_key: str | None = None,
    random_state: int = 0,
    n_neighbors: int = 15,
    max_evals: int = 30,
) -> BaselineResult:
    """Split each coarse class with Leiden at one shared resolution.

    A PCA embedding and a kNN graph (:func:`scanpy.pp.neighbors`, ``n_neighbors=15``) are computed once for all
    cells; the edges joining different coarse classes are removed, so that every Leiden cluster lies inside one
    coarse class (this is what ``restrict_to`` is meant for, but with all categories selected scanpy clusters the
    whole graph). :func:`scanpy.tl.leiden` (``flavor="igraph"``, ``n_iterations=2``, undirected) is then run with
    one global resolution, searched (doubling/halving, then geometric bisection) so that the total number of
    clusters equals ``n_fine``, or comes as close as the search could get. With ``n_fine`` a mapping (known counts),
    each coarse class is clustered on its own subgraph with its own searched resolution and gets exactly its count
    (:func:`~falcon_sc.baselines._common.leiden_each_class`: merges or splits where the search falls short).
    ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs_counts}
    random_state
        Seed for PCA, neighbours and Leiden.
    n_neighbors
        Size of the neighbourhood of the kNN graph.
    max_evals
        Most Leiden runs of the resolution search.

    Returns
    -------
    Fine labels ``"<coarse>/<i>"``, the fine -> coarse relation, and in ``info`` the ``resolution`` used and the
    number of clusters reached (``n_clusters``; it differs from ``n_fine`` when no resolution tried reached it).
    With a mapping, ``resolution`` is one per coarse class and ``fixed_up`` lists the classes whose count needed
    merges or splits.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> res = fal.baselines.leiden_within(adata, "coarse", 6)
    >>> res.n_fine, res.info["n_clusters"]
    (6, 6)
    >>> res.relation["C0/1"], res.labels.shape
    ('C0', (300,))

    With the number of fine classes of every coarse class known:

    >>> res = fal.baselines.leiden_within(adata, "coarse", {"C0": 1, "C1": 2, "C2": 4})
    >>> sorted(res.relation)
    ['C0/1', 'C1/1', 'C1/2', 'C2/1', 'C2/2', 'C2/3', 'C2/4']
    """
    import scanpy as sc

    coarse = coarse_labels(adata, coarse_key)
    classes = list(coarse.categories)
    codes = np.asarray(coarse.codes)
    n_fine, counts = resolve_n_fine(n_fine, coarse, coarse_key)
    emb = embed(adata, batch_key=batch_key, random_state=random_state)

    ad = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(adata.n_obs).astype(str)))
    ad.obsm["X_pca"] = emb
    sc.pp.neighbors(ad, n_neighbors=min(n_neighbors, adata.n_obs - 1), use_rep="X_pca", random_state=random_state)
    adjacency = _within_graph(ad.obsp["connectivities"], codes)
    return leiden_at_count(
        adjacency, codes, classes, n_fine, counts=counts, random_state=random_state, max_evals=max_evals
    )


def leiden_at_count(
    adjacency: sp.spmatrix,
    codes: np.ndarray,
    classes: list[str],
    n_fine: int,
    *,
    counts: np.ndarray | None = None,
    random_state: int = 0,
    max_evals: int = 30,
) -> BaselineResult:
    """Leiden on a graph without edges between coarse classes, one resolution searched to give ``n_fine`` clusters.

    With ``counts``, each class instead gets exactly ``counts[c]`` clusters from its own resolution search
    (:func:`~falcon_sc.baselines._common.leiden_each_class`).

    Parameters
    ----------
    adjacency
        Cells x cells weighted graph whose edges never join two coarse classes.
    codes
        Coarse class index per cell.
    classes
        Coarse class names.
    n_fine
        Wanted number of clusters.
    counts
        Wanted clusters per coarse class (summing to ``n_fine``), or ``None`` for one shared resolution.
    random_state
        Seed of Leiden.
    max_evals
        Most Leiden runs of the resolution search.

    Returns
    -------
    Fine labels ``"<coarse>/<i>"``, the relation, and ``info`` with the resolution and the cluster count reached.
    """
    import scanpy as sc

    n_obs = adjacency.shape[0]
    if counts is not None:
        ids, info = leiden_each_class(adjacency, codes, classes, counts, random_state=random_state, max_evals=max_evals)
        labels, relation = nested_labels(ids, codes, classes)
        return BaselineResult(labels=labels, relation=relation, info=info)
    ad = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n_obs).astype(str)))

    def cluster(res: float) -> tuple[int, np.ndarray]:
        sc.tl.leiden(
            ad,
            resolution=res,
            adjacency=adjacency,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=random_state,
            key_added="_leiden",
        )
        # (coarse, cluster) pairs: Leiden clusters are connected, so this only guards against the impossible
        pairs = codes.astype(np.int64) * (n_obs + 1) + ad.obs["_leiden"].cat.codes.to_numpy()
        _, ids = np.unique(pairs, return_inverse=True)
        return int(ids.max()) + 1, ids

    found = search_resolution(cluster, n_fine, max_evals=max_evals)
    labels, relation = nested_labels(found.result, codes, classes)
    return BaselineResult(
        labels=labels,
        relation=relation,
        info={"resolution": found.resolution, "n_clusters": found.n_clusters, "n_evals": found.n_evals},
    )
