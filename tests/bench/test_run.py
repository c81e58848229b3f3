from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import falcon_sc.tl
from falcon_sc.baselines import BaselineResult
from falcon_sc.bench import DATASETS, METHODS, run, summary_markdown
from falcon_sc.bench.__main__ import main
from falcon_sc.bench._methods import relations_to_dict

from ..test_baselines import N_FINE, nested_blobs


@pytest.fixture
def svg_backend():
    """Switch matplotlib to the ``svg`` backend for the test (a library call must leave it so), then restore it."""
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    plt.close("all")
    matplotlib.use("svg")
    yield
    plt.close("all")
    matplotlib.use(before)


@pytest.fixture(scope="module")
def toy() -> AnnData:
    adata = nested_blobs(seed=5)
    adata.uns["falcon_dataset"] = {"relation": {f: f[0] for f in adata.obs["fine"].cat.categories}}
    return adata


def test_run_writes_report(toy: AnnData, tmp_path, svg_backend) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    df = run({"toy": toy}, ["kmeans_within", "leiden_within"], seeds=1, out=tmp_path, progress=False)
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == []  # the bar charts leave both alone
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


def test_oracle_relation_end_to_end(toy: AnnData, tmp_path, svg_backend) -> None:
    import matplotlib
    import matplotlib.pyplot as plt

    df = run({"toy": toy}, ["falcon_oracle_relation", "erm"], seeds=1, progress=False, out=tmp_path)
    # the library draws its figures into files: the user's backend stays, no figure is left open
    assert matplotlib.get_backend() == "svg" and plt.get_fignums() == []
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
    from falcon_sc.bench.run import resolve_datasets, resolve_methods

    assert list(resolve_methods("all")) == list(METHODS)
    assert [s.name for s in resolve_datasets("default", None, None, None)] == list(DEFAULT_DATASETS)
    assert {"pbmc68k", "sim_imbalanced", "sim_batches"} <= set(DEFAULT_DATASETS)


# ---------------------------------------------------------------- simulated datasets, rare recall, warm start


def test_simulated_datasets_and_seeds(monkeypatch) -> None:
    from falcon_sc.bench._datasets import get_dataset, simulated
    from falcon_sc.datasets import PRESETS

    assert {"sim_rare", "sim_rare_batches"} <= set(DATASETS)
    assert DATASETS["sim_rare_batches"].batch_key == "batch" and DATASETS["sim_rare"].batch_key is None
    spec = get_dataset("sim_rare_batches@7")
    assert spec.name == "sim_rare_batches@7" and spec.batch_key == "batch" and "seed 7" in spec.description
    assert simulated("rare", random_state=3).name == "sim_rare@3"
    assert simulated("balanced").name == "sim_balanced"
    assert simulated("rare", n_cells=900).name == "sim_rare@0+n_cells=900"
    # small stand-in for the preset, so that loading is quick
    monkeypatch.setitem(
        PRESETS, "rare", {**PRESETS["rare"], "n_cells": 600, "n_genes": 60, "children": (1, 3, 2), "n_rare": 2}
    )
    seed0, seed7 = get_dataset("sim_rare").load(), get_dataset("sim_rare@7").load()
    assert seed7.adata.uns["falcon_dataset"]["params"]["random_state"] == 7
    assert (seed0.adata.X != seed7.adata.X).nnz > 0
    assert (get_dataset("sim_rare@7").load().adata.X != seed7.adata.X).nnz == 0
    assert len(seed7.adata.uns["falcon_dataset"]["rare"]) == 2 and seed7.n_fine == 6
    for bad, match in [("pbmc3k@3", "simulated"), ("sim_rare@x", "non-negative"), ("sim_rare@-2", "non-negative")]:
        with pytest.raises(ValueError, match=match):
            get_dataset(bad)
    with pytest.raises(ValueError, match="preset"):
        simulated("nope")
    with pytest.raises(ValueError, match="seed"):
        simulated("rare", random_state=-1)


def test_cli_run_simulator_seed(tmp_path, monkeypatch) -> None:
    from falcon_sc.datasets import PRESETS

    monkeypatch.setitem(
        PRESETS,
        "rare",
        {**PRESETS["rare"], "n_cells": 600, "n_genes": 80, "children": (1, 3, 2), "n_rare": 2, "rare_min_cells": 5},
    )
    out = tmp_path / "out"
    argv = ["run", "--dataset", "sim_rare@3", "--methods", "kmeans_within", "--seeds", "1", "--out", str(out)]
    assert main([*argv, "--no-plots", "--quiet"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["dataset"]) == ["sim_rare@3"] and runs["error"].isna().all()
    assert 0 <= runs["rare_recall"].iloc[0] <= 1


def _with_rare_class(toy: AnnData) -> AnnData:
    """``toy`` with the last fine class of coarse class B cut to 4 cells (a few % of B)."""
    fine = toy.obs["fine"].astype(str)
    last = sorted(f for f in fine.unique() if f.startswith("B"))[-1]
    keep = np.flatnonzero(fine != last).tolist() + np.flatnonzero(fine == last)[:4].tolist()
    return toy[sorted(keep)].copy()


def test_rare_recall_and_warm_start_columns(toy: AnnData, tmp_path) -> None:
    def truth(adata, coarse_key, n_fine, *, batch_key, seed, fine_key):
        labels = adata.obs[fine_key].astype(str).to_numpy()
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        warm = np.array([f"{c}/0" for c in coarse])  # the warm start found no fine structure
        relation = dict(zip(labels, coarse, strict=True))
        return BaselineResult(labels=labels, relation=relation, info={"warm_start_labels": warm, "steps": 3})

    def constant(adata, coarse_key, n_fine, *, batch_key, seed):
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        return BaselineResult(labels=np.array([f"{c}/0" for c in coarse]), relation={f"{c}/0": c for c in coarse})

    rare = _with_rare_class(toy)
    df = run(
        {"toy": toy, "rare": rare}, {"truth": truth, "constant": constant}, seeds=[0, 1], out=tmp_path, progress=False
    )
    assert (df["error"] == "").all(), df["error"].tolist()
    warm_cols = ["warm_accuracy", "warm_macro_accuracy", "warm_ari", "warm_within_coarse_ari", "warm_rare_recall"]
    assert set(warm_cols) <= set(df.columns) and "rare_recall" in df.columns
    by = df.set_index(["dataset", "method", "seed"])
    # rare recall: NaN without rare classes, 1 for the truth, 0 for one label per coarse class
    assert by.loc[("toy", "truth", 0), "rare_recall"] != by.loc[("toy", "truth", 0), "rare_recall"]
    assert by.loc[("rare", "truth", 0), "rare_recall"] == 1.0
    assert by.loc[("rare", "constant", 0), "rare_recall"] == 0.0
    # warm scores: those of the one-label-per-coarse-class warm start, NaN for methods without one
    for col in ("accuracy", "macro_accuracy", "ari", "within_coarse_ari", "rare_recall"):
        truth_rows, const_rows = df[df["method"] == "truth"], df[df["method"] == "constant"]
        np.testing.assert_allclose(truth_rows[f"warm_{col}"], const_rows[col])
        assert const_rows[f"warm_{col}"].isna().all()
    # the labels never reach the info column; other extras do
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert set(warm_cols) <= set(runs.columns)
    truth_info = runs.loc[runs["method"] == "truth", "info"]
    assert truth_info.str.contains('"steps": 3').all() and not truth_info.str.contains("warm").any()
    summary = (tmp_path / "summary.md").read_text()
    assert "## rare_recall (mean over seeds; methods x datasets)" in summary
    assert "## FALCON: warm start vs final" in summary
    warm_lines = [line for line in summary.splitlines() if line.startswith("| toy | truth |")]
    assert len(warm_lines) == 1 and "-> 1.000 (+" in warm_lines[0] and "| 2 |" in warm_lines[0]
    assert not any(line.startswith("| toy | constant |") for line in summary.splitlines())
    assert "–" in summary  # rare recall of toy: no rare classes
    assert (tmp_path / "rare_recall.png").stat().st_size > 0
    assert not (tmp_path / "warm_accuracy.png").exists()


def test_no_warm_start_table_without_warm_scores(toy: AnnData) -> None:
    from falcon_sc.bench.run import warm_start_markdown

    def plain(adata, coarse_key, n_fine, *, batch_key, seed):
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        return BaselineResult(labels=np.array([f"{c}/0" for c in coarse]), relation={f"{c}/0": c for c in coarse})

    df = run({"toy": toy}, {"plain": plain}, seeds=1, progress=False, plots=False)
    assert df["warm_accuracy"].isna().all() and warm_start_markdown(df) == ""
    assert "warm start" not in summary_markdown(df)


def test_falcon_adapter_passes_warm_start(toy: AnnData, monkeypatch) -> None:
    def fake_refine(adata, coarse_key, n_fine, *, key_added="falcon", warm=True, **kw):
        coarse = adata.obs[coarse_key].astype(str)
        adata.obs[key_added] = pd.Categorical(coarse + "/0")
        if warm:
            adata.obs[f"{key_added}_warm_start"] = pd.Categorical(coarse + "/1")
        cats = sorted(coarse.unique())
        adata.uns[key_added] = {
            "relations": pd.DataFrame(np.eye(len(cats)), index=[f"{c}/0" for c in cats], columns=cats)
        }

    monkeypatch.setattr(falcon_sc.tl, "refine", fake_refine, raising=False)
    res = METHODS["falcon"](toy, "coarse", N_FINE, batch_key=None, seed=0)
    warm = res.info["warm_start_labels"]
    assert isinstance(warm, np.ndarray) and warm.shape == (toy.n_obs,)
    assert list(warm[:2]) == [f"{c}/1" for c in toy.obs["coarse"].astype(str)[:2]]
    monkeypatch.setattr(falcon_sc.tl, "refine", lambda *a, **kw: fake_refine(*a, warm=False, **kw), raising=False)
    assert "warm_start_labels" not in METHODS["falcon"](toy, "coarse", N_FINE, batch_key=None, seed=0).info


def test_scale_bench_both_methods() -> None:
    from falcon_sc.bench.scale import run_scale_bench

    df = run_scale_bench(2000, 200, accelerator="cpu")
    assert list(df["method"]) == ["leiden_scanpy", "falcon"] and list(df["order"]) == [1, 2]
    assert (df["n_cells"] == 2000).all() and (df["n_genes"] == 200).all()
    assert (df["seconds"] > 0).all() and df["peak_mem_mb"].notna().all() and (df["peak_mem_mb"] >= 0).all()
    for col in ("accuracy", "macro_accuracy", "ari", "within_coarse_ari"):
        assert df[col].between(-1, 1).all() and df[col].notna().all()
    assert (df["accuracy"] > 0.3).all() and (df["n_fine_pred"] > 1).all()
    assert "neighbors" in df.loc[0, "detail"]
    sec = df.set_index("method")["seconds"]
    assert df.attrs["ratio"] == pytest.approx(sec["falcon"] / sec["leiden_scanpy"], abs=0.01)


def test_cli_scale_one_method(capsys) -> None:
    assert main(["scale", "--n-cells", "600", "--n-genes", "100", "--methods", "leiden_scanpy"]) == 0
    out = capsys.readouterr().out
    assert "leiden_scanpy" in out and "falcon " not in out and "ratio" not in out


def test_scale_bench_unknown_method() -> None:
    from falcon_sc.bench.scale import run_scale_bench

    with pytest.raises(ValueError, match="nope"):
        run_scale_bench(100, 50, methods="falcon,nope")


def test_peak_memory_measures_an_allocation() -> None:
    import gc

    from falcon_sc.bench import PeakMemory

    gc.collect()  # garbage of earlier tests freed inside the block would lower the resident set below its start
    with PeakMemory() as mem:
        block = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
        block.sum()
    assert mem.source in ("vmhwm", "maxrss")
    assert mem.peak_mb >= 30 or mem.source == "maxrss"  # maxrss only grows above an earlier peak of the process


@pytest.mark.parametrize("psutil_peak", [None, 123 * 2**20], ids=["nothing", "psutil"])
def test_peak_memory_without_resource(monkeypatch, psutil_peak) -> None:
    """Without ``resource`` and ``/proc`` (Windows): psutil's peak working set when installed, NaN otherwise."""
    import importlib
    import sys
    import types

    run_module = importlib.import_module("falcon_sc.bench.run")  # the module; falcon_sc.bench.run is the function

    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` raises ImportError
    monkeypatch.setattr(run_module, "_proc_status_kib", lambda field: None)
    if psutil_peak is None:
        monkeypatch.setitem(sys.modules, "psutil", None)
    else:
        info = types.SimpleNamespace(peak_wset=psutil_peak)
        fake = types.SimpleNamespace(Process=lambda: types.SimpleNamespace(memory_info=lambda: info))
        monkeypatch.setitem(sys.modules, "psutil", fake)
    with run_module.PeakMemory() as mem:
        pass
    if psutil_peak is None:
        assert mem.source == "unavailable" and np.isnan(mem.peak_mb) and np.isnan(mem.maxrss_delta_mb)
    else:
        assert mem.source == "maxrss" and mem.peak_mb == 0.0 and mem.maxrss_delta_mb == 0.0


def test_solver_bench_without_pulp(monkeypatch, capsys) -> None:
    import sys

    from falcon_sc.bench.solver import require_pulp, run_solver_bench

    monkeypatch.setitem(sys.modules, "pulp", None)
    with pytest.raises(ImportError, match=r"pip install 'falcon_sc\[bench\]'"):
        require_pulp()
    with pytest.raises(ImportError, match="falcon_sc\\[bench\\]"):
        run_solver_bench(n_fine=6, n_coarse=2, repeats=1)
    assert list(run_solver_bench(n_fine=6, n_coarse=2, repeats=1, milp=False)["method"]) == ["exact"]
    monkeypatch.setattr("falcon_sc.bench.solver.run_solver_bench", lambda milp: pd.DataFrame({"milp": [milp]}))
    assert main(["solver"]) == 0  # the command line times the exact solver alone and says why
    captured = capsys.readouterr()
    assert "falcon_sc[bench]" in captured.err and "exact solver only" in captured.err
    assert "False" in captured.out


def test_backed_scale_bench(tmp_path, capsys) -> None:
    """``scale --backed``: refine on the backed file, the scanpy pipeline in a limited child or skipped by size."""
    out = tmp_path / "scale.csv"
    assert main(["scale", "--backed", "--sizes", "800,900", "--n-genes", "120", "--peer-max-cells", "800",
                 "--accelerator", "cpu", "--workdir", str(tmp_path), "--out", str(out)]) == 0  # fmt: skip
    df = pd.read_csv(out)
    assert list(zip(df["n_cells"], df["method"], strict=True)) == [
        (800, "leiden_scanpy"), (800, "falcon"), (900, "leiden_scanpy"), (900, "falcon")
    ]  # fmt: skip
    ran = df[df["status"] == "ok"]
    assert len(ran) == 3 and ran["seconds"].gt(0).all() and ran["cells_per_second"].gt(0).all()
    assert ran["accuracy"].between(0.3, 1).all() and ran["peak_mem_mb"].notna().all()
    assert df.loc[2, "status"].startswith("skipped (above --peer-max-cells 800")
    assert not list(tmp_path.glob("*/*.h5ad"))  # the temporary files are removed
    assert "falcon" in capsys.readouterr().out


def test_peer_out_of_memory(tmp_path) -> None:
    """A limit the scanpy pipeline cannot run under is reported as out of memory, not a crash."""
    from falcon_sc.bench._peer import run_peer

    sim = falcon_sc.datasets.simulate_h5ad(tmp_path / "s.h5ad", n_cells=2000, n_genes=50)
    sim.file.close()
    assert run_peer(tmp_path / "s.h5ad", 6, 0.3, 0)["status"].startswith("out of memory")


def test_scale_sizes_usage_error(capsys) -> None:
    assert main(["scale", "--backed", "--sizes", "1000,12.5"]) == 2
    assert "--sizes: '12.5'" in capsys.readouterr().err
