"""Joint groups, per-scheme relations, missing-label filling, the trainer's scheme mask and the variance prior."""

from __future__ import annotations

import numpy as np
import pytest

from falcon_sc.core.prior import children_prior, variance_counts
from falcon_sc.core.schemes import fill_missing, joint_groups, joint_relation, scheme_relations


def test_joint_groups_and_missing_rows():
    codes = np.array([[0, 1], [0, 1], [1, -1], [-1, 0], [0, 1]])
    groups, table = joint_groups(codes)
    assert len(table) == 3
    assert (table[groups] == codes).all()
    with pytest.raises(ValueError, match="at least one scheme"):
        joint_groups(np.array([[0, -1], [-1, -1]]))


def test_scheme_relations_majority_and_coverage():
    labels = np.array([0, 0, 1, 1, 2, 2])
    codes = np.array([[0, -1], [0, 1], [1, 1], [1, -1], [1, 0], [1, -1]])
    m_a, m_b = scheme_relations(labels, codes, 3, [2, 2])
    assert m_a.argmax(1).tolist() == [0, 1, 1]
    assert m_b.argmax(1).tolist() == [1, 1, 0]
    # a coarse class no fine class prefers still gets a child
    m_c = scheme_relations(np.array([0, 1, 2]), np.array([[0], [0], [0]]), 3, [2])[0]
    assert (m_c.sum(axis=0) >= 1).all() and (m_c.sum(axis=1) == 1).all()


def test_joint_relation_intersection_and_fallback():
    m_a = np.array([[1, 0], [1, 0], [0, 1]])
    m_b = np.array([[1, 0], [0, 1], [0, 1]])
    table = np.array([[0, 0], [0, 1], [1, -1], [1, 0]])
    joint = joint_relation([m_a, m_b], table)
    assert joint[:, 0].tolist() == [1, 0, 0]
    assert joint[:, 1].tolist() == [0, 1, 0]
    assert joint[:, 2].tolist() == [0, 0, 1]  # scheme B unknown: every child of A's class
    assert joint[:, 3].tolist() == [0, 0, 1]  # no common child: the first scheme's children


def test_fill_missing_votes_from_labelled_neighbours():
    rng = np.random.default_rng(0)
    space = np.vstack([rng.normal(0, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))])
    truth = np.repeat([0, 1], 50)
    codes = truth[:, None].copy()
    codes[::3, 0] = -1
    filled = fill_missing(space, codes)
    assert (filled[:, 0] == truth).all()
    assert (filled[codes >= 0] == codes[codes >= 0]).all()


def test_variance_counts_follow_the_spread_not_the_size():
    rng = np.random.default_rng(0)
    # group 0: 300 samples in one tight blob; group 1: 150 samples in three far-apart blobs
    tight = rng.normal(0, 0.05, (300, 2))
    spread = np.vstack([rng.normal(c, 0.05, (50, 2)) for c in ((5, 0), (0, 5), (5, 5))])
    X = np.vstack([tight, spread])
    groups = np.repeat([0, 1], [300, 150])
    assert variance_counts(X, groups, 4).tolist() == [1, 3]
    assert children_prior(groups, 4, method="size").tolist() == [3.0, 1.0]  # what the size prior would say
    assert children_prior(groups, 4, method="variance", X=X).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="needs the samples' features"):
        children_prior(groups, 4, method="variance")
    with pytest.raises(ValueError, match="total=1"):
        variance_counts(X, groups, 1)
