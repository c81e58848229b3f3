"""Shared pieces of the baselines: result type, input checks, shared embedding, cluster allotment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._validate import check_class_count, coarse_mapping
from ..core.labels import fine_class_names
from ..core.prior import proportional_counts as allot_clusters
from ..core.resolution import search_resolution
from ..pp import prepare

__all__ = [
    "BaselineResult",
    "allot_clusters",
    "check_n_fine",
    "class_graph",
    "coarse_labels",
    "embed",
    "fine_names",
    "leiden_each_class",
    "majority_parent",
    "nested_labels",
    "resolve_n_fine",
]


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
    adata
        The annotated copy the method worked on, when it keeps one (FALCON: for the relation figure of the bench).
    embedding
        Cells x dimensions representation the labels were read from, for methods that learn one.

    Examples
    --------
    Every baseline returns one; a new method builds it from its labels:

    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> res = fal.baselines.BaselineResult(
    ...     labels=np.array(["T/1", "T/2", "T/1", "B/1"]), relation={"T/1": "T", "T/2": "T", "B/1": "B"}
    ... )
    >>> res.n_fine
    3
    """

    labels: np.ndarray
    relation: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    adata: AnnData | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_fine(self) -> int:
        """Number of distinct fine labels."""
        return len(np.unique(self.labels))


def coarse_labels(adata: AnnData, coarse_key: str) -> pd.Categorical:
    """Return ``adata.obs[coarse_key]`` as a string categorical (observed categories only).

    Raises
    ------
    TypeError
        If ``adata`` is not an AnnData.
    KeyError
        If ``coarse_key`` is not a column of ``adata.obs``.
    ValueError
        If some cells have no coarse label.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if coarse_key not in adata.obs.columns:
        raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    col = adata.obs[coarse_key]
    if col.isna().any():
        raise ValueError(f"coarse_key {coarse_key!r}: {int(col.isna().sum())} cells have no coarse label")
    values = col.astype(str).to_numpy()
    return pd.Categorical(values, categories=sorted(pd.unique(values)))


def check_n_fine(n_fine: int, n_coarse: int, n_obs: int) -> int:
    """Validate the requested number of fine classes (the same rule as :func:`falcon_sc.tl.refine`)."""
    if isinstance(n_fine, Mapping):
        raise TypeError(
            "n_fine must be an int (the total number of fine classes) for this method; counts per coarse class (a "
            "mapping) are taken by kmeans_within, leiden_within, leiden_scanpy and subcluster."
        )
    if isinstance(n_fine, bool) or not isinstance(n_fine, int | np.integer):
        raise TypeError(f"n_fine must be an int, got {type(n_fine).__name__}.")
    n_fine = int(n_fine)
    if n_fine <= n_coarse:
        raise ValueError(
            f"n_fine={n_fine} must exceed the number of coarse classes ({n_coarse}); with n_fine <= n_coarse there is "
            "nothing to refine."
        )
    if n_fine > n_obs:
        raise ValueError(f"n_fine={n_fine} is larger than the number of cells ({n_obs})")
    return n_fine


def resolve_n_fine(
    n_fine: int | Mapping[str, int], coarse: pd.Categorical, coarse_key: str = "coarse"
) -> tuple[int, np.ndarray | None]:
    """Check ``n_fine`` given as a total or as the number of fine classes of every coarse class.

    Parameters
    ----------
    n_fine
        An int, the total number of fine classes (checked by :func:`check_n_fine`), or a mapping coarse label -> its
        number of fine classes, with an entry for every coarse class (keys compared as text).
    coarse
        Coarse label per cell (:func:`coarse_labels`).
    coarse_key
        Column of ``obs`` the coarse labels come from (named in the messages).

    Returns
    -------
    total
        Total number of fine classes.
    counts
        Fine classes per coarse class, in the order of ``coarse.categories``; ``None`` when ``n_fine`` is an int
        (each method then shares the total among the classes in its own way).

    Raises
    ------
    TypeError
        If ``n_fine`` is neither an int nor a mapping.
    ValueError
        If the mapping misses a coarse class, names one that is not in ``obs[coarse_key]`` (or one twice), or gives a
        count that is not a whole number >= 1 or exceeds the cells of its class; for an int, see
        :func:`check_n_fine`.

    Examples
    --------
    >>> import pandas as pd
    >>> from falcon_sc.baselines._common import resolve_n_fine
    >>> coarse = pd.Categorical(["B", "T", "T", "T", "B"])
    >>> resolve_n_fine(3, coarse)
    (3, None)
    >>> total, counts = resolve_n_fine({"T": 3, "B": 1}, coarse)
    >>> total, counts.tolist()
    (4, [1, 3])
    >>> resolve_n_fine({"T": 4, "B": 1}, coarse)
    Traceback (most recent call last):
    ...
    falcon_sc.errors.DegenerateInputError: n_fine['T']=4 exceeds the 3 cells of that coarse class; ask for at most ...
    """
    names = [str(c) for c in coarse.categories]
    codes = np.asarray(coarse.codes)
    if not isinstance(n_fine, Mapping):
        if isinstance(n_fine, bool) or not isinstance(n_fine, int | np.integer):
            raise TypeError(
                f"n_fine must be an int (the total number of fine classes) or a mapping coarse label -> number of "
                f"fine classes, got {type(n_fine).__name__}."
            )
        return check_n_fine(n_fine, len(names), len(codes)), None
    hint = " (1 for a class to keep whole), or pass n_fine as an int to share a total among the classes"
    given = coarse_mapping(n_fine, names, "n_fine", coarse_key, complete=True, hint=hint)
    sizes = np.bincount(codes, minlength=len(names))
    counts = np.array(
        [check_class_count("n_fine", name, given[name], int(sizes[c])) for c, name in enumerate(names)], dtype=np.int64
    )
    return int(counts.sum()), counts


def class_graph(adjacency: sp.spmatrix, idx: np.ndarray):
    """Induced subgraph of the cells ``idx`` as an igraph graph, built exactly as :func:`scanpy.tl.leiden` does."""
    import igraph as ig

    sub = sp.csr_matrix(adjacency)[idx][:, idx]  # restrict_to: rows then columns of the selected cells
    sources, targets = sub.nonzero()
    g = ig.Graph(n=len(idx), edges=np.column_stack([sources, targets]).tolist(), directed=False)
    g.es["weight"] = np.asarray(sub[sources, targets]).ravel()
    return g


def leiden_each_class(
    adjacency: sp.spmatrix,
    codes: np.ndarray,
    classes: list[str],
    counts: np.ndarray,
    *,
    random_state: int = 0,
    max_evals: int = 30,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Leiden inside each coarse class, each with its own resolution, to exactly ``counts[c]`` clusters.

    For every class, Leiden (``flavor="igraph"`` as :func:`scanpy.tl.leiden`: modularity, ``n_iterations=2``,
    undirected, the class's own null model as with ``restrict_to``) runs on the subgraph induced by its cells, with a
    resolution searched (:func:`~falcon_sc.core.resolution.search_resolution`, doubling/halving then geometric
    bisection, ties to more clusters) to give ``counts[c]`` clusters. Where the search cannot reach the count, the
    clusters are fixed up: while there are too many, the two most inter-connected clusters (edge weight between them
    over the product of their sizes; the two smallest when none are joined) are merged; while too few, the largest is
    split in two by k-means on its cells' rows of the subgraph (in halves when that fails). A class asked for one
    cluster is not clustered.

    Parameters
    ----------
    adjacency
        Cells x cells weighted graph (only the edges inside each class are used).
    codes
        Coarse class index per cell.
    classes
        Coarse class names.
    counts
        Clusters wanted per class (each between 1 and the class's size).
    random_state
        Seed of Leiden and of the k-means splits.
    max_evals
        Most Leiden runs of each class's resolution search.

    Returns
    -------
    ids
        Cluster id per cell, ``0..counts[c]-1`` inside class ``c``.
    info
        ``resolution`` (coarse class -> resolution; ``None`` where not searched), ``n_clusters`` (in all),
        ``n_evals`` (Leiden runs in all) and ``fixed_up`` (the classes whose count needed merges or splits).
    """
    from scanpy._utils.random import set_igraph_random_state

    adjacency = sp.csr_matrix(adjacency)
    ids = np.zeros(len(codes), dtype=np.int64)
    resolutions: dict[str, float | None] = {}
    fixed: list[str] = []
    n_evals = 0
    for c, (name, k) in enumerate(zip(classes, counts, strict=True)):
        k = int(k)
        resolutions[name] = None
        if k == 1:
            continue
        idx = np.flatnonzero(codes == c)
        graph = class_graph(adjacency, idx)

        def cluster(res: float, graph=graph) -> tuple[int, np.ndarray]:
            with set_igraph_random_state(random_state):
                part = graph.community_leiden(
                    objective_function="modularity", weights="weight", resolution=res, n_iterations=2
                )
            found = np.asarray(part.membership, dtype=np.int64)
            return len(np.unique(found)), found

        found = search_resolution(cluster, k, max_evals=max_evals, ties="more")
        n_evals += found.n_evals
        resolutions[name] = found.resolution
        class_ids = np.unique(found.result, return_inverse=True)[1]
        if found.n_clusters != k:
            class_ids = _force_count(adjacency[idx][:, idx], class_ids, k, random_state)
            fixed.append(name)
        ids[idx] = class_ids
    info = {"resolution": resolutions, "n_clusters": int(np.sum(counts)), "n_evals": n_evals, "fixed_up": fixed}
    return ids, info


def nested_labels(ids: np.ndarray, codes: np.ndarray, classes: list[str]) -> tuple[np.ndarray, dict[str, str]]:
    """Fine labels ``"<coarse>/<i>"`` (:func:`fine_names`, inside each class) and the relation, from cluster ids.

    ``ids`` need only tell the clusters of one class apart (the same id in two classes names two clusters).
    """
    labels = np.empty(len(ids), dtype=object)
    relation: dict[str, str] = {}
    for c, name in enumerate(classes):
        idx = np.flatnonzero(codes == c)
        cell_names, names = fine_names(name, ids[idx])
        labels[idx] = cell_names
        relation.update(dict.fromkeys(names, name))
    return labels.astype(str), relation


def _force_count(sub: sp.csr_matrix, ids: np.ndarray, k: int, random_state: int) -> np.ndarray:
    """Merge the most inter-connected clusters / split the largest until there are ``k`` (``1 <= k <= len(ids)``)."""
    from sklearn.cluster import KMeans

    ids = np.unique(ids, return_inverse=True)[1]
    while ids.max() + 1 > k:
        n = int(ids.max()) + 1
        member = sp.csr_matrix((np.ones(len(ids)), (np.arange(len(ids)), ids)), shape=(len(ids), n))
        between = (member.T @ sub @ member).toarray()
        sizes = np.bincount(ids, minlength=n).astype(float)
        conn = (between + between.T) / np.outer(sizes, sizes)
        np.fill_diagonal(conn, -np.inf)
        if conn.max() > 0:
            a, b = np.unravel_index(int(np.argmax(conn)), conn.shape)
        else:  # no edges between clusters: join the two smallest
            a, b = np.argsort(sizes, kind="stable")[:2]
        ids = np.unique(np.where(ids == max(a, b), min(a, b), ids), return_inverse=True)[1]
    while ids.max() + 1 < k:
        big = int(np.argmax(np.bincount(ids)))
        idx = np.flatnonzero(ids == big)
        rows = sub[idx][:, idx]
        halves = np.zeros(len(idx), dtype=np.int64)
        if rows.nnz:
            halves = KMeans(n_clusters=2, n_init=3, random_state=random_state).fit_predict(rows)
        if halves.min() == halves.max():  # nothing to tell the cells apart: split in halves
            halves = np.arange(len(idx)) % 2
        ids[idx[halves == 1]] = ids.max() + 1
    return ids


def embed(adata: AnnData, *, batch_key: str | None = None, random_state: int = 0) -> np.ndarray:
    """Shared PCA embedding of ``adata`` (cells x comps) from :func:`falcon_sc.pp.prepare`; ``adata`` is untouched."""
    return prepare(adata, batch_key=batch_key, random_state=random_state).embedding


def majority_parent(labels: np.ndarray, coarse: np.ndarray) -> dict[str, str]:
    """Fine label -> the coarse label most of its cells carry (first in sorted order on ties)."""
    table = pd.crosstab(pd.Series(np.asarray(labels).astype(str)), pd.Series(np.asarray(coarse).astype(str)))
    return {
        str(f): str(table.columns[int(np.argmax(row))]) for f, row in zip(table.index, table.to_numpy(), strict=True)
    }


def fine_names(coarse: str, cluster_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Name the clusters of one coarse class ``"<coarse>/<i>"``, ``i = 1, 2, ...`` by decreasing size, as refine does.

    The rule is :func:`~falcon_sc.core.labels.fine_class_names`'s (ties: the smaller cluster id first). Returns each
    cell's name and the names in that order (``<coarse>/1`` first).

    Examples
    --------
    >>> import numpy as np
    >>> from falcon_sc.baselines._common import fine_names
    >>> cells, names = fine_names("T", np.array([7, 3, 3, 9, 7, 3]))
    >>> cells.tolist(), names
    (['T/2', 'T/1', 'T/1', 'T/3', 'T/2', 'T/1'], ['T/1', 'T/2', 'T/3'])
    """
    ids, cluster = np.unique(cluster_ids, return_inverse=True)
    named = fine_class_names(np.ones((len(ids), 1), dtype=bool), cluster.ravel(), [coarse])
    by_rank = np.argsort(-np.bincount(cluster.ravel(), minlength=len(ids)), kind="stable")
    return named[cluster.ravel()].astype(object), [str(n) for n in named[by_rank]]
