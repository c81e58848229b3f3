"""Several coarse schemes over the same samples: joint groups and one relation per scheme.

A sample may carry a coarse label in one scheme, in another, or in both (``-1``: none). The warm start and the
within-class neighbour search work on the *joint groups* (samples with the same labels in every scheme); training
keeps one relation per scheme (:func:`falcon_sc.core.trainer.train_falcon`), and a sample's fine classes are the
children of its coarse class in every scheme that labels it (:func:`joint_relation`).
"""

from __future__ import annotations

import numpy as np

from .relation import solve_relation

__all__ = ["fill_missing", "joint_groups", "joint_relation", "scheme_relations"]


def joint_groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group samples by their labels in every scheme.

    Parameters
    ----------
    codes
        Samples x schemes coarse class indices, ``-1`` where a sample has no label in that scheme.

    Returns
    -------
    groups
        Joint group per sample, ``0..G-1`` (groups ordered by their label tuples).
    table
        ``G x schemes``: each group's coarse class per scheme (``-1``: unlabelled there).
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be samples x schemes, got shape {codes.shape}.")
    if (codes < 0).all(axis=1).any():
        raise ValueError("every sample needs a coarse label in at least one scheme.")
    table, groups = np.unique(codes, axis=0, return_inverse=True)
    return groups.reshape(-1).astype(np.int64), table


def fill_missing(space: np.ndarray, codes: np.ndarray, n_neighbors: int = 15) -> np.ndarray:
    """Missing labels (``-1``) of each scheme filled by a vote of the nearest samples labelled in that scheme.

    Used only to group samples for the neighbour search and the warm start, so that a fine class shared by samples
    labelled in different schemes is not cut in two; training sees the observed labels.

    Parameters
    ----------
    space
        Samples x features (e.g. unit-length principal components).
    codes
        Samples x schemes coarse classes (``-1``: unlabelled).
    n_neighbors
        Voters per sample.
    """
    from sklearn.neighbors import KNeighborsClassifier

    filled = np.array(codes, dtype=np.int64, copy=True)
    for s in range(codes.shape[1]):
        known = codes[:, s] >= 0
        if known.all() or not known.any():
            continue
        vote = KNeighborsClassifier(n_neighbors=min(n_neighbors, int(known.sum()))).fit(space[known], codes[known, s])
        filled[~known, s] = vote.predict(space[~known])
    return filled


def scheme_relations(labels: np.ndarray, codes: np.ndarray, n_fine: int, n_coarse: list[int]) -> list[np.ndarray]:
    """One ``n_fine x K_C`` relation per scheme from fine labels.

    Each fine class goes under the coarse class most of its labelled samples carry, with every coarse class given
    at least one child (an exact relation solve on the shares).

    Parameters
    ----------
    labels
        Fine class per sample, ``0..n_fine-1``.
    codes
        Samples x schemes coarse classes (``-1``: unlabelled).
    n_fine
        Number of fine classes.
    n_coarse
        Coarse classes per scheme.
    """
    out = []
    for s, k in enumerate(n_coarse):
        known = codes[:, s] >= 0
        counts = np.zeros((n_fine, k))
        np.add.at(counts, (labels[known], codes[known, s]), 1.0)
        shares = counts / np.clip(counts.sum(axis=1, keepdims=True), 1.0, None)
        out.append(solve_relation(shares))
    return out


def joint_relation(relations: list[np.ndarray], table: np.ndarray) -> np.ndarray:
    """``n_fine x G`` 0/1: the fine classes allowed in each joint group (children in every scheme labelling it).

    A group whose schemes share no child (inconsistent relations) gets the children of its first labelled scheme.
    """
    n_fine = relations[0].shape[0]
    out = np.zeros((n_fine, table.shape[0]), dtype=np.int8)
    for g, row in enumerate(table):
        known = [(s, int(c)) for s, c in enumerate(row) if c >= 0]
        allowed = np.ones(n_fine, dtype=bool)
        for s, c in known:
            allowed &= relations[s][:, c].astype(bool)
        if not allowed.any():
            s, c = known[0]
            allowed = relations[s][:, c].astype(bool)
        out[:, g] = allowed
    return out
