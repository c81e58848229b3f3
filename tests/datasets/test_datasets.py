from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import falcon_sc as fal
import falcon_sc.datasets as D


def _check_labelled(adata, name=None):
    for key in ("coarse", "fine"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype)
        assert not adata.obs[key].isna().any()
    info = adata.uns["falcon_dataset"]
    assert set(info) >= {"name", "relation", "source"}
    if name is not None:
        assert info["name"] == name
    rel = fal.datasets.true_relation(adata)
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
    rel = fal.datasets.true_relation(adata)
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
    assert fal.datasets.true_relation(adata)["CD8 T"] == "T"


def test_zeisel():
    adata = D.zeisel()
    assert adata.shape == (1449, 1000)
    x = adata.X.data if sparse.issparse(adata.X) else np.asarray(adata.X)
    assert np.all(x == np.round(x)) and x.min() >= 0
    _check_labelled(adata, "zeisel")
    assert adata.obs["coarse"].nunique() == 3 and adata.obs["fine"].nunique() == 25


def _fine_per_coarse(adata) -> dict[str, int]:
    return adata.obs.groupby("coarse", observed=True)["fine"].nunique().to_dict()


def test_moncada():
    adata = D.moncada()
    assert adata.shape == (1926, 7000)
    assert sparse.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    x = adata.X.data
    assert np.all(x == np.round(x)) and x.min() >= 0  # raw counts
    _check_labelled(adata, "moncada")
    assert set(adata.uns) == {"falcon_dataset"}  # the converter's notes went into "source"
    assert "CARDspa" in adata.uns["falcon_dataset"]["source"]
    assert adata.obs["coarse"].nunique() == 10 and adata.obs["fine"].nunique() == 20
    assert _fine_per_coarse(adata) == {
        "Acinar": 1,
        "Cancer clone": 2,
        "Ductal": 4,
        "Endocrine": 1,
        "Endothelial": 1,
        "Fibroblast": 1,
        "Myeloid": 7,
        "RBC": 1,
        "T/NK": 1,
        "Tuft": 1,
    }
    rel = fal.datasets.true_relation(adata)
    assert rel["Cancer_clone_A"] == rel["Cancer_clone_B"] == "Cancer clone"
    assert rel["Ductal_MHC_Class_II"] == "Ductal" and rel["pDCs"] == "Myeloid" and rel["T_cells_&_NK_cells"] == "T/NK"
    sizes = adata.obs["fine"].value_counts()
    assert sizes["Ductal_CRISP3_high-centroacinar_like"] == 529 and sizes["Endocrine_cells"] == 3


def test_kang():
    adata = D.kang()
    assert adata.shape == (1556, 1267)
    assert sparse.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    x = adata.X.data
    assert np.all(x == np.round(x)) and x.min() >= 0  # raw UMI counts
    _check_labelled(adata, "kang")
    assert set(adata.uns) == {"falcon_dataset"}
    assert _fine_per_coarse(adata) == {"Lymphoid": 3, "Myeloid": 2}
    assert fal.datasets.true_relation(adata) == {
        "B cells": "Lymphoid",
        "CD14+ Monocytes": "Myeloid",
        "CD4 T cells": "Lymphoid",
        "CD8 T cells": "Lymphoid",
        "FCGR3A+ Monocytes": "Myeloid",
    }
    assert adata.obs["fine"].value_counts().to_dict() == {
        "CD14+ Monocytes": 400,
        "CD4 T cells": 400,
        "B cells": 298,
        "FCGR3A+ Monocytes": 249,
        "CD8 T cells": 209,
    }
    for key in ("group_id", "sample_id"):
        assert isinstance(adata.obs[key].dtype, pd.CategoricalDtype) and not adata.obs[key].isna().any()
    assert adata.obs["group_id"].value_counts().to_dict() == {"stim": 806, "ctrl": 750}
    assert set(adata.obs["sample_id"].cat.categories) == {"ctrl101", "ctrl107", "stim101", "stim107"}
    # a donor-condition sample holds one condition
    pairs = adata.obs[["sample_id", "group_id"]].astype(str).drop_duplicates()
    assert len(pairs) == 4 and all(s.startswith(g) for s, g in zip(pairs["sample_id"], pairs["group_id"], strict=True))


def test_real_datasets_in_the_bench():
    from falcon_sc.bench import DATASETS, DEFAULT_DATASETS

    kang = DATASETS["kang"].load()
    assert kang.n_fine == 5 and kang.spec.batch_key is None and "group_id" in kang.spec.description
    assert kang.relation["CD8 T cells"] == "Lymphoid"
    moncada = DATASETS["moncada"].load()
    assert moncada.n_fine == 20 and moncada.spec.batch_key is None
    assert moncada.relation["Monocytes"] == "Myeloid"
    assert not {"kang", "moncada"} & set(DEFAULT_DATASETS)


def test_packaged_files_inside_package():
    from importlib import resources

    data = resources.files("falcon_sc.datasets") / "data"
    for name in (
        "pbmc3k_seurat_labels.h5ad",
        "zeisel2015_cortex_l1_l2.h5ad",
        "moncada2020_pdac.h5ad",
        "kang2018_pbmc.h5ad",
    ):
        assert (data / name).is_file(), name


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
    rel = fal.datasets.true_relation(sim)
    assert rel == {"C0.f0": "C0", "C1.f0": "C1", "C1.f1": "C1", "C2.f0": "C2", "C2.f1": "C2", "C2.f2": "C2"}
    assert all(f.startswith(c + ".") for f, c in rel.items())
    assert "batch" not in sim.obs
    assert sim.obs["fine"].value_counts().min() >= 20


def test_simulate_h5ad_roundtrip(sim, tmp_path):
    import warnings

    import anndata as ad

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. anndata's FutureWarning on keys holding "/"
        sim.write_h5ad(tmp_path / "sim.h5ad")
    back = ad.read_h5ad(tmp_path / "sim.h5ad")
    assert fal.datasets.true_relation(back) == fal.datasets.true_relation(sim)
    assert (back.X != sim.X).nnz == 0


def test_simulate_reproducible(sim):
    same = D.simulate(**SMALL, random_state=3)
    assert (same.X != sim.X).nnz == 0
    assert same.obs["fine"].equals(sim.obs["fine"])
    other = D.simulate(**SMALL, random_state=4)
    assert (other.X != sim.X).nnz > 0


#: sha256 of the dense float32 counts and the fine codes of simulate(**kwargs), from the version before simulate was
#: split into steps (numpy's Generator streams are stable, so a fixed seed gives the same data in every version)
GOLDEN = [
    (
        {"n_cells": 300, "n_genes": 200, "children": (1, 2, 3), "random_state": 0},
        "9b8c7e65dff6b9b45d39fa9206bec995c686ddd38f13f70918e5c9f09fdac6f0",
    ),
    (
        {"n_cells": 2000, "n_genes": 100, "children": (2, 3), "n_batches": 3, "random_state": 5},
        "c0a3edd5a530ec99fc4a403d0dc2e6ba864469e44f57ab705194699481c15c3d",
    ),
    (
        {"n_cells": 4000, "n_genes": 50, "children": (1, 4, 3), "n_rare": 2, "size_sd": 0.5, "random_state": 1},
        "71d71ed95fe38fee8684d3ca7d762f2a6a4cb81ba1a22f5a1140c16dc75974e8",
    ),
]


@pytest.mark.parametrize(("kwargs", "digest"), GOLDEN, ids=["plain", "batches", "rare"])
def test_simulate_output_is_pinned_for_a_seed(kwargs, digest):
    import hashlib

    adata = D.simulate(**kwargs)
    h = hashlib.sha256(np.ascontiguousarray(adata.X.toarray(), dtype=np.float32).tobytes())
    h.update(adata.obs["fine"].cat.codes.to_numpy().astype(np.int64).tobytes())
    assert h.hexdigest() == digest


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
    assert ("batch" in adata.obs) == (D.PRESETS[name].get("n_batches", 1) > 1)
    assert len(adata.uns["falcon_dataset"]["rare"]) == D.PRESETS[name].get("n_rare", 0)
    with pytest.raises(ValueError, match="name"):
        D.simulate_preset("nope")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_cells": 100}, ValueError, "n_cells=100 is too small"),
        ({"n_cells": 10.5}, TypeError, "n_cells=10.5 must be an int"),
        ({"children": ()}, ValueError, r"children=\(\) must name at least one"),
        ({"children": (2, 0)}, ValueError, r"children\[1\]=0 must be an int >= 1"),
        ({"children": "12"}, TypeError, "children='12' must be a sequence of ints"),
        ({"fine_effect": -1.0}, ValueError, "fine_effect=-1.0 must be a finite number >= 0"),
        ({"coarse_effect": -0.1}, ValueError, "coarse_effect=-0.1"),
        ({"batch_effect": -0.1}, ValueError, "batch_effect=-0.1"),
        ({"batch_effect": True}, TypeError, "batch_effect=True must be a number"),
        ({"imbalance": -1}, ValueError, "imbalance=-1"),
        ({"n_batches": 0}, ValueError, "n_batches=0 must be an int >= 1"),
        ({"n_genes": 0}, ValueError, "n_genes=0 must be an int >= 10"),
        ({"fine_de_frac": 0.0}, ValueError, r"fine_de_frac=0.0 must be a finite number in \(0, 1\]"),
        ({"dispersion": 0.0}, ValueError, "dispersion=0.0 must be a finite number > 0"),
        ({"dropout": 1.0}, ValueError, r"dropout=1.0 must be a finite number in \[0, 1\)"),
        ({"library_size": -5}, ValueError, "library_size=-5"),
        ({"random_state": -1}, ValueError, "random_state=-1 must be an int >= 0"),
        ({"random_state": "x"}, TypeError, "random_state='x' must be an int"),
        ({"size_sd": -0.1}, ValueError, "size_sd=-0.1"),
        ({"size_sd": float("nan")}, ValueError, "size_sd=nan"),
        ({"rare_fraction": 0.0}, ValueError, "rare_fraction=0.0"),
        ({"rare_fraction": 0.6}, ValueError, "rare_fraction=0.6"),
        ({"rare_min_cells": 0}, ValueError, "rare_min_cells=0"),
        ({"n_rare": -1}, ValueError, "n_rare=-1"),
        ({"n_rare": 1.5}, TypeError, "n_rare=1.5"),
        ({"n_rare": 3}, ValueError, "n_rare=3 is too large"),  # only C1 and C2 have two or more children
        ({"rare_coarse": [0]}, ValueError, r"rare_coarse=\[0\] must name coarse classes with two or more"),  # 1 child
        ({"rare_coarse": [1, 1]}, ValueError, "repeated coarse classes"),
        ({"rare_coarse": [5]}, ValueError, r"rare_coarse=\[5\]"),
        ({"rare_coarse": "1"}, TypeError, "rare_coarse='1' must be a sequence"),
        ({"rare_coarse": [1], "n_rare": 2}, ValueError, "n_rare=2 disagrees with rare_coarse"),
        ({"n_cells": 130, "n_rare": 2}, ValueError, "n_cells=130 is too small"),  # 4 x 20 + 2 x 30 = 140 cells needed
    ],
)
def test_simulate_bad_arguments(kwargs, error, message):
    args = {**SMALL, **kwargs}
    with pytest.raises(error, match=message):
        D.simulate(**args)


def test_simulate_preset_bad_arguments():
    with pytest.raises(ValueError, match="name='Balanced' must be one of 'balanced'"):
        D.simulate_preset("Balanced")
    with pytest.raises(ValueError, match="n_cells=-5 must be an int >= 1"):
        D.simulate_preset("balanced", n_cells=-5)
    with pytest.raises(TypeError, match="random_state='x'"):
        D.simulate_preset("balanced", random_state="x")
    with pytest.raises(TypeError, match="'n_cell'"):  # misspelt override
        D.simulate_preset("balanced", n_cell=500)


# ---------------------------------------------------------------- log-normal sizes and rare subtypes

RARE = {"n_cells": 4000, "n_genes": 50, "children": (1, 4, 3), "n_rare": 2, "rare_fraction": 0.02}


def _shares(adata):
    fine = adata.obs["fine"].value_counts()
    coarse = adata.obs["coarse"].value_counts()
    rel = fal.datasets.true_relation(adata)
    return {f: (int(n), int(coarse[rel[f]])) for f, n in fine.items()}


def test_simulate_rare_subtypes():
    adata = D.simulate(**RARE, size_sd=0.5, random_state=1)
    _check_labelled(adata, "simulate")
    info = adata.uns["falcon_dataset"]
    assert info["rare"] == ["C1.f3", "C2.f2"]  # the last child of every coarse class with two or more children
    assert info["params"]["rare_coarse"] == [1, 2] and info["params"]["n_rare"] == 2
    shares = _shares(adata)
    for f in info["rare"]:
        n, n_c = shares[f]
        assert n == max(30, round(0.02 * n_c))  # the requested share, up to rounding, and the floor
        assert n >= 30 and abs(n / n_c - 0.02) <= 0.5 / n_c + 1e-12
    others = [n for f, (n, _) in shares.items() if f not in info["rare"]]
    assert min(others) > 3 * 30  # the other children are not rare


def test_simulate_rare_floor_and_explicit_coarse(tmp_path):
    import anndata as ad

    # C1 has ~1000 cells: 2% would be 20, the floor of 30 wins; rare_coarse picks the coarse class
    adata = D.simulate(n_cells=2000, n_genes=50, children=(2, 2), rare_coarse=[1], imbalance=0.0)
    assert adata.uns["falcon_dataset"]["rare"] == ["C1.f1"]
    n, n_c = _shares(adata)["C1.f1"]
    assert n == 30 and n_c > 900
    adata.write_h5ad(tmp_path / "rare.h5ad")
    assert list(ad.read_h5ad(tmp_path / "rare.h5ad").uns["falcon_dataset"]["rare"]) == ["C1.f1"]
    # rare_min_cells lowers the floor; n_rare picks the largest multi-child coarse class
    adata = D.simulate(n_cells=2000, n_genes=50, children=(2, 3), n_rare=1, rare_min_cells=5, imbalance=0.0)
    assert adata.uns["falcon_dataset"]["rare"] == ["C1.f2"]
    n, n_c = _shares(adata)["C1.f2"]
    assert n == round(0.02 * n_c)
    # without rare classes the list is empty
    assert list(D.simulate(**SMALL).uns["falcon_dataset"]["rare"]) == []


def test_simulate_size_sd_is_lognormal_within_coarse():
    kw = {"n_cells": 20000, "n_genes": 20, "children": (30, 30), "imbalance": 0.0, "min_cells_per_class": 1}
    flat = D.simulate(**kw)
    assert np.ptp(flat.obs["fine"].value_counts().to_numpy()) <= 1
    spread = D.simulate(**kw, size_sd=0.8, random_state=2)
    sizes = spread.obs["fine"].value_counts()
    coarse = spread.obs["coarse"].value_counts()
    # the coarse classes keep their size (up to rounding), the children spread log-normally inside them
    assert abs(coarse["C0"] - coarse["C1"]) <= 30
    for c in ("C0", "C1"):
        logs = np.log(sizes[sizes.index.str.startswith(c + ".")].to_numpy())
        assert 0.55 < logs.std(ddof=1) < 1.1
        centred = (logs - logs.mean()) / logs.std(ddof=1)
        assert abs(np.mean(centred**3)) < 1.2  # roughly symmetric on the log scale
    assert sizes.max() > 5 * sizes.min()


def test_simulate_rare_reproducible_and_programs_unchanged():
    a = D.simulate(**RARE, size_sd=0.5, random_state=4)
    b = D.simulate(**RARE, size_sd=0.5, random_state=4)
    assert (a.X != b.X).nnz == 0 and a.obs["fine"].equals(b.obs["fine"])
    # class sizes have their own random stream: the gene programs do not depend on them
    plain = D.simulate(**{k: v for k, v in RARE.items() if k not in ("n_rare", "rare_fraction")}, random_state=4)
    pd.testing.assert_frame_equal(a.var, plain.var)
    assert not a.obs["fine"].equals(plain.obs["fine"])


@pytest.mark.parametrize("name", ["rare", "rare_batches"])
def test_rare_presets_at_full_size(name):
    adata = D.simulate_preset(name, n_genes=20)
    preset = D.PRESETS[name]
    assert adata.n_obs == preset["n_cells"]
    rare = adata.uns["falcon_dataset"]["rare"]
    assert len(rare) == preset["n_rare"] == 3
    shares = _shares(adata)
    for f in rare:
        n, n_c = shares[f]
        assert 30 <= n <= 150 and 0.01 <= n / n_c <= 0.03
    assert ("batch" in adata.obs) == (name == "rare_batches")


def test_digits_two_schemes_over_the_same_fine_classes():
    adata = fal.datasets.digits()
    _check_labelled(adata, "digits")
    assert adata.shape == (1797, 64) and adata.X.max() == 16
    assert tuple(adata.uns["falcon_dataset"]["image_shape"]) == (1, 8, 8)
    rel = fal.datasets.true_relation(adata)
    assert rel["0"] == "loop" and rel["7"] == "stroke" and rel["5"] == "curve"
    parity = adata.obs[["fine", "coarse_parity"]].astype(str).drop_duplicates()
    assert len(parity) == 10 and all(int(f) % 2 == (p == "odd") for f, p in parity.itertuples(index=False))
    assert set(fal.datasets.DIGIT_SHAPES) == set(adata.obs["coarse"].cat.categories)
