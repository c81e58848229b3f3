"""Choose, inside each coarse class, the better of two partitions by how well they separate the samples."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import silhouette_score


def class_silhouette(X: np.ndarray, labels: np.ndarray, *, max_samples: int = 2000, random_state: int = 0) -> float:
    """Mean silhouette of ``labels`` on the rows of ``X`` (a fixed random subsample of at most ``max_samples``).

    ``nan`` when the labels do not form between 2 and ``n - 1`` clusters.
    """
    n = len(labels)
    if n > max_samples:
        keep = np.sort(np.random.default_rng(random_state).choice(n, max_samples, replace=False))
        X, labels = X[keep], labels[keep]
    n_clusters = len(np.unique(labels))
    if not 2 <= n_clusters < len(labels):
        return float("nan")
    return float(silhouette_score(X, labels))


def choose_per_class(
    X: np.ndarray,
    groups: np.ndarray,
    trained: np.ndarray,
    warm: np.ndarray,
    *,
    eligible: np.ndarray | None = None,
    min_gain: float = 0.0,
    max_samples: int = 2000,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per group: keep ``warm`` where it separates the group's samples better than ``trained``, else ``trained``.

    The criterion is the silhouette in ``X`` (the within-class neighbour space) on the same subsample for both.
    A group keeps ``trained`` on ties, when either partition has a single cluster there (no silhouette), and
    where it is not ``eligible`` (e.g. training changed its children: that decision stands).

    Parameters
    ----------
    X
        Samples x features.
    groups
        Group (coarse class) per sample, ``0..G-1``.
    trained, warm
        Two labelings of the samples with the same label ids.
    eligible
        Boolean per group: groups that may keep ``warm`` (default all).
    min_gain
        Silhouette margin ``warm`` must win by.
    max_samples
        Samples per group the silhouette is computed on.
    random_state
        Seed of the subsample.

    Returns
    -------
    use_warm
        Boolean per group.
    scores
        ``G x 2`` silhouettes (trained, warm); ``nan`` where undefined.
    """
    n_groups = int(groups.max()) + 1
    use_warm = np.zeros(n_groups, dtype=bool)
    scores = np.full((n_groups, 2), np.nan)
    for g in range(n_groups):
        idx = np.flatnonzero(groups == g)
        if (eligible is not None and not eligible[g]) or np.array_equal(trained[idx], warm[idx]):
            continue
        for j, labels in enumerate((trained, warm)):
            scores[g, j] = class_silhouette(X[idx], labels[idx], max_samples=max_samples, random_state=random_state)
        use_warm[g] = bool(scores[g, 1] > scores[g, 0] + min_gain)  # False when either is nan
    return use_warm, scores
