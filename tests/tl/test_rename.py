"""``fal.tl.rename`` and ``FalconModel.rename``: new names everywhere FALCON wrote the fine classes, or nowhere."""

from __future__ import annotations

import copy
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import falcon_sc as fal

from ..conftest import FAST, N_FINE

MAPPING = {"C0/1": "alpha", "C1/2": "beta"}


@pytest.fixture(scope="module")
def fitted(sim):
    """One refine run (fast settings) with its model and marker genes; tests work on copies."""
    adata = sim.copy()
    model = fal.tl.refine(adata, "coarse", N_FINE, return_model=True, **FAST)
    fal.tl.fine_markers(adata, n_genes=5)
    return adata, model


@pytest.fixture
def run(fitted):
    adata, model = fitted
    return adata.copy(), copy.deepcopy(model)


def _state(adata: ad.AnnData, key: str = "falcon") -> dict:
    res = adata.uns[key]
    return {
        "categories": list(adata.obs[key].cat.categories),
        "codes": adata.obs[key].cat.codes.to_numpy().copy(),
        "warm": adata.obs[f"{key}_warm_start"].astype(str).tolist(),
        "relations": res["relations"].copy(),
        "fine_classes": res["fine_classes"].copy(),
        "markers": adata.uns[f"{key}_markers"]["markers"].copy(),
        "probs": adata.obsm[f"{key}_probs"].copy(),
    }


def _label_is_top_sibling(adata: ad.AnnData, key: str = "falcon") -> bool:
    """Each cell's label is the column of ``obsm[key_probs]`` (named by the relation's rows) it gets most among
    the children of its coarse class."""
    rel = adata.uns[key]["relations"]
    coarse = adata.obs[adata.uns[key]["params"]["coarse_key"]].astype(str).to_numpy()
    allowed = rel.T.loc[coarse].to_numpy().astype(bool)
    best = np.where(allowed, adata.obsm[f"{key}_probs"], -1).argmax(axis=1)
    return bool((rel.index.to_numpy()[best] == adata.obs[key].astype(str).to_numpy()).all())


def test_every_place_renamed(run):
    adata, _ = run
    before = _state(adata)
    assert _label_is_top_sibling(adata)
    fal.tl.rename(adata, MAPPING)
    after = _state(adata)
    expected = [MAPPING.get(c, c) for c in before["categories"]]
    assert after["categories"] == expected  # same order, same codes
    np.testing.assert_array_equal(after["codes"], before["codes"])
    assert list(after["relations"].index) == expected
    np.testing.assert_array_equal(after["relations"].to_numpy(), before["relations"].to_numpy())
    assert list(after["relations"].columns) == list(before["relations"].columns)
    assert list(after["fine_classes"].index) == expected
    pd.testing.assert_frame_equal(
        after["fine_classes"].reset_index(drop=True), before["fine_classes"].reset_index(drop=True)
    )
    # the probabilities' columns follow the relation's rows: still each cell's best sibling
    np.testing.assert_array_equal(after["probs"], before["probs"])
    assert _label_is_top_sibling(adata)
    # markers: group names follow, nothing else changes
    assert after["markers"]["group"].tolist() == [MAPPING.get(g, g) for g in before["markers"]["group"]]
    pd.testing.assert_frame_equal(after["markers"].drop(columns="group"), before["markers"].drop(columns="group"))
    # the warm-start partition is another partition: not renamed
    assert after["warm"] == before["warm"]
    assert {"alpha", "beta"} <= set(adata.obs["falcon"].astype(str))


def test_h5ad_round_trip(run, tmp_path):
    adata, _ = run
    fal.tl.rename(adata, MAPPING)
    adata.write_h5ad(tmp_path / "renamed.h5ad")
    back = ad.read_h5ad(tmp_path / "renamed.h5ad")
    state, expected = _state(back), _state(adata)
    assert state["categories"] == expected["categories"]
    np.testing.assert_array_equal(state["codes"], expected["codes"])
    assert list(state["relations"].index) == list(expected["relations"].index)
    assert list(state["fine_classes"].index) == list(expected["fine_classes"].index)
    assert state["markers"]["group"].tolist() == expected["markers"]["group"].tolist()
    fal.tl.rename(back, {"alpha": "alpha 2"})  # a read-back AnnData renames as well
    assert "alpha 2" in back.uns["falcon"]["relations"].index


def test_model_predicts_and_saves_new_names(run, fitted, tmp_path):
    adata, model = run
    fal.tl.rename(adata, MAPPING, model=model)
    assert sorted(model._fitted.fine_names) == sorted(adata.uns["falcon"]["relations"].index)
    assert set(model.relations.index) == set(adata.uns["falcon"]["relations"].index)
    new_cells = ad.AnnData(adata.X.copy(), obs=adata.obs[["coarse"]].copy(), var=adata.var[[]].copy())
    predicted = model.predict(new_cells, copy=True)
    assert (predicted.obs["falcon"].astype(str) == adata.obs["falcon"].astype(str)).all()
    assert set(predicted.uns["falcon"]["relations"].index) == set(adata.uns["falcon"]["relations"].index)
    model.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "model.json").read_text())
    assert {"alpha", "beta"} <= set(saved["fine_names"]) and "C0/1" not in saved["fine_names"]
    loaded = fal.FalconModel.load(tmp_path / "model")
    again = loaded.predict(new_cells, copy=True)
    assert (again.obs["falcon"].astype(str) == adata.obs["falcon"].astype(str)).all()
    # a second AnnData with the same classes: the model already carries the new names and is left as it is
    other, names = fitted[0].copy(), list(model._fitted.fine_names)
    fal.tl.rename(other, MAPPING, model=model)
    assert model._fitted.fine_names == names
    assert list(other.uns["falcon"]["relations"].index) == list(adata.uns["falcon"]["relations"].index)


def test_swap_and_identity(run):
    adata, model = run
    before, names = _state(adata), list(model._fitted.fine_names)
    fal.tl.rename(adata, {"C0/1": "C0/2", "C0/2": "C0/1", "C1/1": "C1/1"}, model=model)
    after = _state(adata)
    swap = {"C0/1": "C0/2", "C0/2": "C0/1"}
    assert after["categories"] == [swap.get(c, c) for c in before["categories"]]
    assert model._fitted.fine_names == [swap.get(n, n) for n in names]


def test_scheme_relations_renamed(run):
    adata, _ = run
    rel = adata.uns["falcon"]["relations"]
    adata.uns["falcon"]["scheme_relations"] = {"coarse": rel.copy(), "other": rel.iloc[:, :2].copy()}
    fal.tl.rename(adata, MAPPING)
    for table in adata.uns["falcon"]["scheme_relations"].values():
        assert list(table.index) == list(adata.uns["falcon"]["relations"].index)


def test_markers_under_another_key_renamed(run):
    adata, _ = run
    fal.tl.fine_markers(adata, n_genes=2, key_added="my_markers")
    fal.tl.rename(adata, MAPPING)
    assert "alpha" in set(adata.uns["my_markers"]["markers"]["group"])
    assert "C0/1" not in set(adata.uns["my_markers"]["markers"]["group"])


def test_model_rename_method(run):
    _, model = run
    names = list(model._fitted.fine_names)
    assert model.rename({"C2/1": "gamma"}) is model
    assert model._fitted.fine_names == [("gamma" if n == "C2/1" else n) for n in names]
    with pytest.raises(KeyError, match="'nope'"):
        model.rename({"nope": "x"})
    with pytest.raises(RuntimeError, match="not fitted"):
        fal.FalconModel(run[0], "coarse").rename({"a": "b"})


@pytest.mark.parametrize(
    ("mapping", "error", "match"),
    [
        ({"C0/1": "alpha", "nope": "x", "also": "y"}, KeyError, "'nope', 'also'"),
        ({"C0/1": "same", "C0/2": "same"}, ValueError, "'same' from 'C0/1' \\(renamed\\) and 'C0/2' \\(renamed\\)"),
        ({"C0/1": "C1/1"}, ValueError, "'C1/1' \\(not renamed\\)"),
        ({"C0/1": 3}, TypeError, "str to str"),
        ({1: "x"}, TypeError, "str to str"),
        ({"C0/1": " "}, ValueError, "empty name"),
        ([("C0/1", "x")], TypeError, "dict"),
    ],
)
def test_errors_leave_everything_untouched(run, mapping, error, match):
    adata, model = run
    before, names = _state(adata), list(model._fitted.fine_names)
    with pytest.raises(error, match=match):
        fal.tl.rename(adata, mapping, model=model)
    after = _state(adata)
    assert after["categories"] == before["categories"]
    assert list(after["relations"].index) == list(before["relations"].index)
    assert list(after["fine_classes"].index) == list(before["fine_classes"].index)
    assert after["markers"]["group"].tolist() == before["markers"]["group"].tolist()
    assert model._fitted.fine_names == names


def test_errors_inputs(run):
    adata, model = run
    before = _state(adata)
    with pytest.raises(KeyError, match="fal.tl.refine"):
        fal.tl.rename(adata, MAPPING, key="other")
    with pytest.raises(TypeError, match="FalconModel"):
        fal.tl.rename(adata, MAPPING, model="model")
    model.rename({"C2/2": "elsewhere"})  # now the model's classes are neither adata's nor the new names
    with pytest.raises(ValueError, match="other fine classes"):
        fal.tl.rename(adata, MAPPING, model=model)
    markers = adata.uns["falcon_markers"]["markers"]
    adata.uns["falcon_markers"]["markers"] = markers.assign(group=markers["group"].replace({"C0/1": "old"}))
    with pytest.raises(ValueError, match="'old'.*rerun fal.tl.fine_markers"):
        fal.tl.rename(adata, MAPPING)
    adata.uns["falcon_markers"]["markers"] = markers
    adata.uns["falcon"]["fine_classes"] = adata.uns["falcon"]["fine_classes"].rename(index={"C0/1": "stale"})
    with pytest.raises(ValueError, match="out of step"):
        fal.tl.rename(adata, MAPPING)
    assert _state(adata)["categories"] == before["categories"]
    assert list(adata.uns["falcon"]["relations"].index) == list(before["relations"].index)
