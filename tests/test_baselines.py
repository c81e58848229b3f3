from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score

from falcon_sc.baselines import BASELINES, BaselineResult, allot_clusters, kmeans_within, leiden_within

# coarse class -> number of fine classes inside it
LAYOUT = {"A": 2, "B": 3, "C": 2}


def nested_blobs(seed: int = 0, n_genes: int = 120) -> AnnData:
    """Poisson counts: each coarse class lifts its own gene block, each fine class another one on top."""
    rng = np.random.default_rng(seed)
    X, coarse, fine = [], [], []
    fid = 0
    for c, (name, n_sub) in enumerate(LAYOUT.items()):
        for f in range(n_sub):
            mu = np.full(n_genes, 1.0)
            mu[c * 15 : (c + 1) * 15] = 20.0
            mu[50 + fid * 8 : 50 + (fid + 1) * 8] += 15.0
            n = int(rng.integers(50, 90))
            X.append(rng.poisson(mu, size=(n, n_genes)))
            coarse += [name] * n
            fine += [f"{name}{f}"] * n
            fid += 1
    obs = pd.DataFrame({"coarse": pd.Categorical(coarse), "fine": pd.Categorical(fine)})
    obs.index = [f"cell{i}" for i in range(len(obs))]
    adata = AnnData(X=np.vstack(X).astype(np.float32), obs=obs)
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    return adata


@pytest.fixture(scope="module")
def blobs() -> AnnData:
    return nested_blobs()


N_FINE = sum(LAYOUT.values())


def call(name: str, adata: AnnData, coarse_key: str, n_fine: int, **kwargs) -> BaselineResult:
    """Run a baseline; the supervised reference ``erm`` gets the true labels ``obs['fine']``."""
    if name == "erm":
        kwargs.setdefault("fine_key", "fine")
    return BASELINES[name](adata, coarse_key, n_fine, **kwargs)


#: GML's loss only asks each cell to be likely under its own coarse class: nothing keeps the cells of one class
#: apart, so its embedding loses the fine structure (tested separately below)
FINDS_FINE_CLASSES = sorted(set(BASELINES) - {"gml"})
NEURAL = ["scan_c", "sela", "ancor", "gml", "wcl", "erm"]
#: training steps where the test checks something other than what the training finds (the input left unchanged,
#: the same labels twice): every stage of the method runs, in a tenth of the default ~400 steps
FEW_STEPS = {"n_steps": 40}


def _check_result(res: BaselineResult, adata: AnnData, own_names: bool = True) -> None:
    assert isinstance(res, BaselineResult)
    assert res.labels.shape == (adata.n_obs,)
    assert res.n_fine == N_FINE
    # a relation consistent with the cells, names "<coarse>/<i>" for the unsupervised methods
    coarse = adata.obs["coarse"].astype(str).to_numpy()
    assert set(res.relation) == set(res.labels)
    for fine, parent in res.relation.items():
        assert fine.startswith(parent + "/") or not own_names
        assert set(coarse[res.labels == fine]) == {parent}


@pytest.mark.parametrize("name", FINDS_FINE_CLASSES)
def test_recovers_nested_blobs(blobs: AnnData, name: str) -> None:
    res = call(name, blobs, "coarse", N_FINE, random_state=0)
    _check_result(res, blobs, own_names=name != "erm")
    assert adjusted_rand_score(blobs.obs["fine"], res.labels) > 0.9


def test_gml_embedding_separates_coarse_classes(blobs: AnnData) -> None:
    res = BASELINES["gml"](blobs, "coarse", N_FINE, random_state=0)
    _check_result(res, blobs)
    coarse = blobs.obs["coarse"].astype(str).to_numpy()
    centroids = {c: res.embedding[coarse == c].mean(axis=0) for c in np.unique(coarse)}
    names = list(centroids)
    dist = np.stack([np.linalg.norm(res.embedding - centroids[c], axis=1) for c in names], axis=1)
    assert (np.array(names)[dist.argmin(axis=1)] == coarse).mean() > 0.98


@pytest.mark.parametrize("n_fine", [5, 10])
def test_leiden_within_hits_requested_count(blobs: AnnData, n_fine: int) -> None:
    res = leiden_within(blobs, "coarse", n_fine, random_state=1)
    assert res.n_fine == n_fine
    assert res.info["n_clusters"] == n_fine
    assert res.info["resolution"] > 0


def test_leiden_within_closest_achievable(blobs: AnnData) -> None:
    # a budget of one Leiden run rarely hits the target: the result reports the count it reached, and the labels
    # hold exactly that many classes
    res = leiden_within(blobs, "coarse", 4, random_state=1, max_evals=1)
    assert res.info["n_evals"] == 1
    assert res.info["n_clusters"] == res.n_fine == len(set(res.labels))


def test_kmeans_within_allotment(blobs: AnnData) -> None:
    res = kmeans_within(blobs, "coarse", 10)
    assert res.n_fine == 10
    assert sum(res.info["allotment"].values()) == 10
    assert all(k >= 1 for k in res.info["allotment"].values())


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_input_unchanged(name: str) -> None:
    adata = nested_blobs(seed=3)
    before = adata.copy()
    call(name, adata, "coarse", N_FINE, random_state=0, **(FEW_STEPS if name in NEURAL else {}))
    np.testing.assert_array_equal(adata.X, before.X)
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert list(adata.obsm) == list(before.obsm) == []
    assert list(adata.obsp) == [] and list(adata.layers) == [] and dict(adata.uns) == {}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_bad_coarse_key(blobs: AnnData, name: str) -> None:
    with pytest.raises((KeyError, ValueError), match="no_such_key"):
        call(name, blobs, "no_such_key", N_FINE)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_too_few_fine(blobs: AnnData, name: str) -> None:
    with pytest.raises(ValueError, match="n_fine"):
        call(name, blobs, "coarse", 2)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_not_an_anndata(blobs: AnnData, name: str) -> None:
    with pytest.raises(TypeError, match="adata must be an AnnData, got ndarray"):
        call(name, blobs.X, "coarse", N_FINE)


@pytest.mark.parametrize("name", ["leiden_within", "leiden_scanpy", "subcluster"])
def test_leiden_baselines_bad_batch_key_and_n_fine(blobs: AnnData, name: str) -> None:
    with pytest.raises(KeyError, match="batch_key.*'nope'"):
        call(name, blobs, "coarse", N_FINE, batch_key="nope")
    with pytest.raises(TypeError, match="n_fine must be an int"):
        call(name, blobs, "coarse", 7.0)
    with pytest.raises(ValueError, match="n_fine=10000 is larger than the number of cells"):
        call(name, blobs, "coarse", 10_000)


def test_allot_clusters_messages() -> None:
    with pytest.raises(ValueError, match="n_fine=1 must lie between 2 and 10"):
        allot_clusters([5, 5], 1)
    with pytest.raises(ValueError, match="sizes must be a non-empty list of positive counts"):
        allot_clusters([0, 3], 2)
    with pytest.raises(ValueError, match="sizes must be a non-empty list of positive counts"):
        allot_clusters([], 2)


def test_allot_clusters() -> None:
    np.testing.assert_array_equal(allot_clusters([50, 30, 20], 10), [5, 3, 2])
    np.testing.assert_array_equal(
        allot_clusters([55, 25, 20], 10), [6, 2, 2]
    )  # remainders .5, .5, 0: tie -> first class
    out = allot_clusters([1000, 2, 1], 6)  # at least 1 each, the tiny classes capped by their size
    assert out.sum() == 6 and out[2] == 1 and out[1] <= 2 and out[1] >= 1
    out = allot_clusters([1, 1, 10], 12)  # everything used
    np.testing.assert_array_equal(out, [1, 1, 10])
    np.testing.assert_array_equal(allot_clusters([5, 5, 5], 3), [1, 1, 1])
    with pytest.raises(ValueError):
        allot_clusters([5, 5], 1)
    with pytest.raises(ValueError):
        allot_clusters([1, 1], 3)


@pytest.mark.parametrize("name", NEURAL)
def test_neural_baselines_are_deterministic(blobs: AnnData, name: str) -> None:
    first = call(name, blobs, "coarse", N_FINE, random_state=3, accelerator="cpu", **FEW_STEPS)
    second = call(name, blobs, "coarse", N_FINE, random_state=3, accelerator="cpu", **FEW_STEPS)
    np.testing.assert_array_equal(first.labels, second.labels)


@pytest.mark.parametrize("name", NEURAL)
def test_neural_baselines_refuse_missing_gpu(blobs: AnnData, name: str, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises((RuntimeError, ValueError), match="cuda"):
        call(name, blobs, "coarse", N_FINE, accelerator="cuda")


def test_erm_needs_fine_key(blobs: AnnData) -> None:
    with pytest.raises(KeyError, match="fine_key 'nope'"):
        BASELINES["erm"](blobs, "coarse", N_FINE, fine_key="nope")


def test_sela_rejects_unknown_marginals(blobs: AnnData) -> None:
    with pytest.raises(ValueError, match="marginals"):
        BASELINES["sela"](blobs, "coarse", N_FINE, marginals="equal")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("scan_c", {"confidence": 1.5}, "confidence"),
        ("scan_c", {"self_label_fraction": 1.0}, "self_label_fraction"),
        ("sela", {"lam": 0.0}, "lam"),
        ("ancor", {"temperature": 0.0}, "temperature"),
        ("ancor", {"momentum": 1.0}, "momentum"),
        ("gml", {"queue_min": 0}, "queue_min"),
        ("wcl", {"weak_weight": -1.0}, "weak_weight"),
        ("wcl", {"dim": 0}, "dim"),
        ("scan_c", {"confidence": 1.0}, "confidence"),
        ("sela", {"n_label_updates": 0}, "n_label_updates"),
        ("gml", {"momentum": 1.0}, r"momentum=1.0 must be a finite number in \[0, 1\)"),
    ],
)
def test_neural_baselines_check_their_options(blobs: AnnData, name: str, kwargs: dict, match: str, monkeypatch) -> None:
    import falcon_sc.baselines._neural as neural

    def boom(*args, **kw):
        raise AssertionError("reached preprocessing: the option should have been refused first")

    monkeypatch.setattr(neural, "cell_features", boom)
    with pytest.raises(ValueError, match=match):
        call(name, blobs, "coarse", N_FINE, **kwargs)


@pytest.mark.parametrize("name", ["kmeans_within", "leiden_within", "subcluster", "leiden_scanpy"])
def test_n_fine_rule_and_names_match_refine(blobs: AnnData, name: str) -> None:
    fn = BASELINES[name]
    n_coarse = blobs.obs["coarse"].nunique()
    with pytest.raises(ValueError, match="nothing to refine"):
        fn(blobs, "coarse", n_coarse)
    with pytest.raises(TypeError, match="n_fine must be an int"):
        fn(blobs, "coarse", 4.0)
    res = fn(blobs, "coarse", np.int64(n_coarse + 1))
    # children numbered from 1 by decreasing size, as refine names them
    assert {name.rsplit("/", 1)[1] for name in res.labels} >= {"1"}
    assert "0" not in {name.rsplit("/", 1)[1] for name in res.labels}
