"""Expected number of fine classes per coarse class (the balance term's targets)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts >= 1 summing to ``total``, proportional to ``weights`` beyond the first."""
    n = len(weights)
    share = weights / weights.sum() * (total - n)
    counts = np.floor(share).astype(int)
    rest = total - n - counts.sum()
    counts[np.argsort(-(share - counts), kind="stable")[:rest]] += 1
    return counts + 1


def greedy_split_counts(X: np.ndarray, groups: np.ndarray, total: int, *, random_state: int = 0) -> np.ndarray:
    """Children per group from greedy k-means: each extra child goes where it lowers total within-cluster variance most.

    This is k-means with ``total`` clusters constrained to nest in the groups, solved greedily over the number of
    clusters per group (k-means inertia per group and k, ``n_init=3``).

    Parameters
    ----------
    X
        Samples x features.
    groups
        Group (coarse class) index per sample, ``0..G-1``.
    total
        Total number of clusters, at least the number of groups.
    random_state
        Seed for k-means.

    Returns
    -------
    Integer clusters per group.
    """
    n_groups = int(groups.max()) + 1
    members = [X[groups == g] for g in range(n_groups)]
    max_k = total - n_groups + 1
    inertia: list[list[float]] = []
    for Xg in members:
        centred = Xg - Xg.mean(axis=0)
        inertia.append([float((centred**2).sum())])
    counts = np.ones(n_groups, dtype=int)

    def gain(g: int) -> float:
        k = counts[g] + 1
        if k > min(max_k, len(members[g])):
            return -np.inf
        while len(inertia[g]) < k:
            km = KMeans(n_clusters=len(inertia[g]) + 1, n_init=3, random_state=random_state).fit(members[g])
            inertia[g].append(min(float(km.inertia_), inertia[g][-1]))
        return inertia[g][k - 2] - inertia[g][k - 1]

    for _ in range(total - n_groups):
        gains = np.array([gain(g) for g in range(n_groups)])
        counts[int(np.argmax(gains))] += 1
    return counts


def children_prior(X: np.ndarray, groups: np.ndarray, total: int, *, method: str = "auto",
                   random_state: int = 0) -> np.ndarray:
    """Expected children per coarse class.

    Parameters
    ----------
    X
        Samples x features (the neighbour space).
    groups
        Coarse class index per sample.
    total
        Number of fine classes.
    method
        ``"auto"`` (greedy k-means split gains), ``"size"`` (proportional to class sizes) or ``"uniform"``.
    random_state
        Seed.

    Returns
    -------
    Float targets per coarse class, summing to ``total``.
    """
    n_groups = int(groups.max()) + 1
    if method == "uniform":
        return np.full(n_groups, total / n_groups)
    if method == "size":
        return _largest_remainder(np.bincount(groups, minlength=n_groups).astype(float), total).astype(float)
    if method == "auto":
        return greedy_split_counts(X, groups, total, random_state=random_state).astype(float)
    raise ValueError(f"children_prior={method!r} is not one of 'auto', 'size', 'uniform' or a mapping.")


def kmeans_within_relation(X: np.ndarray, groups: np.ndarray, relation: np.ndarray, random_state: int = 0) -> np.ndarray:
    """Fine label per sample from k-means inside each group, with one cluster per child of the group in ``relation``.

    Parameters
    ----------
    X
        Samples x features.
    groups
        Coarse class per sample.
    relation
        ``K_F x K_C`` 0/1 relation.
    random_state
        Seed for k-means.

    Returns
    -------
    Fine class index per sample, always a child of the sample's group.
    """
    labels = np.empty(X.shape[0], dtype=np.int64)
    for g in range(relation.shape[1]):
        idx = np.flatnonzero(groups == g)
        kids = np.flatnonzero(relation[:, g])
        if idx.size == 0:
            continue
        k = min(len(kids), idx.size)
        if k == 1:
            labels[idx] = kids[0]
            continue
        km = KMeans(n_clusters=k, n_init=3, random_state=random_state).fit(X[idx])
        labels[idx] = kids[km.labels_]
    return labels
