"""Checks of the pp inputs: the full scan of the expression matrix for bad values, the input kinds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import falcon_sc as fal
import falcon_sc.pp._checks as checks


def test_check_values_and_input_kinds_are_in_pp():
    assert fal.pp.INPUT_KINDS == ("auto", "counts", "normalized", "lognorm")
    fal.pp.check_values(np.ones((3, 2)))  # clean: no error
    with pytest.raises(ValueError, match="adata.layers\\['c'\\] holds 2 negative values"):
        fal.pp.check_values(-np.ones((1, 2)), "layers['c']")


def test_check_values_counts_every_chunk(monkeypatch):
    monkeypatch.setattr(checks, "_SCAN_ELEMENTS", 10)  # many chunks of one row
    X = np.ones((50, 7), dtype=np.float32)
    X[[3, 20, 49], [0, 6, 2]] = np.nan
    X[10, 1] = -1.0
    X[30, 1] = np.inf
    with pytest.raises(ValueError, match="holds 3 NaN and 1 infinite values \\(and 1 negative\\)"):
        fal.pp.check_values(X)
    fal.pp.check_values(np.ones((50, 7)))  # clean: no error


@pytest.mark.parametrize("fmt", [sparse.csr_matrix, sparse.csc_matrix, sparse.lil_matrix], ids=["csr", "csc", "lil"])
def test_check_values_reads_the_stored_values_of_sparse_matrices(fmt):
    X = np.zeros((40, 6))
    X[[1, 7], [2, 5]] = -3.0
    with pytest.raises(ValueError, match="holds 2 negative values"):
        fal.pp.check_values(fmt(X))
    fal.pp.check_values(fmt(np.abs(X)))


def test_check_values_refuses_non_numeric_and_missing_matrices():
    with pytest.raises(ValueError, match="adata.X holds <U1 values; the expression matrix must be numeric"):
        fal.pp.check_values(np.full((2, 2), "a"))
    with pytest.raises(ValueError, match="adata.X is None"):
        fal.pp.check_values(None)
