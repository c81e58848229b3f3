"""Nearest neighbours searched inside each coarse class."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from falcon_sc.core import neighbors as nbmod
from falcon_sc.core.neighbors import within_class_neighbors


def _data(seed=0, sizes=(40, 25, 60), d=6):
    rng = np.random.default_rng(seed)
    groups = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    X = rng.normal(size=(groups.size, d)) + groups[:, None] * 0.5
    return X, groups


def _reference(X, groups, k, metric):
    """Brute force per group with sklearn on its own (no shared code path), self removed."""
    out = np.empty((X.shape[0], k), dtype=np.int64)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute").fit(X[idx])
        _, local = nn.kneighbors(X[idx])
        assert np.all(local[:, 0] == np.arange(idx.size))  # no ties/duplicates in this random data
        out[idx] = idx[local[:, 1:]]
    return out


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 5, 10])
def test_matches_sklearn_brute_force(metric, k):
    X, groups = _data()
    got = within_class_neighbors(X, groups, k, metric=metric)
    assert got.dtype == np.int64 and got.shape == (X.shape[0], k)
    np.testing.assert_array_equal(got, _reference(X, groups, k, metric))


def test_matches_numpy_distances():
    """Independent check of the cosine search with plain numpy."""
    X, groups = _data(seed=1)
    k = 7
    got = within_class_neighbors(X, groups, k)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    dist = 1 - Xn @ Xn.T
    dist[groups[:, None] != groups[None, :]] = np.inf
    np.fill_diagonal(dist, np.inf)
    expected = np.argsort(dist, axis=1, kind="stable")[:, :k]
    for i in range(X.shape[0]):
        assert set(got[i]) == set(expected[i])


def test_never_crosses_groups_and_excludes_self():
    X, groups = _data(seed=2, sizes=(30, 12, 50, 3))
    got = within_class_neighbors(X, groups, 8)
    rows = np.arange(X.shape[0])[:, None]
    assert np.all(groups[got] == groups[:, None])
    assert not np.any(got == rows)


def test_tiny_groups():
    rng = np.random.default_rng(3)
    groups = np.array([0] * 20 + [1] * 3 + [2])
    X = rng.normal(size=(groups.size, 4))
    k = 5
    got = within_class_neighbors(X, groups, k)
    assert got.shape == (groups.size, k)
    # a group of 3: each row holds both other members, repeated cyclically
    for i in range(20, 23):
        others = set(range(20, 23)) - {i}
        assert set(got[i]) == others
        assert got[i][0] != got[i][1]
        np.testing.assert_array_equal(got[i][:2], got[i][2:4])
    # a group of one is its own neighbour
    assert np.all(got[23] == 23)
    # the large group is unaffected
    assert np.all(groups[got[:20]] == 0) and not np.any(got[:20] == np.arange(20)[:, None])


def test_group_exactly_k_plus_one_and_k():
    rng = np.random.default_rng(4)
    groups = np.array([0] * 6 + [1] * 5)
    X = rng.normal(size=(11, 3))
    got = within_class_neighbors(X, groups, 5)
    for i in range(6):  # 6 members: each gets all 5 others
        assert sorted(got[i]) == sorted(set(range(6)) - {i})
    for i in range(6, 11):  # 5 members: 4 others, one repeated
        assert set(got[i]) == set(range(6, 11)) - {i}


def test_duplicate_points_still_exclude_self():
    X = np.vstack([np.ones((5, 3)), np.random.default_rng(5).normal(size=(10, 3))])
    groups = np.array([0] * 5 + [1] * 10)
    got = within_class_neighbors(X, groups, 2, metric="euclidean")
    assert not np.any(got == np.arange(15)[:, None])
    assert np.all(groups[got] == groups[:, None])


def test_non_contiguous_group_codes():
    X, groups = _data(seed=6, sizes=(20, 20))
    groups = np.where(groups == 1, 3, 0)  # codes 0 and 3, nothing in 1 and 2
    got = within_class_neighbors(X, groups, 4)
    assert np.all(groups[got] == groups[:, None])


def test_invalid_n_neighbors():
    X, groups = _data()
    with pytest.raises(ValueError):
        within_class_neighbors(X, groups, 0)


@pytest.mark.skipif(not os.environ.get("FALCON_SLOW_TESTS"), reason="pynndescent JIT compilation takes ~1 min")
def test_approximate_recall_above_threshold():
    """A class above ``exact_max`` is searched by pynndescent; its recall against the exact search stays high."""
    pytest.importorskip("pynndescent")
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(6, 10)) * 3
    X = centres[rng.integers(0, 6, 1500)] + rng.normal(size=(1500, 10))
    groups = np.r_[np.zeros(1200, dtype=np.int64), np.ones(300, dtype=np.int64)]
    got = within_class_neighbors(X, groups, 10, exact_max=500)  # group 0 approximate, group 1 exact
    assert np.all(groups[got] == groups[:, None])
    assert not np.any(got == np.arange(X.shape[0])[:, None])
    exact = _reference(X, groups, 10, "cosine")
    np.testing.assert_array_equal(got[groups == 1], exact[groups == 1])
    recall = nbmod.neighbour_recall(X, groups, got, exact_max=500, n_sample=300)
    assert recall is not None and recall >= 0.9
    by_hand = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got[:1200], exact[:1200], strict=True)])
    assert by_hand >= 0.9
    assert nbmod.neighbour_recall(X, groups, got) is None  # nothing above the default threshold


def test_sparse_neighbour_graph(monkeypatch):
    """A pynndescent whose ``neighbor_graph`` is a sparse distance matrix (``csr_array``) gives the same indices."""
    pytest.importorskip("pynndescent")
    import pynndescent
    from scipy import sparse

    X, groups = _data(seed=9, sizes=(60,))
    exact = _reference(X, groups, 4, "cosine")

    class SparseGraph:
        def __init__(self, data, n_neighbors, **kwargs):
            dist = (
                1
                - (data / np.linalg.norm(data, axis=1, keepdims=True))
                @ (data / np.linalg.norm(data, axis=1, keepdims=True)).T
            )
            near = np.argsort(dist, axis=1, kind="stable")[:, :n_neighbors]
            rows = np.repeat(np.arange(data.shape[0]), n_neighbors)
            # self (distance 0) is not stored in a sparse matrix: only the others are
            keep = near.ravel() != rows
            values = dist[rows, near.ravel()][keep]
            self.neighbor_graph = sparse.csr_array((values, (rows[keep], near.ravel()[keep])), shape=dist.shape)

    monkeypatch.setattr(pynndescent, "NNDescent", SparseGraph)
    got = within_class_neighbors(X, groups, 4, exact_max=10)
    np.testing.assert_array_equal(got, exact)


TORCH_DEVICES = ["cpu"] + (["cuda"] if __import__("torch").cuda.is_available() else [])


@pytest.mark.parametrize("device", TORCH_DEVICES)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_search_matches_sklearn_brute_force(device, metric, monkeypatch):
    """The accelerator path (``device=``) is the exact search; blocks smaller than a class change nothing."""
    from falcon_sc.core import torch_ops

    monkeypatch.setattr(torch_ops, "QUERY_BLOCK", 16)  # several query blocks per class
    X, groups = _data(seed=3)
    for k in (1, 5, 10):
        got = within_class_neighbors(X, groups, k, metric=metric, device=device)
        np.testing.assert_array_equal(got, _reference(X, groups, k, metric))


def test_torch_search_of_tiny_groups_and_bad_metric():
    from falcon_sc.core.torch_ops import exact_neighbors

    X, groups = _data(seed=4, sizes=(1, 2, 30))
    got = within_class_neighbors(X, groups, 5, device="cpu")
    np.testing.assert_array_equal(got, within_class_neighbors(X, groups, 5))
    with pytest.raises(ValueError, match="metric must be 'cosine' or 'euclidean'"):
        exact_neighbors(X, 3, metric="manhattan")
