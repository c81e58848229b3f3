from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import falcon_sc as fal
from falcon_sc.bench.conflicts import mislabel

from ..conftest import FAST, N_FINE, simulate


def _hand_made() -> AnnData:
    """6 cells, coarse A (children a1, a2) and B (child b1); cells 4 and 5 flagged (predicted under the other class)."""
    obs = pd.DataFrame(
        {
            "coarse": pd.Categorical(["A", "A", "A", "B", "A", "B"], categories=["A", "B"]),
            "falcon_outside_parent": [False, False, False, False, True, True],
        },
        index=[f"c{i}" for i in range(6)],
    )
    adata = AnnData(obs=obs)
    rel = pd.DataFrame([[1, 0], [1, 0], [0, 1]], index=["A/1", "A/2", "B/1"], columns=["A", "B"], dtype=np.int8)
    adata.obsm["falcon_probs"] = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.1, 0.8, 0.1],
            [0.5, 0.4, 0.1],
            [0.0, 0.1, 0.9],
            [0.1, 0.2, 0.7],  # labelled A, B favoured with 0.7
            [0.45, 0.4, 0.15],  # labelled B, A favoured with 0.85
        ],
        dtype=np.float32,
    )
    adata.uns["falcon"] = {"relations": rel, "params": {"coarse_key": "coarse"}}
    return adata


def test_summary_on_hand_made_results():
    adata = _hand_made()
    before = (list(adata.obs.columns), sorted(adata.uns["falcon"]), sorted(adata.obsm))
    table = fal.tl.coarse_conflicts(adata)
    assert list(table.index) == ["A", "B"]
    assert list(table.columns) == ["n_cells", "n_flagged", "share_flagged", "top_other", "n_top_other"]
    assert table.loc["A"].tolist() == [4, 1, 0.25, "B", 1]
    assert table.loc["B"].tolist() == [2, 1, 0.5, "A", 1]
    assert (list(adata.obs.columns), sorted(adata.uns["falcon"]), sorted(adata.obsm)) == before
    # min_confidence: cell 4 gives B 0.7, cell 5 gives A 0.85
    strict = fal.tl.coarse_conflicts(adata, min_confidence=0.8)
    assert strict["n_flagged"].tolist() == [0, 1]
    assert strict.loc["A", "top_other"] == "" and strict.loc["A", "n_top_other"] == 0
    fal.tl.coarse_conflicts(adata, store=True)
    pd.testing.assert_frame_equal(adata.uns["falcon"]["conflicts"], table)


def test_missing_results_and_bad_arguments():
    adata = _hand_made()
    with pytest.raises(KeyError, match=r"'other'.*fal\.tl\.refine\(.*key_added='other'\) first"):
        fal.tl.coarse_conflicts(adata, key="other")
    no_probs = adata.copy()
    del no_probs.obsm["falcon_probs"]
    with pytest.raises(KeyError, match="falcon_probs"):
        fal.tl.coarse_conflicts(no_probs)
    with pytest.raises(KeyError, match="nope"):
        fal.tl.coarse_conflicts(adata, coarse_key="nope")
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="min_confidence"):
            fal.tl.coarse_conflicts(adata, min_confidence=bad)
    with pytest.raises(TypeError, match="min_confidence"):
        fal.tl.coarse_conflicts(adata, min_confidence="high")
    other_labels = adata.copy()
    other_labels.obs["coarse"] = pd.Categorical(["A", "A", "A", "C", "A", "B"])
    with pytest.raises(ValueError, match="'C'"):
        fal.tl.coarse_conflicts(other_labels)


def test_mislabel_helper():
    adata = simulate(n_cells=500)
    wrong = mislabel(adata, "coarse", 0.1, random_state=1)
    assert wrong.sum() == 50
    noisy, clean = adata.obs["coarse_noisy"].astype(str), adata.obs["coarse"].astype(str)
    assert (noisy[wrong] != clean[wrong]).all() and (noisy[~wrong] == clean[~wrong]).all()
    assert list(adata.obs["coarse_noisy"].cat.categories) == list(adata.obs["coarse"].cat.categories)


@pytest.fixture(scope="module")
def noisy():
    """Easy simulated data with 3 % of the cells given a wrong coarse label, refined with fast settings."""
    adata = simulate()
    wrong = mislabel(adata, "coarse", 0.03, random_state=0)
    # refine's defaults: the network alone rarely flags them (its inputs carry the given label), the neighbour vote
    # in the label-free global components does (see falcon_sc.bench.conflicts and the docs' Figures page)
    fal.tl.refine(adata, "coarse_noisy", N_FINE, random_state=0, **FAST)
    return adata, wrong


def test_flags_catch_mislabelled_cells(noisy):
    adata, wrong = noisy
    flag = adata.obs["falcon_outside_parent"].to_numpy()
    vote = adata.obs["falcon_neighbour_coarse"].astype(str).to_numpy()
    assert (vote[wrong] == adata.obs["coarse"].astype(str).to_numpy()[wrong]).mean() >= 0.9  # their true class
    tp = int((flag & wrong).sum())
    assert tp / wrong.sum() >= 0.9  # recall
    assert tp / max(flag.sum(), 1) >= 0.9  # precision
    table = fal.tl.coarse_conflicts(adata)
    assert table["n_flagged"].sum() == flag.sum()
    assert table["n_cells"].sum() == adata.n_obs
    # the predicted coarse class of a flagged cell is mostly its true one
    cells = fal.tl._conflicts.cell_conflicts(adata)
    true = pd.Categorical(adata.obs["coarse"], categories=cells.coarse_names).codes
    hit = cells.flagged & wrong
    assert (cells.other[hit] == true[hit]).mean() >= 0.9
