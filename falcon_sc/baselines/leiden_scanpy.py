"""The standard scanpy workflow: normalise, HVGs, scale, PCA, neighbours, Leiden restricted to each coarse class."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._docs import baseline_inputs_counts, doc_params
from ..core.resolution import search_resolution
from ._common import (
    BaselineResult,
    class_graph,
    coarse_labels,
    leiden_each_class,
    nested_labels,
    resolve_n_fine,
)


def scanpy_neighbors(
    adata: AnnData,
    *,
    batch_key: str | None = None,
    random_state: int = 0,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    n_neighbors: int = 15,
    svd_solver: str = "arpack",
) -> tuple[sp.csr_matrix, dict]:
    """Connectivities of the kNN graph of ``adata`` from the standard scanpy preprocessing, run on a copy of ``X``.

    Counts (and, when :func:`falcon_sc.pp.detect_input_kind` reports it, normalised but unlogged values):
    :func:`scanpy.pp.normalize_total` (``target_sum=1e4``) and :func:`scanpy.pp.log1p`; log-normalised input is used
    as it is. Then :func:`scanpy.pp.highly_variable_genes` (``flavor="seurat"``, ``n_top_genes``, per batch with
    ``batch_key``; subset), :func:`scanpy.pp.scale` (``max_value=10``), :func:`scanpy.pp.pca` (``svd_solver``,
    default ``"arpack"`` as scanpy's for dense data) and :func:`scanpy.pp.neighbors` (UMAP connectivities), seeded with
    ``random_state``.

    Returns
    -------
    The cells x cells connectivities (CSR) and ``info`` (``input_kind``, ``n_hvg``, ``n_comps`` and the seconds of
    ``preprocess`` (normalise to PCA) and ``neighbors``).
    """
    import scanpy as sc

    from ..pp import detect_input_kind

    if batch_key is not None and batch_key not in adata.obs.columns:
        raise KeyError(f"batch_key {batch_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    start = time.perf_counter()
    kind = detect_input_kind(adata.X)
    X = adata.X.astype(np.float32, copy=True) if sp.issparse(adata.X) else np.array(adata.X, dtype=np.float32)
    obs = pd.DataFrame(index=pd.RangeIndex(adata.n_obs).astype(str))
    if batch_key is not None:
        obs["batch"] = adata.obs[batch_key].astype(str).to_numpy()
    work = AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.RangeIndex(adata.n_vars).astype(str)))
    if kind in ("counts", "normalized"):
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
    sc.pp.highly_variable_genes(
        work,
        n_top_genes=min(n_top_genes, work.n_vars),
        flavor="seurat",
        batch_key=None if batch_key is None else "batch",
        subset=True,
    )
    with warnings.catch_warnings():  # "zero-centering a sparse array/matrix densifies it": as intended
        warnings.filterwarnings("ignore", message="zero-centering", category=UserWarning)
        sc.pp.scale(work, max_value=10)
    comps = min(n_comps, work.n_obs - 1, work.n_vars - 1)
    sc.pp.pca(work, n_comps=comps, svd_solver=svd_solver, random_state=random_state)
    prep = time.perf_counter()
    sc.pp.neighbors(work, n_neighbors=min(n_neighbors, work.n_obs - 1), random_state=random_state)
    info = {
        "input_kind": kind,
        "n_hvg": int(work.n_vars),
        "n_comps": int(comps),
        "seconds_preprocess": prep - start,
        "seconds_neighbors": time.perf_counter() - prep,
    }
    return sp.csr_matrix(work.obsp["connectivities"]), info


@doc_params(baseline_inputs_counts=baseline_inputs_counts)
def leiden_scanpy(
    adata: AnnData,
    coarse_key: str,
    n_fine: int | Mapping[str, int],
    *,
    batch_key: str | None = None,
    random_state: int = 0,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    n_neighbors: int = 15,
    svd_solver: str = "arpack",
    max_evals: int = 30,
) -> BaselineResult:
    """What a scanpy user runs: the standard preprocessing, then ``sc.tl.leiden(restrict_to=...)`` per coarse class.

    On a copy of ``X``: normalise (``normalize_total``, ``target_sum=1e4``) and ``log1p`` when ``X`` holds counts
    (log-normalised input is used as it is), 2,000 highly variable genes (``flavor="seurat"``, per batch when
    ``batch_key`` is given), ``scale(max_value=10)``, 50 principal components (arpack), 15 nearest neighbours (see
    :func:`scanpy_neighbors`). Then, for every coarse class ``c``, Leiden as
    ``sc.tl.leiden(adata, restrict_to=(coarse_key, [c]), resolution=r, flavor="igraph", n_iterations=2,
    directed=False, random_state=random_state)`` gives it: igraph's ``community_leiden`` (modularity) on the
    subgraph induced by the cells of ``c``, so the modularity null model is that of the class, not of the whole graph
    (:func:`leiden_within` instead clusters the whole graph with the cross-class edges removed). The subgraphs are
    built once and clustered directly, with scanpy's graph construction and seeding; the labels equal those of the
    chained ``restrict_to`` calls. One resolution ``r``, shared by all coarse classes, is searched (doubling/halving,
    then geometric bisection, neighbours never recomputed) so that the total number of clusters is ``n_fine``, or
    as close as the search gets. With ``n_fine`` a mapping (known counts), each coarse class gets its own searched
    resolution and exactly its count (:func:`~falcon_sc.baselines._common.leiden_each_class`: merges or splits
    where the search falls short).

    With ``batch_key`` the HVGs are selected per batch, but no integration is done (a user would add Harmony or
    scVI before the neighbours). ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs_counts}
    random_state
        Seed for PCA, neighbours and Leiden.
    n_top_genes
        Highly variable genes kept (all genes when there are fewer).
    n_comps
        Principal components.
    n_neighbors
        Size of the neighbourhood of the kNN graph.
    svd_solver
        Of :func:`scanpy.pp.pca`; ``"arpack"`` is scanpy's default on the (dense) scaled matrix.
        ``"covariance_eigh"`` gives the same components (up to sign) about three times faster on 20,000 cells x
        2,000 genes.
    max_evals
        Most resolutions tried by the search (each runs Leiden on every coarse class).

    Returns
    -------
    Fine labels ``"<coarse>/<i>"``, the fine -> coarse relation, and in ``info`` the ``resolution`` used, the number
    of clusters reached (``n_clusters``; it differs from ``n_fine`` when no resolution tried reached it), the number
    of resolutions tried, the detected ``input_kind``, ``n_hvg``, ``n_comps`` and the seconds of each stage
    (``seconds_preprocess``, ``seconds_neighbors``, ``seconds_leiden``). With a mapping, ``resolution`` is one per
    coarse class and ``fixed_up`` lists the classes whose count needed merges or splits.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> res = fal.baselines.leiden_scanpy(adata, "coarse", 6)
    >>> res.n_fine, res.info["input_kind"]
    (6, 'counts')
    >>> sorted(set(res.relation.values()))
    ['C0', 'C1', 'C2']
    >>> res = fal.baselines.leiden_scanpy(adata, "coarse", {"C0": 2, "C1": 2, "C2": 3})  # known counts
    >>> res.n_fine, sorted(res.info["resolution"])
    (7, ['C0', 'C1', 'C2'])
    """
    from scanpy._utils.random import set_igraph_random_state

    coarse = coarse_labels(adata, coarse_key)
    classes = list(coarse.categories)
    codes = np.asarray(coarse.codes)
    n_fine, counts = resolve_n_fine(n_fine, coarse, coarse_key)
    adjacency, info = scanpy_neighbors(
        adata,
        batch_key=batch_key,
        random_state=random_state,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        n_neighbors=n_neighbors,
        svd_solver=svd_solver,
    )
    start = time.perf_counter()
    if counts is not None:
        ids, found_info = leiden_each_class(
            adjacency, codes, classes, counts, random_state=random_state, max_evals=max_evals
        )
        labels, relation = nested_labels(ids, codes, classes)
        info.update(found_info, seconds_leiden=time.perf_counter() - start)
        return BaselineResult(labels=labels, relation=relation, info=info)
    members = [np.flatnonzero(codes == c) for c in range(len(classes))]
    graphs = [class_graph(adjacency, idx) for idx in members]

    def cluster(res: float) -> tuple[int, list[np.ndarray]]:
        ids = []
        for g in graphs:
            with set_igraph_random_state(random_state):
                part = g.community_leiden(
                    objective_function="modularity", weights="weight", resolution=res, n_iterations=2
                )
            ids.append(np.asarray(part.membership))
        return sum(len(np.unique(i)) for i in ids), ids

    found = search_resolution(cluster, n_fine, max_evals=max_evals)
    ids = np.zeros(adata.n_obs, dtype=np.int64)
    for idx, cluster_ids in zip(members, found.result, strict=True):
        ids[idx] = cluster_ids
    labels, relation = nested_labels(ids, codes, classes)
    info.update(
        resolution=found.resolution,
        n_clusters=found.n_clusters,
        n_evals=found.n_evals,
        seconds_leiden=time.perf_counter() - start,
    )
    return BaselineResult(labels=labels, relation=relation, info=info)
