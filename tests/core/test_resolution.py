"""The shared resolution search: finds the target count of any monotone clustering, reports the closest otherwise."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falcon_sc.core.resolution import search_resolution


def _step(thresholds):
    """A count that rises by one at each threshold: the clustering of a resolution, without the clustering."""

    def cluster(res):
        count = 1 + sum(res >= t for t in thresholds)
        return count, f"labels@{res}"

    return cluster


@given(
    st.lists(st.floats(min_value=1e-3, max_value=100.0), min_size=1, max_size=12, unique=True),
    st.integers(min_value=1, max_value=13),
)
def test_reaches_every_reachable_count(thresholds, target):
    thresholds = sorted(thresholds)
    ratios = [b / a for a, b in zip(thresholds, thresholds[1:], strict=False)]
    found = search_resolution(_step(thresholds), target, max_evals=200)
    if target <= len(thresholds) + 1 and min(ratios, default=2.0) > 1.01:  # every count has a resolution
        assert found.n_clusters == target
    assert found.result == f"labels@{found.resolution}"
    assert found.n_evals <= 200
    assert abs(found.n_clusters - target) <= abs(_step(thresholds)(1.0)[0] - target)  # never worse than the start


def test_closest_count_and_ties():
    # counts jump from 2 to 4: 3 is unreachable, ties go to the side asked for
    def cluster(res):
        return (2 if res < 1.5 else 4), res

    fewer = search_resolution(cluster, 3, ties="fewer")
    more = search_resolution(cluster, 3, ties="more")
    assert fewer.n_clusters == 2 and fewer.resolution < 1.5
    assert more.n_clusters == 4 and more.resolution >= 1.5


def test_stops_at_bounds_and_budget():
    calls = []

    def never_enough(res):
        calls.append(res)
        return 1, None

    found = search_resolution(never_enough, 5, max_evals=100)
    assert found.n_clusters == 1
    assert max(calls) <= 1e3 and len(calls) == found.n_evals == int(math.log2(1e3)) + 1
    assert search_resolution(never_enough, 5, max_evals=3).n_evals == 3


@pytest.mark.parametrize("kwargs, match", [({"n_clusters": 0}, "n_clusters"), ({"max_evals": 0}, "max_evals")])
def test_bad_arguments(kwargs, match):
    args = {"n_clusters": 2, "max_evals": 5} | kwargs
    with pytest.raises(ValueError, match=match):
        search_resolution(lambda r: (1, None), args.pop("n_clusters"), **args)
