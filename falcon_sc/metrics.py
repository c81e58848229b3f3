"""Evaluation metrics for fine-class discovery.

All functions accept label array-likes of any hashable type (strings, integers, categoricals). Predicted labels
need not share names with the true ones: accuracy-type metrics first match predicted classes to true classes with
the Hungarian algorithm on the contingency table.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "ari",
    "clustering_accuracy",
    "evaluate",
    "macro_accuracy",
    "match_labels",
    "nmi",
    "per_class_recall",
    "rare_recall",
    "relation_edit_distance",
    "within_coarse_ari",
]


def _as_labels(y: Any, name: str) -> np.ndarray:
    """Convert a label array-like to a 1-d object array and validate it."""
    if y is None:
        raise ValueError(f"`{name}` is None.")
    arr = np.asarray(y, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty.")
    if pd.isna(pd.Series(arr, dtype=object)).any():
        raise ValueError(f"`{name}` contains missing (NaN/None) labels.")
    return arr


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"`y_pred` has length {p.shape[0]} but `y_true` has length {t.shape[0]}.")
    return t, p


def _contingency(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency table (true classes x predicted classes) with the class names (arrays, in order of appearance)."""
    t_codes, t_names = pd.factorize(t, sort=False)
    p_codes, p_names = pd.factorize(p, sort=False)
    table = np.zeros((len(t_names), len(p_names)), dtype=np.int64)
    np.add.at(table, (t_codes, p_codes), 1)
    return table, t_names, p_names


def _hungarian(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a maximum-weight one-to-one matching of the contingency table."""
    return linear_sum_assignment(table, maximize=True)


def match_labels(y_true: Any, y_pred: Any) -> dict[Hashable, Hashable | None]:
    """Match predicted classes to true classes (Hungarian algorithm).

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, one per sample.

    Returns
    -------
    dict
        Maps every predicted class to the true class it is matched with (a one-to-one matching maximising the number
        of samples on which they agree). Predicted classes left over (more predicted than true classes) map to
        ``None``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> fal.metrics.match_labels(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2])
    {0: 'a', 1: 'b', 2: 'c'}
    >>> fal.metrics.match_labels(["a", "a", "b", "b"], ["x", "x", "y", "z"])  # one class too many
    {'x': 'a', 'y': 'b', 'z': None}
    """
    t, p = _check_pair(y_true, y_pred)
    table, t_names, p_names = _contingency(t, p)
    rows, cols = _hungarian(table)
    mapping: dict[Hashable, Hashable | None] = {name: None for name in p_names}
    for r, c in zip(rows, cols, strict=True):
        mapping[p_names[c]] = t_names[r]
    return mapping


def clustering_accuracy(y_true: Any, y_pred: Any) -> float:
    """Clustering accuracy: fraction of samples correct after Hungarian matching of the classes.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, one per sample.

    Returns
    -------
    float
        Value in [0, 1]; samples in unmatched predicted classes count as errors.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> round(fal.metrics.clustering_accuracy(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2]), 3)  # 5 of 6
    0.833
    """
    t, p = _check_pair(y_true, y_pred)
    table, _, _ = _contingency(t, p)
    rows, cols = _hungarian(table)
    return float(table[rows, cols].sum() / t.shape[0])


def macro_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean over true classes of the per-class recall after Hungarian matching.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, one per sample.

    Returns
    -------
    float
        Balanced (class-averaged) accuracy in [0, 1]; true classes left unmatched have recall 0.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> round(fal.metrics.macro_accuracy(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2]), 3)  # (2/3 + 1 + 1) / 3
    0.889
    """
    t, p = _check_pair(y_true, y_pred)
    table, _, _ = _contingency(t, p)
    rows, cols = _hungarian(table)
    recall = np.zeros(table.shape[0])
    recall[rows] = table[rows, cols] / table[rows].sum(axis=1)
    return float(recall.mean())


def per_class_recall(y_true: Any, y_pred: Any, coarse: Any = None) -> pd.DataFrame:
    """Recall of every true class under the Hungarian matching of :func:`clustering_accuracy`.

    Parameters
    ----------
    y_true, y_pred
        True and predicted fine labels, one per sample.
    coarse
        Coarse label of every sample (optional). A true class belongs to the coarse class that holds most of its
        samples.

    Returns
    -------
    DataFrame
        One row per true class (in order of first appearance) with columns ``true_class``, ``coarse`` (``None``
        without ``coarse``), ``n_cells``, ``share_of_coarse`` (``n_cells`` over the number of samples of its coarse
        class, or of all samples without ``coarse``), ``matched`` (the predicted class matched to it, ``None`` if
        none) and ``recall`` (fraction of its samples that carry the matched predicted label; 0 when unmatched). The
        mean of ``recall`` is :func:`macro_accuracy`.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> table = fal.metrics.per_class_recall(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2], ["T"] * 5 + ["M"])
    >>> table[["true_class", "coarse", "n_cells", "matched"]]
      true_class coarse  n_cells  matched
    0          a      T        3        0
    1          b      T        2        1
    2          c      M        1        2
    >>> table["recall"].round(3).tolist()
    [0.667, 1.0, 1.0]
    """
    t, p = _check_pair(y_true, y_pred)
    table, t_names, p_names = _contingency(t, p)
    rows, cols = _hungarian(table)
    n_cells = table.sum(axis=1)
    recall = np.zeros(table.shape[0])
    recall[rows] = table[rows, cols] / n_cells[rows]
    matched: list[Hashable | None] = [None] * table.shape[0]
    for r, c in zip(rows, cols, strict=True):
        matched[r] = p_names[c]
    if coarse is None:
        parent: list[Hashable | None] = [None] * table.shape[0]
        share = n_cells / t.shape[0]
    else:
        c_arr = _as_labels(coarse, "coarse")
        if c_arr.shape[0] != t.shape[0]:
            raise ValueError(f"`coarse` has length {c_arr.shape[0]} but `y_true` has length {t.shape[0]}.")
        t_codes = pd.factorize(t, sort=False)[0]  # same order as the contingency rows
        c_codes, c_names = pd.factorize(c_arr, sort=False)
        by_coarse = np.zeros((table.shape[0], len(c_names)), dtype=np.int64)
        np.add.at(by_coarse, (t_codes, c_codes), 1)
        major = by_coarse.argmax(axis=1)
        parent = [c_names[k] for k in major]
        share = n_cells / np.bincount(c_codes, minlength=len(c_names))[major]
    return pd.DataFrame(
        {
            "true_class": list(t_names),
            "coarse": parent,
            "n_cells": n_cells,
            "share_of_coarse": share,
            "matched": matched,
            "recall": recall,
        }
    )


def rare_recall(y_true: Any, y_pred: Any, coarse: Any, *, max_share: float = 0.05) -> float:
    """Mean recall of the rare true classes: those with at most ``max_share`` of their coarse class's samples.

    Recall is computed under the Hungarian matching of :func:`clustering_accuracy` (see :func:`per_class_recall`);
    a rare class whose samples are merged into a larger predicted class has recall 0. The mean is unweighted.

    Parameters
    ----------
    y_true, y_pred
        True and predicted fine labels, one per sample.
    coarse
        Coarse label of every sample.
    max_share
        A true class is rare when it holds at most this share of the samples of its coarse class, in (0, 1].

    Returns
    -------
    float
        Mean recall of the rare classes in [0, 1], or NaN if there are none.

    Examples
    --------
    Class ``"b"`` holds 1 of the 10 cells of its coarse class ``"T"``:

    >>> import falcon_sc as fal
    >>> y_true = ["a"] * 9 + ["b"] + ["c"] * 10
    >>> coarse = ["T"] * 10 + ["M"] * 10
    >>> fal.metrics.rare_recall(y_true, [0] * 9 + [1] + [2] * 10, coarse, max_share=0.1)  # found
    1.0
    >>> fal.metrics.rare_recall(y_true, [0] * 10 + [2] * 10, coarse, max_share=0.1)  # merged into "a"
    0.0
    """
    if isinstance(max_share, bool) or not isinstance(max_share, int | float | np.number) or not 0 < max_share <= 1:
        raise ValueError(f"`max_share` must be a number in (0, 1], got {max_share!r}.")
    if coarse is None:
        raise ValueError("`coarse` is None: rare classes are defined by their share of their coarse class.")
    table = per_class_recall(y_true, y_pred, coarse)
    rare = table["share_of_coarse"] <= max_share
    return float(table.loc[rare, "recall"].mean()) if rare.any() else float("nan")


def ari(y_true: Any, y_pred: Any) -> float:
    """Compute the adjusted Rand index (:func:`sklearn.metrics.adjusted_rand_score`).

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, one per sample.

    Returns
    -------
    float
        1 for identical partitions (up to names), about 0 for random labels.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> fal.metrics.ari(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    >>> round(fal.metrics.ari(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2]), 3)
    0.318
    """
    t, p = _check_pair(y_true, y_pred)
    return float(adjusted_rand_score(pd.factorize(t)[0], pd.factorize(p)[0]))


def nmi(y_true: Any, y_pred: Any) -> float:
    """Compute the normalised mutual information (:func:`sklearn.metrics.normalized_mutual_info_score`).

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, one per sample.

    Returns
    -------
    float
        Value in [0, 1]; 1 for identical partitions (up to names).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> fal.metrics.nmi(["a", "a", "b", "b"], [1, 1, 0, 0])
    1.0
    >>> round(fal.metrics.nmi(["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2]), 3)
    0.685
    """
    t, p = _check_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(pd.factorize(t)[0], pd.factorize(p)[0]))


def within_coarse_ari(y_true: Any, y_pred: Any, coarse: Any) -> float:
    """Mean ARI of the fine labels computed separately inside each coarse class.

    Only coarse classes whose cells carry at least two distinct true fine labels are scored (in a coarse class with a
    single fine class ARI is degenerate); the result is the unweighted mean over those coarse classes, so small coarse
    classes count as much as large ones.

    Parameters
    ----------
    y_true, y_pred
        True and predicted fine labels, one per sample.
    coarse
        Coarse label of every sample.

    Returns
    -------
    float
        Mean within-coarse ARI, or NaN if no coarse class contains two or more true fine classes.

    Examples
    --------
    Only ``"T"`` holds two true classes, so only it is scored:

    >>> import falcon_sc as fal
    >>> coarse = ["T", "T", "T", "T", "M", "M"]
    >>> fal.metrics.within_coarse_ari(["a", "a", "b", "b", "c", "c"], [0, 0, 1, 1, 2, 3], coarse)
    1.0
    """
    t, p = _check_pair(y_true, y_pred)
    c = _as_labels(coarse, "coarse")
    if c.shape[0] != t.shape[0]:
        raise ValueError(f"`coarse` has length {c.shape[0]} but `y_true` has length {t.shape[0]}.")
    c_codes, c_names = pd.factorize(c)
    t_codes = pd.factorize(t)[0]
    p_codes = pd.factorize(p)[0]
    scores = []
    for k in range(len(c_names)):
        mask = c_codes == k
        if np.unique(t_codes[mask]).size < 2:
            continue
        scores.append(adjusted_rand_score(t_codes[mask], p_codes[mask]))
    return float(np.mean(scores)) if scores else float("nan")


def _as_relation(relation: Any, name: str) -> dict[Hashable, Hashable]:
    if isinstance(relation, pd.Series):
        items = list(relation.items())
    elif isinstance(relation, Mapping):
        items = list(relation.items())
    else:
        raise ValueError(f"`{name}` must be a dict or pandas Series mapping fine labels to coarse labels.")
    if not items:
        raise ValueError(f"`{name}` is empty.")
    out: dict[Hashable, Hashable] = {}
    for fine, parent in items:
        if np.ndim(parent) != 0 or pd.isna(parent):
            raise ValueError(f"`{name}` maps fine class {fine!r} to a missing or invalid coarse label.")
        out[fine] = parent
    return out


def relation_edit_distance(y_true: Any, y_pred: Any, true_relation: Any, pred_relation: Any) -> int:
    """Edit distance between the true and learned bipartite coarse-fine graphs.

    Each relation is a graph with coarse nodes, fine nodes and one edge from every fine class to its coarse parent.
    Coarse nodes are shared between the two graphs (identified by name). The node correspondence between fine nodes
    is fixed by :func:`match_labels` (predicted fine class -> true fine class, computed on ``y_true``/``y_pred``).
    With this correspondence the distance is computed exactly with unit costs:

    * 1 per fine node without a partner (an unmatched predicted class is inserted, an unmatched true class is
      deleted; predicted classes listed in ``pred_relation`` that do not occur in ``y_pred`` are unmatched too);
    * 1 per coarse node present in only one of the two relations;
    * 1 per edge in the symmetric difference of the two edge sets, after renaming matched predicted fine nodes to
      their true partner. Hence a matched fine class attached to the wrong parent costs 2 (delete the wrong edge,
      insert the right one; there is no edge substitution), and an unmatched fine node costs 2 (the node and its
      edge).

    A perfect prediction (up to renaming the predicted classes) has distance 0. Unlike a comparison of child counts
    per coarse class, attaching the right number of fine classes to the wrong parents is penalised.

    Parameters
    ----------
    y_true, y_pred
        True and predicted fine labels, one per sample (used only for the matching).
    true_relation, pred_relation
        Mappings fine label -> coarse label (dict or :class:`pandas.Series`). Every label occurring in ``y_true``
        (``y_pred``) must be a key of ``true_relation`` (``pred_relation``).

    Returns
    -------
    int
        The number of edit operations.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> y_true, y_pred = ["a", "a", "b", "b", "c"], [0, 0, 1, 1, 2]
    >>> true_relation = {"a": "T", "b": "T", "c": "M"}
    >>> fal.metrics.relation_edit_distance(y_true, y_pred, true_relation, {0: "T", 1: "T", 2: "M"})
    0
    >>> fal.metrics.relation_edit_distance(y_true, y_pred, true_relation, {0: "T", 1: "M", 2: "M"})  # 1 -> wrong parent
    2
    """
    t, p = _check_pair(y_true, y_pred)
    rel_t = _as_relation(true_relation, "true_relation")
    rel_p = _as_relation(pred_relation, "pred_relation")
    missing_t = set(pd.unique(t)) - set(rel_t)
    if missing_t:
        raise ValueError(f"`true_relation` has no parent for true classes {sorted(map(str, missing_t))}.")
    missing_p = set(pd.unique(p)) - set(rel_p)
    if missing_p:
        raise ValueError(f"`pred_relation` has no parent for predicted classes {sorted(map(str, missing_p))}.")

    matching = {g: f for g, f in match_labels(t, p).items() if f is not None}
    # rename matched predicted fine nodes to their true partner; tag the other nodes so names cannot collide
    fine_t = {("t", f) for f in rel_t}
    rename = {g: (("t", matching[g]) if g in matching else ("p", g)) for g in rel_p}
    fine_p = set(rename.values())
    edges_t = {(("t", f), c) for f, c in rel_t.items()}
    edges_p = {(rename[g], c) for g, c in rel_p.items()}
    coarse_t = set(rel_t.values())
    coarse_p = set(rel_p.values())
    return len(fine_t ^ fine_p) + len(coarse_t ^ coarse_p) + len(edges_t ^ edges_p)


def evaluate(
    y_true: Any,
    y_pred: Any,
    coarse: Any = None,
    true_relation: Any = None,
    pred_relation: Any = None,
    *,
    rare_max_share: float = 0.05,
) -> dict[str, float]:
    """Compute all metrics at once.

    Parameters
    ----------
    y_true, y_pred
        True and predicted fine labels, one per sample.
    coarse
        Coarse label per sample; enables ``within_coarse_ari`` and ``rare_recall``.
    true_relation, pred_relation
        Fine -> coarse mappings; when both are given, enables ``relation_edit_distance``.
    rare_max_share
        ``max_share`` of :func:`rare_recall`.

    Returns
    -------
    dict
        Keys ``accuracy``, ``macro_accuracy``, ``ari``, ``nmi`` and, when available, ``within_coarse_ari``,
        ``rare_recall`` (NaN without rare classes) and ``relation_edit_distance``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> y_true, y_pred = ["a", "a", "a", "b", "b", "c"], [0, 0, 1, 1, 1, 2]
    >>> scores = fal.metrics.evaluate(y_true, y_pred)
    >>> {name: round(value, 3) for name, value in scores.items()}
    {'accuracy': 0.833, 'macro_accuracy': 0.889, 'ari': 0.318, 'nmi': 0.685}
    >>> coarse = ["T"] * 5 + ["M"]
    >>> scores = fal.metrics.evaluate(y_true, y_pred, coarse, {"a": "T", "b": "T", "c": "M"}, {0: "T", 1: "T", 2: "M"})
    >>> scores["relation_edit_distance"], round(scores["within_coarse_ari"], 3)
    (0, 0.167)
    """
    out: dict[str, float] = {
        "accuracy": clustering_accuracy(y_true, y_pred),
        "macro_accuracy": macro_accuracy(y_true, y_pred),
        "ari": ari(y_true, y_pred),
        "nmi": nmi(y_true, y_pred),
    }
    if coarse is not None:
        out["within_coarse_ari"] = within_coarse_ari(y_true, y_pred, coarse)
        out["rare_recall"] = rare_recall(y_true, y_pred, coarse, max_share=rare_max_share)
    if true_relation is not None and pred_relation is not None:
        out["relation_edit_distance"] = relation_edit_distance(y_true, y_pred, true_relation, pred_relation)
    return out
