"""``baselines._common.fine_names``: the baselines name their clusters with refine's rule."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from falcon_sc.baselines._common import fine_names, nested_labels
from falcon_sc.core.labels import fine_class_names


def test_names_by_decreasing_size_ties_to_the_smaller_id():
    cells, names = fine_names("T cell", np.array([5, 2, 2, 9, 5, 2, 9, 1]))
    # sizes: 2 -> 3 cells, 5 and 9 -> 2 cells (5 first), 1 -> 1 cell
    assert names == ["T cell/1", "T cell/2", "T cell/3", "T cell/4"]
    assert cells.tolist() == ["T cell/2", "T cell/1", "T cell/1", "T cell/3", "T cell/2", "T cell/1", "T cell/3",
                              "T cell/4"]  # fmt: skip
    assert cells.dtype == object


def test_string_ids_and_an_empty_class():
    cells, names = fine_names("B", np.array(["b", "a", "b"]))
    assert cells.tolist() == ["B/1", "B/2", "B/1"] and names == ["B/1", "B/2"]
    cells, names = fine_names("B", np.array([], dtype=np.int64))
    assert cells.tolist() == [] and names == []


@given(st.lists(st.integers(0, 6), min_size=1, max_size=60))
def test_same_rule_as_refine(ids):
    """Within one coarse class, the baselines' names are those core.labels.fine_class_names gives refine's classes."""
    ids = np.array(ids)
    cells, names = fine_names("C", ids)
    present = np.unique(ids)
    relation = np.zeros((7, 2), dtype=bool)
    relation[present, 0] = True
    relation[np.setdiff1d(np.arange(7), present), 1] = True  # ids not present hang under another class
    refine_names = fine_class_names(relation, ids, ["C", "other"])
    assert cells.tolist() == refine_names[ids].tolist()
    assert sorted(names) == sorted(refine_names[present].tolist())
    sizes = [int((cells == n).sum()) for n in names]
    assert sizes == sorted(sizes, reverse=True)


def test_nested_labels_per_class():
    labels, relation = nested_labels(np.array([0, 1, 1, 0, 0]), np.array([0, 0, 0, 1, 1]), ["A", "B"])
    assert labels.tolist() == ["A/2", "A/1", "A/1", "B/1", "B/1"]
    assert relation == {"A/1": "A", "A/2": "A", "B/1": "B"}
