"""``falcon-bench ablation`` (variants of refine on the real-cell suite) and ``falcon-bench counts`` (allotments)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import falcon_sc as fal
from falcon_sc.baselines import BaselineResult
from falcon_sc.bench import DATASETS
from falcon_sc.bench import ablation as ablation_module
from falcon_sc.bench.__main__ import main
from falcon_sc.bench._datasets import DatasetSpec
from falcon_sc.bench.ablation import ABLATIONS, DEFAULTS, ablation_markdown, resolve_variants, run_ablation
from falcon_sc.bench.counts import COLUMNS, count_errors

QUICK = {"n_epochs": 3, "n_top_genes": 100, "n_comps": 10}


@pytest.fixture(scope="module")
def clear() -> AnnData:
    """300 cells, coarse C0, C1, C2 with 1, 2, 3 well separated fine classes (58, 71, 171 cells)."""
    return fal.datasets.simulate(
        n_cells=300, n_genes=100, children=(1, 2, 3), fine_effect=3.0, fine_de_frac=0.2, random_state=0
    )


@pytest.fixture(scope="module")
def small_c2(clear) -> AnnData:
    """``clear`` with two thirds of C2 dropped: 58, 71, 57 cells, so class sizes no longer tell the children."""
    c2 = np.flatnonzero(clear.obs["coarse"] == "C2")
    keep = np.ones(clear.n_obs, dtype=bool)
    keep[c2[::3]] = keep[c2[1::3]] = False
    return clear[keep].copy()


@pytest.fixture
def stand_ins(clear, small_c2, monkeypatch):
    """``pbmc3k`` and ``zeisel`` (tuning split) replaced by ``clear`` and ``small_c2``; a fresh copy per load."""
    for name, adata in (("pbmc3k", clear), ("zeisel", small_c2)):
        spec = DatasetSpec(name, lambda adata=adata: adata.copy(), description=f"stand-in {name}")
        monkeypatch.setitem(DATASETS, name, spec)


@pytest.fixture
def fake_refine(monkeypatch):
    """Replace refine in the variants by one coarse label per class; returns the list of the options it got."""
    calls: list[dict] = []

    def refine(adata, coarse_key, n_fine, *, batch_key, seed, **kwargs):
        calls.append({"n_fine": n_fine, **kwargs})
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        return BaselineResult(labels=np.char.add(coarse, "/0"), relation={f"{c}/0": c for c in set(coarse)})

    monkeypatch.setattr(ablation_module, "refine_copy", refine)
    return calls


# --- variants -------------------------------------------------------------------------------------------------------


def test_ablations_are_the_measured_table():
    expected = {
        DEFAULTS: ({}, ("learned", "given")),
        "init='kmeans'": ({"init": "kmeans"}, ("given",)),
        "n_comps_within=0 (global PCs only)": ({"n_comps_within": 0}, ("given",)),
        "model_input='hvg'": ({"model_input": "hvg"}, ("given",)),
        "lambda_fine=0 (no neighbour / confident-target losses)": ({"lambda_fine": 0.0}, ("given",)),
        "lambda_fine=1": ({"lambda_fine": 1.0}, ("given",)),
        "regulariser='global', lambda_reg=0.5 (reference)": ({"regulariser": "global", "lambda_reg": 0.5}, ("given",)),
        "guard_warm_start=False": ({"guard_warm_start": False}, ("given",)),
        "n_epochs=1 (about the warm start)": ({"n_epochs": 1}, ("given",)),
        "lr=1e-3": ({"lr": 1e-3}, ("given",)),
        "temperature=0.5": ({"temperature": 0.5}, ("given",)),
        "n_neighbors=10": ({"n_neighbors": 10}, ("given",)),
        "children_prior='size'": ({"children_prior": "size"}, ("learned",)),
        "children_prior='variance'": ({"children_prior": "variance"}, ("learned",)),
        "learn_relation=False": ({"learn_relation": False}, ("learned",)),
        "children_prior='size', init='kmeans'": ({"children_prior": "size", "init": "kmeans"}, ("learned",)),
    }
    assert list(ABLATIONS) == list(expected)
    assert {n: (v.kwargs, v.counts) for n, v in ABLATIONS.items()} == expected
    assert all(v.description for v in ABLATIONS.values())


def test_resolve_variants_names_numbers_and_commas():
    assert resolve_variants(None) == resolve_variants("all") == list(ABLATIONS)
    assert resolve_variants("lr=1e-3, 0") == [DEFAULTS, "lr=1e-3"]  # order of ABLATIONS
    assert resolve_variants([12, "lr=1e-3"]) == ["lr=1e-3", "children_prior='size'"]
    both = "children_prior='size', init='kmeans'"
    assert resolve_variants(both) == [both]  # matched whole, not as its two parts
    assert resolve_variants(f"{both},lr=1e-3") == ["lr=1e-3", both]
    assert resolve_variants("children_prior='size',init='kmeans'") == ["init='kmeans'", "children_prior='size'"]
    for bad in ("nope", "99", [True], ""):
        with pytest.raises(ValueError, match="variant"):
            resolve_variants(bad)


# --- run_ablation ---------------------------------------------------------------------------------------------------


def test_run_ablation_plans_modes_and_merges_options(stand_ins, fake_refine):
    df = run_ablation(
        variants=["lr=1e-3", "children_prior='size'"],
        n_regrouped=1,
        datasets=["pbmc3k"],
        progress=False,
        refine_defaults={"n_epochs": 3, "lr": 0.5},
    )
    runs = df.groupby(["counts", "variant"], sort=False).size()
    expected = [("learned", DEFAULTS), ("learned", "children_prior='size'"), ("given", DEFAULTS), ("given", "lr=1e-3")]
    assert list(runs.index) == expected and (runs == 2).all()  # 2 cases, 1 seed; the defaults once per mode
    assert (df["variant"] == df["method"]).all() and (df["error"] == "").all()
    assert sorted(df["dataset"].unique()) == ["pbmc3k", "pbmc3k~0"]
    options = [{k: v for k, v in c.items() if k != "n_fine"} for c in fake_refine]
    assert {"n_epochs": 3, "lr": 0.5, "children_prior": "size"} in options
    assert {"n_epochs": 3, "lr": 1e-3} in options  # the variant's own option over refine_defaults
    given = [c["n_fine"] for c in fake_refine if c.get("lr") == 1e-3]
    assert given and all(isinstance(n, dict) for n in given)  # known counts in the mode "given"


def test_run_ablation_with_refine_writes_the_report(stand_ins, tmp_path):
    df = run_ablation(
        variants=["init='kmeans'", "children_prior='size'"],
        n_regrouped=0,
        datasets=["pbmc3k"],
        out=tmp_path,
        progress=False,
        refine_defaults=QUICK,
    )
    assert len(df) == 4 and (df["error"] == "").all(), df["error"].tolist()
    assert {"variant", "counts", "within_coarse_ari", "macro_accuracy", "split", "source"} <= set(df.columns)
    assert set(zip(df["counts"], df["variant"], strict=True)) == {
        ("learned", DEFAULTS),
        ("learned", "children_prior='size'"),
        ("given", DEFAULTS),
        ("given", "init='kmeans'"),
    }
    assert pd.read_csv(tmp_path / "runs.csv").shape[0] == 4
    assert (tmp_path / "summary.md").exists() and (tmp_path / "given" / "runs.csv").exists()
    report = (tmp_path / "ablation.md").read_text()
    assert report == ablation_markdown(df) + "\n"
    tables = [line for line in report.splitlines() if line.startswith("| variant |")]
    assert len(tables) == 2  # one per counts mode
    assert tables[0].endswith("| Δ within_coarse_ari | Δ macro_accuracy |")
    assert "| within_coarse_ari pbmc3k | within_coarse_ari mean |" in tables[0]
    assert report.count(f"| {DEFAULTS} |") == 2
    kmeans = next(line for line in report.splitlines() if line.startswith("| init='kmeans' |"))
    assert kmeans.split("|")[-2].strip()[0] in "+-"  # a signed difference to the defaults


# --- count_errors ---------------------------------------------------------------------------------------------------


def test_count_errors_on_known_children(stand_ins):
    df = count_errors(n_regrouped=0, datasets=["pbmc3k", "zeisel"], progress=False)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 8 and set(df["allotment"]) == {"graph", "size", "variance", "n_fine='auto'"}
    rows = df.set_index(["case", "allotment"])
    assert (df["truth"] == "1,2,3").all() and (df["total"] == 6).all()
    for allotment in ("graph", "size", "variance"):  # clear classes: every allotment finds the children
        assert rows.loc[("pbmc3k", allotment), "abs_error"] == 0
        assert rows.loc[("pbmc3k", allotment), "estimate"] == "1,2,3"
    for allotment in ("graph", "size", "variance"):
        assert rows.loc[("pbmc3k", allotment), "estimated_total"] == 6
    # zeisel stand-in: classes of 58, 71, 57 cells; sizes give 2 each, splitting the single-child class C0
    assert rows.loc[("zeisel", "size"), "estimate"] == "2,2,2"
    assert rows.loc[("zeisel", "size"), ["abs_error", "single_split"]].tolist() == [2, 1]
    assert rows.loc[("zeisel", "graph"), ["abs_error", "single_split"]].tolist() == [0, 0]
    assert (df["abs_error"] >= 0).all() and (df["single_split"] >= 0).all()


# --- command line ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ablation", "--variants", "nope"], "unknown ablation variant 'nope'"),
        (["ablation", "--split", "train"], "split='train'"),
        (["ablation", "--datasets", "moncada"], "not in the 'tuning' split"),
        (["counts", "--split", "train"], "split='train'"),
        (["counts", "--regrouped", "-1"], "n_regrouped=-1"),
    ],
)
def test_cli_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("falcon-bench: error:") and message in err


def test_cli_list_shows_the_variants(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ablation variants" in out and all(name in out for name in ABLATIONS)


def test_cli_ablation_and_counts_write_their_files(stand_ins, fake_refine, tmp_path, capsys):
    out = tmp_path / "abl"
    argv = ["ablation", "--variants", "9,12", "--regrouped", "0", "--datasets", "pbmc3k", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "| lr=1e-3 |" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"runs.csv", "ablation.md", "summary.md", "given", "learned"}
    out = tmp_path / "counts"
    argv = ["counts", "--regrouped", "0", "--datasets", "zeisel", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| allotment | zeisel | mean |" in printed and "| size | 2.00 | 2.00 |" in printed
    assert (out / "counts.md").exists() and len(pd.read_csv(out / "runs.csv")) == 4
