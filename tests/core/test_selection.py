"""Per-class choice between the trained and the warm-start partition."""

import numpy as np
import pytest

from falcon_sc.core.selection import choose_per_class, class_silhouette


@pytest.fixture
def two_groups():
    rng = np.random.default_rng(0)
    # group 0: two well separated blobs; group 1: two more
    X = np.concatenate([rng.normal(c, 0.3, size=(100, 2)) for c in ((0, 0), (5, 0), (0, 20), (5, 20))])
    groups = np.repeat([0, 0, 1, 1], 100)
    truth = np.repeat([0, 1, 2, 3], 100)
    scrambled = truth.copy()
    for g, kids in ((0, (0, 1)), (1, (2, 3))):  # same label ids, split across the blobs at random
        idx = np.flatnonzero(groups == g)
        scrambled[idx] = rng.choice(kids, size=idx.size)
    return X, groups, truth, scrambled


def test_keeps_the_better_separated_partition_per_group(two_groups):
    X, groups, truth, scrambled = two_groups
    trained = np.where(groups == 0, truth, scrambled)  # training right in group 0, wrong in group 1
    warm = np.where(groups == 0, scrambled, truth)
    use_warm, scores = choose_per_class(X, groups, trained, warm)
    assert use_warm.tolist() == [False, True]
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_ties_ineligible_and_single_cluster_groups_keep_trained(two_groups):
    X, groups, truth, scrambled = two_groups
    use_warm, scores = choose_per_class(X, groups, truth, truth)
    assert not use_warm.any() and np.isnan(scores).all()  # identical partitions: nothing to compare
    use_warm, _ = choose_per_class(X, groups, scrambled, truth, eligible=np.array([False, True]))
    assert use_warm.tolist() == [False, True]
    single = np.where(groups == 0, 0, 2)  # one cluster per group: no silhouette
    assert not choose_per_class(X, groups, single, truth)[0].any()
    assert not choose_per_class(X, groups, scrambled, truth, min_gain=10.0)[0].any()


def test_silhouette_subsample_is_fixed_and_undefined_cases_are_nan():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 3))
    labels = (X[:, 0] > 0).astype(int)
    a = class_silhouette(X, labels, max_samples=500, random_state=3)
    assert a == class_silhouette(X, labels, max_samples=500, random_state=3) and 0 < a < 1
    assert np.isnan(class_silhouette(X, np.zeros(3000, int)))
    assert np.isnan(class_silhouette(X[:3], np.arange(3)))
