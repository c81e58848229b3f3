from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import falcon_sc.tl
from falcon_sc.baselines import BaselineResult
from falcon_sc.bench import DATASETS, METHODS, run
from falcon_sc.bench.__main__ import main
from falcon_sc.bench._methods import relations_to_dict

from .test_baselines import N_FINE, nested_blobs


@pytest.fixture(scope="module")
def toy() -> AnnData:
    adata = nested_blobs(seed=5)
    adata.uns["falcon_dataset"] = {"relation": {f: f[0] for f in adata.obs["fine"].cat.categories}}
    return adata


def test_run_writes_report(toy: AnnData, tmp_path) -> None:
    df = run({"toy": toy}, ["kmeans_within", "leiden_within"], seeds=1, out=tmp_path, progress=False)
    assert len(df) == 2 and (df["error"] == "").all()
    assert set(df["method"]) == {"kmeans_within", "leiden_within"}
    assert (df["n_fine_true"] == N_FINE).all() and (df["n_fine_pred"] == N_FINE).all()
    assert (df["accuracy"] > 0.9).all() and (df["ari"] > 0.9).all()
    assert (df["relation_edit_distance"] == 0).all()
    assert (df["seconds"] > 0).all() and df["peak_mem_mb"].notna().all()
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 2
    summary = (tmp_path / "summary.md").read_text()
    assert "## toy" in summary and "kmeans_within" in summary and "**" in summary
    for metric in ("accuracy", "macro_accuracy", "ari", "nmi", "within_coarse_ari", "relation_edit_distance"):
        assert (tmp_path / f"{metric}.png").stat().st_size > 0
    assert "toy" in summary


def test_failing_method_is_recorded(toy: AnnData, tmp_path) -> None:
    def broken(adata, coarse_key, n_fine, *, batch_key, seed):
        raise RuntimeError("boom")

    def constant(adata, coarse_key, n_fine, *, batch_key, seed):
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        labels = np.array([f"{c}/0" for c in coarse])
        return BaselineResult(labels=labels, relation={f"{c}/0": c for c in np.unique(coarse)})

    df = run({"toy": toy}, {"broken": broken, "constant": constant}, seeds=[0, 1], out=tmp_path, progress=False)
    assert len(df) == 4
    bad = df[df["method"] == "broken"]
    assert bad["error"].str.contains("RuntimeError: boom").all() and bad["accuracy"].isna().all()
    good = df[df["method"] == "constant"]
    assert (good["error"] == "").all() and good["accuracy"].notna().all()
    summary = (tmp_path / "summary.md").read_text()
    assert "0/2" in summary and "boom" in summary


def test_unknown_dataset_raises(tmp_path) -> None:
    with pytest.raises(ValueError, match="nope"):
        run("nope", "kmeans_within", seeds=1, progress=False)
    missing = tmp_path / "missing.h5ad"
    with pytest.raises(FileNotFoundError):
        run(str(missing), "kmeans_within", seeds=1, progress=False)


def test_falcon_adapter(toy: AnnData, monkeypatch) -> None:
    calls = {}

    def fake_refine(adata, coarse_key, n_fine, *, batch_key=None, key_added="falcon", random_state=0, **kw):
        calls["n_fine"] = n_fine
        coarse = adata.obs[coarse_key].astype(str)
        labels = coarse + "/0"
        adata.obs[key_added] = pd.Categorical(labels)
        cats = sorted(coarse.unique())
        rel = pd.DataFrame(0, index=[f"{c}/0" for c in cats], columns=cats)
        for c in cats:
            rel.loc[f"{c}/0", c] = 1
        adata.uns[key_added] = {"relations": rel}

    monkeypatch.setattr(falcon_sc.tl, "refine", fake_refine, raising=False)
    res = METHODS["falcon"](toy, "coarse", N_FINE, batch_key=None, seed=0)
    assert calls["n_fine"] == N_FINE
    assert res.relation == {"A/0": "A", "B/0": "B", "C/0": "C"}
    assert "falcon" not in toy.obs  # ran on a copy


def test_relations_to_dict() -> None:
    rel = pd.DataFrame([[1, 0], [0, 1], [0, 0]], index=["a/0", "b/0", "x"], columns=["a", "b"])
    assert relations_to_dict(rel) == {"a/0": "a", "b/0": "b"}


def test_cli_list(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (*DATASETS, *METHODS):
        assert name in out


def test_cli_run_h5ad(toy: AnnData, tmp_path, capsys) -> None:
    path = tmp_path / "toy.h5ad"
    toy.obs["cell_type"] = toy.obs["fine"]
    toy.write_h5ad(path)
    del toy.obs["cell_type"]
    out = tmp_path / "out"
    argv = ["run", "--dataset", str(path), "--methods", "kmeans_within", "--seeds", "1", "--out", str(out)]
    assert main([*argv, "--fine-key", "cell_type", "--no-plots", "--quiet"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["dataset"]) == ["toy"] and runs["error"].isna().all()
    assert runs["accuracy"].iloc[0] > 0.9
    assert (out / "summary.md").exists() and not (out / "accuracy.png").exists()


def test_oracle_relation_gets_the_true_children(toy: AnnData, monkeypatch) -> None:
    seen = {}

    def fake_refine(adata, coarse_key, n_fine, *, key_added="falcon", children_prior=None, learn_relation=True, **kw):
        seen.update(children_prior=children_prior, learn_relation=learn_relation)
        rows = [f"{c}/{i + 1}" for c, k in children_prior.items() for i in range(k)]
        rel = pd.DataFrame(0, index=rows, columns=sorted(children_prior))
        for r in rows:
            rel.loc[r, r.split("/")[0]] = 1
        adata.obs[key_added] = pd.Categorical(adata.obs[coarse_key].astype(str) + "/1")
        adata.uns[key_added] = {"relations": rel}

    monkeypatch.setattr(falcon_sc.tl, "refine", fake_refine, raising=False)
    res = METHODS["falcon_oracle_relation"](toy, "coarse", N_FINE, batch_key=None, seed=0, fine_key="fine")
    assert seen == {"children_prior": {"A": 2, "B": 3, "C": 2}, "learn_relation": False}
    assert len(res.relation) == N_FINE
    with pytest.raises(KeyError, match="fine_key"):
        METHODS["falcon_oracle_relation"](toy, "coarse", N_FINE, batch_key=None, seed=0, fine_key=None)


def test_oracle_relation_end_to_end(toy: AnnData, tmp_path) -> None:
    df = run({"toy": toy}, ["falcon_oracle_relation", "erm"], seeds=1, progress=False, out=tmp_path)
    assert (df["error"] == "").all(), df["error"].tolist()
    assert (df["relation_edit_distance"] == 0).all()
    assert (df["accuracy"] > 0.9).all()
    # FALCON runs leave the learned relation next to the true one; other methods have none
    assert (tmp_path / "relations_toy_falcon_oracle_relation.png").stat().st_size > 0
    assert not (tmp_path / "relations_toy_erm.png").exists()


def test_fine_key_only_reaches_methods_that_ask_for_it(toy: AnnData) -> None:
    got = {}

    def plain(adata, coarse_key, n_fine, *, batch_key, seed):
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        return BaselineResult(labels=np.array([f"{c}/0" for c in coarse]), relation={f"{c}/0": c for c in coarse})

    def supervised(adata, coarse_key, n_fine, *, batch_key, seed, fine_key):
        got["fine_key"] = fine_key
        return plain(adata, coarse_key, n_fine, batch_key=batch_key, seed=seed)

    df = run({"toy": toy}, {"plain": plain, "supervised": supervised}, seeds=1, progress=False, plots=False)
    assert (df["error"] == "").all() and got == {"fine_key": "fine"}


def test_default_suite_names() -> None:
    from falcon_sc.bench import DEFAULT_DATASETS
    from falcon_sc.bench.run import _resolve_datasets, _resolve_methods

    assert list(_resolve_methods("all")) == list(METHODS)
    assert [s.name for s in _resolve_datasets("default", None, None, None)] == list(DEFAULT_DATASETS)
    assert {"pbmc68k", "sim_imbalanced", "sim_batches"} <= set(DEFAULT_DATASETS)
