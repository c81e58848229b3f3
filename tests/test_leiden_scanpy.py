"""The standard scanpy pipeline baseline: preprocessing, restrict_to semantics, resolution search, inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from anndata import AnnData
from sklearn.metrics import adjusted_rand_score

from falcon_sc import metrics
from falcon_sc.baselines import BASELINES, leiden_scanpy
from falcon_sc.baselines.leiden_scanpy import scanpy_neighbors

from .conftest import N_FINE


@pytest.fixture(scope="module")
def result(sim):
    return leiden_scanpy(sim, "coarse", N_FINE, random_state=0)


def _same_partition(a, b) -> bool:
    table = pd.crosstab(np.asarray(a), np.asarray(b)).to_numpy() > 0
    return bool((table.sum(axis=0) == 1).all() and (table.sum(axis=1) == 1).all())


def test_registered() -> None:
    assert BASELINES["leiden_scanpy"] is leiden_scanpy


def test_recovers_simulation(sim, result) -> None:
    scores = metrics.evaluate(sim.obs["fine"], result.labels, coarse=sim.obs["coarse"])
    assert scores["ari"] > 0.9 and scores["within_coarse_ari"] > 0.9  # 1.0 on this simulation
    assert result.n_fine == result.info["n_clusters"] == N_FINE
    assert result.info["input_kind"] == "counts" and result.info["n_hvg"] == sim.n_vars
    coarse = sim.obs["coarse"].astype(str).to_numpy()
    assert set(result.relation) == set(result.labels)
    for fine, parent in result.relation.items():
        assert fine.startswith(parent + "/")
        assert set(coarse[result.labels == fine]) == {parent}


def test_deterministic(sim, result) -> None:
    again = leiden_scanpy(sim, "coarse", N_FINE, random_state=0)
    np.testing.assert_array_equal(again.labels, result.labels)
    assert again.info["resolution"] == result.info["resolution"]


def test_equals_chained_restrict_to(sim) -> None:
    """Same labels as ``sc.tl.leiden(restrict_to=(key, [c]))`` chained over the coarse classes (found resolution)."""
    n_fine = 11  # needs the resolution search
    res = leiden_scanpy(sim, "coarse", n_fine, random_state=2)
    assert res.info["n_evals"] > 1 and res.n_fine == res.info["n_clusters"]
    conn, _ = scanpy_neighbors(sim, random_state=2)
    coarse = pd.Categorical(sim.obs["coarse"].astype(str).to_numpy())
    ad = AnnData(obs=pd.DataFrame({"coarse": coarse}, index=sim.obs_names.astype(str)))
    ad.obsp["connectivities"] = conn
    ad.uns["neighbors"] = {"connectivities_key": "connectivities"}
    key = "coarse"
    for c in ad.obs["coarse"].cat.categories:
        sc.tl.leiden(
            ad,
            resolution=res.info["resolution"],
            restrict_to=(key, [c]),
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=2,
            key_added="chained",
        )
        key = "chained"
    assert _same_partition(ad.obs["chained"], res.labels)


def test_covariance_eigh_same_labels(sim, result) -> None:
    res = leiden_scanpy(sim, "coarse", N_FINE, random_state=0, svd_solver="covariance_eigh")
    assert adjusted_rand_score(res.labels, result.labels) > 0.99


def test_lognorm_input(sim, result) -> None:
    lognorm = sim.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    res = leiden_scanpy(lognorm, "coarse", N_FINE, random_state=0)
    assert res.info["input_kind"] != "counts"
    assert adjusted_rand_score(res.labels, result.labels) > 0.99


def test_input_unchanged_sparse(sim) -> None:
    adata = sim.copy()
    before = adata.copy()
    leiden_scanpy(adata, "coarse", N_FINE, random_state=0)
    assert (adata.X != before.X).nnz == 0 and adata.X.dtype == before.X.dtype
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    assert list(adata.obsm) == list(before.obsm) and list(adata.obsp) == list(before.obsp)
    assert list(adata.uns) == list(before.uns)


def test_batches(sim_batches) -> None:
    # HVGs per batch but no integration: here the batches fall apart in the kNN graph, and Leiden clusters are
    # connected, so the closest count reachable is above N_FINE
    res = leiden_scanpy(sim_batches, "coarse", N_FINE, batch_key="batch", random_state=0)
    assert res.info["n_clusters"] == res.n_fine >= N_FINE
    coarse = sim_batches.obs["coarse"].astype(str).to_numpy()
    assert all(set(coarse[res.labels == f]) == {p} for f, p in res.relation.items())


def test_bad_inputs(sim) -> None:
    with pytest.raises(KeyError, match="no_such_key"):
        leiden_scanpy(sim, "no_such_key", N_FINE)
    with pytest.raises(KeyError, match="no_batch"):
        leiden_scanpy(sim, "coarse", N_FINE, batch_key="no_batch")
    with pytest.raises(ValueError, match="n_fine"):
        leiden_scanpy(sim, "coarse", 2)
    with pytest.raises(ValueError, match="n_fine"):
        leiden_scanpy(sim, "coarse", sim.n_obs + 1)
