"""The real-cell suite: regrouped cases, their split, ``run_real`` and ``falcon-bench real``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import falcon_sc as fal
from falcon_sc.baselines import BaselineResult
from falcon_sc.bench import DATASETS
from falcon_sc.bench.__main__ import main
from falcon_sc.bench._datasets import DatasetSpec
from falcon_sc.bench.real import (
    HELD_OUT_DATASETS,
    TUNING_DATASETS,
    real_cases,
    real_specs,
    real_summary_markdown,
    regroup,
    run_real,
)


@pytest.fixture(scope="module")
def small() -> AnnData:
    """300 cells, 3 coarse / 6 fine classes (1, 2, 3 children), with the stored authors' relation."""
    return fal.datasets.simulate(n_cells=300, n_genes=100, children=(1, 2, 3), random_state=0)


@pytest.fixture
def stand_ins(small, monkeypatch):
    """``pbmc3k`` (tuning) and ``moncada`` (held out) replaced by ``small``; a fresh copy per load."""
    for name in ("pbmc3k", "moncada"):
        monkeypatch.setitem(DATASETS, name, DatasetSpec(name, lambda: small.copy(), description=f"small as {name}"))


def truth(adata, coarse_key, n_fine, *, batch_key, seed, fine_key):
    """Returns the true fine labels (FALCON's stand-in: best on every case); records the ``n_fine`` it was given."""
    labels = adata.obs[fine_key].astype(str).to_numpy()
    coarse = adata.obs[coarse_key].astype(str).to_numpy()
    relation = {f: c for f, c in zip(labels, coarse, strict=True)}
    return BaselineResult(labels=labels, relation=relation, info={"n_fine": n_fine})


def one_per_coarse(adata, coarse_key, n_fine, *, batch_key, seed):
    """One fine class per coarse class."""
    coarse = adata.obs[coarse_key].astype(str).to_numpy()
    return BaselineResult(labels=np.char.add(coarse, "/0"), relation={f"{c}/0": c for c in set(coarse)})


def broken(adata, coarse_key, n_fine, *, batch_key, seed):
    raise RuntimeError("boom")


CHEAP = {"falcon": truth, "one_per_coarse": one_per_coarse}


# --- regroup ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 7, 20])
@pytest.mark.parametrize("max_children", [2, 3, 6])
@pytest.mark.parametrize("seed", range(5))
def test_regroup_is_a_partition_with_bounded_children(n, max_children, seed):
    classes = [f"f{i}" for i in range(n)]
    grouping = regroup(classes, np.random.default_rng(seed), max_children=max_children)
    assert sorted(grouping) == sorted(classes)  # every fine class in exactly one group
    sizes = pd.Series(grouping).value_counts()
    assert len(sizes) >= 2 and sizes.max() >= 2
    assert sizes.min() >= 1 and sizes.max() <= max_children
    assert set(sizes.index) == {f"G{g}" for g in range(len(sizes))}


def test_regroup_is_deterministic_for_a_seed():
    classes = list("abcdefghij")
    first = regroup(classes, np.random.default_rng(3))
    assert regroup(classes, np.random.default_rng(3)) == first
    assert any(regroup(classes, np.random.default_rng(s)) != first for s in range(4, 10))


@pytest.mark.parametrize(
    ("classes", "max_children", "message"),
    [(["a", "b"], 6, "at least 3 fine classes"), (list("abcd"), 1, "max_children=1 must be an int >= 2")],
)
def test_regroup_errors(classes, max_children, message):
    with pytest.raises(ValueError, match=message):
        regroup(classes, np.random.default_rng(0), max_children=max_children)


# --- real_cases -------------------------------------------------------------------------------------------------------


def test_real_cases_authors_first_then_regroupings(small):
    fine, coarse = small.obs["fine"].to_numpy(), small.obs["coarse"].to_numpy()
    cases = real_cases("zeisel", fine, coarse, n_regrouped=4)
    assert [c.name for c in cases] == ["zeisel", "zeisel~0", "zeisel~1", "zeisel~2", "zeisel~3"]
    assert {c.dataset for c in cases} == {"zeisel"} and not any(c.held_out for c in cases)
    np.testing.assert_array_equal(cases[0].coarse, coarse.astype(str))
    assert cases[0].children == {"C0": 1, "C1": 2, "C2": 3}
    for case in cases[1:]:
        np.testing.assert_array_equal(case.fine, fine.astype(str))
        # every fine class lies inside one regrouped coarse class
        assert (pd.crosstab(case.fine, case.coarse) > 0).sum(axis=1).eq(1).all()
        assert sum(case.children.values()) == 6 and 1 <= min(case.children.values())
    assert all(c.held_out for c in real_cases("moncada", fine, coarse, n_regrouped=1))


def test_kth_regrouping_does_not_depend_on_n_regrouped(small):
    fine, coarse = small.obs["fine"].to_numpy(), small.obs["coarse"].to_numpy()
    few = real_cases("kang", fine, coarse, n_regrouped=2)
    many = real_cases("kang", fine, coarse, n_regrouped=6)
    for a, b in zip(few, many, strict=False):
        assert a.name == b.name
        np.testing.assert_array_equal(a.coarse, b.coarse)
    other = real_cases("kang", fine, coarse, n_regrouped=6, seed=1)
    assert any(not np.array_equal(a.coarse, b.coarse) for a, b in zip(many[1:], other[1:], strict=True))


# --- real_specs -------------------------------------------------------------------------------------------------------


def test_real_specs_names_and_split():
    names = [s.name for s in real_specs("tuning", n_regrouped=2)]
    assert names == [n for d in TUNING_DATASETS for n in (d, f"{d}~0", f"{d}~1")]
    held = [s.name for s in real_specs("held_out", n_regrouped=0)]
    assert held == list(HELD_OUT_DATASETS)
    both = [s.name for s in real_specs("all", n_regrouped=1, datasets=("moncada", "pbmc3k"))]
    assert both == ["moncada", "moncada~0", "pbmc3k", "pbmc3k~0"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "train"}, "split='train' must be one of"),
        ({"split": "tuning", "datasets": ("pbmc68k",)}, r"\['pbmc68k'\] are not in the 'tuning' split"),
        ({"split": "all", "datasets": ("pbmc4k",)}, r"\['pbmc4k'\] are not in the 'all' split"),
        ({"split": "tuning", "n_regrouped": -1}, "n_regrouped=-1 must be an int >= 0"),
    ],
)
def test_real_specs_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        real_specs(**kwargs)


def test_regrouped_spec_loads_the_regrouping_not_the_stored_relation(small, stand_ins):
    specs = {s.name: s for s in real_specs("tuning", n_regrouped=3, datasets=("pbmc3k",))}
    cases = {c.name: c for c in real_cases("pbmc3k", small.obs["fine"], small.obs["coarse"], n_regrouped=3)}
    authors = specs["pbmc3k"].load()
    assert authors.children == {"C0": 1, "C1": 2, "C2": 3}
    for k in range(3):
        loaded = specs[f"pbmc3k~{k}"].load()
        case = cases[f"pbmc3k~{k}"]
        np.testing.assert_array_equal(loaded.adata.obs["coarse"].astype(str).to_numpy(), case.coarse)
        assert "relation" not in loaded.adata.uns["falcon_dataset"]
        assert loaded.children == case.children
        assert set(loaded.relation.values()) == set(case.coarse)
    assert "relation" in small.uns["falcon_dataset"]  # the source is untouched


# --- run_real ---------------------------------------------------------------------------------------------------------


def test_run_real_both_splits_and_counts(stand_ins, tmp_path):
    df = run_real(
        "all", methods=CHEAP, seeds=(0,), n_regrouped=2, datasets=("pbmc3k", "moncada"), out=tmp_path, progress=False
    )
    assert len(df) == 2 * 6 * 2  # counts modes x cases x methods
    assert list(df.columns[:5]) == ["dataset", "split", "source", "regrouped", "counts"]
    assert (df["error"] == "").all()
    assert set(zip(df["source"], df["split"], strict=True)) == {("pbmc3k", "tuning"), ("moncada", "held_out")}
    assert df.loc[df["regrouped"], "dataset"].str.contains("~").all()
    assert set(df.loc[~df["regrouped"], "dataset"]) == {"pbmc3k", "moncada"}
    assert df["counts"].value_counts().to_dict() == {"learned": 12, "given": 12}
    given = df[(df["method"] == "falcon") & (df["counts"] == "given")]["info"]
    assert given.str.contains('"n_fine": {"').all()  # a mapping coarse class -> count
    learned = df[(df["method"] == "falcon") & (df["counts"] == "learned")]["info"]
    assert (learned == '{"n_fine": 6}').all()  # the total
    assert (df.loc[df["method"] == "falcon", "within_coarse_ari"] == 1).all()

    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == len(df) and {"split", "source", "regrouped", "counts"} <= set(runs.columns)
    assert (tmp_path / "learned" / "runs.csv").exists() and (tmp_path / "given" / "runs.csv").exists()
    summary = (tmp_path / "summary.md").read_text()
    tuning, held = summary.index("## Tuning split"), summary.index("## Held-out split")
    assert tuning < held
    for part in (summary[tuning:held], summary[held:]):
        assert part.count("### Counts learned") == 1 and part.count("### Counts given") == 1
        assert part.count("#### FALCON vs the best baseline") == 2
    assert "| method | pbmc3k | pbmc3k~regrouped (2) |" in summary
    assert "| method | moncada | moncada~regrouped (2) |" in summary
    assert "| pbmc3k | 3 | " in summary and "| moncada | 3 | " in summary
    assert "(one_per_coarse) | 3/3 |" in summary


def test_run_real_records_failures_and_checks_arguments(stand_ins, tmp_path):
    df = run_real(
        "held_out",
        methods={"falcon": truth, "broken": broken},
        seeds=1,
        n_regrouped=1,
        counts="given",
        datasets=["moncada"],
        progress=False,
    )
    assert set(df["counts"]) == {"given"} and set(df["split"]) == {"held_out"}
    assert df.loc[df["method"] == "broken", "error"].str.contains("boom").all()
    summary = real_summary_markdown(df)
    assert "Tuning split" not in summary and "Counts learned" not in summary
    assert "broken 2/2" in summary and "| moncada | 2 | – | 0/0 |" in summary
    for kwargs, message in [
        ({"counts": ("learned", "guessed")}, "counts=.* must name one or both"),
        ({"counts": ()}, "counts=.* must name one or both"),
        ({"methods": ["falcn"]}, "unknown method 'falcn'"),
        ({"methods": []}, "names no method"),
        ({"datasets": ()}, "selects no dataset"),
        ({"split": "held-out"}, "split='held-out'"),
    ]:
        with pytest.raises(ValueError, match=message):
            run_real(**{"split": "tuning", **kwargs}, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


# --- falcon-bench real ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--split", "test"], "split='test'"),
        (["--methods", "falcon,kmeans_withn"], "unknown method 'kmeans_withn'"),
        (["--methods", " , "], "names no method"),
        (["--counts", "learned,known"], "must name one or both"),
        (["--datasets", "pbmc68k"], "are not in the 'tuning' split"),
        (["--datasets", ","], "names no dataset"),
        (["--regrouped", "-2"], "n_regrouped=-2"),
    ],
)
def test_cli_real_usage_errors(argv, named, tmp_path, capsys):
    assert main(["real", *argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("falcon-bench: error: ") and named in err[0], err
    assert not (tmp_path / "out").exists()


def test_cli_real_runs_and_prints_the_summary(stand_ins, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(fal.bench.METHODS, "falcon", truth)
    monkeypatch.setitem(fal.bench.METHODS, "one_per_coarse", one_per_coarse)
    argv = ["real", "--split", "all", "--datasets", "pbmc3k,moncada", "--regrouped", "1", "--seeds", "1"]
    argv += ["--methods", "falcon,one_per_coarse", "--counts", "learned", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "## Tuning split" in out and "## Held-out split" in out and "#### FALCON vs the best baseline" in out
    assert f"wrote {tmp_path}/runs.csv and summary.md" in out
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 2 * 2 * 2 and set(runs["counts"]) == {"learned"}


def test_cli_list_mentions_the_real_suite(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "falcon-bench real" in out
    assert "tuning split: pbmc3k,zeisel,kang" in out and "held out" in out and "pbmc68k,moncada" in out
