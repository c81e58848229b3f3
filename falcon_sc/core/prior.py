"""Expected number of fine classes per coarse class (the balance term's targets)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def proportional_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer counts >= 1 summing to ``total``, as close to proportional to ``sizes`` as rounding allows.

    Largest-remainder rounding of ``sizes / sum * total``, then classes below one child are raised to one, taking
    the children from the classes furthest above their exact share.
    """
    sizes = np.asarray(sizes, dtype=float)
    if total < len(sizes):
        raise ValueError(f"total={total} is smaller than the number of classes ({len(sizes)}).")
    share = sizes / sizes.sum() * total
    counts = np.floor(share).astype(int)
    counts[np.argsort(-(share - counts), kind="stable")[: total - counts.sum()]] += 1
    while (counts < 1).any():
        counts[np.argmax(counts < 1)] += 1
        excess = np.where(counts > 1, counts - share, -np.inf)
        counts[np.argmax(excess)] -= 1
    return counts


def children_prior(groups: np.ndarray, total: int, *, method: str = "size") -> np.ndarray:
    """Expected children per coarse class from class sizes.

    Parameters
    ----------
    groups
        Coarse class index per sample.
    total
        Number of fine classes.
    method
        ``"size"`` (proportional to class sizes, at least one each) or ``"uniform"`` (``total / K_C`` each, the
        reference's balance term).

    Returns
    -------
    Float targets per coarse class, summing to ``total``.
    """
    n_groups = int(groups.max()) + 1
    if method == "uniform":
        return np.full(n_groups, total / n_groups)
    if method == "size":
        return proportional_counts(np.bincount(groups, minlength=n_groups), total).astype(float)
    raise ValueError(f"children_prior={method!r} is not one of 'auto', 'size', 'uniform' or a mapping.")


def kmeans_within_relation(
    X: np.ndarray, groups: np.ndarray, relation: np.ndarray, random_state: int = 0
) -> np.ndarray:
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
