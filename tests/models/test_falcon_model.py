"""FalconModel: predictions on new cells, save/load, errors, h5ad round trip."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import falcon_sc as fal
from falcon_sc import metrics
from falcon_sc.errors import SavedModelError

from ..conftest import FAST, N_FINE, scanpy_log, simulate


@pytest.fixture(scope="module")
def data():
    """2,000 simulated cells in 2 batches, split in halves by cell."""
    adata = simulate(n_cells=2000, n_batches=2)
    order = np.random.default_rng(0).permutation(adata.n_obs)
    return adata, adata[order[:1000]].copy(), adata[order[1000:]].copy()


@pytest.fixture(scope="module")
def fitted(data):
    full, _, _ = data
    adata = full.copy()
    model = fal.tl.refine(adata, "coarse", N_FINE, batch_key="batch", return_model=True, **FAST)
    return adata, model


@pytest.fixture(scope="module")
def half_model(data):
    _, train, _ = data
    return fal.FalconModel(train, "coarse", batch_key="batch", n_top_genes=200, n_comps=20).fit(
        N_FINE, n_epochs=20, batch_size=64, accelerator="cpu", show_progress=False
    )


def test_predict_on_the_fitted_cells_reproduces_refine(data, fitted):
    full, _, _ = data
    adata, model = fitted
    again = model.predict(full, copy=True)
    assert np.array_equal(again.obs["falcon"].astype(str), adata.obs["falcon"].astype(str))
    np.testing.assert_allclose(again.obsm["falcon_probs"], adata.obsm["falcon_probs"], atol=1e-5)
    assert list(again.uns["falcon"]["relations"].index) == list(adata.uns["falcon"]["relations"].index)
    assert "falcon" not in full.obs  # copy=True left the input alone


def test_fit_on_half_labels_the_other_half(data, half_model):
    _, _, test = data
    out = half_model.predict(test, copy=True)
    assert metrics.ari(test.obs["fine"], out.obs["falcon"]) > 0.9
    assert (out.obs["falcon"].astype(str).str.split("/").str[0] == test.obs["coarse"].astype(str)).all()


def test_save_load_gives_identical_predictions(data, half_model, tmp_path):
    _, _, test = data
    half_model.save(tmp_path / "model")
    loaded = fal.FalconModel.load(tmp_path / "model")
    a, b = half_model.predict(test, copy=True), loaded.predict(test, copy=True)
    assert np.array_equal(a.obsm["falcon_probs"], b.obsm["falcon_probs"])
    assert a.uns["falcon"]["relations"].equals(b.uns["falcon"]["relations"])
    assert loaded.coarse_names == half_model.coarse_names
    with pytest.raises(FileExistsError, match="overwrite=True"):
        half_model.save(tmp_path / "model")
    half_model.save(tmp_path / "model", overwrite=True)


def test_load_refuses_other_classes_versions_and_incomplete_folders(half_model, tmp_path):
    half_model.save(tmp_path / "m")
    settings = json.loads((tmp_path / "m" / "model.json").read_text())
    for change, match in (({"model_class": "SCVI"}, "not a FalconModel"), ({"format_version": 99}, "format 99")):
        (tmp_path / "m" / "model.json").write_text(json.dumps({**settings, **change}))
        with pytest.raises(ValueError, match=match):
            fal.FalconModel.load(tmp_path / "m")
    (tmp_path / "m" / "weights.pt").unlink()
    with pytest.raises(SavedModelError, match="missing weights.pt"):
        fal.FalconModel.load(tmp_path / "m")


def test_without_coarse_labels_the_coarse_class_is_predicted(data, half_model):
    _, _, test = data
    bare = test.copy()
    del bare.obs["coarse"]
    half_model.predict(bare)
    assert (bare.obs["falcon_coarse"].astype(str) == test.obs["coarse"].astype(str)).mean() > 0.95
    assert metrics.ari(test.obs["fine"], bare.obs["falcon"]) > 0.9


def test_missing_genes_warn_and_too_few_fail(data, half_model):
    _, _, test = data
    genes = half_model._fitted.transform.genes
    few_missing = test[:, ~test.var_names.isin(genes[:10])].copy()
    with scanpy_log() as log:
        out = half_model.predict(few_missing, copy=True)
    assert "10 of the model's 200 genes are missing" in log.getvalue()
    assert metrics.ari(test.obs["fine"], out.obs["falcon"]) > 0.8
    with pytest.raises(ValueError, match="genes are in adata.var_names"):
        half_model.predict(test[:, ~test.var_names.isin(genes[:150])].copy())


def test_unseen_batches_and_unknown_coarse_labels(data, half_model):
    _, _, test = data
    renamed = test.copy()
    renamed.obs["batch"] = renamed.obs["batch"].astype(str) + "_new_donor"
    out = half_model.predict(renamed, copy=True)
    assert metrics.ari(test.obs["fine"], out.obs["falcon"]) > 0.9
    wrong = test.copy()
    wrong.obs["coarse"] = wrong.obs["coarse"].astype(str).replace({"C0": "B cell"})
    with pytest.raises(ValueError, match="not fitted on: \\['B cell'\\]"):
        half_model.predict(wrong)
    no_batch = test.copy()
    del no_batch.obs["batch"]
    with pytest.raises(KeyError, match="batch_key='batch'"):
        half_model.predict(no_batch)


def test_unfitted_model_and_bad_arguments(data):
    _, train, _ = data
    model = fal.FalconModel(train, "coarse")
    assert "not fitted" in repr(model)
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(train)
    with pytest.raises(TypeError, match="AnnData"):
        fal.FalconModel(train.X, "coarse")


def test_write_h5ad_after_refine_round_trips(fitted, tmp_path):
    adata, _ = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adata.write_h5ad(tmp_path / "refined.h5ad")
    back = ad.read_h5ad(tmp_path / "refined.h5ad")
    assert back.uns["falcon"]["relations"].equals(adata.uns["falcon"]["relations"])
    assert np.array_equal(back.obs["falcon"].astype(str), adata.obs["falcon"].astype(str))
    assert back.uns["falcon"]["params"]["n_fine"] == N_FINE


def test_predict_refuses_to_overwrite_the_coarse_or_batch_column(data, half_model):
    _, _, test = data
    for key_added, column in (("coarse", "coarse"), ("batch", "batch")):
        with pytest.raises(ValueError, match=f"would overwrite adata.obs\\['{column}'\\]"):
            half_model.predict(test.copy(), key_added=key_added)
    renamed = test.copy()
    renamed.obs["x_coarse"] = renamed.obs["coarse"]
    with pytest.raises(ValueError, match="key_added='x'"):
        half_model.predict(renamed, coarse_key="x_coarse", key_added="x")


def test_unfitted_model_refuses_save_rename_and_write_fit_results(data, tmp_path):
    _, train, _ = data
    model = fal.FalconModel(train, "coarse")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.save(tmp_path / "m")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.write_fit_results(train.copy())
    with pytest.raises(RuntimeError, match="not fitted"):
        _ = model.relations
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_fine": 1}, ValueError, "n_fine"),
        ({"n_fine": N_FINE, "devices": 0}, ValueError, "devices=0"),
        ({"n_fine": N_FINE, "precision": "fp8"}, ValueError, "precision='fp8'"),
        ({"n_fine": N_FINE, "resume": True}, ValueError, "checkpoint_path"),
        ({"n_fine": N_FINE, "lr": -1.0}, ValueError, "lr"),
    ],
)
def test_fit_refuses_bad_arguments_before_training(data, kwargs, error, match):
    _, train, _ = data
    model = fal.FalconModel(train, "coarse")
    with pytest.raises(error, match=match):
        model.fit(**kwargs, accelerator="cpu", show_progress=False)
    assert not model.is_fitted


def test_load_from_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a saved FalconModel: missing model.json"):
        fal.FalconModel.load(tmp_path / "no_such_model")


def test_write_fit_results_needs_the_training_run_and_its_cells(data, fitted, half_model, tmp_path):
    full, _, test = data
    _, model = fitted
    with pytest.raises(TypeError, match="adata must be an AnnData"):
        model.write_fit_results(full.X)
    with pytest.raises(ValueError, match="key_added=''"):
        model.write_fit_results(full.copy(), key_added="")
    with pytest.raises(ValueError, match="does not hold the 2000 cells"):
        model.write_fit_results(test.copy())  # fewer cells
    with pytest.raises(ValueError, match="does not hold the 1000 cells"):
        half_model.write_fit_results(test.copy())  # as many cells, but not the fitted ones
    half_model.save(tmp_path / "m")
    with pytest.raises(RuntimeError, match="training run of this session"):
        fal.FalconModel.load(tmp_path / "m").write_fit_results(test.copy())


# ---------------------------------------------------------------------------------------- small cases of the audit
QUICK = dict(n_epochs=3, accelerator="cpu", show_progress=False)


@pytest.fixture(scope="module")
def small():
    """300 simulated cells (the tests below fit it in about a second)."""
    return simulate(n_cells=300)


@pytest.fixture(scope="module")
def small_model(small):
    """A model fitted on ``small``."""
    return fal.FalconModel(small.copy(), "coarse").fit(N_FINE, **QUICK)


def test_setup_names_a_missing_key_at_once(small):
    """A missing coarse or batch column is an error of the setup, not of a later fit."""
    with pytest.raises(KeyError, match="coarse_key='nope'"):
        fal.FalconModel(small, "nope")
    with pytest.raises(KeyError, match="batch_key='nope'"):
        fal.FalconModel(small, "coarse", batch_key="nope")


def test_checkpoint_path_must_be_a_path(small, tmp_path, monkeypatch):
    """A number is refused (it was turned into a file name '5' in the working directory)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match="checkpoint_path=5"):
        fal.FalconModel(small, "coarse").fit(N_FINE, checkpoint_path=5, **QUICK)
    assert not (tmp_path / "5").exists()


def test_n_neighbors_beyond_the_cells_is_capped(small):
    """n_neighbors=10**7 allocated cells x 10**7 integers (a MemoryError) before; now capped, with a warning."""
    with scanpy_log() as log:
        model = fal.FalconModel(small, "coarse").fit(N_FINE, n_neighbors=10**7, **QUICK)
    assert (
        f"n_neighbors=10000000 is not smaller than the number of samples (300); using {small.n_obs - 1}"
        in log.getvalue()
    )
    capped = fal.FalconModel(small, "coarse").fit(N_FINE, n_neighbors=small.n_obs - 1, **QUICK)
    assert np.array_equal(model.predict(small, copy=True).obs["falcon"], capped.predict(small, copy=True).obs["falcon"])


def test_unused_batch_categories_are_ignored(small):
    """An unused category of a categorical batch_key divided by zero in the batch statistics."""
    adata = small.copy()
    batches = np.where(np.arange(adata.n_obs) % 2 == 0, "b1", "b3")
    adata.obs["batch"] = pd.Categorical(batches, categories=["b1", "b2", "b3"])
    model = fal.FalconModel(adata, "coarse", batch_key="batch").fit(N_FINE, **QUICK)
    reference = adata.copy()
    reference.obs["batch"] = pd.Categorical(batches)
    expected = fal.FalconModel(reference, "coarse", batch_key="batch").fit(N_FINE, **QUICK)
    assert np.array_equal(
        model.predict(adata, copy=True).obs["falcon"], expected.predict(reference, copy=True).obs["falcon"]
    )


def test_a_foreign_or_damaged_checkpoint_is_refused_before_the_warm_start(small, tmp_path, monkeypatch):
    """The warm start trains a network too: a checkpoint that cannot be resumed is said before it, not after."""
    from falcon_sc.core import training
    from falcon_sc.errors import CheckpointError

    path = tmp_path / "ck.pt"
    fal.FalconModel(small, "coarse").fit(N_FINE, checkpoint_path=path, **QUICK)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    runs = []
    monkeypatch.setattr(training._Loop, "run", lambda self: runs.append(1))
    other = simulate(n_cells=300, random_state=5)
    cases = [
        (other, {"checkpoint_path": path}, "the data differ"),
        (small, {"checkpoint_path": path, "lr": 1e-2}, "lr 0.0003 vs 0.01"),
        (small, {"checkpoint_path": truncated}, "cannot be read"),
    ]
    for adata, options, message in cases:
        with pytest.raises(CheckpointError, match=message):
            fal.FalconModel(adata, "coarse").fit(N_FINE, resume=True, **{**QUICK, **options})
    assert runs == []


def test_predict_refuses_cells_without_expression(small, small_model):
    """All-zero new cells were labelled (every cell the same fine class) without a word."""
    from falcon_sc.errors import DegenerateInputError

    model = small_model
    empty = small.copy()
    empty.X = sparse.csr_matrix(empty.shape, dtype=np.float32)
    with pytest.raises(DegenerateInputError, match="X of the new cells is all zero"):
        model.predict(empty)
    assert "falcon" not in empty.obs


@pytest.mark.parametrize("path", [None, 5, "", True])
def test_save_and_load_name_a_bad_path(small_model, path):
    """save(None) failed inside pathlib."""
    model = small_model
    with pytest.raises(TypeError, match="dir_path=.* must be a path"):
        model.save(path)
    with pytest.raises(TypeError, match="dir_path=.* must be a path"):
        fal.FalconModel.load(path)
