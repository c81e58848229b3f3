"""How many fine classes each coarse class holds, estimated from the within-class neighbour graph.

Leiden over-clusters every coarse class (one shared resolution, each class its own modularity null model); sibling
clusters are then merged, most inter-connected pair first, while their PAGA connectivity (kNN edges between them
over the number expected at random inside the class) stays at or above ``threshold``. Pieces of one homogeneous
population are well connected (connectivity about 0.3-1) and are joined; distinct subtypes share fewer edges (below
0.3) and stay apart. The connectivity does not depend on cluster size, so the count does not grow with the
number of cells. Several Leiden seeds are run and the median count per class is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .graph_init import group_subgraphs, knn_graph, leiden_nested, sibling_merges

__all__ = ["ChildrenEstimate", "estimate_children", "merge_curve"]

THRESHOLD = 0.3
"""Default connectivity below which two sibling clusters are kept apart."""


@dataclass
class ChildrenEstimate:
    """Estimated children per coarse class and the evidence behind it.

    Attributes
    ----------
    counts
        Estimated number of fine classes per group.
    evidence
        One row per group, candidate count and seed: ``group``, ``n_children``, ``seed`` and ``connectivity``, the
        highest connectivity between two sibling clusters when the group is cut into ``n_children`` clusters (the
        merge that would take it to ``n_children - 1``). The estimate of a group is the largest count at which that
        connectivity has fallen below ``threshold``.
    threshold
        The connectivity threshold used.
    """

    counts: np.ndarray
    evidence: pd.DataFrame
    threshold: float


def merge_curve(
    labels: np.ndarray, groups: np.ndarray, neighbors: np.ndarray, n_use: int = 15
) -> dict[int, dict[int, float]]:
    """Merge sibling clusters (same group) down to one per group (:func:`~falcon_sc.core.graph_init.sibling_merges`).

    Returns
    -------
    ``curve[g][k]``: connectivity of the merge that takes group ``g`` from ``k`` clusters to ``k - 1``. Each group's
    merges do not depend on the other groups', so its curve is the one of merging that group alone.
    """
    groups = np.asarray(groups, dtype=np.int64)
    ids, dense = np.unique(labels, return_inverse=True)
    group = np.zeros(len(ids), dtype=np.int64)
    group[dense] = groups
    count = np.bincount(group, minlength=int(groups.max()) + 1)
    curve: dict[int, dict[int, float]] = {g: {} for g in range(len(count))}
    for _, _, ratio, g in sibling_merges(labels, groups, neighbors, n_use):
        curve[g][int(count[g])] = ratio
        count[g] -= 1
    return curve


def _count(curve: dict[int, float], start: int, threshold: float) -> int:
    """Clusters left when merging stops at the first merge below ``threshold`` (merges in decreasing count order)."""
    k = start
    while k > 1 and curve.get(k, -np.inf) >= threshold:
        k -= 1
    return k


def estimate_children(
    neighbors: np.ndarray,
    groups: np.ndarray,
    *,
    threshold: float = THRESHOLD,
    resolution: float = 2.0,
    n_consensus: int = 5,
    random_state: int = 0,
) -> ChildrenEstimate:
    """Estimate the number of fine classes inside every group from its kNN graph.

    Parameters
    ----------
    neighbors
        Samples x k neighbour indices inside each sample's group (nearest first).
    groups
        Group (coarse class) per sample, ``0..G-1``.
    threshold
        Sibling clusters whose connectivity is at or above it are merged.
    resolution
        Leiden resolution of the over-clustering (the estimate is stable from 1 to 3 on the tuning data).
    n_consensus
        Leiden seeds; the median count per group is kept.
    random_state
        Seed of the first Leiden run.

    Returns
    -------
    :class:`ChildrenEstimate`.
    """
    groups = np.asarray(groups, dtype=np.int64)
    n_groups = int(groups.max()) + 1
    subgraphs = group_subgraphs(knn_graph(neighbors), groups)
    rows, runs = [], []
    for seed in range(n_consensus):
        over = leiden_nested(subgraphs, len(groups), resolution, random_state + seed)
        curve = merge_curve(over, groups, neighbors)
        start = [len(np.unique(over[groups == g])) for g in range(n_groups)]
        runs.append([_count(curve[g], start[g], threshold) for g in range(n_groups)])
        rows += [
            {"group": g, "n_children": k, "seed": random_state + seed, "connectivity": r}
            for g in range(n_groups)
            for k, r in sorted(curve[g].items())
        ]
    counts = np.floor(np.median(np.array(runs), axis=0) + 0.5).astype(np.int64)
    return ChildrenEstimate(counts=np.maximum(counts, 1), evidence=pd.DataFrame(rows), threshold=float(threshold))
