"""``falcon_sc._layout``: the keys FALCON writes, the writers and the reader shared by ``tl`` and ``pl``."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from falcon_sc import _layout as layout

from .conftest import scanpy_log

COARSE = ["A", "B"]
#: fine classes in the order of the network's outputs; parents A, B, B, A
FINE = ["A/2", "B/1", "B/2", "A/1"]
RELATION = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.int8)
#: cells x fine outputs; cell 2 puts most mass outside its coarse class (B/1 while labelled A)
PROBS = np.array(
    [
        [0.6, 0.1, 0.1, 0.2],  # A -> A/2
        [0.1, 0.1, 0.0, 0.8],  # A -> A/1
        [0.3, 0.6, 0.0, 0.1],  # A -> A/2, flagged (top: B/1)
        [0.0, 0.3, 0.7, 0.0],  # B -> B/2
        [0.1, 0.5, 0.4, 0.0],  # B -> B/1
    ]
)
CODES = np.array([0, 0, 0, 1, 1])


def _adata() -> ad.AnnData:
    obs = pd.DataFrame({"coarse": pd.Categorical(np.array(COARSE)[CODES])}, index=[f"c{i}" for i in range(5)])
    return ad.AnnData(obs=obs)


def _write(adata: ad.AnnData, key: str = "falcon", **kwargs) -> None:
    layout.write_labels(
        adata,
        key,
        probs=PROBS.copy(),
        embedding=np.arange(10, dtype=float).reshape(5, 2),
        coarse=CODES,
        relation=RELATION,
        fine_names=FINE,
        coarse_names=COARSE,
        **kwargs,
    )


def _records() -> list[dict]:
    return [{"epoch": e, "loss": 1.0 / (e + 1), "fine_in_use": 4, "children": [2, 2]} for e in range(3)]


def _full(adata: ad.AnnData, key: str = "falcon") -> None:
    """Labels and every record of a training run (with the guard and the n_fine estimate)."""
    _write(
        adata, key, neighbour_coarse=np.array([1, 0, 0, 1, 1]), warm_start=np.array(["A/1", "A/1", "A/2", "B/1", "B/2"])
    )
    estimate = {
        "table": pd.DataFrame({"estimated": [2, 2], "used": [2, 2], "given": [False, True]}, index=COARSE),
        "evidence": pd.DataFrame(
            {"coarse": ["A", "B"], "n_children": [2, 2], "seed": [0, 0], "connectivity": [0.1, 0.2]}
        ),
        "threshold": 0.15,
    }
    layout.write_fit_extras(
        adata,
        key,
        params={"coarse_key": "coarse", "n_fine": 4, "hidden": [8, 8], "checkpoint_path": None, "prior": {1: 2}},
        history=_records(),
        partition_choice=layout.partition_choice(np.array([True, False]), np.array([[0.1, 0.3], [0.5, 0.2]]), COARSE),
        n_fine_estimate=estimate,
    )


# ---------------------------------------------------------------------- keys
def test_written_keys_and_suffixes():
    keys = layout.written_keys("sub")
    assert keys["obs"] == ["sub", "sub_confidence", "sub_outside_parent", "sub_warm_start", "sub_coarse",
                           "sub_neighbour_coarse"]  # fmt: skip
    assert keys["obsm"] == ["sub_probs", "sub_embedding"] and keys["uns"] == ["sub"]


@pytest.mark.parametrize("bad", [None, 3, ["falcon"]])
def test_key_added_must_be_a_string(bad):
    with pytest.raises(TypeError, match=re.escape(f"key_added={bad!r} must be a non-empty string")):
        layout.check_key_added(bad, coarse_keys=["coarse"], batch_key=None)


def test_key_added_must_not_be_empty():
    with pytest.raises(ValueError, match="key_added='' must be a non-empty string"):
        layout.check_key_added("", coarse_keys=["coarse"], batch_key=None)


@pytest.mark.parametrize("suffix", layout.WRITTEN_OBS_SUFFIXES)
def test_key_added_that_would_overwrite_the_coarse_or_batch_column(suffix):
    column = f"sub{suffix}"
    with pytest.raises(
        ValueError, match=rf"key_added='sub' would overwrite the coarse labels.*adata.obs\['{column}'\]"
    ):
        layout.check_key_added("sub", coarse_keys=["other", column], batch_key=None)
    with pytest.raises(ValueError, match=f"batch_key='{column}' is one of them"):
        layout.check_key_added("sub", coarse_keys=["coarse"], batch_key=column)
    with pytest.raises(ValueError, match="coarse labels"):  # one column given as a str
        layout.check_key_added("sub", coarse_keys=column, batch_key=None)


def test_keys_of_another_key_added_pass():
    layout.check_key_added("sub", coarse_keys=["falcon", "falcon_coarse", None], batch_key="falcon_confidence")
    layout.check_key_added("sub", coarse_keys=[], batch_key=None)


# ---------------------------------------------------------------------- writing
def test_write_labels():
    adata = _adata()
    _write(adata)
    # rows ordered by parent, then name; probs columns follow them
    assert list(adata.obs["falcon"].cat.categories) == ["A/1", "A/2", "B/1", "B/2"]
    assert adata.obs["falcon"].astype(str).tolist() == ["A/2", "A/1", "A/2", "B/2", "B/1"]
    np.testing.assert_array_equal(adata.obsm["falcon_probs"], PROBS[:, [3, 0, 1, 2]].astype(np.float32))
    np.testing.assert_allclose(adata.obs["falcon_confidence"], [0.75, 8 / 9, 0.75, 0.7, 5 / 9], rtol=1e-6)
    assert adata.obs["falcon_outside_parent"].tolist() == [False, False, True, False, False]
    assert adata.obsm["falcon_embedding"].dtype == np.float32
    uns = adata.uns["falcon"]
    assert set(uns) == {"relations", "fine_classes"}
    expected = pd.DataFrame([[1, 0], [1, 0], [0, 1], [0, 1]], index=["A/1", "A/2", "B/1", "B/2"], columns=COARSE)
    pd.testing.assert_frame_equal(uns["relations"], expected.astype(np.int8))
    assert uns["fine_classes"]["parent"].tolist() == ["A", "A", "B", "B"]
    assert uns["fine_classes"]["n_cells"].tolist() == [1, 2, 1, 1]
    assert not any(c in adata.obs for c in ("falcon_warm_start", "falcon_neighbour_coarse", "falcon_coarse"))


def test_write_labels_optional_columns():
    adata = _adata()
    _write(adata, neighbour_coarse=np.array([1, 0, 0, 1, 1]), warm_start=np.array(["x", "y", "x", "z", "z"]),
           coarse_predicted=True)  # fmt: skip
    assert adata.obs["falcon_neighbour_coarse"].astype(str).tolist() == ["B", "A", "A", "B", "B"]
    # flagged: top prediction outside (cell 2) or neighbours of another coarse class (cell 0)
    assert adata.obs["falcon_outside_parent"].tolist() == [True, False, True, False, False]
    assert list(adata.obs["falcon_warm_start"].cat.categories) == ["x", "y", "z"]
    assert adata.obs["falcon_coarse"].astype(str).tolist() == ["A", "A", "A", "B", "B"]
    assert list(adata.obs.columns[-3:]) == ["falcon_neighbour_coarse", "falcon_warm_start", "falcon_coarse"]


def test_write_labels_with_several_schemes():
    adata = _adata()
    other = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=np.int8)  # second scheme: X, Y, Z
    schemes = {"keys": ["coarse", "lineage"], "names": [COARSE, ["X", "Y", "Z"]], "relations": [RELATION, other]}
    _write(adata, schemes=schemes)
    tables = adata.uns["falcon"]["scheme_relations"]
    assert list(tables) == ["coarse", "lineage"]
    pd.testing.assert_frame_equal(tables["coarse"], adata.uns["falcon"]["relations"])
    assert list(tables["lineage"].columns) == ["X", "Y", "Z"]
    assert tables["lineage"].loc["A/1"].tolist() == [0, 1, 0] and tables["lineage"].loc["B/2"].tolist() == [0, 0, 1]


def test_one_warning_names_every_overwritten_key():
    adata = _adata()
    with scanpy_log() as log:
        _write(adata, "sub")
    assert "overwriting" not in log.getvalue()
    adata.uns["other"] = {"kept": 1}
    with scanpy_log() as log:
        _write(adata, "sub", warm_start=np.array(["x"] * 5))
    with pytest.raises(KeyError, match="'relations' table is missing"):
        layout.read_results(adata, "other")
    lines = [line for line in log.getvalue().splitlines() if "overwriting" in line]
    assert len(lines) == 1
    for key in ("obs['sub']", "obs['sub_confidence']", "obs['sub_outside_parent']", "obsm['sub_probs']",
                "obsm['sub_embedding']", "uns['sub']"):  # fmt: skip
        assert f"adata.{key}" in lines[0]
    assert "sub_warm_start" not in lines[0] and "other" not in lines[0]  # new, or not written
    assert adata.uns["other"] == {"kept": 1}


def test_write_fit_extras():
    adata = _adata()
    with scanpy_log(verbosity=2) as log:
        _full(adata)
    uns = adata.uns["falcon"]
    assert list(uns) == ["relations", "fine_classes", "history", "children_history", "partition_choice",
                         "n_fine_estimate", "n_fine_evidence", "n_fine_threshold", "params"]  # fmt: skip
    assert list(uns["history"].columns) == ["epoch", "loss", "fine_in_use"]
    np.testing.assert_array_equal(uns["children_history"], [[2, 2]] * 3)
    assert uns["partition_choice"]["kept"].tolist() == ["warm start", "trained"]
    assert "warm-start partition kept (better separated than the trained one) in: A" in log.getvalue()
    assert uns["n_fine_threshold"] == 0.15
    assert set(uns["params"]) == {"coarse_key", "n_fine", "hidden", "prior"}  # None left out
    assert isinstance(uns["params"]["hidden"], np.ndarray) and uns["params"]["prior"] == {"1": 2}


def test_write_fit_extras_of_a_prediction():
    adata = _adata()
    _write(adata)
    layout.write_fit_extras(adata, "falcon", params={"coarse_key": "coarse"})
    assert list(adata.uns["falcon"]) == ["relations", "fine_classes", "params"]


def test_uns_params_copies():
    params = {"hidden": [8], "nested": {"a": [1]}}
    out = layout.uns_params(params)
    out["nested"]["a"].append(2)
    assert params["nested"]["a"] == [1]


# ---------------------------------------------------------------------- reading
def _check_read(adata: ad.AnnData) -> None:
    res = layout.read_results(adata, "falcon")
    assert res.fine_names == ["A/1", "A/2", "B/1", "B/2"] and res.coarse_names == COARSE
    assert res.parents() == {"A/1": "A", "A/2": "A", "B/1": "B", "B/2": "B"}
    assert res.fine_labels().tolist() == ["A/2", "A/1", "A/2", "B/2", "B/1"]
    assert res.coarse_key == "coarse" and res.params["n_fine"] == 4
    assert res.outside_parent.tolist() == [True, False, True, False, False]
    np.testing.assert_array_equal(res.probs, PROBS[:, [3, 0, 1, 2]].astype(np.float32))
    assert res.embedding.shape == (5, 2)
    assert res.history["loss"].tolist() == [1.0, 0.5, 1 / 3]
    assert res.children_history.shape == (3, 2)
    assert res.get("n_fine_estimate")["used"].tolist() == [2, 2]
    assert res.get("warm_start").astype(str).tolist() == ["A/1", "A/1", "A/2", "B/1", "B/2"]
    assert res.get("predicted_coarse") is None and not res.has("scheme_relations")


def test_read_round_trip_in_memory_and_h5ad(tmp_path):
    adata = _adata()
    _full(adata)
    _check_read(adata)
    adata.write_h5ad(tmp_path / "results.h5ad")
    back = ad.read_h5ad(tmp_path / "results.h5ad")
    _check_read(back)
    for name in ("relations", "fine_classes", "partition_choice", "n_fine_estimate"):
        pd.testing.assert_frame_equal(back.uns["falcon"][name], adata.uns["falcon"][name], check_dtype=False)


def test_read_round_trip_h5ad_with_several_schemes(tmp_path):
    adata = _adata()
    other = np.array([[0, 1], [1, 0], [1, 0], [0, 1]], dtype=np.int8)
    _write(
        adata, schemes={"keys": ["coarse", "lineage"], "names": [COARSE, ["X", "Y"]], "relations": [RELATION, other]}
    )
    adata.write_h5ad(tmp_path / "schemes.h5ad")
    res = layout.read_results(ad.read_h5ad(tmp_path / "schemes.h5ad"), "falcon", need=("relations", "scheme_relations"))
    assert [where for where, _, _ in res.fine_class_tables()] == [
        "adata.uns['falcon']['relations'].index",
        "adata.uns['falcon']['fine_classes'].index",
        "adata.uns['falcon']['scheme_relations']['coarse'].index",
        "adata.uns['falcon']['scheme_relations']['lineage'].index",
    ]
    assert res.coarse_key is None  # no params: not written by refine


def test_missing_results_one_error_listing_all():
    adata = _adata()
    with pytest.raises(KeyError, match=r"no FALCON results under key 'falcon' \(adata.uns\['falcon'\] is missing\): "
                       r"run fal.tl.refine\(adata, coarse_key, n_fine, key_added='falcon'\) first"):  # fmt: skip
        layout.read_results(adata, "falcon")
    with pytest.raises(KeyError, match=r"adata.uns\['falcon'\] and adata.obsm\['falcon_probs'\] are missing"):
        layout.read_results(adata, "falcon", need=("relations", "params", "probs"))
    _write(adata)
    del adata.obsm["falcon_probs"]
    missing = (
        "(adata.uns['falcon']['history'], adata.uns['falcon']['params'] and adata.obsm['falcon_probs'] are missing)"
    )
    with pytest.raises(KeyError, match=re.escape(missing)):
        layout.read_results(adata, "falcon", need=("relations", "history", "params", "probs"))
    res = layout.read_results(adata, "falcon", need=())
    with pytest.raises(KeyError, match=r"adata.obsm\['falcon_probs'\] is missing"):
        _ = res.probs
    assert res.get("probs") is None and res.params == {}


def test_obs_only_fields_need_no_uns():
    adata = _adata()
    adata.obs["labels"] = pd.Categorical(["a"] * 5)
    assert layout.read_results(adata, "labels", need=("labels",)).labels.tolist() == ["a"] * 5


def test_read_results_argument_types():
    with pytest.raises(TypeError, match="adata must be an AnnData, got ndarray"):
        layout.read_results(np.zeros((2, 2)), "falcon")
    with pytest.raises(TypeError, match="key must be a str"):
        layout.read_results(_adata(), 3)
    with pytest.raises(ValueError, match="'nope' is not a field"):
        layout.read_results(_adata(), "falcon", need=("nope",))


def test_wrongly_typed_entries_count_as_missing():
    adata = _adata()
    _write(adata)
    adata.uns["falcon"]["relations"] = "not a table"
    with pytest.raises(KeyError, match="'relations' table is missing"):
        layout.read_results(adata, "falcon")


def test_fine_labels_and_parents_errors():
    adata = _adata()
    _write(adata)
    adata.obs["falcon"] = adata.obs["falcon"].astype(object)
    adata.obs.iloc[0, adata.obs.columns.get_loc("falcon")] = np.nan
    with pytest.raises(ValueError, match="1 cells without a fine label"):
        layout.read_results(adata, "falcon").fine_labels()
    rel = adata.uns["falcon"]["relations"].copy()
    rel.iloc[1] = 0
    adata.uns["falcon"]["relations"] = rel
    with pytest.raises(ValueError, match=r"fine classes without a parent: \['A/2'\]"):
        layout.read_results(adata, "falcon").parents()


def test_markers_layout():
    adata = _adata()
    table = pd.DataFrame({"coarse": ["A"], "group": ["A/1"], "names": ["g"]})
    with pytest.raises(KeyError, match=r"no marker genes under adata.uns\['falcon_markers'\]"):
        layout.read_markers(adata, "falcon")
    layout.write_markers(adata, layout.markers_key("falcon"), table, {"key": "falcon"})
    stored = layout.read_markers(adata, "falcon")
    pd.testing.assert_frame_equal(stored["markers"], table)
    assert stored["markers"] is not table
    assert layout.is_markers_of(stored, "falcon") and not layout.is_markers_of(stored, "other")
    with scanpy_log() as log:
        layout.write_markers(adata, "falcon_markers", table, {"key": "falcon"})
    assert "overwriting adata.uns['falcon_markers']" in log.getvalue()
