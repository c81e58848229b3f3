"""Several coarse schemes (``coarse_key=[...]``): one fine classifier, one relation per scheme, cells and images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import falcon_sc as fal
from falcon_sc.core.views import ViewConfig
from falcon_sc.metrics import evaluate

from ..conftest import FAST


@pytest.fixture(scope="module")
def crossed():
    """One coarse class, 4 weakly separated fine classes; scheme A groups them {0,1}/{2,3}, scheme B {0,2}/{1,3}.

    Either scheme alone leaves two look-alike classes in each group; together every label pair is one fine class.
    """
    adata = fal.datasets.simulate(
        n_cells=1500, n_genes=500, children=(4,), imbalance=0.0, fine_effect=0.5, fine_de_frac=0.02, random_state=0
    )
    fine = adata.obs["fine"].astype(str)
    cats = sorted(fine.unique())
    adata.obs["scheme_a"] = pd.Categorical(fine.map({f: f"A{i // 2}" for i, f in enumerate(cats)}))
    adata.obs["scheme_b"] = pd.Categorical(fine.map({f: f"B{i % 2}" for i, f in enumerate(cats)}))
    half = np.random.default_rng(0).random(adata.n_obs) < 0.5
    adata.obs["a_half"] = adata.obs["scheme_a"].astype(object).where(half, np.nan)
    adata.obs["b_half"] = adata.obs["scheme_b"].astype(object).where(~half, np.nan)
    return adata


def _ari(adata, out, key="falcon"):
    return evaluate(adata.obs["fine"].astype(str).to_numpy(), out.obs[key].astype(str).to_numpy())["ari"]


def test_two_schemes_recover_cells_better_than_either_alone(crossed):
    # measured: scheme A alone 0.42, B alone 0.58, together 1.00 (seeds 1-2 of the simulator: 0.57-0.86 vs 1.00)
    scores = {
        str(keys): _ari(crossed, fal.tl.refine(crossed, keys, 4, random_state=0, copy=True, **FAST))
        for keys in ("scheme_a", "scheme_b", ["scheme_a", "scheme_b"])
    }
    together = scores[str(["scheme_a", "scheme_b"])]
    assert together > 0.95
    assert together > max(scores["scheme_a"], scores["scheme_b"]) + 0.1


def test_two_schemes_recover_digits_better_than_either_alone():
    adata = fal.datasets.digits()
    truth = adata.obs["fine"].astype(str).to_numpy()
    options = dict(width=8, n_epochs=4, view=ViewConfig(scale=(0.5, 1.0), flip=0.0), show_progress=False, copy=True)
    acc = {}
    for keys in ("coarse", "coarse_parity", ["coarse", "coarse_parity"]):
        out = fal.tl.refine_images(adata, keys, 10, **options)
        acc[str(keys)] = evaluate(truth, out.obs["falcon"].astype(str).to_numpy())["accuracy"]
    together = acc[str(["coarse", "coarse_parity"])]
    # measured (8 epochs): shape 0.963, parity 0.830, both 0.991
    assert together > 0.97
    assert together > max(acc["coarse"], acc["coarse_parity"]) + 0.01
    assert "scheme_relations" in out.uns["falcon"]


def test_missing_labels_each_cell_under_its_observed_labels(crossed):
    out = fal.tl.refine(crossed, ["a_half", "b_half"], 4, random_state=0, copy=True, **FAST)
    uns = out.uns["falcon"]
    assert list(uns["scheme_relations"]) == ["a_half", "b_half"]
    for key, table in uns["scheme_relations"].items():
        assert (table.sum(axis=1) == 1).all()  # one parent per fine class in every scheme
        assert (table.sum(axis=0) >= 1).all()  # every coarse class has a child
        labelled = crossed.obs[key].notna().to_numpy()
        parents = table.idxmax(axis=1)
        got = parents.loc[out.obs["falcon"].astype(str)[labelled]].to_numpy()
        assert (got == crossed.obs[key][labelled].astype(str).to_numpy()).all()
    pd.testing.assert_frame_equal(uns["relations"], uns["scheme_relations"]["a_half"])
    # the halves share fine classes: it beats chance clearly (measured 0.51)
    assert _ari(crossed, out) > 0.3


def test_scheme_errors(crossed):
    bad = crossed.copy()
    bad.obs.loc[bad.obs_names[:3], ["a_half", "b_half"]] = np.nan
    with pytest.raises(ValueError, match="no label in any of the coarse schemes"):
        fal.tl.refine(bad, ["a_half", "b_half"], 4, **FAST)
    with pytest.raises(ValueError, match="names a column twice"):
        fal.tl.refine(crossed, ["scheme_a", "scheme_a"], 4, **FAST)
    with pytest.raises(KeyError, match="nope"):
        fal.tl.refine(crossed, ["scheme_a", "nope"], 4, **FAST)
    with pytest.raises(ValueError, match="children_prior as a mapping takes one coarse scheme"):
        fal.tl.refine(crossed, ["scheme_a", "scheme_b"], 4, children_prior={"A0": 2, "A1": 2}, **FAST)
    with pytest.raises(ValueError, match="n_fine=3 is below the 4 combinations"):
        fal.tl.refine(crossed, ["scheme_a", "scheme_b"], 3, **FAST)
    with pytest.raises(ValueError, match="missing labels"):  # one scheme: every cell needs its label
        fal.tl.refine(crossed, "a_half", 4, **FAST)


def test_multi_scheme_model_relations_name_the_first_scheme(crossed):
    """``model.relations`` of a several-scheme model is the first scheme's (save/load/predict: test_schemes_model)."""
    fast = {k: v for k, v in FAST.items() if k not in ("n_top_genes", "n_comps")}
    model = fal.FalconModel(crossed, ["scheme_a", "scheme_b"], n_top_genes=200, n_comps=20).fit(4, **fast)
    assert list(model.relations.columns) == ["A0", "A1"]
