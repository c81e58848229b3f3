"""Baselines told the number of fine classes of every coarse class (``n_fine`` as a mapping)."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import falcon_sc as fal
from falcon_sc.baselines import BASELINES, kmeans_within, leiden_scanpy, leiden_within, subcluster
from falcon_sc.baselines._common import check_n_fine, leiden_each_class, resolve_n_fine

#: the baselines that take a mapping
COUNTED = {"kmeans_within": kmeans_within, "leiden_within": leiden_within, "subcluster": subcluster}
COUNTED["leiden_scanpy"] = leiden_scanpy


@pytest.fixture(scope="module")
def small():
    """Coarse classes C0 (1 fine class), C1 (2), C2 (3), clearly separated."""
    return fal.datasets.simulate(
        n_cells=400,
        n_genes=200,
        children=(1, 2, 3),
        fine_effect=2.0,
        fine_de_frac=0.05,
        imbalance=0.0,
        state_effect=0.0,
        random_state=0,
    )


def _children(res, adata) -> dict[str, int]:
    """Clusters found per coarse class, checked to be nested in it."""
    coarse = adata.obs["coarse"].astype(str).to_numpy()
    out: dict[str, int] = {}
    for fine in np.unique(res.labels):
        parents = set(coarse[res.labels == fine])
        assert parents == {res.relation[fine]}, (fine, parents)
        out[res.relation[fine]] = out.get(res.relation[fine], 0) + 1
    assert set(res.relation) == set(res.labels)
    return dict(sorted(out.items()))


def test_registered():
    for name, fn in COUNTED.items():
        assert BASELINES[name] is fn


@pytest.mark.parametrize("name", sorted(COUNTED))
def test_true_counts(name, small):
    """Given the true counts, each class gets exactly them, and the clusters are the true fine classes."""
    truth = {"C0": 1, "C1": 2, "C2": 3}
    res = COUNTED[name](small, "coarse", truth)
    assert _children(res, small) == truth
    assert res.n_fine == 6
    scores = fal.metrics.evaluate(small.obs["fine"], res.labels, coarse=small.obs["coarse"])
    assert scores["within_coarse_ari"] > 0.8
    if name != "kmeans_within":
        assert res.info["n_clusters"] == 6 and set(res.info["resolution"]) == set(truth)
        assert res.info["resolution"]["C0"] is None  # one cluster: not clustered


@pytest.mark.parametrize("name", sorted(COUNTED))
def test_other_counts(name, small):
    """Counts unlike the truth (and unlike a size-proportional allotment) are met exactly too."""
    wanted = {"C0": 3, "C1": 1, "C2": 5}
    res = COUNTED[name](small, "coarse", wanted)
    assert _children(res, small) == wanted
    assert res.n_fine == 9


def test_int_and_mapping_keys_as_text(small):
    """Keys are compared as text, values may be numpy ints; an int keeps the size-proportional allotment."""
    res = kmeans_within(small, "coarse", {"C0": np.int64(1), "C1": 2, "C2": np.int32(4)})
    assert res.info["allotment"] == {"C0": 1, "C1": 2, "C2": 4}
    sizes = small.obs["coarse"].value_counts()
    by_size = kmeans_within(small, "coarse", 7).info["allotment"]
    assert sum(by_size.values()) == 7 and by_size == dict(
        zip(sorted(sizes.index), fal.baselines.allot_clusters(sizes.sort_index().to_numpy(), 7).tolist(), strict=True)
    )


BAD = [
    ({"C0": 1, "C1": 2}, "no count for the coarse classes \\['C2'\\]"),
    ({"C0": 1, "C1": 2, "C2": 3, "C9": 2}, "not coarse classes .*\\['C9'\\]"),
    ({"C0": 0, "C1": 2, "C2": 3}, "n_fine\\['C0'\\]=0: .*int >= 1"),
    ({"C0": 1, "C1": -2, "C2": 3}, "n_fine\\['C1'\\]=-2"),
    ({"C0": 1, "C1": 2.5, "C2": 3}, "n_fine\\['C1'\\]=2.5"),
    ({"C0": True, "C1": 2, "C2": 3}, "n_fine\\['C0'\\]=True"),
    ({"C0": 1, "C1": 2, "C2": 10_000}, "n_fine\\['C2'\\]=10000 exceeds the \\d+ cells of that coarse class"),
]


@pytest.mark.parametrize("name", sorted(COUNTED))
@pytest.mark.parametrize(("mapping", "match"), BAD)
def test_bad_mappings(name, mapping, match, small, monkeypatch):
    # raised before any embedding or graph is computed
    module = importlib.import_module(f"falcon_sc.baselines.{name}")
    heavy = {"kmeans_within": "embed", "leiden_within": "embed", "subcluster": "prepare"}
    heavy["leiden_scanpy"] = "scanpy_neighbors"
    monkeypatch.setattr(module, heavy[name], lambda *a, **k: pytest.fail("should have raised first"))
    with pytest.raises(ValueError, match=match):
        COUNTED[name](small, "coarse", mapping)


def test_wrong_type_and_duplicate_keys(small):
    coarse = pd.Categorical(["1", "1", "2", "2", "2"])
    with pytest.raises(TypeError, match="int .* or a mapping coarse label"):
        resolve_n_fine([1, 2], coarse)
    with pytest.raises(ValueError, match="has the key '1' twice"):
        resolve_n_fine({1: 1, "1": 2, "2": 1}, coarse)
    assert resolve_n_fine({1: 2, 2: 3}, coarse)[1].tolist() == [2, 3]
    # the int rule is unchanged
    with pytest.raises(ValueError, match="must exceed the number of coarse classes"):
        resolve_n_fine(2, coarse)
    # baselines that take only a total say so
    with pytest.raises(TypeError, match="n_fine must be an int .* taken by kmeans_within"):
        check_n_fine({"1": 2, "2": 1}, 2, 5)
    with pytest.raises(TypeError, match="n_fine must be an int"):
        BASELINES["sela"](small, "coarse", {"C0": 1, "C1": 2, "C2": 3})


def test_fix_ups_reach_every_count():
    """Where the resolution search falls short, merges (too many) and splits (too few) reach the count."""
    rng = np.random.default_rng(0)
    n = 60
    codes = np.repeat([0, 1, 2], n // 3)
    # class 0: two dense blocks; class 1: no edges at all (every cell alone); class 2: a random graph
    rows, cols = [], []
    for block in (np.arange(0, 10), np.arange(10, 20)):
        r, c = np.meshgrid(block, block)
        rows.append(r.ravel())
        cols.append(c.ravel())
    r = rng.integers(40, 60, 200)
    c = rng.integers(40, 60, 200)
    rows.append(r)
    cols.append(c)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    keep = rows != cols
    adj = sp.csr_matrix((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    adj = adj.maximum(adj.T)
    classes = ["a", "b", "c"]
    for counts in ([2, 3, 4], [5, 1, 7], [1, 20, 2], [20, 2, 20]):
        for max_evals in (1, 30):  # one Leiden run at resolution 1 leaves the counts to the fix-ups
            ids, info = leiden_each_class(adj, codes, classes, np.array(counts), max_evals=max_evals)
            found = [len(np.unique(ids[codes == c])) for c in range(3)]
            assert found == counts, (counts, max_evals, info)
            for c in range(3):  # ids 0..k-1 inside each class
                assert set(ids[codes == c]) == set(range(counts[c]))
    # the two dense blocks of class 0 are its two clusters
    ids, _ = leiden_each_class(adj, codes, classes, np.array([2, 1, 1]))
    assert len(set(ids[:10])) == 1 and len(set(ids[10:20])) == 1 and ids[0] != ids[10]
    # edgeless class asked for fewer clusters than cells: merged, and reported
    ids, info = leiden_each_class(adj, codes, classes, np.array([1, 3, 1]))
    assert info["fixed_up"] == ["b"] and len(np.unique(ids[codes == 1])) == 3


# ---------------------------------------------------------------- the bench passes the true counts on


def test_bench_known_counts(small):
    from falcon_sc.baselines import BaselineResult
    from falcon_sc.bench import run

    seen = []

    def record(adata, coarse_key, n_fine, *, batch_key, seed):
        seen.append(n_fine)
        coarse = adata.obs[coarse_key].astype(str).to_numpy()
        return BaselineResult(labels=np.array([f"{c}/1" for c in coarse]), relation={f"{c}/1": c for c in coarse})

    def total_only(adata, coarse_key, n_fine, *, batch_key, seed):
        check_n_fine(n_fine, 3, adata.n_obs)
        return record(adata, coarse_key, n_fine, batch_key=batch_key, seed=seed)

    methods = {"record": record, "total_only": total_only, "kmeans_within": "kmeans_within"}
    df = run({"small": small}, methods, seeds=1, progress=False, known_counts=True).set_index("method")
    assert seen == [{"C0": 1, "C1": 2, "C2": 3}]
    assert df.loc["kmeans_within", "error"] == "" and df.loc["kmeans_within", "n_fine_pred"] == 6
    assert df.loc["total_only", "error"].startswith("TypeError: n_fine must be an int")
    assert (df["n_fine_true"] == 6).all()
    # the default is unchanged: the total
    run({"small": small}, {"record": record}, seeds=1, progress=False)
    assert seen[-1] == 6


def test_bench_oracle_relation_with_known_counts(small, monkeypatch):
    import falcon_sc.tl
    from falcon_sc.bench import METHODS

    seen = {}

    def fake_refine(adata, coarse_key, n_fine, *, key_added="falcon", children_prior=None, **kw):
        seen.update(n_fine=n_fine, children_prior=children_prior)
        adata.obs[key_added] = pd.Categorical(adata.obs[coarse_key].astype(str) + "/1")
        classes = sorted(children_prior)
        adata.uns[key_added] = {
            "relations": pd.DataFrame(np.eye(3), index=[f"{c}/1" for c in classes], columns=classes)
        }

    monkeypatch.setattr(falcon_sc.tl, "refine", fake_refine, raising=False)
    counts = {"C0": 1, "C1": 2, "C2": 3}
    METHODS["falcon_oracle_relation"](small, "coarse", counts, batch_key=None, seed=0, fine_key="fine")
    assert seen == {"n_fine": 6, "children_prior": counts}


def test_cli_known_counts(small, tmp_path, capsys):
    from falcon_sc.bench.__main__ import main

    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    out = tmp_path / "out"
    argv = ["run", "--dataset", str(path), "--methods", "kmeans_within,erm", "--seeds", "1", "--out", str(out)]
    assert main([*argv, "--known-counts", "--no-plots", "--quiet"]) == 0  # some runs failed: still 0
    runs = pd.read_csv(out / "runs.csv").set_index("method")
    assert runs.loc["kmeans_within", "n_fine_pred"] == 6 and pd.isna(runs.loc["kmeans_within", "error"])
    assert "n_fine must be an int" in runs.loc["erm", "error"]
