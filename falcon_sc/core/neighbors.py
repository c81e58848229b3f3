"""Nearest neighbours searched inside each coarse class."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

from .progress import bar

#: classes larger than this use pynndescent's approximate search; smaller ones exact brute force
EXACT_MAX = 20000


def within_class_neighbors(
    X: np.ndarray,
    groups: np.ndarray,
    n_neighbors: int,
    *,
    metric: str = "cosine",
    random_state: int = 0,
    device: Any = None,
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
        elif idx.size <= EXACT_MAX:
            nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(Xg)
            _, local = nn.kneighbors(Xg)
        else:
            from pynndescent import NNDescent

            index = NNDescent(Xg, n_neighbors=k + 1, metric=metric, random_state=random_state)
            local, _ = index.neighbor_graph
            local = np.asarray(local)
        local = _drop_self(local, k)
        out[idx] = idx[local[:, np.arange(n_neighbors) % k]]
    return out


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
