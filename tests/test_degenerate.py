"""Degenerate input is refused before any work, and no check modifies the user's data (issue 17).

Each degenerate class raises :class:`~falcon_sc.errors.DegenerateInputError` naming the key and what is wrong. The
preprocessing, the warm start and the training are replaced by functions that fail loudly, so an error raised after
them would show as an ``AssertionError`` instead.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

import falcon_sc as fal
from falcon_sc import _validate
from falcon_sc.errors import DegenerateInputError, FalconError
from falcon_sc.models import _falcon, _images, _pipeline
from falcon_sc.pp import _checks as pp_checks
from falcon_sc.tl import _refine_images

from .conftest import scanpy_log

#: settings that keep a run short
FAST = dict(n_epochs=1, batch_size=64, n_top_genes=40, n_comps=8, accelerator="cpu", show_progress=False)
#: what the stand-ins raise once every check before them has passed
REACHED = "reached the heavy work"


def _boom(*args, **kwargs):
    raise AssertionError(f"{REACHED}; the degenerate input should have been refused before")


@pytest.fixture(scope="module")
def tiny():
    """120 cells x 60 genes of counts (CSR), 3 coarse classes with 2 fine classes each."""
    return fal.datasets.simulate(n_cells=120, n_genes=60, children=(2, 2, 2), random_state=0)


@pytest.fixture
def no_preprocessing(monkeypatch):
    """The preprocessing (and everything after it) fails loudly."""
    monkeypatch.setattr(fal.pp.FeatureTransform, "fit", _boom)
    monkeypatch.setattr(_falcon, "fit_falcon", _boom)


@pytest.fixture
def no_training(monkeypatch):
    """The pipeline (neighbours, warm start, training) fails loudly; the preprocessing runs."""
    monkeypatch.setattr(_falcon, "fit_falcon", _boom)


@pytest.fixture
def no_warm_start(monkeypatch):
    """The warm start's clustering and the training fail loudly; the neighbour search and the prior run."""
    monkeypatch.setattr(_pipeline, "graph_clusters", _boom)
    monkeypatch.setattr(_pipeline, "train", _boom)


def _refused(adata, match, *args, **kwargs) -> DegenerateInputError:
    """``refine`` raises a DegenerateInputError matching ``match`` and leaves ``adata`` unchanged."""
    obs, X = adata.obs.copy(), adata.X.copy()
    with pytest.raises(DegenerateInputError, match=match) as info:
        fal.tl.refine(adata, *(args or ("coarse", 6)), **{**FAST, **kwargs})
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert (abs(adata.X - X)).sum() == 0 if sparse.issparse(X) else np.array_equal(adata.X, X)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FalconError)
    return info.value


def _with_X(adata, X) -> ad.AnnData:
    out = adata.copy()
    out.X = X
    return out


# ------------------------------------------------------------------------------------ the expression matrix


def test_all_zero_matrix_and_layer(tiny, no_preprocessing):
    _refused(_with_X(tiny, sparse.csr_matrix(tiny.shape, dtype=np.float32)), r"adata\.X is all zero \(120 cells")
    adata = tiny.copy()
    adata.layers["counts"] = np.zeros(tiny.shape, dtype=np.float32)
    _refused(adata, r"adata\.layers\['counts'\] is all zero", layer="counts")
    with pytest.raises(DegenerateInputError, match="is all zero"):  # the model's fit runs the same detector
        fal.FalconModel(adata, "coarse", layer="counts").fit(6)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_constant_matrix(tiny, no_preprocessing, fmt):
    row = np.arange(tiny.n_vars, dtype=np.float32)
    X = np.tile(row, (tiny.n_obs, 1))  # every gene constant across cells, genes differ
    X = {"dense": X, "csr": sparse.csr_matrix(X), "csc": sparse.csc_matrix(X)}[fmt]
    _refused(_with_X(tiny, X), "no gene of adata.X varies across the 120 cells")


def test_one_varying_gene(tiny, no_preprocessing):
    X = np.ones(tiny.shape, dtype=np.float32)
    X[::2, 5] = 3.0
    err = _refused(_with_X(tiny, sparse.csr_matrix(X)), "only 1 gene")
    assert repr(str(tiny.var_names[5])) in str(err)


def test_proportional_rows_refused_after_normalisation(tiny, no_training):
    """Rows proportional to each other vary as counts but are all equal once normalised: found by the pp step."""
    profile = np.arange(1, tiny.n_vars + 1, dtype=np.float32)
    X = np.outer(1 + np.arange(tiny.n_obs) % 4, profile)
    _refused(_with_X(tiny, X), r"after normalize_total\(1e4\) \+ log1p.*the rows are proportional")


def test_few_varying_genes_warn_and_cap_the_components(tiny, no_training):
    X = tiny.X.toarray()
    X[:, 4:] = 0.0  # 4 genes vary: 3 components at most
    with scanpy_log() as log, pytest.raises(AssertionError, match=REACHED):
        fal.tl.refine(_with_X(tiny, X), "coarse", 6, **FAST)
    assert "only 4 of the 60 genes of X vary across the cells" in log.getvalue()


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_constant_embedding(tiny, no_preprocessing, value):
    adata = tiny.copy()
    adata.obsm["X_emb"] = np.full((tiny.n_obs, 5), value, dtype=np.float32)
    what = "all zero" if value == 0 else "the same for every cell"
    _refused(adata, rf"use_rep='X_emb': adata\.obsm\['X_emb'\] is {what}", use_rep="X_emb")


# ------------------------------------------------------------------------------------ batches


def test_batch_per_cell_numeric_column(tiny, no_preprocessing):
    adata = tiny.copy()
    adata.obs["n_counts"] = np.asarray(tiny.X.sum(axis=1)).ravel() + np.arange(tiny.n_obs) * 1e-3
    _refused(adata, r"batch_key='n_counts' gives 120 batches for 120 cells.*numeric column", batch_key="n_counts")


def test_most_batches_tiny(tiny, no_preprocessing):
    adata = tiny.copy()
    batch = np.array(["big"] * tiny.n_obs, dtype=object)
    batch[:60] = [f"b{i // 2}" for i in range(60)]  # 30 batches of 2 cells and one of 60
    adata.obs["donor"] = batch
    _refused(
        adata, r"batch_key='donor' gives 31 batches for 120 cells, 30 of them with at most 2 cells", batch_key="donor"
    )


def test_single_batch_is_accepted_and_few_tiny_batches_warn(tiny, no_training):
    adata = tiny.copy()
    adata.obs["one"] = "all"
    with pytest.raises(AssertionError, match=REACHED):  # harmless: one batch is no batch
        fal.tl.refine(adata, "coarse", 6, batch_key="one", **FAST)
    adata.obs["donor"] = np.where(np.arange(tiny.n_obs) < 2, "stray", np.where(np.arange(tiny.n_obs) % 2, "d1", "d2"))
    with scanpy_log() as log, pytest.raises(AssertionError, match=REACHED):
        fal.tl.refine(adata, "coarse", 6, batch_key="donor", **FAST)
    assert "1 batch(es) hold at most 2 cells" in log.getvalue() and "stray (2)" in log.getvalue()


# ------------------------------------------------------------------------------------ coarse classes


def _with_tiny_class(adata, n_cells: int) -> ad.AnnData:
    out = adata.copy()
    coarse = out.obs["coarse"].astype(str).to_numpy().copy()
    coarse[:n_cells] = "tiny"
    out.obs["coarse"] = pd.Categorical(coarse)
    return out


def test_uniform_prior_with_a_small_class(tiny, no_preprocessing):
    """The issue's case: n_fine=60, children_prior='uniform' and a 3-cell class (failed deep after the warm start)."""
    err = _refused(_with_tiny_class(tiny, 3), "children_prior='uniform'", "coarse", 60, children_prior="uniform")
    assert "'tiny' has 3 cells for 15 fine classes" in str(err)


def test_children_mapping_beyond_a_class_size(tiny, no_preprocessing):
    adata = _with_tiny_class(tiny, 3)
    _refused(
        adata,
        "'tiny' has 3 cells for 4 fine classes",
        "coarse",
        9,
        children_prior={"tiny": 4, "C0": 2, "C1": 2, "C2": 1},
    )
    _refused(adata, r"n_fine\['tiny'\]=4 exceeds the 3 cells", "coarse", {"tiny": 4})


def test_prior_beyond_a_class_size_in_the_pipeline(no_warm_start):
    """Every prior's counts are checked in the pipeline before the warm start (cells and images share it)."""
    coarse = np.repeat([0, 1], [3, 40])
    space = np.random.default_rng(0).normal(size=(43, 4))
    with pytest.raises(DegenerateInputError, match="'small' has 3 cells for 5 fine classes"):
        _pipeline.warm_start(
            space, np.zeros((43, 2), dtype=np.int64), coarse, ["small", "big"], 10, "uniform", "kmeans", 0
        )


def test_one_cell_class_is_kept_whole_with_a_warning(tiny, no_warm_start):
    with scanpy_log() as log, pytest.raises(AssertionError, match=REACHED):
        fal.tl.refine(_with_tiny_class(tiny, 1), "coarse", 7, **FAST)
    assert "coarse classes of one cell are kept whole" in log.getvalue() and "tiny" in log.getvalue()


# ------------------------------------------------------------------------------------ images


@pytest.fixture
def no_image_work(monkeypatch):
    monkeypatch.setattr(_refine_images, "initial_features", _boom)
    monkeypatch.setattr(_refine_images, "fit_falcon", _boom)


@pytest.mark.parametrize("value", [0.0, 0.4])
def test_blank_or_identical_images(no_image_work, value):
    adata = ad.AnnData(X=np.full((30, 3 * 4 * 4), value, dtype=np.float32))
    adata.obs["coarse"] = pd.Categorical(np.arange(30) % 2)
    what = "blank" if value == 0 else "the same image"
    with pytest.raises(DegenerateInputError, match=f"the 30 images in adata.X are all {what}"):
        fal.tl.refine_images(adata, "coarse", 4, image_shape=(3, 4, 4), accelerator="cpu")


def test_images_more_fine_classes_than_images_or_than_a_class_holds(no_image_work, monkeypatch):
    adata = ad.AnnData(X=np.random.default_rng(0).random((12, 3 * 4 * 4), dtype=np.float32))
    adata.obs["coarse"] = pd.Categorical(np.where(np.arange(12) < 3, "tiny", "big"))
    with pytest.raises(DegenerateInputError, match=r"n_fine=13 exceeds the number of images \(12\)"):
        fal.tl.refine_images(adata, "coarse", 13, image_shape=(3, 4, 4), accelerator="cpu")
    monkeypatch.setattr(_refine_images, "initial_features", lambda images, *a: images.reshape(len(images), -1))
    monkeypatch.setattr(_pipeline, "graph_clusters", _boom)
    monkeypatch.setattr(_pipeline, "train", _boom)
    monkeypatch.setattr(_refine_images, "fit_falcon", _pipeline.fit_falcon)
    with pytest.raises(DegenerateInputError, match="'tiny' has 3 cells for 4 fine classes"):
        fal.tl.refine_images(adata, "coarse", 8, image_shape=(3, 4, 4), children_prior="uniform", accelerator="cpu")


def test_constant_image_features():
    with pytest.raises(DegenerateInputError, match="the initial features of the images are the same for every image"):
        _images.check_features_vary(np.ones((10, 3)), "the initial features of the images")
    _images.check_features_vary(np.eye(3), "features")


# ------------------------------------------------------------------------------------ keys of tl.coarse_conflicts


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"key": None}, TypeError, "key must be a str"),
        ({"key": ""}, ValueError, "not the empty string"),
        ({"coarse_key": ["coarse"]}, TypeError, r"coarse_key=\['coarse'\] must be the name of a column"),
        ({"coarse_key": ""}, ValueError, "coarse_key='' must be the name of a column"),
        ({"store": 1}, TypeError, "store=1 must be True or False"),
    ],
)
def test_coarse_conflicts_keys(tiny, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fal.tl.coarse_conflicts(tiny, **kwargs)


# ------------------------------------------------------------------------------------ no change of the user's data


def _messy_csr(X: sparse.csr_matrix, seed: int = 0) -> sparse.csr_matrix:
    """The same matrix with every value split into two entries (duplicates) and each row's entries shuffled."""
    coo = X.tocoo()
    half = np.floor(coo.data / 2)
    rows = np.r_[coo.row, coo.row]
    cols = np.r_[coo.col, coo.col]
    data = np.r_[half, coo.data - half].astype(X.dtype)
    order = np.lexsort((np.random.default_rng(seed).random(rows.size), rows))
    indptr = np.searchsorted(rows[order], np.arange(X.shape[0] + 1))
    out = sparse.csr_matrix((data[order], cols[order].astype(np.int32), indptr.astype(np.int32)), shape=X.shape)
    assert not out.has_canonical_format
    return out


@pytest.mark.parametrize("kind", ["counts", "lognorm"])
def test_messy_sparse_matrix_is_not_modified(tiny, kind):
    """Duplicate entries and unsorted indices: after refine, X is byte-identical (data, indices, indptr)."""
    X = tiny.X.astype(np.float32)
    if kind == "lognorm":  # log1p of normalised counts: the lognorm path takes the matrix's maximum
        X = sparse.csr_matrix(np.log1p(X.multiply(1e4 / np.asarray(X.sum(axis=1))).tocsr()), dtype=np.float32)
        X.data = np.round(X.data, 1)  # halves of lognorm values stay lognorm-like
    messy = _messy_csr(X)
    assert not messy.has_sorted_indices
    adata = _with_X(tiny, messy)
    before = [a.copy() for a in (messy.data, messy.indices, messy.indptr)]
    fal.tl.refine(adata, "coarse", 6, **FAST)
    after = (adata.X.data, adata.X.indices, adata.X.indptr)
    assert adata.X is messy
    for b, a in zip(before, after, strict=True):
        assert b.dtype == a.dtype and b.tobytes() == a.tobytes()


def test_max_does_not_sum_duplicates_in_place():
    messy = _messy_csr(sparse.csr_matrix(np.array([[4.0, 0.0, 6.0], [0.0, 9.0, 0.0]], dtype=np.float32)))
    data = messy.data.copy()
    assert pp_checks.matrix_max(messy) == 9.0
    assert messy.data.tobytes() == data.tobytes() and not messy.has_canonical_format


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 5),
    st.data(),
)
def test_varying_genes_matches_the_dense_reference(n_cells, n_genes, data):
    values = data.draw(
        st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.0]), min_size=n_cells * n_genes, max_size=n_cells * n_genes)
    )
    dense = np.array(values, dtype=np.float32).reshape(n_cells, n_genes)
    expected = (dense != dense[:1]).any(axis=0)
    for X in (dense, sparse.csr_matrix(dense), sparse.csc_matrix(dense), sparse.coo_matrix(dense)):
        varies, nonzero = pp_checks.varying_genes(X)
        np.testing.assert_array_equal(varies, expected)
        assert nonzero == bool(dense.any())
    if dense.any():  # duplicates: each value split in two entries, and explicit zeros stored
        messy = _messy_csr(sparse.csr_matrix(dense * 2))
        np.testing.assert_array_equal(pp_checks.varying_genes(messy)[0], expected)
        assert not messy.has_canonical_format


# ------------------------------------------------------------------------------------ real data is not refused


def test_pbmc68k_passes_the_detector(no_training):
    """The real pbmc68k passes every check and the preprocessing; only the stand-in for the pipeline stops it."""
    adata = fal.datasets.pbmc68k()
    keys = _validate.check_setup(adata, fal.models.SetupParams(coarse_key="coarse"))
    _validate.check_fit(adata, keys, 10, "uniform", "prior")
    _validate.check_data(adata, None, None)
    with pytest.raises(AssertionError, match=REACHED):
        fal.tl.refine(adata, "coarse", 10, **{**FAST, "n_top_genes": 2000, "n_comps": 50})
