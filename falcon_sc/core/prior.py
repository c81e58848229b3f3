"""Expected number of fine classes per coarse class (the balance term's targets)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def proportional_counts(sizes, total: int) -> np.ndarray:
    """Share ``total`` children among classes in proportion to their sizes.

    Largest-remainder (Hamilton) apportionment, with every class getting at least one child and never more
    children than it has samples.

    Parameters
    ----------
    sizes
        Number of samples per class (all > 0).
    total
        Total number of children, ``len(sizes) <= total <= sum(sizes)``.

    Returns
    -------
    Number of children per class, summing to ``total``.

    Examples
    --------
    Public as :func:`falcon_sc.baselines.allot_clusters`:

    >>> import falcon_sc as fal
    >>> fal.baselines.allot_clusters([50, 30, 20], 10).tolist()
    [5, 3, 2]
    >>> fal.baselines.allot_clusters([1000, 2, 1], 6).tolist()  # at least one each, at most one per sample
    [4, 1, 1]
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or len(sizes) == 0 or (sizes <= 0).any():
        raise ValueError("sizes must be a non-empty list of positive counts")
    if not len(sizes) <= total <= sizes.sum():
        raise ValueError(f"n_fine={total} must lie between {len(sizes)} and {int(sizes.sum())}")
    quota = total * sizes / sizes.sum()
    alloc = np.clip(np.floor(quota).astype(np.int64), 1, sizes)
    order = np.arange(len(sizes))
    while alloc.sum() < total:  # give to the largest remainder that still has room
        rem = np.where(alloc < sizes, quota - alloc, -np.inf)
        alloc[np.lexsort((order, -rem))[0]] += 1
    while alloc.sum() > total:  # take from the most over-served class that can spare one
        rem = np.where(alloc > 1, quota - alloc, np.inf)
        alloc[np.lexsort((order, rem))[0]] -= 1
    return alloc


def variance_counts(X: np.ndarray, groups: np.ndarray, total: int, *, random_state: int = 0) -> np.ndarray:
    """Share ``total`` children among groups where one more k-means cluster explains the most variance.

    Greedy: every group starts with one child; the next child goes to the group whose within-cluster sum of squares
    (k-means inertia, in the shared space ``X``) drops most when it gets one more cluster. This is the allotment
    k-means inside each group would choose to minimise the total inertia with ``total`` clusters, one group at a
    time: a large or spread-out group gets more children, a tight one keeps one. k-means runs lazily (one fit per
    group and child handed out).

    Parameters
    ----------
    X
        Samples x features.
    groups
        Group index per sample, ``0..G-1`` (every group non-empty).
    total
        Number of children, ``G <= total <= n_samples``.
    random_state
        Seed for k-means.

    Returns
    -------
    Children per group, summing to ``total``.
    """
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1
    sizes = np.bincount(groups, minlength=n_groups)
    if (sizes == 0).any() or not n_groups <= total <= len(groups):
        raise ValueError(f"total={total} must lie between {n_groups} and {len(groups)}, with every group non-empty")
    members = [np.asarray(X[groups == g], dtype=np.float64) for g in range(n_groups)]
    inertia = [float(((m - m.mean(axis=0)) ** 2).sum()) for m in members]
    counts = np.ones(n_groups, dtype=np.int64)

    def next_gain(g: int) -> float:
        if counts[g] >= sizes[g]:
            return -np.inf
        km = KMeans(n_clusters=int(counts[g]) + 1, n_init=3, random_state=random_state).fit(members[g])
        nxt[g] = float(km.inertia_)
        return inertia[g] - nxt[g]

    nxt = [0.0] * n_groups
    gains = np.array([next_gain(g) for g in range(n_groups)])
    while counts.sum() < total:
        g = int(np.argmax(gains))
        counts[g] += 1
        inertia[g] = nxt[g]
        gains[g] = next_gain(g)
    return counts


def children_prior(
    groups: np.ndarray, total: int, *, method: str = "size", X: np.ndarray | None = None, random_state: int = 0
) -> np.ndarray:
    """Expected children per coarse class from class sizes (or their spread).

    Parameters
    ----------
    groups
        Coarse class index per sample.
    total
        Number of fine classes.
    method
        ``"size"`` (proportional to class sizes, at least one each), ``"uniform"`` (``total / K_C`` each, the
        reference's balance term) or ``"variance"`` (:func:`variance_counts` on ``X``).
    X
        Samples x features, for ``"variance"``.
    random_state
        Seed of the k-means fits of ``"variance"``.

    Returns
    -------
    Float targets per coarse class, summing to ``total``.
    """
    n_groups = int(groups.max()) + 1
    if method == "uniform":
        return np.full(n_groups, total / n_groups)
    if method == "size":
        return proportional_counts(np.bincount(groups, minlength=n_groups), total).astype(float)
    if method == "variance":
        if X is None:
            raise ValueError("children_prior='variance' needs the samples' features X.")
        return variance_counts(X, groups, total, random_state=random_state).astype(float)
    raise ValueError(f"children_prior={method!r} is not one of 'auto', 'size', 'uniform', 'variance' or a mapping.")


def kmeans_within_relation(
    X: np.ndarray, groups: np.ndarray, relation: np.ndarray, random_state: int = 0, *, n_init: int = 3
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
    n_init
        k-means restarts per group (the best inertia is kept).

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
        km = KMeans(n_clusters=k, n_init=n_init, random_state=random_state).fit(X[idx])
        labels[idx] = kids[km.labels_]
    return labels
