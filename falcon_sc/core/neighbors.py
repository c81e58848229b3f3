"""Nearest neighbours searched inside each coarse class."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

from .progress import bar

#: classes larger than this use pynndescent's approximate search (NN-descent on random projection trees: about
#: n log n work, where the exact brute-force search of a class of n samples costs n^2 distances, 9e10 for 300,000
#: cells); smaller ones the exact search. :func:`neighbour_recall` measures the approximation on a sample.
EXACT_MAX = 20000
#: samples per class on which :func:`neighbour_recall` compares the approximate neighbours with the exact ones
RECALL_SAMPLE = 1000


def within_class_neighbors(
    X: np.ndarray,
    groups: np.ndarray,
    n_neighbors: int,
    *,
    metric: str = "cosine",
    random_state: int = 0,
    device: Any = None,
    exact_max: int = EXACT_MAX,
) -> np.ndarray:
    """Indices of each sample's nearest neighbours among samples of the same group (itself excluded).

    Parameters
    ----------
    X
        Samples x features (dense).
    groups
        Integer group (coarse class) per sample.
    n_neighbors
        Neighbours per sample. A group with ``m <= n_neighbors`` samples gets its ``m - 1`` true neighbours repeated
        cyclically to fill the row; a group of one sample is its own neighbour.
    metric
        Distance metric (``"cosine"`` or ``"euclidean"``).
    random_state
        Seed for the approximate search.
    device
        A torch device (``"cuda"``): every class is searched exactly there
        (:func:`~falcon_sc.core.torch_ops.exact_neighbors`), however large. ``None``: on the CPU, exact up to
        :data:`EXACT_MAX` samples per class, approximate (pynndescent) above.
    exact_max
        Groups with more samples than this are searched approximately (pynndescent), the others exactly.

    Returns
    -------
    Samples x ``n_neighbors`` int64 array of global sample indices.
    """
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors={n_neighbors} must be at least 1.")
    counts = np.bincount(groups)
    out = np.empty((X.shape[0], n_neighbors), dtype=np.int64)
    for g in bar(np.flatnonzero(counts), "neighbours per coarse class"):
        idx = np.flatnonzero(groups == g)
        Xg = X[idx]
        k = min(n_neighbors, idx.size - 1)
        if k == 0:
            out[idx] = idx[:, None]
            continue
        if device is not None:
            from .torch_ops import exact_neighbors

            local = exact_neighbors(Xg, k, metric=metric, device=device)
        elif idx.size <= exact_max:
            nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(Xg)
            _, local = nn.kneighbors(Xg)
        else:
            local = approximate_neighbors(Xg, k + 1, metric=metric, random_state=random_state)
        local = _drop_self(local, k)
        out[idx] = idx[local[:, np.arange(n_neighbors) % k]]
    return out


def approximate_neighbors(X: np.ndarray, k: int, *, metric: str = "cosine", random_state: int = 0) -> np.ndarray:
    """Samples x ``k`` indices of each sample's approximate nearest neighbours (itself usually first), pynndescent.

    pynndescent's ``neighbor_graph`` is an ``(indices, distances)`` pair; a sparse distance matrix (``csr_array``,
    as some versions return) is turned into the same indices, nearest first, short rows padded with their last.
    """
    from pynndescent import NNDescent

    index = NNDescent(X, n_neighbors=k, metric=metric, random_state=random_state)
    graph = index.neighbor_graph
    if not sparse.issparse(graph):
        return np.asarray(graph[0], dtype=np.int64)[:, :k]
    graph = sparse.csr_matrix(graph)
    out = np.repeat(np.arange(X.shape[0], dtype=np.int64)[:, None], k, axis=1)  # self where a row is empty
    for i in range(X.shape[0]):
        cols, dist = (
            graph.indices[graph.indptr[i] : graph.indptr[i + 1]],
            graph.data[graph.indptr[i] : graph.indptr[i + 1]],
        )
        near = cols[np.argsort(dist, kind="stable")][:k]
        if near.size:
            out[i, : near.size] = near
            out[i, near.size :] = near[-1]
    return out


def neighbour_recall(
    X: np.ndarray,
    groups: np.ndarray,
    neighbors: np.ndarray,
    *,
    metric: str = "cosine",
    exact_max: int = EXACT_MAX,
    n_sample: int = RECALL_SAMPLE,
    random_state: int = 0,
) -> float | None:
    """Share of the exact within-group neighbours that ``neighbors`` holds, on samples of the approximated groups.

    In every group larger than ``exact_max`` (searched approximately by :func:`within_class_neighbors`),
    ``n_sample`` random samples are searched exactly; the recall is the mean share of their exact ``k`` nearest
    neighbours (``k`` the width of ``neighbors``) that their row of ``neighbors`` holds. ``None`` when no group was
    approximated.
    """
    rng = np.random.default_rng(random_state)
    k = neighbors.shape[1]
    found, total = 0, 0
    for g in np.flatnonzero(np.bincount(groups) > exact_max):
        idx = np.flatnonzero(groups == g)
        rows = np.sort(rng.choice(idx.size, size=min(n_sample, idx.size), replace=False))
        nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(X[idx])
        _, local = nn.kneighbors(X[idx[rows]])
        exact = idx[_drop_self_rows(local, rows, k)]
        found += sum(len(set(a) & set(b)) for a, b in zip(exact.tolist(), neighbors[idx[rows]].tolist(), strict=True))
        total += exact.size
    return found / total if total else None


def _drop_self_rows(local: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """:func:`_drop_self` for queries ``rows`` of the fitted samples (their own index is ``rows``, not 0..n)."""
    keep = local != rows[:, None]
    keep[keep.all(axis=1), -1] = False
    return local[keep].reshape(local.shape[0], k)


def _drop_self(local: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's own index (wherever it appears; duplicates of a point may come first)."""
    rows = np.arange(local.shape[0])[:, None]
    keep = local != rows
    # rows where self was not returned: drop the last column instead
    missing = keep.all(axis=1)
    keep[missing, -1] = False
    return local[keep].reshape(local.shape[0], k)


def neighbour_vote(X: np.ndarray, labels: np.ndarray, n_neighbors: int = 15, *, random_state: int = 0) -> np.ndarray:
    """The label most of each sample's nearest neighbours (over all samples) carry, else its own label.

    A sample gets another label only when more than half of its ``n_neighbors`` nearest neighbours (cosine) carry
    that label: on label-free features this marks samples whose own label looks wrong.

    Parameters
    ----------
    X
        Samples x features that do not depend on ``labels`` (e.g. global principal components).
    labels
        Integer label per sample.
    n_neighbors
        Voters per sample.
    random_state
        Seed for the approximate search of large data.
    """
    labels = np.asarray(labels, dtype=np.int64)
    nb = within_class_neighbors(X, np.zeros(len(labels), dtype=np.int64), n_neighbors, random_state=random_state)
    counts = np.zeros((len(labels), int(labels.max()) + 1))
    np.add.at(counts, (np.repeat(np.arange(len(labels)), nb.shape[1]), labels[nb].ravel()), 1.0)
    top = counts.argmax(axis=1)
    return np.where(counts[np.arange(len(labels)), top] > nb.shape[1] / 2, top, labels)
