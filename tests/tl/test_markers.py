"""``fal.tl.fine_markers`` on data with a known answer: each fine class's own gene ranks first against its siblings."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import falcon_sc as fal
from falcon_sc.tl._markers import COLUMNS

from ..conftest import scanpy_log

#: coarse class -> its fine classes; "S" has a single child
HIERARCHY = {"A": ["A/1", "A/2", "A/3"], "B": ["B/1", "B/2"], "S": ["S/1"]}
FINE = [f for kids in HIERARCHY.values() for f in kids]
PARENT = {f: c for c, kids in HIERARCHY.items() for f in kids}


def _gene(fine: str) -> str:
    return "mk_" + fine.replace("/", "")


def known(n_per_class: int = 40, seed: int = 0) -> ad.AnnData:
    """Raw counts (CSR) with FALCON-like results in ``obs["falcon"]`` / ``uns["falcon"]``.

    Gene ``mk_<fine>`` is 6x higher in its fine class only (not in ``S/1``); gene ``co_<coarse>`` is 6x higher in
    every cell of a coarse class, so it separates no siblings; 30 background genes. Library sizes vary 4-fold.
    """
    rng = np.random.default_rng(seed)
    genes = [_gene(f) for f in FINE if f != "S/1"] + [f"co_{c}" for c in HIERARCHY] + [f"bg{i}" for i in range(30)]
    labels = np.repeat(FINE, n_per_class)
    rate = np.full((labels.size, len(genes)), 3.0)
    for j, g in enumerate(genes):
        if g.startswith("mk_"):
            rate[[_gene(f) == g for f in labels], j] *= 6
        elif g.startswith("co_"):
            rate[[PARENT[f] == g[3:] for f in labels], j] *= 6
    rate *= rng.uniform(0.5, 2.0, size=(labels.size, 1))
    adata = ad.AnnData(
        X=sparse.csr_matrix(rng.poisson(rate).astype(np.float32)),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(labels.size)]),
        var=pd.DataFrame(index=genes),
    )
    adata.obs["coarse"] = pd.Categorical([PARENT[f] for f in labels], categories=list(HIERARCHY))
    adata.obs["falcon"] = pd.Categorical(labels, categories=FINE)
    relations = pd.DataFrame(0, index=FINE, columns=list(HIERARCHY), dtype=np.int8)
    for f in FINE:
        relations.loc[f, PARENT[f]] = 1
    adata.uns["falcon"] = {"relations": relations, "params": {"coarse_key": "coarse"}}
    return adata


@pytest.fixture(scope="module")
def data():
    return known()


def _top(table: pd.DataFrame, k: int = 1) -> dict[str, list[str]]:
    return {g: list(df["names"][:k]) for g, df in table.groupby("group", sort=False)}


def test_own_gene_ranks_first_against_siblings(data):
    adata = data.copy()
    before = adata.X.copy()
    table = fal.tl.fine_markers(adata, n_genes=5)
    assert list(table.columns) == COLUMNS
    # every fine class with siblings: its own gene first; S (single child) skipped by default
    assert _top(table) == {f: [_gene(f)] for f in FINE if f != "S/1"}
    assert set(table["reference"]) == {"siblings"}
    assert (table.groupby("group").size() == 5).all()
    assert table["coarse"].tolist() == [PARENT[g] for g in table["group"]]
    # coarse genes are shared by the siblings: no child differs from its siblings in them
    every = fal.tl.fine_markers(adata, n_genes=None, inplace=False)
    assert (every.loc[every["names"].str.startswith("co_"), "pvals_adj"] > 0.05).all()
    # coarse classes in the order of the relation's columns, fine classes in the order of its rows
    assert list(dict.fromkeys(table["group"])) == [f for f in FINE if f != "S/1"]
    # best first within each class, with significant own genes
    assert all(df["scores"].is_monotonic_decreasing for _, df in table.groupby("group"))
    assert (table.groupby("group")["pvals_adj"].first() < 1e-6).all()
    # stored as returned; counts were normalised in a copy: X untouched
    stored = adata.uns["falcon_markers"]
    pd.testing.assert_frame_equal(stored["markers"], table)
    assert stored["params"]["input_kind"] == "counts" and stored["params"]["key"] == "falcon"
    assert list(stored["params"]["skipped"]) == ["S"]
    assert (adata.X != before).nnz == 0


def test_global_ranking_would_pick_the_coarse_gene(data):
    """The contrast the siblings reference removes: against all other cells, co_A is A/1's second marker."""
    adata = data.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.tl.rank_genes_groups(adata, "falcon", method="wilcoxon")
    global_top = sc.get.rank_genes_groups_df(adata, group="A/1").iloc[1]
    assert global_top["names"] == "co_A" and global_top["pvals_adj"] < 1e-6


def test_single_child_skip_warns_and_rest_compares_with_other_coarse(data):
    adata = data.copy()
    with scanpy_log() as log:
        table = fal.tl.fine_markers(adata, n_genes=3)
    assert "single fine class" in log.getvalue() and "S" in log.getvalue()
    assert "S/1" not in set(table["group"])
    rest = fal.tl.fine_markers(adata, n_genes=3, single_child="rest")
    own = rest[rest["group"] == "S/1"]
    assert own["reference"].unique().tolist() == ["other coarse classes"]
    assert own["coarse"].unique().tolist() == ["S"]
    assert own["names"].iloc[0] == "co_S"  # the coarse class's own gene, against the other coarse classes
    pd.testing.assert_frame_equal(rest[rest["group"] != "S/1"].reset_index(drop=True), table)
    assert len(adata.uns["falcon_markers"]["params"]["skipped"]) == 0


def test_lognorm_input_used_as_is_and_same_ranking(data):
    adata = data.copy()
    counts = fal.tl.fine_markers(adata, n_genes=4, inplace=False)
    logged = adata.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    adata.layers["lognorm"] = logged.X.copy()
    out = fal.tl.fine_markers(adata, n_genes=4, layer="lognorm")
    assert adata.uns["falcon_markers"]["params"]["input_kind"] == "lognorm"
    assert adata.uns["falcon_markers"]["params"]["layer"] == "lognorm"
    assert out["names"].tolist() == counts["names"].tolist()
    np.testing.assert_allclose(out["scores"], counts["scores"], rtol=1e-4)
    # scaled X (negative values) next to raw log values in adata.raw: raw is used by default, as in scanpy
    adata.raw = logged
    adata.X = adata.X.toarray()
    sc.pp.scale(adata)
    raw = fal.tl.fine_markers(adata, n_genes=4, inplace=False)
    assert raw["names"].tolist() == counts["names"].tolist()
    with pytest.raises(ValueError, match="negative.*layer="):
        fal.tl.fine_markers(adata, use_raw=False)


def test_inplace_false_key_added_n_genes_none_and_t_test(data):
    adata = data.copy()
    table = fal.tl.fine_markers(adata, n_genes=None, method="t-test", inplace=False)
    assert "falcon_markers" not in adata.uns
    assert (table.groupby("group").size() == adata.n_vars).all()
    assert _top(table) == {f: [_gene(f)] for f in FINE if f != "S/1"}
    fal.tl.fine_markers(adata, n_genes=2, key_added="mk")
    assert set(adata.uns) >= {"mk"} and "falcon_markers" not in adata.uns


def test_h5ad_round_trip(data, tmp_path):
    adata = data.copy()
    table = fal.tl.fine_markers(adata, n_genes=3, single_child="rest")
    adata.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    pd.testing.assert_frame_equal(back.uns["falcon_markers"]["markers"], table)
    assert back.uns["falcon_markers"]["params"]["single_child"] == "rest"


def test_single_cell_and_empty_fine_classes(data):
    adata = data.copy()
    relations = adata.uns["falcon"]["relations"]
    extra = pd.DataFrame([[1, 0, 0], [0, 1, 0]], index=["A/4", "B/3"], columns=relations.columns, dtype=np.int8)
    adata.uns["falcon"]["relations"] = pd.concat([relations, extra])
    adata.obs["falcon"] = adata.obs["falcon"].cat.add_categories(["A/4", "B/3"])
    adata.obs.iloc[0, adata.obs.columns.get_loc("falcon")] = "A/4"  # one cell; B/3 has none
    with scanpy_log() as log:
        table = fal.tl.fine_markers(adata, n_genes=2)
    assert "single cell" in log.getvalue() and "A/4" in log.getvalue()
    assert not {"A/4", "B/3"} & set(table["group"])
    assert _top(table) == {f: [_gene(f)] for f in FINE if f != "S/1"}


def test_simulated_fine_programs_rank_on_top():
    """Simulator: within a coarse class the top markers of every true fine class are genes of a fine program."""
    adata = fal.datasets.simulate(
        n_cells=900, n_genes=300, children=(1, 2, 3), fine_effect=2.0, fine_de_frac=0.05, imbalance=0.0,
        state_effect=0.0, random_state=0,
    )  # fmt: skip
    adata.obs["falcon"] = adata.obs["fine"]
    fine = adata.obs["fine"].astype(str)
    adata.uns["falcon"] = {"relations": pd.crosstab(fine, adata.obs["coarse"].astype(str)).gt(0).astype(np.int8)}
    table = fal.tl.fine_markers(adata, n_genes=5)
    assert set(table["group"]) == {"C1.f0", "C1.f1", "C2.f0", "C2.f1", "C2.f2"}  # C0 has one child
    assert adata.var.loc[table["names"], "fine_de"].all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "nope"}, KeyError, "fal.tl.refine"),
        ({"n_genes": 0}, ValueError, "n_genes=0"),
        ({"n_genes": True}, TypeError, "n_genes"),
        ({"n_genes": "5"}, TypeError, "n_genes"),
        ({"method": "logreg"}, ValueError, "method='logreg'"),
        ({"layer": "counts"}, KeyError, "layer='counts'"),
        ({"use_raw": True}, ValueError, "adata.raw is not set"),
        ({"use_raw": "yes"}, TypeError, "use_raw"),
        ({"single_child": "other"}, ValueError, "single_child"),
        ({"input_kind": "log"}, ValueError, "input_kind"),
        ({"key_added": "falcon"}, ValueError, "overwrite"),
        ({"key_added": ""}, ValueError, "key_added"),
    ],
)
def test_errors(data, kwargs, error, match):
    adata = data.copy()
    with pytest.raises(error, match=match):
        fal.tl.fine_markers(adata, **kwargs)
    assert set(adata.uns) == {"falcon"}


def test_errors_out_of_step_results(data):
    adata = data.copy()
    del adata.uns["falcon"]["relations"]
    with pytest.raises(KeyError, match="'relations' table is missing"):
        fal.tl.fine_markers(adata)
    adata = data.copy()
    adata.obs["falcon"] = adata.obs["falcon"].cat.rename_categories({"A/1": "X"})
    with pytest.raises(ValueError, match="not fine classes.*'X'"):
        fal.tl.fine_markers(adata)
    adata.obs["falcon"] = data.obs["falcon"].astype(object)
    adata.obs.iloc[0, adata.obs.columns.get_loc("falcon")] = np.nan
    with pytest.raises(ValueError, match="1 cells without a fine label"):
        fal.tl.fine_markers(adata)
    with pytest.raises(TypeError, match="AnnData"):
        fal.tl.fine_markers(adata.X)
