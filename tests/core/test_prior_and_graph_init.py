"""Children priors and the Leiden warm start on the within-class neighbour graph."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falcon_sc import metrics
from falcon_sc.core.graph_init import graph_clusters, merge_by_connectivity
from falcon_sc.core.neighbors import within_class_neighbors
from falcon_sc.core.prior import children_prior, kmeans_within_relation, proportional_counts


@pytest.mark.parametrize(
    ("sizes", "total", "expected"),
    [
        ([167, 333, 500], 6, [1, 2, 3]),
        ([100, 100, 800], 10, [1, 1, 8]),
        ([5, 5, 5], 3, [1, 1, 1]),
        ([1, 99], 4, [1, 3]),
    ],
)
def test_proportional_counts_known(sizes, total, expected):
    assert proportional_counts(np.array(sizes), total).tolist() == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 1000), min_size=1, max_size=8), st.integers(0, 30))
def test_proportional_counts_properties(sizes, extra):
    total = min(len(sizes) + extra, sum(sizes))
    counts = proportional_counts(np.array(sizes), total)
    assert counts.sum() == total
    assert counts.min() >= 1
    share = np.array(sizes) / sum(sizes) * total
    # a class above the one-child floor never gets more than its exact share rounded up
    assert np.all((counts == 1) | (counts <= np.ceil(share - 1e-9)))
    assert np.all(counts <= np.array(sizes))


def test_children_prior_methods():
    groups = np.repeat([0, 1, 2], [10, 30, 60])
    assert children_prior(groups, 10, method="size").tolist() == [1, 3, 6]
    assert np.allclose(children_prior(groups, 9, method="uniform"), 3)
    with pytest.raises(ValueError, match="children_prior"):
        children_prior(groups, 9, method="bogus")


def _nested_blobs(children=(1, 2, 3), per_class=60, d=8, seed=0):
    rng = np.random.default_rng(seed)
    parent = np.repeat(np.arange(len(children)), children)
    centres = rng.normal(size=(len(parent), d)) * 8
    fine = np.repeat(np.arange(len(parent)), per_class)
    X = centres[fine] + rng.normal(size=(fine.size, d))
    return X.astype(np.float32), fine, parent[fine], parent


def test_graph_clusters_recovers_nested_blobs_and_counts():
    X, fine, groups, parent = _nested_blobs()
    nb = within_class_neighbors(X, groups, 15)
    labels, relation = graph_clusters(X, nb, groups, len(parent))
    assert relation.sum(axis=0).tolist() == [1, 2, 3]  # the graph decides the counts: right here
    assert np.all(relation.sum(axis=1) == 1)
    assert np.all(relation[labels, groups] == 1)  # every sample's cluster is a child of its group
    assert metrics.ari(fine, labels) > 0.99


def test_graph_clusters_with_fixed_targets():
    X, fine, groups, parent = _nested_blobs()
    nb = within_class_neighbors(X, groups, 15)
    labels, relation = graph_clusters(X, nb, groups, 8, targets=np.array([2, 3, 3]))
    assert relation.sum(axis=0).tolist() == [2, 3, 3]
    assert len(np.unique(labels)) == 8
    assert np.all(relation[labels, groups] == 1)


def test_kmeans_within_relation_respects_relation():
    X, fine, groups, parent = _nested_blobs()
    relation = np.zeros((6, 3), dtype=np.int8)
    relation[np.arange(6), parent] = 1
    labels = kmeans_within_relation(X, groups, relation)
    assert np.all(parent[labels] == groups)
    assert metrics.ari(fine, labels) > 0.99


def test_graph_clusters_splits_identical_points():
    # a group of identical samples must still be split into its target count (no endless loop)
    X = np.zeros((20, 3), dtype=np.float32)
    groups = np.zeros(20, dtype=np.int64)
    nb = np.tile(np.arange(1, 6), (20, 1)) % 20
    labels, relation = graph_clusters(X, nb, groups, 3, targets=np.array([3]))
    assert len(np.unique(labels)) == 3
    assert relation.sum() == 3


def _imbalanced_groups(seed=0):
    """Group 0: one large homogeneous blob (600 samples); group 1: two small distinct blobs (40 each)."""
    rng = np.random.default_rng(seed)
    big = rng.normal(size=(600, 6))
    small = np.vstack([rng.normal(size=(40, 6)) + 10, rng.normal(size=(40, 6)) - 10])
    X = np.vstack([big, small]).astype(np.float32)
    groups = np.repeat([0, 1], [600, 80])
    fine = np.repeat([0, 1, 2], [600, 40, 40])
    return X, groups, fine


def test_merge_by_connectivity_rejoins_a_cut_homogeneous_class_first():
    X, groups, fine = _imbalanced_groups()
    nb = within_class_neighbors(X, groups, 15)
    # the large blob cut in two halves, the small group's two blobs kept apart: 4 clusters, keep 3
    labels = np.where(groups == 0, (X[:, 0] > 0).astype(int), 2 + (fine == 2))
    merged = merge_by_connectivity(labels, groups, nb, 3)
    assert len(np.unique(merged[groups == 0])) == 1
    assert len(np.unique(merged[groups == 1])) == 2
    assert metrics.ari(fine, merged) == pytest.approx(1.0)
    # never merges across groups, stops at one cluster per group
    one = merge_by_connectivity(labels, groups, nb, 1)
    assert [len(np.unique(one[groups == g])) for g in (0, 1)] == [1, 1] and one[0] != one[-1]


def test_graph_clusters_counts_after_overclustering():
    # over-clustering cuts the large homogeneous group; merging by connectivity gives back the counts 1 and 2
    X, groups, fine = _imbalanced_groups()
    nb = within_class_neighbors(X, groups, 15)
    labels, relation = graph_clusters(X, nb, groups, 3)
    assert relation.sum(axis=0).tolist() == [1, 2]
    assert metrics.ari(fine, labels) > 0.99
