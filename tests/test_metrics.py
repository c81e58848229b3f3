from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falcon_sc import metrics as M

# ---------------------------------------------------------------- hand-computed examples

Y_TRUE = ["a", "a", "a", "b", "b", "c"]
Y_PRED = ["x", "x", "y", "y", "y", "y"]


def test_match_labels_hand_example():
    # contingency a:(x2,y1) b:(y2) c:(y1) -> x->a, y->b
    assert M.match_labels(Y_TRUE, Y_PRED) == {"x": "a", "y": "b"}


def test_match_labels_extra_predicted_map_to_none():
    mapping = M.match_labels(["a", "a", "b", "b"], [0, 0, 1, 2])
    assert mapping[0] == "a"
    assert sorted(v for v in mapping.values() if v is not None) == ["a", "b"]
    assert list(mapping.values()).count(None) == 1


def test_accuracy_hand_example():
    assert M.clustering_accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    # recalls: a 2/3, b 2/2, c 0
    assert M.macro_accuracy(Y_TRUE, Y_PRED) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_macro_accuracy_differs_from_accuracy_on_imbalance():
    y_true = ["a"] * 8 + ["b"] * 2
    y_pred = ["p"] * 10
    assert M.clustering_accuracy(y_true, y_pred) == pytest.approx(0.8)
    assert M.macro_accuracy(y_true, y_pred) == pytest.approx(0.5)


def test_perfect_prediction():
    y = ["a", "b", "b", "c", "c", "c"]
    y_pred = [{"a": 7, "b": 3, "c": 1}[v] for v in y]
    res = M.evaluate(y, y_pred, coarse=["X", "X", "X", "Y", "Y", "Y"])
    assert res["accuracy"] == 1.0
    assert res["macro_accuracy"] == 1.0
    assert res["ari"] == pytest.approx(1.0)
    assert res["nmi"] == pytest.approx(1.0)
    assert res["within_coarse_ari"] == pytest.approx(1.0)


def test_ari_nmi_wrappers():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    assert M.ari(Y_TRUE, Y_PRED) == pytest.approx(adjusted_rand_score(Y_TRUE, Y_PRED))
    assert M.nmi(Y_TRUE, Y_PRED) == pytest.approx(normalized_mutual_info_score(Y_TRUE, Y_PRED))


def test_within_coarse_ari():
    coarse = ["X"] * 4 + ["Y"] * 4 + ["Z"] * 2
    y_true = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    # X perfect, Y all in one cluster (ARI 0), Z has a single fine class -> skipped
    y_pred = [1, 1, 2, 2, 3, 3, 3, 3, 4, 5]
    assert M.within_coarse_ari(y_true, y_pred, coarse) == pytest.approx(0.5)
    assert math.isnan(M.within_coarse_ari(["a", "a"], [1, 2], ["X", "X"]))


def test_inputs_pandas_and_categorical():
    t = pd.Series(pd.Categorical(Y_TRUE))
    p = pd.Categorical(Y_PRED)
    assert M.clustering_accuracy(t, p) == pytest.approx(4 / 6)
    assert M.clustering_accuracy(np.array(Y_TRUE), np.array(Y_PRED)) == pytest.approx(4 / 6)


# ---------------------------------------------------------------- relation edit distance

REL_TRUE = {"f1": "X", "f2": "X", "f3": "Y", "f4": "Y", "f5": "Z"}
Y_FINE = ["f1"] * 5 + ["f2"] * 4 + ["f3"] * 3 + ["f4"] * 6 + ["f5"] * 2


def test_relation_exact_after_relabelling_is_zero():
    names = {"f1": "k9", "f2": 0, "f3": "zz", "f4": 17, "f5": "q"}
    y_pred = [names[v] for v in Y_FINE]
    pred_rel = {names[f]: c for f, c in REL_TRUE.items()}
    assert M.relation_edit_distance(Y_FINE, y_pred, REL_TRUE, pred_rel) == 0
    assert M.relation_edit_distance(Y_FINE, y_pred, pd.Series(REL_TRUE), pd.Series(pred_rel)) == 0


def test_relation_right_child_counts_but_swapped_parents_is_positive():
    # X and Y both have 2 children in truth and in prediction, but f2 and f3 swapped parents.
    y_pred = [v.upper() for v in Y_FINE]
    pred_rel = {"F1": "X", "F2": "Y", "F3": "X", "F4": "Y", "F5": "Z"}
    counts_true = pd.Series(REL_TRUE).value_counts().sort_index()
    counts_pred = pd.Series(pred_rel).value_counts().sort_index()
    assert counts_true.equals(counts_pred)
    # two matched fine classes with a wrong parent, 2 edge edits each
    assert M.relation_edit_distance(Y_FINE, y_pred, REL_TRUE, pred_rel) == 4


def test_relation_extra_and_missing_fine_classes():
    # prediction splits f4 into two classes: one extra fine node + its edge
    y_pred = ["f1"] * 5 + ["f2"] * 4 + ["f3"] * 3 + ["g"] * 4 + ["h"] * 2 + ["f5"] * 2
    pred_rel = {"f1": "X", "f2": "X", "f3": "Y", "g": "Y", "h": "Y", "f5": "Z"}
    assert M.relation_edit_distance(Y_FINE, y_pred, REL_TRUE, pred_rel) == 2
    # prediction merges f1 and f2: one true fine node + its edge deleted
    y_pred = ["m"] * 9 + ["f3"] * 3 + ["f4"] * 6 + ["f5"] * 2
    pred_rel = {"m": "X", "f3": "Y", "f4": "Y", "f5": "Z"}
    assert M.relation_edit_distance(Y_FINE, y_pred, REL_TRUE, pred_rel) == 2


def test_relation_missing_key_raises():
    with pytest.raises(ValueError, match="pred_relation"):
        M.relation_edit_distance(Y_FINE, Y_FINE, REL_TRUE, {"f1": "X"})
    with pytest.raises(ValueError, match="true_relation"):
        M.relation_edit_distance(Y_FINE, Y_FINE, {"f1": "X"}, REL_TRUE)
    with pytest.raises(ValueError, match="true_relation"):
        M.relation_edit_distance(Y_FINE, Y_FINE, ["X"], REL_TRUE)


def test_evaluate_keys():
    res = M.evaluate(Y_FINE, Y_FINE)
    assert set(res) == {"accuracy", "macro_accuracy", "ari", "nmi"}
    coarse = [REL_TRUE[f] for f in Y_FINE]
    res = M.evaluate(Y_FINE, Y_FINE, coarse=coarse, true_relation=REL_TRUE, pred_relation=REL_TRUE)
    assert set(res) == {
        "accuracy",
        "macro_accuracy",
        "ari",
        "nmi",
        "within_coarse_ari",
        "rare_recall",
        "relation_edit_distance",
    }
    assert res["relation_edit_distance"] == 0
    assert math.isnan(res["rare_recall"])  # no class holds <= 5% of its coarse class
    res = M.evaluate(Y_FINE, Y_FINE, coarse=coarse, rare_max_share=0.5)
    assert res["rare_recall"] == 1.0  # f1..f4 hold <= half of X or Y


# ---------------------------------------------------------------- per-class and rare recall

# X: a 50, b 47, r 3 (3% of X); Y: c 18, s 2 (10% of Y); Z: z 10 (single child)
RARE_TRUE = ["a"] * 50 + ["b"] * 47 + ["r"] * 3 + ["c"] * 18 + ["s"] * 2 + ["z"] * 10
RARE_COARSE = ["X"] * 100 + ["Y"] * 20 + ["Z"] * 10
# r: 2 of 3 cells in its own cluster "R", 1 in "B"; s merged into "C"; c: 16 of 18 in "C", 2 in "A"
RARE_PRED = ["A"] * 50 + ["B"] * 47 + ["R", "R", "B"] + ["C"] * 16 + ["A"] * 2 + ["C"] * 2 + ["Z"] * 10


def test_per_class_recall_hand_example():
    table = M.per_class_recall(RARE_TRUE, RARE_PRED, RARE_COARSE)
    assert list(table.columns) == ["true_class", "coarse", "n_cells", "share_of_coarse", "matched", "recall"]
    table = table.set_index("true_class")
    assert table["coarse"].to_dict() == {"a": "X", "b": "X", "r": "X", "c": "Y", "s": "Y", "z": "Z"}
    assert table["n_cells"].to_dict() == {"a": 50, "b": 47, "r": 3, "c": 18, "s": 2, "z": 10}
    assert table.loc["r", "share_of_coarse"] == pytest.approx(0.03)
    assert table.loc["s", "share_of_coarse"] == pytest.approx(0.1)
    assert table.loc["z", "share_of_coarse"] == 1.0
    assert table["matched"].to_dict() == {"a": "A", "b": "B", "r": "R", "c": "C", "s": None, "z": "Z"}
    expected = {"a": 1.0, "b": 1.0, "r": 2 / 3, "c": 16 / 18, "s": 0.0, "z": 1.0}
    assert table["recall"].to_dict() == pytest.approx(expected)
    assert table["recall"].mean() == pytest.approx(M.macro_accuracy(RARE_TRUE, RARE_PRED))
    # without coarse labels the share is of all cells
    plain = M.per_class_recall(RARE_TRUE, RARE_PRED).set_index("true_class")
    assert plain["coarse"].isna().all() and plain.loc["z", "share_of_coarse"] == pytest.approx(10 / 130)


def test_rare_recall_hand_example():
    # rare at 5%: only r (3%) -> 2/3; at 10%: r and s -> (2/3 + 0) / 2
    assert M.rare_recall(RARE_TRUE, RARE_PRED, RARE_COARSE) == pytest.approx(2 / 3)
    assert M.rare_recall(RARE_TRUE, RARE_PRED, RARE_COARSE, max_share=0.1) == pytest.approx(1 / 3)
    assert math.isnan(M.rare_recall(RARE_TRUE, RARE_PRED, RARE_COARSE, max_share=0.02))
    # a perfect prediction under other names has rare recall 1; merging r into b gives 0
    renamed = [v + "!" for v in RARE_TRUE]
    assert M.rare_recall(RARE_TRUE, renamed, RARE_COARSE, max_share=0.1) == 1.0
    merged = ["b" if v == "r" else v for v in RARE_TRUE]
    assert M.rare_recall(RARE_TRUE, merged, RARE_COARSE) == 0.0
    assert M.evaluate(RARE_TRUE, RARE_PRED, coarse=RARE_COARSE)["rare_recall"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("max_share", [0, -0.1, 1.5, "0.1", True, float("nan")])
def test_rare_recall_bad_max_share(max_share):
    with pytest.raises(ValueError, match="max_share"):
        M.rare_recall(RARE_TRUE, RARE_PRED, RARE_COARSE, max_share=max_share)


def test_rare_recall_bad_coarse():
    with pytest.raises(ValueError, match="coarse"):
        M.rare_recall(RARE_TRUE, RARE_PRED, None)
    with pytest.raises(ValueError, match="coarse"):
        M.rare_recall(RARE_TRUE, RARE_PRED, RARE_COARSE[:-1])
    with pytest.raises(ValueError, match="coarse"):
        M.per_class_recall(RARE_TRUE, RARE_PRED, [None] * len(RARE_TRUE))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("y_true", "y_pred", "name"),
    [
        (["a", "b"], ["a"], "y_pred"),
        ([], [], "y_true"),
        (["a", np.nan], ["a", "b"], "y_true"),
        (["a", "b"], ["a", None], "y_pred"),
        (np.array([1.0, np.nan]), [1, 2], "y_true"),
    ],
)
@pytest.mark.parametrize("func", [M.match_labels, M.clustering_accuracy, M.macro_accuracy, M.ari, M.nmi, M.evaluate])
def test_bad_input(func, y_true, y_pred, name):
    with pytest.raises(ValueError, match=name):
        func(y_true, y_pred)


def test_bad_coarse():
    with pytest.raises(ValueError, match="coarse"):
        M.within_coarse_ari(["a", "b"], ["a", "b"], ["X"])
    with pytest.raises(ValueError, match="coarse"):
        M.within_coarse_ari(["a", "b"], ["a", "b"], ["X", None])


@pytest.mark.parametrize("func", [M.per_class_recall, M.rare_recall, M.within_coarse_ari])
def test_bad_input_with_coarse(func):
    with pytest.raises(ValueError, match="`y_pred` has length 1 but `y_true` has length 2"):
        func(["a", "b"], ["a"], ["X", "X"])
    with pytest.raises(ValueError, match="`coarse` has length 1 but `y_true` has length 2"):
        func(["a", "b"], ["a", "b"], ["X"])


def test_evaluate_bad_coarse():
    with pytest.raises(ValueError, match="`coarse` has length 1"):
        M.evaluate(["a", "b"], ["a", "b"], ["X"])


@pytest.mark.parametrize(
    ("true_relation", "pred_relation", "match"),
    [
        ([("a", "T")], {"x": "T"}, "`true_relation` must be a dict or pandas Series"),
        ({"a": "T"}, {}, "`pred_relation` is empty"),
        ({"a": "T"}, {"x": None}, "`pred_relation` maps fine class 'x' to a missing"),
    ],
)
def test_relation_edit_distance_bad_relations(true_relation, pred_relation, match):
    with pytest.raises(ValueError, match=match):
        M.relation_edit_distance(["a"], ["x"], true_relation, pred_relation)


# ---------------------------------------------------------------- properties

labels_strategy = st.integers(min_value=2, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
        st.lists(st.integers(0, 3), min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(labels_strategy, st.permutations(["p", "q", "r", "s"]))
def test_permutation_invariance_of_predicted_names(labels, perm):
    y_true, y_pred = labels
    renamed = [perm[v] for v in y_pred]
    for func in (M.clustering_accuracy, M.macro_accuracy, M.ari, M.nmi):
        assert func(y_true, y_pred) == pytest.approx(func(y_true, renamed))
    mapping = M.match_labels(y_true, y_pred)
    mapping_renamed = M.match_labels(y_true, renamed)
    # matched counts are the same (the matching itself may differ only by ties)
    agree = sum(mapping[p] == t for t, p in zip(y_true, y_pred, strict=True))
    agree_renamed = sum(mapping_renamed[p] == t for t, p in zip(y_true, renamed, strict=True))
    assert agree == agree_renamed


@settings(max_examples=80, deadline=None)
@given(labels_strategy)
def test_accuracy_equals_brute_force(labels):
    y_true, y_pred = labels
    t_classes = sorted(set(y_true))
    p_classes = sorted(set(y_pred))
    n = len(y_true)
    best = 0
    # injective assignments of predicted classes to true classes (or to nothing)
    slots = t_classes + [None] * len(p_classes)
    for assign in itertools.permutations(slots, len(p_classes)):
        used = [a for a in assign if a is not None]
        if len(used) != len(set(used)):
            continue
        m = dict(zip(p_classes, assign, strict=True))
        best = max(best, sum(m[p] == t for t, p in zip(y_true, y_pred, strict=True)))
    assert M.clustering_accuracy(y_true, y_pred) == pytest.approx(best / n)
    mapping = M.match_labels(y_true, y_pred)
    assert sum(mapping[p] == t for t, p in zip(y_true, y_pred, strict=True)) == best
    assert 0.0 <= M.macro_accuracy(y_true, y_pred) <= 1.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(["X", "Y", "Z"]), min_size=2, max_size=5),
    st.permutations(list(range(5))),
)
def test_relation_distance_zero_under_relabelling(parents, perm):
    fines = [f"f{i}" for i in range(len(parents))]
    rel = dict(zip(fines, parents, strict=True))
    y_true = [f for i, f in enumerate(fines) for _ in range(i + 2)]
    names = {f: perm[i] for i, f in enumerate(fines)}
    y_pred = [names[f] for f in y_true]
    pred_rel = {names[f]: c for f, c in rel.items()}
    assert M.relation_edit_distance(y_true, y_pred, rel, pred_rel) == 0
