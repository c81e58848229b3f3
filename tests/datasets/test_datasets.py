from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import falcon_sc.datasets as D


def _check_labelled(adata, name=None):
    for key in ("coarse", "fine"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype)
        assert not adata.obs[key].isna().any()
    info = adata.uns["falcon_dataset"]
    assert set(info) >= {"name", "relation", "source"}
    if name is not None:
        assert info["name"] == name
    rel = info["relation"]
    # every fine class has exactly one coarse parent, consistent with obs
    pairs = adata.obs[["fine", "coarse"]].astype(str).drop_duplicates()
    assert not pairs["fine"].duplicated().any()
    assert dict(zip(pairs["fine"], pairs["coarse"], strict=True)) == {f: rel[f] for f in pairs["fine"]}
    assert set(rel) == set(adata.obs["fine"].cat.categories)
    assert set(rel.values()) == set(adata.obs["coarse"].cat.categories)


# ---------------------------------------------------------------- real data (offline)


def test_pbmc68k():
    adata = D.pbmc68k()
    assert adata.shape == (700, 765)
    assert sparse.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    assert adata.X.min() >= 0  # log-normalised, not scaled
    assert "X_umap" in adata.obsm and "n_counts" in adata.obs
    _check_labelled(adata, "pbmc68k")
    rel = adata.uns["falcon_dataset"]["relation"]
    assert rel["CD14+ Monocyte"] == "myeloid" and rel["CD8+ Cytotoxic T"] == "T cell"
    assert adata.obs["coarse"].nunique() == 5 and adata.obs["fine"].nunique() == 10


def test_pbmc3k():
    adata = D.pbmc3k()
    assert adata.shape == (2638, 2000)
    assert "counts" in adata.layers
    counts = adata.layers["counts"]
    counts = counts.data if sparse.issparse(counts) else np.asarray(counts)
    assert np.all(counts == np.round(counts))
    _check_labelled(adata, "pbmc3k")
    assert adata.uns["falcon_dataset"]["relation"]["CD8 T"] == "T"


def test_zeisel():
    adata = D.zeisel()
    assert adata.shape == (1449, 1000)
    x = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X)
    assert np.all(x == np.round(x)) and x.min() >= 0
    _check_labelled(adata, "zeisel")
    assert adata.obs["coarse"].nunique() == 3 and adata.obs["fine"].nunique() == 25


def test_packaged_files_inside_package():
    from importlib import resources

    data = resources.files("falcon_sc.datasets") / "data"
    assert (data / "pbmc3k_seurat_labels.h5ad").is_file()
    assert (data / "zeisel2015_cortex_l1_l2.h5ad").is_file()


# ---------------------------------------------------------------- simulator

SMALL = {"n_cells": 600, "n_genes": 200, "children": (1, 2, 3)}


@pytest.fixture(scope="module")
def sim():
    return D.simulate(**SMALL, random_state=3)


def test_simulate_shapes_and_types(sim):
    assert sim.shape == (600, 200)
    assert sparse.isspmatrix_csr(sim.X) and sim.X.dtype == np.float32
    assert not sim.layers
    assert sim.X.data.min() > 0 and np.all(sim.X.data == np.round(sim.X.data))
    _check_labelled(sim, "simulate")
    rel = sim.uns["falcon_dataset"]["relation"]
    assert rel == {"C0.f0": "C0", "C1.f0": "C1", "C1.f1": "C1", "C2.f0": "C2", "C2.f1": "C2", "C2.f2": "C2"}
    assert all(f.startswith(c + ".") for f, c in rel.items())
    assert "batch" not in sim.obs
    assert sim.obs["fine"].value_counts().min() >= 20


def test_simulate_h5ad_roundtrip(sim, tmp_path):
    import anndata as ad

    sim.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    assert back.uns["falcon_dataset"]["relation"] == sim.uns["falcon_dataset"]["relation"]
    assert (back.X != sim.X).nnz == 0


def test_simulate_reproducible(sim):
    same = D.simulate(**SMALL, random_state=3)
    assert (same.X != sim.X).nnz == 0
    assert same.obs["fine"].equals(sim.obs["fine"])
    other = D.simulate(**SMALL, random_state=4)
    assert (other.X != sim.X).nnz > 0


def test_simulate_chunks_consistent():
    # more cells than one chunk: still deterministic and complete
    a = D.simulate(n_cells=5000, n_genes=50, children=(2, 2), random_state=1)
    b = D.simulate(n_cells=5000, n_genes=50, children=(2, 2), random_state=1)
    assert a.shape == (5000, 50) and (a.X != b.X).nnz == 0
    assert np.all(np.asarray(a.X.sum(axis=1)).ravel() > 0)


def test_simulate_batches():
    adata = D.simulate(**SMALL, n_batches=3, random_state=0)
    assert isinstance(adata.obs["batch"].dtype, pd.CategoricalDtype)
    assert set(adata.obs["batch"].cat.categories) == {"B0", "B1", "B2"}
    assert adata.obs["batch"].value_counts().min() > 100
    assert adata.var["batch_de"].any()


def test_simulate_imbalance():
    bal = D.simulate(**SMALL, imbalance=0.0)
    sizes = bal.obs["fine"].value_counts()
    assert sizes.max() - sizes.min() <= 1
    imb = D.simulate(**SMALL, imbalance=1.5)
    sizes = imb.obs["fine"].value_counts()
    assert sizes.max() >= 2 * sizes.min()
    assert sizes.min() >= 20


def test_simulate_fine_signal_is_subtle():
    # fine classes inside a coarse class differ less than coarse classes
    adata = D.simulate(n_cells=1500, n_genes=300, children=(2, 2), random_state=0)
    x = np.log1p(adata.X.toarray() / adata.X.sum(axis=1).A * 1e4)
    means = pd.DataFrame(x).groupby(adata.obs["fine"].to_numpy(), observed=True).mean()
    d = lambda a, b: np.linalg.norm(means.loc[a] - means.loc[b])  # noqa: E731
    assert d("C0.f0", "C0.f1") < d("C0.f0", "C1.f0")
    assert d("C0.f0", "C0.f1") > 0


@pytest.mark.parametrize("name", sorted(D.PRESETS))
def test_presets(name):
    adata = D.simulate_preset(name, n_cells=800, n_genes=200)
    _check_labelled(adata, f"simulate:{name}")
    assert ("batch" in adata.obs) == (name == "batches")
    with pytest.raises(ValueError, match="name"):
        D.simulate_preset("nope")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_cells": 100}, "n_cells"),
        ({"n_cells": 10.5}, "n_cells"),
        ({"children": ()}, "children"),
        ({"children": (2, 0)}, "children"),
        ({"children": "12"}, "children"),
        ({"fine_effect": -1.0}, "fine_effect"),
        ({"coarse_effect": -0.1}, "coarse_effect"),
        ({"batch_effect": -0.1}, "batch_effect"),
        ({"imbalance": -1}, "imbalance"),
        ({"n_batches": 0}, "n_batches"),
        ({"n_genes": 0}, "n_genes"),
        ({"fine_de_frac": 0.0}, "fine_de_frac"),
        ({"dispersion": 0.0}, "dispersion"),
        ({"dropout": 1.0}, "dropout"),
        ({"library_size": -5}, "library_size"),
        ({"random_state": -1}, "random_state"),
    ],
)
def test_simulate_bad_arguments(kwargs, name):
    args = {**SMALL, **kwargs}
    with pytest.raises(ValueError, match=name):
        D.simulate(**args)
