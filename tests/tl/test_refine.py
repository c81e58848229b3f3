"""End-to-end tests of ``fal.tl.refine`` on small simulated data with a known answer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from scipy import sparse

import falcon_sc as fal
import falcon_sc.models._pipeline as refine_module
from falcon_sc import metrics
from falcon_sc.pp import detect_input_kind

from ..conftest import CHILDREN, CHILDREN_UNEVEN, FAST, N_FINE, scanpy_log, simulate

OBS_KEYS = {"falcon", "falcon_confidence", "falcon_outside_parent", "falcon_warm_start", "falcon_neighbour_coarse"}
OBSM_KEYS = {"falcon_probs", "falcon_embedding"}
UNS_KEYS = {"params", "relations", "fine_classes", "history", "children_history", "partition_choice"}

# thresholds: on this data FALCON recovers the simulated classes (almost) perfectly (accuracy/ARI ~1.0); chance
# (random children inside each coarse class) gives accuracy ~0.5 and within-coarse ARI ~0
MIN_ACCURACY = 0.85
MIN_ARI = 0.8
MIN_WITHIN_ARI = 0.7


def _snapshot(adata):
    return SimpleNamespace(
        obs=adata.obs.copy(),
        X=adata.X.copy(),
        layers=set(adata.layers),
        obsm=set(adata.obsm),
        varm=set(adata.varm),
        uns=set(adata.uns),
        var=adata.var.copy(),
        shape=adata.shape,
    )


def _same_matrix(a, b) -> bool:
    if sparse.issparse(a) != sparse.issparse(b):
        return False
    if sparse.issparse(a):
        return a.shape == b.shape and (a != b).nnz == 0 and a.dtype == b.dtype
    return np.array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def refined(sim):
    """One ``copy=True`` run on a copy of the shared dataset, with the input's state before and after."""
    adata = sim.copy()
    before = _snapshot(adata)
    out = fal.tl.refine(adata, "coarse", N_FINE, copy=True, **FAST)
    return SimpleNamespace(input=adata, before=before, out=out)


@pytest.fixture(scope="module")
def refined_inplace(sim):
    """The same run as ``refined`` but ``copy=False``."""
    adata = sim.copy()
    before = _snapshot(adata)
    ret = fal.tl.refine(adata, "coarse", N_FINE, copy=False, **FAST)
    return SimpleNamespace(adata=adata, before=before, ret=ret)


def _check_valid_output(adata, coarse_key="coarse", key="falcon", n_fine=None):
    """Structural checks shared by every run: labels are children of the own coarse label, tables consistent."""
    labels = adata.obs[key]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert not labels.isna().any()
    rel = adata.uns[key]["relations"]
    if n_fine is not None:
        assert rel.shape[0] == n_fine
    coarse = adata.obs[coarse_key].astype(str).to_numpy()
    parent_of = {f: rel.columns[rel.loc[f].to_numpy().argmax()] for f in rel.index}
    lab = labels.astype(str).to_numpy()
    assert all(parent_of[f] == c for f, c in zip(lab, coarse, strict=True))
    assert all(f.rsplit("/", 1)[0] == c for f, c in zip(lab, coarse, strict=True))
    # relations: every fine class has exactly one parent, every coarse class at least one child
    assert set(np.unique(rel.to_numpy())) <= {0, 1}
    assert (rel.sum(axis=1) == 1).all()
    assert (rel.sum(axis=0) >= 1).all()
    assert sorted(map(str, rel.columns)) == sorted(map(str, pd.unique(adata.obs[coarse_key])))
    # names "<coarse>/<i>", i = 1..children of that coarse class
    for c in rel.columns:
        kids = sorted(rel.index[rel[c] == 1])
        assert kids == sorted(f"{c}/{i}" for i in range(1, len(kids) + 1))
    assert list(labels.cat.categories) == list(rel.index)
    probs = adata.obsm[f"{key}_probs"]
    assert probs.shape == (adata.n_obs, rel.shape[0])
    assert np.all(np.isfinite(probs)) and probs.min() >= 0
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    conf = adata.obs[f"{key}_confidence"].to_numpy()
    assert np.all((conf >= 0) & (conf <= 1 + 1e-6))
    assert adata.obs[f"{key}_outside_parent"].dtype == bool
    return lab


# ----------------------------------------------------------------------------------------------- end to end


def test_recovers_simulated_fine_classes(sim, refined):
    out = refined.out
    lab = _check_valid_output(out, n_fine=N_FINE)
    ev = metrics.evaluate(sim.obs["fine"], lab, sim.obs["coarse"])
    assert ev["accuracy"] > MIN_ACCURACY, ev
    assert ev["ari"] > MIN_ARI, ev
    assert ev["within_coarse_ari"] > MIN_WITHIN_ARI, ev
    # the learned relation has the simulated number of children per coarse class
    rel = out.uns["falcon"]["relations"]
    assert rel.sum(axis=0).loc[["C0", "C1", "C2"]].tolist() == list(CHILDREN)


def test_output_keys_exactly_as_documented(sim, refined):
    out = refined.out
    assert set(out.obs.columns) == set(sim.obs.columns) | OBS_KEYS
    assert set(out.obsm) == set(sim.obsm) | OBSM_KEYS
    assert set(out.uns) == set(sim.uns) | {"falcon"}
    assert set(out.uns["falcon"]) == UNS_KEYS
    assert out.obsm["falcon_embedding"].shape[0] == out.n_obs
    fc = out.uns["falcon"]["fine_classes"]
    rel = out.uns["falcon"]["relations"]
    assert list(fc.index) == list(rel.index)
    assert {"parent", "n_cells", "mean_confidence"} <= set(fc.columns)
    assert fc["n_cells"].sum() == out.n_obs
    counts = out.obs["falcon"].value_counts()
    assert all(fc.loc[f, "n_cells"] == counts.get(f, 0) for f in fc.index)
    assert all(rel.loc[f, fc.loc[f, "parent"]] == 1 for f in fc.index)
    # probabilities columns follow the relations index: the label is the argmax among the own children
    probs = out.obsm["falcon_probs"]
    restricted = probs * rel.to_numpy()[:, pd.Index(rel.columns).get_indexer(out.obs["coarse"].astype(str))].T
    assert np.array_equal(np.asarray(rel.index)[restricted.argmax(axis=1)], out.obs["falcon"].astype(str).to_numpy())
    params = out.uns["falcon"]["params"]
    assert params["coarse_key"] == "coarse" and params["n_fine"] == N_FINE
    assert params["n_epochs"] == FAST["n_epochs"]


def test_history(refined):
    hist = refined.out.uns["falcon"]["history"]
    assert isinstance(hist, pd.DataFrame)
    assert len(hist) == FAST["n_epochs"]
    assert {"loss", "fine_in_use"} <= set(hist.columns)
    assert np.all(np.isfinite(hist["loss"].to_numpy(dtype=float)))
    used = hist["fine_in_use"].to_numpy()
    assert np.all((used >= 1) & (used <= N_FINE))
    # collapse guard: with default losses every fine class is predicted by the end
    assert used[-1] == N_FINE
    ch = refined.out.uns["falcon"]["children_history"]
    assert ch.shape == (FAST["n_epochs"], len(CHILDREN))
    assert np.all(ch.sum(axis=1) == N_FINE) and np.all(ch >= 1)


# ----------------------------------------------------------------------------------------------- copy / in place


def test_copy_true_leaves_input_untouched(refined):
    a, before, out = refined.input, refined.before, refined.out
    assert out is not a
    pd.testing.assert_frame_equal(a.obs, before.obs)
    pd.testing.assert_frame_equal(a.var, before.var)
    assert _same_matrix(a.X, before.X)
    assert set(a.obsm) == before.obsm and set(a.uns) == before.uns and set(a.layers) == before.layers
    assert a.shape == before.shape
    assert "falcon" in out.obs and "falcon" not in a.obs
    # the copy's X is the input's X, unchanged
    assert _same_matrix(out.X, before.X)


def test_copy_false_adds_only_documented_keys(refined_inplace):
    a, before = refined_inplace.adata, refined_inplace.before
    assert refined_inplace.ret is None
    assert set(a.obs.columns) == set(before.obs.columns) | OBS_KEYS
    pd.testing.assert_frame_equal(a.obs[before.obs.columns], before.obs)
    pd.testing.assert_frame_equal(a.var, before.var)
    assert set(a.obsm) == before.obsm | OBSM_KEYS
    assert set(a.uns) == before.uns | {"falcon"}
    assert set(a.layers) == before.layers and set(a.varm) == before.varm
    assert _same_matrix(a.X, before.X)
    _check_valid_output(a, n_fine=N_FINE)


def test_deterministic_on_cpu(refined, refined_inplace):
    """Two runs with the same random_state (here one copy=True, one in place) give identical results."""
    a, b = refined.out, refined_inplace.adata
    assert a.obs["falcon"].astype(str).tolist() == b.obs["falcon"].astype(str).tolist()
    np.testing.assert_array_equal(a.obsm["falcon_probs"], b.obsm["falcon_probs"])
    pd.testing.assert_frame_equal(a.uns["falcon"]["relations"], b.uns["falcon"]["relations"])


# ----------------------------------------------------------------------------------------------- batches


def test_batch_key_tracks_fine_classes_not_batches(sim_batches):
    adata = sim_batches
    out = fal.tl.refine(adata, "coarse", N_FINE, batch_key="batch", copy=True, **FAST)
    lab = _check_valid_output(out, n_fine=N_FINE)
    ari_fine = metrics.within_coarse_ari(adata.obs["fine"], lab, adata.obs["coarse"])
    ari_batch = metrics.within_coarse_ari(adata.obs["batch"], lab, adata.obs["coarse"])
    # measured: ~1.0 and ~0.0
    assert ari_fine > MIN_WITHIN_ARI
    assert ari_batch < 0.15
    assert ari_fine - ari_batch > 0.5
    assert out.uns["falcon"]["params"]["batch_key"] == "batch"


# ----------------------------------------------------------------------------------------------- other input paths


def test_small_coarse_classes_warn_and_work(sim):
    adata = sim[:400].copy()
    coarse = adata.obs["coarse"].astype(str).to_numpy().copy()
    coarse[:8] = "tiny"  # fewer cells than n_neighbors
    coarse[8] = "single"  # one cell: its own neighbour
    adata.obs["coarse"] = pd.Categorical(coarse)
    with scanpy_log() as log:
        fal.tl.refine(adata, "coarse", N_FINE + 2, n_neighbors=10, **{**FAST, "n_epochs": 5})
    assert "tiny" in log.getvalue() and "single" in log.getvalue()
    _check_valid_output(adata, n_fine=N_FINE + 2)
    assert adata.obs["falcon"].iloc[8] == "single/1"
    assert set(adata.obs["falcon"].iloc[:8].astype(str)) <= {f"tiny/{i}" for i in range(1, 9)}


def test_use_rep(sim):
    adata = sim.copy()
    adata.obsm["X_emb"] = fal.pp.prepare(adata, n_top_genes=200, n_comps=20).embedding
    called = {}
    from falcon_sc.pp import _transform as _features

    original = _features.prepare

    def spy(*args, **kwargs):
        called["prepare"] = True
        return original(*args, **kwargs)

    _features.prepare = spy
    try:
        fal.tl.refine(adata, "coarse", N_FINE, use_rep="X_emb", **FAST)
    finally:
        _features.prepare = original
    assert "prepare" not in called  # the embedding is used as is
    lab = _check_valid_output(adata, n_fine=N_FINE)
    assert metrics.within_coarse_ari(adata.obs["fine"], lab, adata.obs["coarse"]) > MIN_WITHIN_ARI
    assert adata.uns["falcon"]["params"]["use_rep"] == "X_emb"


def test_hvg_input_on_sparse_stays_sparse(sim, monkeypatch):
    adata = sim.copy()
    assert sparse.issparse(adata.X)
    seen = {}
    original = refine_module.train_falcon

    def spy(model, X, *args, **kwargs):
        seen["sparse"] = sparse.issparse(X)
        seen["shape"] = X.shape
        return original(model, X, *args, **kwargs)

    monkeypatch.setattr(refine_module, "train_falcon", spy)
    fal.tl.refine(adata, "coarse", N_FINE, model_input="hvg", **{**FAST, "n_epochs": 5})
    assert seen["sparse"], "model_input='hvg' densified the sparse expression matrix before training"
    assert seen["shape"] == (adata.n_obs, FAST["n_top_genes"])
    _check_valid_output(adata, n_fine=N_FINE)
    assert sparse.issparse(adata.X)


def test_layer_and_lognorm_input(sim):
    """Log-normalised values in a layer are detected and used as they are."""
    adata = sim[:400].copy()
    tmp = adata.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    adata.layers["lognorm"] = tmp.X
    fal.tl.refine(adata, "coarse", N_FINE, layer="lognorm", **{**FAST, "n_epochs": 5})
    _check_valid_output(adata, n_fine=N_FINE)


def test_children_prior_auto_finds_uneven_hierarchy(sim_uneven):
    """On clear data the greedy k-means prior and the learned relation recover 1, 2 and 3 children."""
    adata = sim_uneven
    out = fal.tl.refine(adata, "coarse", sum(CHILDREN_UNEVEN), children_prior="auto", copy=True, **FAST)
    lab = _check_valid_output(out, n_fine=sum(CHILDREN_UNEVEN))
    np.testing.assert_allclose(out.uns["falcon"]["params"]["children_prior_counts"], CHILDREN_UNEVEN)
    assert out.uns["falcon"]["relations"].sum(axis=0).loc[["C0", "C1", "C2"]].tolist() == list(CHILDREN_UNEVEN)
    ev = metrics.evaluate(adata.obs["fine"], lab, adata.obs["coarse"])
    assert ev["accuracy"] > MIN_ACCURACY and ev["within_coarse_ari"] > MIN_WITHIN_ARI, ev
    # a coarse class with a single child: all its cells get "<coarse>/1"
    assert set(out.obs.loc[adata.obs["coarse"] == "C0", "falcon"].astype(str)) == {"C0/1"}


def test_children_prior_variance_is_measured_in_the_global_components(sim_uneven, monkeypatch):
    """'variance' hands out children by k-means inertia in the global PCs shared by all classes, not in the neighbour
    space, whose unit-length within-class components make every class look equally spread."""
    from falcon_sc.pp import prepare

    seen = {}
    real_prior = refine_module.size_prior

    def spy(groups, total, *, method, X=None, random_state=0):
        seen["X"] = X
        return real_prior(groups, total, method=method, X=X, random_state=random_state)

    monkeypatch.setattr(refine_module, "size_prior", spy)
    adata = sim_uneven
    out = fal.tl.refine(adata, "coarse", sum(CHILDREN_UNEVEN), children_prior="variance", copy=True, **FAST)
    embedding = prepare(adata, n_top_genes=FAST["n_top_genes"], n_comps=FAST["n_comps"]).embedding
    np.testing.assert_allclose(seen["X"], embedding, rtol=1e-5, atol=1e-5)
    assert out.uns["falcon"]["params"]["children_prior_counts"].tolist() == list(CHILDREN_UNEVEN)


def test_init_kmeans_clusters_the_global_components(sim_uneven, monkeypatch):
    """init='kmeans' runs k-means (10 restarts, as the kmeans_within baseline) in the global PCs, not in the neighbour
    space; on these clear classes the warm start then recovers the fine labels."""
    from falcon_sc.pp import prepare

    seen = {}
    real_kmeans = refine_module.kmeans_within_relation

    def spy(X, groups, relation, random_state=0, *, n_init=3):
        seen.update(X=X, n_init=n_init)
        return real_kmeans(X, groups, relation, random_state, n_init=n_init)

    monkeypatch.setattr(refine_module, "kmeans_within_relation", spy)
    adata = sim_uneven
    out = fal.tl.refine(adata, "coarse", sum(CHILDREN_UNEVEN), init="kmeans", copy=True, **FAST)
    embedding = prepare(adata, n_top_genes=FAST["n_top_genes"], n_comps=FAST["n_comps"]).embedding
    np.testing.assert_allclose(seen["X"], embedding, rtol=1e-5, atol=1e-5)
    assert seen["n_init"] == 10
    ev = metrics.evaluate(adata.obs["fine"], out.obs["falcon_warm_start"], adata.obs["coarse"])
    assert ev["within_coarse_ari"] > MIN_WITHIN_ARI, ev


def test_custom_key_added_and_children_prior_mapping(sim_uneven):
    adata = sim_uneven[:400].copy()
    prior = {"C0": 1, "C1": 2, "C2": 3}
    fal.tl.refine(adata, "coarse", 6, key_added="sub", children_prior=prior, **{**FAST, "n_epochs": 5})
    assert "falcon" not in adata.obs and "sub" in adata.obs
    assert {"sub_confidence", "sub_outside_parent"} <= set(adata.obs.columns)
    assert {"sub_probs", "sub_embedding"} <= set(adata.obsm)
    _check_valid_output(adata, key="sub", n_fine=6)
    np.testing.assert_allclose(adata.uns["sub"]["params"]["children_prior_counts"], [1, 2, 3])


# ----------------------------------------------------------------------------------------------- errors


@pytest.fixture
def no_training(monkeypatch):
    """Make any heavy step fail loudly: argument errors must come first."""

    def boom(*args, **kwargs):
        raise AssertionError("reached training; the argument error should have been raised before")

    monkeypatch.setattr(refine_module, "train_falcon", boom)
    return boom


@pytest.fixture
def no_prepare(no_training, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("reached preprocessing; the argument error should have been raised before")

    monkeypatch.setattr(fal.pp.FeatureTransform, "fit", boom)
    monkeypatch.setattr(refine_module, "within_class_neighbors", boom)


@pytest.fixture(scope="module")
def small(sim):
    return sim[:200].copy()


def test_missing_coarse_key(small, no_prepare):
    with pytest.raises(KeyError, match="not_a_column"):
        fal.tl.refine(small, "not_a_column", N_FINE)


@pytest.mark.parametrize("n_fine", [1, 2, 3])
def test_n_fine_not_above_n_coarse(small, no_prepare, n_fine):
    with pytest.raises(ValueError, match="n_fine"):
        fal.tl.refine(small, "coarse", n_fine)


@pytest.mark.parametrize(
    "kwargs",
    [{"layer": "nope"}, {"use_rep": "X_nope"}, {"batch_key": "nope"}],
    ids=["layer", "use_rep", "batch_key"],
)
def test_bad_keys(small, no_prepare, kwargs):
    with pytest.raises(KeyError, match="nope"):
        fal.tl.refine(small, "coarse", N_FINE, **kwargs)


def test_cuda_without_gpu(small, no_prepare):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(ValueError, match="cuda"):
        fal.tl.refine(small, "coarse", N_FINE, accelerator="cuda")


@pytest.mark.parametrize(
    "prior",
    [
        {"C0": 1, "C1": 2},  # missing a coarse class
        {"C0": 1, "C1": 2, "C2": 4},  # wrong sum
        {"C0": 0, "C1": 3, "C2": 3},  # a class without children
        "bogus",
    ],
    ids=["missing", "sum", "zero", "string"],
)
def test_bad_children_prior(small, no_prepare, prior):
    with pytest.raises(ValueError, match="children_prior"):
        fal.tl.refine(small, "coarse", N_FINE, children_prior=prior)


def test_scaled_input(small, no_training):
    adata = small.copy()
    adata.X = np.asarray(adata.X.todense()) - 1.0
    with pytest.raises(ValueError, match="negative"):
        fal.tl.refine(adata, "coarse", N_FINE)


def test_nan_coarse_labels(small, no_prepare):
    adata = small.copy()
    coarse = adata.obs["coarse"].astype(object).to_numpy().copy()
    coarse[:3] = np.nan
    adata.obs["coarse"] = pd.Categorical(coarse)
    with pytest.raises(ValueError, match="missing"):
        fal.tl.refine(adata, "coarse", N_FINE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_input": "genes"},
        {"regulariser": "none"},
        {"optimizer": "lbfgs"},
        {"key_added": "coarse"},
        {"n_neighbors": 0},
        {"accelerator": "tpu"},
        {"init": "bogus"},
        {"model_input": "hvg", "use_rep": "X_rep"},
    ],
    ids=["model_input", "regulariser", "optimizer", "key_added", "n_neighbors", "accelerator", "init", "hvg+use_rep"],
)
def test_other_bad_arguments(small, no_prepare, kwargs):
    adata = small.copy()
    adata.obsm["X_rep"] = np.zeros((adata.n_obs, 3), dtype=np.float32)
    with pytest.raises(ValueError):
        fal.tl.refine(adata, "coarse", N_FINE, **kwargs)


@pytest.mark.parametrize("n_fine", [6.0, "6", True])
def test_n_fine_type(small, no_prepare, n_fine):
    with pytest.raises(TypeError):
        fal.tl.refine(small, "coarse", n_fine)


def test_n_fine_above_n_cells(small, no_prepare):
    with pytest.raises(ValueError, match="n_fine"):
        fal.tl.refine(small, "coarse", small.n_obs + 1)


def test_children_prior_mapping_with_non_string_labels(small):
    adata = small.copy()
    adata.obs["c_int"] = adata.obs["coarse"].cat.codes.astype(int)
    fal.tl.refine(adata, "c_int", N_FINE, children_prior={0: 1, 1: 2, 2: 3}, **{**FAST, "n_epochs": 2})
    np.testing.assert_allclose(adata.uns["falcon"]["params"]["children_prior_counts"], [1, 2, 3])


def test_not_anndata(no_prepare):
    with pytest.raises(TypeError):
        fal.tl.refine(np.zeros((10, 5)), "coarse", N_FINE)


def test_errors_leave_input_untouched(small, no_prepare):
    adata = small.copy()
    before = _snapshot(adata)
    with pytest.raises(KeyError):
        fal.tl.refine(adata, "coarse", N_FINE, batch_key="nope")
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    assert set(adata.uns) == before.uns and set(adata.obsm) == before.obsm


# ----------------------------------------------------------------------------------------------- input detection


def _counts(seed=0, shape=(50, 30)):
    return np.random.default_rng(seed).poisson(2.0, size=shape).astype(np.float32)


def _lognorm(X):
    X = np.asarray(X, dtype=np.float64)
    return np.log1p(X / np.maximum(X.sum(axis=1, keepdims=True), 1) * 1e4)


@pytest.mark.parametrize("fmt", [np.asarray, sparse.csr_matrix, sparse.csc_matrix], ids=["dense", "csr", "csc"])
def test_detect_input_kind(fmt):
    X = _counts()
    assert detect_input_kind(fmt(X)) == "counts"
    assert detect_input_kind(fmt(_lognorm(X))) == "lognorm"
    # integer-valued floats and ints both count as counts
    assert detect_input_kind(fmt(X.astype(np.int64))) == "counts"


def test_detect_input_kind_probe_subset():
    X = _counts(shape=(300, 20))
    assert detect_input_kind(X, n_probe=10) == "counts"
    assert detect_input_kind(_lognorm(X), n_probe=10) == "lognorm"


def test_detect_input_kind_all_zero_is_counts():
    assert detect_input_kind(sparse.csr_matrix((20, 10), dtype=np.float32)) == "counts"


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
@pytest.mark.parametrize("fmt", [np.asarray, sparse.csr_matrix], ids=["dense", "csr"])
def test_detect_input_kind_rejects(bad, fmt):
    X = _lognorm(_counts())
    X[3, 4] = bad
    with pytest.raises(ValueError):
        detect_input_kind(fmt(X))


def test_scaled_matrix_rejected_by_detection():
    X = _lognorm(_counts())
    Z = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    with pytest.raises(ValueError, match="negative"):
        detect_input_kind(Z)


def test_warm_start_labels_written_and_nested(sim, refined):
    out = refined.out
    warm = out.obs["falcon_warm_start"].astype(str)
    # every warm-start label sits under the cell's own coarse class, and on this easy data it is already right
    assert (warm.str.split("/").str[0] == out.obs["coarse"].astype(str)).all()
    assert metrics.ari(sim.obs["fine"], warm) > MIN_ARI


def test_rare_subtype_survives_training():
    # one coarse class of 600 + 40 cells with a distinct rare subtype: the warm start isolates it, training keeps it
    ad = simulate(n_cells=2000, children=(2, 1), imbalance=0.0, n_rare=1, rare_fraction=0.06, rare_min_cells=40)
    counts = ad.obs["fine"].value_counts()
    rare = ad.uns["falcon_dataset"]["rare"][0]
    assert 35 <= counts[rare] <= 80
    fal.tl.refine(ad, "coarse", 3, **FAST)
    recall = metrics.per_class_recall(ad.obs["fine"], ad.obs["falcon"], ad.obs["coarse"]).set_index("true_class")
    assert recall.loc[rare, "recall"] > 0.8


@pytest.mark.parametrize("guard", [True, False])
def test_guard_keeps_the_warm_start_where_training_went_wrong(sim, monkeypatch, guard):
    # training that scrambles its predictions inside coarse class C0: the guard must fall back to the
    # warm-fitted network there (and only there); without the guard the scrambled labels are written
    real = refine_module.train_falcon

    def scrambled_in_c0(model, X, coarse, *args, **kwargs):
        result = real(model, X, coarse, *args, **kwargs)
        rows = np.flatnonzero(coarse == 0)
        result.probs[rows] = np.random.default_rng(0).permuted(result.probs[rows], axis=0)
        return result

    monkeypatch.setattr(refine_module, "train_falcon", scrambled_in_c0)
    out = fal.tl.refine(sim, "coarse", N_FINE, copy=True, guard_warm_start=guard, **FAST)
    in_c0 = (out.obs["coarse"] == "C0").to_numpy()
    within = metrics.ari(sim.obs["fine"][in_c0], out.obs["falcon"][in_c0])
    assert out.uns["falcon"]["params"]["guard_warm_start"] is guard
    if guard:
        choice = out.uns["falcon"]["partition_choice"]
        assert choice.loc["C0", "kept"] == "warm start"
        assert choice.loc["C0", "silhouette_warm_start"] > choice.loc["C0", "silhouette_trained"]
        assert (choice.drop(index="C0")["kept"] == "trained").all()
        assert within > MIN_WITHIN_ARI
    else:
        assert "partition_choice" not in out.uns["falcon"]
        assert within < 0.2
