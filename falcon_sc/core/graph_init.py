"""Leiden clusters on the within-class neighbour graph: FALCON's warm start and data-driven children counts."""

from __future__ import annotations

import igraph as ig
import leidenalg
import numpy as np
from sklearn.cluster import KMeans


def knn_graph(neighbors: np.ndarray, n_use: int = 15) -> ig.Graph:
    """Undirected, unweighted graph of each sample's first ``n_use`` neighbours (duplicates and self-loops merged)."""
    n, k = neighbors.shape
    k = min(k, n_use)
    src = np.repeat(np.arange(n), k)
    dst = neighbors[:, :k].ravel()
    keep = src != dst
    pairs = np.unique(np.sort(np.stack([src[keep], dst[keep]], axis=1), axis=1), axis=0)
    return ig.Graph(n=n, edges=pairs.tolist(), directed=False)


def leiden(graph: ig.Graph, resolution: float, random_state: int = 0) -> np.ndarray:
    """Leiden (RB configuration / modularity with resolution) membership per vertex."""
    part = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        resolution_parameter=resolution,
        n_iterations=2,
        seed=random_state,
    )
    return np.asarray(part.membership, dtype=np.int64)


def leiden_with_count(
    graph: ig.Graph, n_clusters: int, *, random_state: int = 0, max_evals: int = 25, return_resolution: bool = False
) -> np.ndarray | tuple[np.ndarray, float]:
    """Leiden membership whose number of clusters is as close to ``n_clusters`` as a resolution search gets.

    With ``return_resolution``, also the resolution that gave it.
    """
    lo, hi = 0.0, 1.0
    best, best_res = leiden(graph, hi, random_state), hi
    while best.max() + 1 < n_clusters and hi < 64:
        lo, hi = hi, hi * 2
        best, best_res = leiden(graph, hi, random_state), hi
    for _ in range(max_evals):
        if best.max() + 1 == n_clusters:
            break
        mid = 0.5 * (lo + hi)
        memb = leiden(graph, mid, random_state)
        if abs(memb.max() + 1 - n_clusters) <= abs(best.max() + 1 - n_clusters):
            best, best_res = memb, mid
        if memb.max() + 1 < n_clusters:
            lo = mid
        else:
            hi = mid
    return (best, best_res) if return_resolution else best


def _fix_counts(
    X: np.ndarray, labels: np.ndarray, groups: np.ndarray, targets: np.ndarray, random_state: int
) -> np.ndarray:
    """Split the largest / merge the smallest clusters of each group until it has exactly ``targets[g]`` clusters."""
    labels = labels.copy()
    for g in range(len(targets)):
        idx = np.flatnonzero(groups == g)
        while True:
            ids, sizes = np.unique(labels[idx], return_counts=True)
            if len(ids) == targets[g] or (len(ids) < targets[g] and sizes.max() < 2):
                break
            if len(ids) < targets[g]:
                big = ids[np.argmax(sizes)]
                members = idx[labels[idx] == big]
                halves = KMeans(n_clusters=2, n_init=3, random_state=random_state).fit_predict(X[members])
                if halves.min() == halves.max():  # identical points: split arbitrarily in two
                    halves = np.arange(members.size) % 2
                labels[members[halves == 1]] = labels.max() + 1
            else:
                small = ids[np.argmin(sizes)]
                centres = np.stack([X[idx[labels[idx] == i]].mean(axis=0) for i in ids])
                own = centres[ids == small][0]
                dist = np.linalg.norm(centres - own, axis=1)
                dist[ids == small] = np.inf
                labels[idx[labels[idx] == small]] = ids[np.argmin(dist)]
    return labels


def merge_by_connectivity(
    labels: np.ndarray, groups: np.ndarray, neighbors: np.ndarray, n_clusters: int, n_use: int = 15
) -> np.ndarray:
    """Merge sibling clusters (same group) until ``n_clusters`` remain, most inter-connected pair first.

    The connectivity of clusters ``a`` and ``b`` is the number of kNN edges between them divided by the number
    expected if edges fell at random inside their group, ``d_a d_b / 2 m_g`` (``d``: total degree, ``m_g``: edges of
    the group), as in PAGA. It does not depend on cluster or group size, so a large homogeneous class cut in pieces
    (connectivity near 1) is rejoined before two small distinct types (connectivity near 0).

    Parameters
    ----------
    labels
        Cluster per sample; clusters never span groups.
    groups
        Group per sample.
    neighbors
        Samples x k neighbour indices (inside the group).
    n_clusters
        Clusters to keep (at least one per group is always kept).
    n_use
        Neighbours per sample that make the graph.

    Returns
    -------
    Merged labels (ids are a subset of the input ids).
    """
    labels = labels.copy()
    k = min(n_use, neighbors.shape[1])
    src = np.repeat(np.arange(len(labels)), k)
    dst = neighbors[:, :k].ravel()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    while True:
        ids, dense = np.unique(labels, return_inverse=True)
        if len(ids) <= n_clusters:
            return labels
        edges = np.zeros((len(ids), len(ids)))
        np.add.at(edges, (dense[src], dense[dst]), 1.0)
        edges = edges + edges.T
        degree = edges.sum(axis=1)
        group = np.zeros(len(ids), dtype=np.int64)
        group[dense] = groups
        group_edges = np.bincount(group, weights=degree)
        expected = np.outer(degree, degree) / np.maximum(group_edges[group], 1e-12)[:, None]
        ratio = np.where(group[:, None] == group[None, :], edges / np.maximum(expected, 1e-12), -np.inf)
        np.fill_diagonal(ratio, -np.inf)
        a, b = np.unravel_index(np.argmax(ratio), ratio.shape)
        if not np.isfinite(ratio[a, b]):
            return labels
        labels[labels == ids[b]] = ids[a]


def graph_clusters(
    X: np.ndarray,
    neighbors: np.ndarray,
    groups: np.ndarray,
    n_clusters: int,
    *,
    targets: np.ndarray | None = None,
    overcluster: float = 1.25,
    n_consensus: int = 5,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Leiden clusters nested in the groups, ``n_clusters`` in all.

    With ``targets`` (clusters per group) each group's subgraph is clustered to its own count. Without, the graph
    decides how many clusters each group gets: one Leiden resolution is searched on the whole within-group graph (no
    edges cross groups) to give ``overcluster x n_clusters`` clusters, the most inter-connected siblings are merged
    back to ``n_clusters`` (:func:`merge_by_connectivity`), and the resulting counts are the targets of the
    per-group clustering; the counts are the median over ``n_consensus`` Leiden seeds at the searched resolution,
    since one run can cut a continuum of subtypes differently. A single resolution alone gives large groups too
    many clusters and small ones too few (the modularity null model is global); over-clustering then merging by a
    size-free connectivity corrects that.
    ``overcluster=1`` keeps the single-resolution partition as it is. Counts that a search cannot reach exactly are
    fixed by k-means splits of the largest cluster or merges of the smallest into its nearest sibling.

    Parameters
    ----------
    X
        Samples x features (used for the fix-ups).
    neighbors
        Samples x k within-group neighbour indices.
    groups
        Group per sample, ``0..G-1``.
    n_clusters
        Total number of clusters (at least G).
    targets
        Optional clusters per group, summing to ``n_clusters``.
    overcluster
        Over-clustering factor used to find the counts when ``targets`` is not given.
    n_consensus
        Leiden runs whose median counts are used.
    random_state
        Seed.

    Returns
    -------
    labels
        Cluster per sample in ``0..n_clusters-1``.
    relation
        ``n_clusters x G`` 0/1 matrix: the group of each cluster.
    """
    n_groups = int(groups.max()) + 1
    graph = knn_graph(neighbors)
    if targets is None:
        n_over = max(n_clusters, min(int(round(overcluster * n_clusters)), len(groups)))
        first, resolution = leiden_with_count(graph, n_over, random_state=random_state, return_resolution=True)
        labels = merge_by_connectivity(first, groups, neighbors, n_clusters)
        targets = _counts_per_group(labels, groups, n_clusters)
        if overcluster <= 1.0:
            return _ordered(_fix_counts(X, labels, groups, targets, random_state), groups, n_clusters)
        # consensus: the median count per group over Leiden runs with other seeds at the same resolution
        runs = [targets] + [
            _counts_per_group(
                merge_by_connectivity(leiden(graph, resolution, random_state + i), groups, neighbors, n_clusters),
                groups,
                n_clusters,
            )
            for i in range(1, n_consensus)
        ]
        targets = _counts_per_group(None, groups, n_clusters, start=np.median(runs, axis=0))
    targets = np.asarray(targets, dtype=int)
    labels = np.empty(len(groups), dtype=np.int64)
    offset = 0
    for g in range(n_groups):
        idx = np.flatnonzero(groups == g)
        sub = graph.induced_subgraph(idx.tolist())
        memb = leiden_with_count(sub, int(targets[g]), random_state=random_state) if targets[g] > 1 else 0
        labels[idx] = offset + memb
        offset = labels[idx].max() + 1
    return _ordered(_fix_counts(X, labels, groups, targets, random_state), groups, n_clusters)


def _counts_per_group(
    labels: np.ndarray | None, groups: np.ndarray, n_clusters: int, start: np.ndarray | None = None
) -> np.ndarray:
    """Clusters per group of ``labels`` (or the rounded ``start``), at least one each, summing to ``n_clusters``."""
    n_groups = int(groups.max()) + 1
    if start is None:
        counts = np.array([max(1, len(np.unique(labels[groups == g]))) for g in range(n_groups)])
    else:
        counts = np.maximum(1, np.round(start).astype(int))
    while counts.sum() > n_clusters:
        counts[np.argmax(counts)] -= 1
    while counts.sum() < n_clusters:
        counts[np.argmax(np.bincount(groups, minlength=n_groups) / counts)] += 1
    return counts


def _ordered(labels: np.ndarray, groups: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Clusters renumbered ``0..n_clusters-1`` group by group, and the cluster x group relation."""
    n_groups = int(groups.max()) + 1
    relation = np.zeros((n_clusters, n_groups), dtype=np.int8)
    out = np.empty_like(labels)
    nxt = 0
    for g in range(n_groups):
        idx = np.flatnonzero(groups == g)
        for old in np.unique(labels[idx]):
            out[idx[labels[idx] == old]] = nxt
            relation[nxt, g] = 1
            nxt += 1
    return out, relation
