"""Saved models and predict are never trusted blindly: atomic save, schema-checked load, checked new cells.

One tiny model is fitted per module and saved once; every test copies that folder and damages the copy. A hypothesis
fuzz test mutates the folder (truncation, JSON edits, swapped files, pickles, random bytes) and asserts that each
outcome is a load that predicts, or exactly one ``SavedModelError``, and that no code ever runs.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import falcon_sc as fal
from falcon_sc.errors import SavedModelError
from falcon_sc.models import MLPClassifier
from falcon_sc.models._schema import network_shapes

FILES = ("model.json", "weights.pt", "preprocessing.npz")


def tiny_data(random_state: int = 0):
    return fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), n_batches=2, random_state=random_state)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny fitted model, its training cells, new cells, the folder it was saved into and its labels there."""
    adata = tiny_data()
    model = fal.FalconModel(adata, "coarse", batch_key="batch", n_top_genes=100, n_comps=10, n_comps_within=5).fit(
        6, n_epochs=3, batch_size=64, accelerator="cpu", show_progress=False
    )
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save(folder)
    new = tiny_data(1)[:120].copy()
    labels = model.predict(new, copy=True).obs["falcon"].astype(str).to_numpy()
    return model, adata, new, folder, labels


@pytest.fixture(scope="module")
def rep_model():
    """A tiny model fitted on an 8-dimensional embedding (``obsm['X_emb']``)."""
    adata = tiny_data()
    adata.obsm["X_emb"] = np.log1p(adata.X.toarray()) @ np.random.default_rng(0).normal(size=(adata.n_vars, 8))
    model = fal.FalconModel(adata, "coarse", use_rep="X_emb").fit(
        6, n_epochs=3, batch_size=64, accelerator="cpu", show_progress=False
    )
    return model, adata


def copy_of(folder: Path, into: Path) -> Path:
    target = into / "copy"
    shutil.copytree(folder, target)
    return target


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


class Payload:
    """Unpickling this creates the file ``proof`` (a stand-in for any code a pickle could run)."""

    def __init__(self, proof: Path) -> None:
        self.proof = str(proof)

    def __reduce__(self):
        return (open, (self.proof, "w"))


# ---------------------------------------------------------------------- save
def test_network_shapes_match_the_network():
    net = MLPClassifier(15, 6, [32, 16])
    assert network_shapes(15, [32, 16], 6) == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert network_shapes(4, [], 3) == {k: tuple(v.shape) for k, v in MLPClassifier(4, 3, []).state_dict().items()}


def test_a_save_that_fails_leaves_the_previous_model_and_no_temporary_folder(saved, tmp_path, monkeypatch):
    model, _, new, folder, labels = saved
    target = copy_of(folder, tmp_path)

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        model.save(target, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "fresh")
    monkeypatch.undo()
    assert leftovers(tmp_path) == [] and not (tmp_path / "fresh").exists()
    loaded = fal.FalconModel.load(target)  # the old model, whole
    assert np.array_equal(loaded.predict(new, copy=True).obs["falcon"].astype(str), labels)


def test_overwrite_replaces_only_a_saved_model(saved, tmp_path, monkeypatch):
    model, _, new, folder, labels = saved
    target = copy_of(folder, tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(target)
    model.save(target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES) and leftovers(tmp_path) == []
    assert np.array_equal(fal.FalconModel.load(target).predict(new, copy=True).obs["falcon"].astype(str), labels)
    (tmp_path / "empty").mkdir()
    model.save(tmp_path / "empty")  # an empty folder is fine
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved FalconModel .*never other files"):
        model.save(mine, overwrite=True)
    (target / "notes.txt").write_text("keep me too")  # a model folder with a file of the user's
    with pytest.raises(FileExistsError, match="notes.txt"):
        model.save(target, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me" and (target / "notes.txt").exists()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        model.save(tmp_path / "a_file", overwrite=True)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(FileExistsError, match="is the working directory"):
        model.save(".")  # the folder would be replaced under the running process
    (target / "notes.txt").unlink()
    target.chmod(0o700)
    model.save(target, overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o700  # the replaced folder keeps its permissions


# ---------------------------------------------------------------------- load: each failure class
def edit_json(folder: Path, change) -> None:
    settings = json.loads((folder / "model.json").read_text())
    change(settings)
    (folder / "model.json").write_text(json.dumps(settings))


def set_field(path: str, value):
    def change(settings):
        *parents, last = path.split(".")
        for p in parents:
            settings = settings[p]
        settings[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (set_field("hidden", None), "field 'hidden' must be a list"),
        (set_field("hidden", [64, 0, 64, 64]), "field 'hidden' item 1 must be >= 1"),
        (set_field("n_input", True), "field 'n_input' must be an integer"),
        (set_field("n_input", 10**12), "field 'n_input' is 1000000000000, but the preprocessing gives 15"),
        (set_field("transform.n_comps_within", -1), "field 'transform.n_comps_within' must be >= 0"),
        (set_field("setup.n_comps", 1), "field 'setup.n_comps' must be >= 2"),
        (set_field("setup.batch_key", None), "field 'transform' must agree with setup on \\['batch_key'\\]"),
        (set_field("fine_names", ["a", "a", "b", "c", "d", "e"]), "fine_names' must hold different names"),
        (set_field("relation", [[0, 0, 0]] * 6), "every fine class exactly one coarse class; 'C0/1' has 0"),
        (set_field("relation", [[1, 0, 0]] * 6), "every coarse class at least one fine class; 'C1' has none"),
        (set_field("relation", [[1, 0]] * 6), "fine x coarse table of 6 rows"),
        (set_field("use_warm", [True, False]), "field 'use_warm' must hold one value per coarse class \\(3\\)"),
        (set_field("params", [1]), "field 'params' must be an object"),
        (set_field("params.lr", [[1], [2, 3]]), "entry 'lr' must be a plain value"),
        (set_field("history", {}), "field 'history' must be a list"),
        (set_field("model_class", "SCVI"), "holds a SCVI, not a FalconModel"),
        (set_field("format_version", 2), "saved in format 2"),
        (lambda s: s.pop("transform"), "field 'transform' is missing"),
        (lambda s: s["setup"].pop("n_top_genes"), "field 'setup.n_top_genes' is missing"),
        (set_field("transform.within", [True, True]), "within must hold 3 values"),
        (set_field("transform.batch_names", ["B0"]), "entry 'pca_mean' must have as many rows as pca_scale, and at"),
    ],
)
def test_an_edited_model_json_is_refused_by_field(saved, tmp_path, change, match):
    target = copy_of(saved[3], tmp_path)
    edit_json(target, change)
    with pytest.raises(SavedModelError, match=match):
        fal.FalconModel.load(target)


def write_npz(folder: Path, arrays: dict) -> None:
    with open(folder / "preprocessing.npz", "wb") as f:
        np.savez(f, **arrays)


def npz_arrays(folder: Path) -> dict:
    with np.load(folder / "preprocessing.npz") as npz:
        return {k: npz[k] for k in npz.files}


def huge_claim(folder: Path) -> None:
    """Rewrite the header of ``within0_mean`` to claim 10**7 x 10**7 float64 values (800 TB)."""
    source = folder / "preprocessing.npz"
    with zipfile.ZipFile(source) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**7, 10**7)})
    members["within0_mean.npy"] = header.getvalue() + b"\0" * 64
    with zipfile.ZipFile(source, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def damage_npz(kind: str):
    def change(folder: Path) -> None:
        arrays = npz_arrays(folder)
        if kind == "nan":
            arrays["pca_loadings"][0, 0] = np.nan
        elif kind == "missing":
            del arrays["within1_scale"]
        elif kind == "extra":
            arrays["surprise"] = np.zeros(3)
        elif kind == "shape":
            arrays["pca_loadings"] = arrays["pca_loadings"][:, :4]
        elif kind == "object":
            arrays["genes"] = arrays["genes"].astype(object)
            with open(folder / "preprocessing.npz", "wb") as f:
                np.savez(f, allow_pickle=True, **arrays)
            return
        elif kind == "huge":
            return huge_claim(folder)
        write_npz(folder, arrays)

    return change


def damage_weights(kind: str):
    def change(folder: Path) -> None:
        weights = torch.load(folder / "weights.pt", weights_only=True)
        if kind == "nan":
            weights["network.head.bias"][1] = float("inf")
        elif kind == "shape":
            weights["network.head.bias"] = weights["network.head.bias"][:5].clone()
        elif kind == "int":
            weights["warm.head.bias"] = weights["warm.head.bias"].long()
        elif kind == "missing":
            del weights["network.body.2.weight"]
        torch.save(weights, folder / "weights.pt")

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (damage_npz("nan"), "preprocessing.npz': entry 'pca_loadings' holds 1 NaN or infinite"),
        (damage_npz("missing"), "does not hold the arrays model.json implies: lacks \\['within1_scale'\\]"),
        (damage_npz("extra"), "has unexpected \\['surprise'\\]"),
        (damage_npz("shape"), "entry 'pca_loadings' has shape \\(100, 4\\), expected 100xn|n_input"),
        (damage_npz("object"), "entry 'genes' cannot be read"),
        (damage_npz("huge"), "entry 'within0_mean' claims more data than the file holds"),
        (damage_weights("nan"), "tensor 'network.head.bias' holds NaN or infinite"),
        (damage_weights("shape"), "tensor 'network.head.bias' has shape \\(5,\\), expected \\(6,\\)"),
        (damage_weights("int"), "tensor 'warm.head.bias' must be a dense float tensor"),
        (damage_weights("missing"), "lacks \\['network.body.2.weight'\\]"),
    ],
)
def test_damaged_arrays_and_weights_are_refused_by_entry(saved, tmp_path, change, match):
    target = copy_of(saved[3], tmp_path)
    change(target)
    with pytest.raises(SavedModelError, match=match):
        fal.FalconModel.load(target)


@pytest.mark.parametrize("name", FILES)
def test_damaged_or_foreign_files_are_one_error_and_no_code_runs(saved, tmp_path, name):
    folder = saved[3]
    proof = tmp_path / "proof"
    target = copy_of(folder, tmp_path)
    size = (folder / name).stat().st_size
    cases = {
        "truncated": (folder / name).read_bytes()[: size // 2],
        "empty": b"",
        "random bytes": np.random.default_rng(0).bytes(size),
        "pickle": pickle.dumps(Payload(proof)),
        "pickle in a torch file": None,
    }
    for case, content in cases.items():
        if content is None:
            torch.save({"network.head.bias": Payload(proof)}, target / name)
        else:
            (target / name).write_bytes(content)
        with pytest.raises(SavedModelError, match=f"{name}'") as err:
            fal.FalconModel.load(target)
        assert "weights_only=False" not in str(err.value) and err.value.__cause__ is None, case
        assert not proof.exists(), case
    (target / name).unlink()
    with pytest.raises(SavedModelError, match=f"missing {name}"):
        fal.FalconModel.load(target)


def test_swapped_files_and_odd_paths(saved, tmp_path):
    target = copy_of(saved[3], tmp_path)
    (target / "weights.pt").rename(tmp_path / "w")
    (target / "preprocessing.npz").rename(target / "weights.pt")
    (tmp_path / "w").rename(target / "preprocessing.npz")
    with pytest.raises(SavedModelError, match="preprocessing.npz'"):
        fal.FalconModel.load(target)
    with pytest.raises(SavedModelError, match="is a file"):
        fal.FalconModel.load(target / "model.json")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        fal.FalconModel.load(tmp_path / "nothing here")
    (target / "model.json").write_text('{"model_class": "FalconModel",\n "format_version": 1,\n "hidden": [64,]}')
    with pytest.raises(SavedModelError, match="model.json': line 3, column 16 is not valid JSON"):
        fal.FalconModel.load(target)


# ---------------------------------------------------------------------- predict
def test_predict_refuses_bad_cells_and_arguments_before_any_work(saved):
    model, _, new, _, _ = saved
    with pytest.raises(ValueError, match="0 cells"):
        model.predict(new[:0].copy())
    for bad, error in ((0, ValueError), (-1, ValueError), (1.5, TypeError), ("64", TypeError), (True, TypeError)):
        with pytest.raises(error, match="batch_size"):
            model.predict(new, batch_size=bad)
    with pytest.raises(TypeError, match="coarse_key"):
        model.predict(new, coarse_key=["coarse"])
    dup = new.copy()
    dup.var_names = [dup.var_names[0], *dup.var_names[:-1]]
    with pytest.raises(ValueError, match=r"duplicated gene name.*var_names_make_unique\(\)"):
        model.predict(dup)
    nan = new.copy()
    nan.X = nan.X.toarray().astype(np.float32)
    nan.X[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(nan)
    assert "falcon" not in nan.obs and "falcon" not in dup.obs


def test_predict_checks_the_embedding(rep_model):
    model, adata = rep_model
    cells = adata[:50].copy()
    labels = model.predict(cells, copy=True).obs["falcon"]
    assert len(labels) == 50
    narrow = cells.copy()
    narrow.obsm["X_emb"] = narrow.obsm["X_emb"][:, :5]
    with pytest.raises(ValueError, match="use_rep='X_emb'.*5 dimensions per cell; the model was fitted on 8"):
        model.predict(narrow)
    for value in (np.nan, np.inf):
        bad = cells.copy()
        bad.obsm["X_emb"][0, 0] = value
        with pytest.raises(ValueError, match="use_rep='X_emb'.*1 NaN or infinite"):
            model.predict(bad)
    missing = cells.copy()
    del missing.obsm["X_emb"]
    with pytest.raises(KeyError, match="obsm\\['X_emb'\\]"):
        model.predict(missing)
    one = model.predict(cells[:1].copy(), copy=True)  # a single cell is fine
    assert one.obs["falcon"].iloc[0] == labels.iloc[0]


def test_a_model_of_an_embedding_saves_and_loads(rep_model, tmp_path):
    model, adata = rep_model  # its transform has no batches (was refused by the schema's batch_names rule)
    model.save(tmp_path / "rep")
    loaded = fal.FalconModel.load(tmp_path / "rep", adata=adata)
    cells = adata[:50].copy()
    assert np.array_equal(loaded.predict(cells, copy=True).obs["falcon"], model.predict(cells, copy=True).obs["falcon"])
    np.testing.assert_array_equal(loaded.get_latent_representation(cells), model.get_latent_representation(cells))
    missing = cells.copy()
    del missing.obsm["X_emb"]
    with pytest.raises(KeyError, match="obsm\\['X_emb'\\]"):
        fal.FalconModel.load(tmp_path / "rep", adata=missing)
    settings = json.loads((tmp_path / "rep" / "model.json").read_text())
    settings["transform"]["use_rep"] = settings["setup"]["use_rep"] = None
    settings["transform"]["input_kind"] = "lognorm"
    settings["transform"]["n_comps_within"] = settings["setup"]["n_comps_within"]
    settings["transform"]["model_input"] = settings["setup"]["model_input"]
    (tmp_path / "rep" / "model.json").write_text(json.dumps(settings))
    with pytest.raises(SavedModelError, match="field 'transform' batch_names must hold at least one batch"):
        fal.FalconModel.load(tmp_path / "rep")


# ---------------------------------------------------------------------- write_fit_results
def test_write_fit_results_refuses_other_cells_with_the_same_obs_names(saved):
    model, adata, _, _, _ = saved
    model.write_fit_results(adata.copy())  # a copy of the fitted cells
    dense = adata.copy()
    dense.X = dense.X.toarray()
    model.write_fit_results(dense)  # the same values, stored densely
    other = adata.copy()
    other.X = tiny_data(1).X  # other cells' values under the fitted obs_names
    with pytest.raises(ValueError, match="not the data the model was fitted on \\(X differ\\).*Use model.predict"):
        model.write_fit_results(other)
    relabelled = adata.copy()
    relabelled.obs["coarse"] = relabelled.obs["coarse"].to_numpy()[::-1]
    with pytest.raises(ValueError, match="\\(obs\\['coarse'\\] differ\\)"):
        model.write_fit_results(relabelled)
    assert "falcon" not in other.obs and "falcon" not in relabelled.obs


# ---------------------------------------------------------------------- fuzz
def edited_json(original: dict, path: tuple, data: st.DataObject) -> dict:
    """A copy of ``original`` with the field at ``path`` deleted or given a value drawn from :data:`JSON_VALUES`."""
    edited = json.loads(json.dumps(original))
    parent = edited
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans(), label="delete"):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON_VALUES, label="value")
    return edited


def json_paths(value, prefix=()):
    """Every path into the JSON value (only the first record of ``history``)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        if prefix == ("history",) and key != 0:
            continue
        yield (*prefix, key)
        yield from json_paths(child, (*prefix, key))


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 10**13),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-1, 3), max_size=3),
    st.just({}),
    st.just([[1], [2, 3]]),
)
FILE_DAMAGE = ("truncate", "empty", "random", "pickle", "torch_pickle", "delete", "swap")


def mutate(data, folder: Path, original: dict, proof: Path) -> str:
    """Damage ``folder`` as drawn; returns the kind of damage (``json:<top field>`` for JSON edits)."""
    kind = data.draw(st.sampled_from(("json", "json", "json", "bitflip", "rmdir", *FILE_DAMAGE)), label="kind")
    name = data.draw(st.sampled_from(FILES), label="file")
    target = folder / name
    if kind == "json":
        top = data.draw(st.sampled_from(sorted(original)), label="field")  # every field as likely, then a path in it
        paths = sorted((p for p in json_paths(original) if p[0] == top), key=str)
        path = data.draw(st.sampled_from(paths), label="path")
        (folder / "model.json").write_text(json.dumps(edited_json(original, path, data)))
        return f"json:{path[0]}"
    if kind == "rmdir":
        shutil.rmtree(folder)
    elif kind in ("truncate", "bitflip"):
        content = bytearray(target.read_bytes())
        at = data.draw(st.integers(0, len(content) - 1), label="offset")
        if kind == "truncate":
            del content[at:]
        else:
            content[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        target.write_bytes(bytes(content))
    elif kind == "delete":
        target.unlink()
    elif kind == "swap":
        other = folder / data.draw(st.sampled_from([f for f in FILES if f != name]), label="other")
        a, b = target.read_bytes(), other.read_bytes()
        target.write_bytes(b)
        other.write_bytes(a)
    elif kind == "torch_pickle":
        torch.save({"network.head.bias": Payload(proof)}, target)
    else:
        content = {"empty": b"", "pickle": pickle.dumps(Payload(proof))}.get(kind)
        target.write_bytes(data.draw(st.binary(min_size=1, max_size=512)) if content is None else content)
    return kind


@settings(derandomize=True, max_examples=60, deadline=None, database=None)
@given(data=st.data())
def test_fuzz_a_damaged_saved_model_loads_and_predicts_or_is_one_error(saved, data):
    _, _, new, folder, labels = saved
    original = json.loads((folder / "model.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        proof = Path(tmp) / "proof"
        target = copy_of(folder, Path(tmp))
        kind = mutate(data, target, original, proof)
        try:
            model = fal.FalconModel.load(target)
        except SavedModelError:
            model = None
        except FileNotFoundError:
            assert kind == "rmdir"
            model = None
        assert not proof.exists()
        if model is None:
            return
        assert kind in ("bitflip",) or kind.startswith("json:"), f"{kind} loaded"
        cells = new.copy()
        if not set(cells.obs["coarse"].astype(str)) <= set(model.coarse_names):
            del cells.obs["coarse"]  # an edited coarse name: the model no longer fits these labels, predict them
        out = model.predict(cells, copy=True)  # a model that loads must predict
        assert set(out.obs["falcon"].astype(str)) <= set(model._fitted.fine_names)
        if kind in ("json:params", "json:history", "json:falcon_sc_version"):
            assert np.array_equal(out.obs["falcon"].astype(str), labels)
        assert os.listdir(tmp) == ["copy"] or kind == "rmdir"


def test_load_with_adata_checks_the_fitted_layer(tmp_path):
    adata = tiny_data()
    adata.layers["counts"] = adata.X.copy()
    model = fal.FalconModel(adata, "coarse", layer="counts").fit(n_fine=6, n_epochs=1, show_progress=False)
    model.save(tmp_path / "layer")
    assert fal.FalconModel.load(tmp_path / "layer", adata=adata).adata is adata
    without = adata.copy()
    del without.layers["counts"]
    with pytest.raises(KeyError, match=r"fitted on layers\['counts'\]; the new cells need it too"):
        fal.FalconModel.load(tmp_path / "layer", adata=without)
