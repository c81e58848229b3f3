"""``fal.tl.mixed_lineage``: a fine class of doublets of two coarse classes is flagged, clean classes are not."""

from __future__ import annotations

from importlib.util import find_spec

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import falcon_sc as fal
from falcon_sc._layout import write_labels

N_DOUBLETS = 60


@pytest.fixture(scope="module")
def doublets() -> ad.AnnData:
    """Simulated counts (2 fine classes under each of C0, C1, C2) plus C0+C1 doublets labelled C1, as fine class
    ``C1.doublet``; FALCON results written from the true labels (nothing is trained)."""
    base = fal.datasets.simulate(
        n_cells=600, n_genes=300, children=(2, 2, 2), fine_effect=2.0, fine_de_frac=0.05, imbalance=0.0,
        state_effect=0.0, random_state=0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    X = sparse.csr_matrix(base.X)
    a = rng.choice(np.flatnonzero(base.obs["coarse"] == "C0"), N_DOUBLETS)
    b = rng.choice(np.flatnonzero(base.obs["coarse"] == "C1"), N_DOUBLETS)
    fine = [*base.obs["fine"].astype(str), *["C1.doublet"] * N_DOUBLETS]
    coarse = [*base.obs["coarse"].astype(str), *["C1"] * N_DOUBLETS]
    obs = pd.DataFrame({"coarse": pd.Categorical(coarse), "fine": fine}, index=[f"c{i}" for i in range(len(fine))])
    adata = ad.AnnData(sparse.vstack([X, X[a] + X[b]]).tocsr(), obs=obs, var=pd.DataFrame(index=base.var_names))
    fine_names = sorted(set(fine))
    coarse_names = list(adata.obs["coarse"].cat.categories)
    relation = np.array([[f.split(".")[0] == c for c in coarse_names] for f in fine_names], dtype=int)
    probs = np.eye(len(fine_names))[pd.Categorical(fine, categories=fine_names).codes]
    codes = adata.obs["coarse"].cat.codes.to_numpy()
    write_labels(
        adata, "falcon", probs=probs, embedding=np.zeros((adata.n_obs, 2)), coarse=codes, relation=relation,
        fine_names=fine_names, coarse_names=coarse_names,
    )  # fmt: skip
    adata.uns["falcon"]["params"] = {"coarse_key": "coarse"}
    return adata


def test_doublet_class_is_flagged_and_clean_classes_are_not(doublets):
    table = fal.tl.mixed_lineage(doublets)
    assert table.index[table["mixed_lineage"]].tolist() == ["C1.doublet"]
    row = table.loc["C1.doublet"]
    assert row["parent"] == "C1" and row["other_coarse"] == "C0" and row["n_cells"] == N_DOUBLETS
    assert row["marker_overlap"] >= 0.5 and row["other_expressing"] > row["siblings_expressing"]
    clean = table.drop(index="C1.doublet")  # chance overlaps of up to 5 of 20 markers; their cells are not C0-like
    assert clean["marker_overlap"].max() <= 0.25 and clean["other_expressing"].max() < 0.3


def test_scrublet_scores_the_doublet_class_highest(doublets):
    table = fal.tl.mixed_lineage(doublets, doublets=True, doublet_threshold=0.2)
    assert table["doublet_score"].idxmax() == "C1.doublet"
    assert table["doublet_share"].idxmax() == "C1.doublet"
    assert table["doublet_score"].between(0, 1).all() and table["doublet_share"].between(0, 1).all()


def test_writes_only_the_documented_keys(doublets):
    adata = doublets.copy()
    before = adata.copy()
    fal.tl.mixed_lineage(adata, doublets=True)  # inplace=False: nothing written
    assert list(adata.obs.columns) == list(before.obs.columns) and adata.uns["falcon"]["fine_classes"].equals(
        before.uns["falcon"]["fine_classes"]
    )
    table = fal.tl.mixed_lineage(adata, doublets=True, inplace=True)
    assert set(adata.obs.columns) - set(before.obs.columns) == {"falcon_doublet_score", "falcon_predicted_doublet"}
    pd.testing.assert_frame_equal(adata.obs[before.obs.columns], before.obs)
    assert (adata.X != before.X).nnz == 0 and set(adata.uns) == set(before.uns) and not adata.layers
    fine_classes, old = adata.uns["falcon"]["fine_classes"], before.uns["falcon"]["fine_classes"]
    pd.testing.assert_frame_equal(fine_classes[old.columns], old)
    new = [c for c in table.columns if c not in ("parent", "n_cells")]
    assert list(fine_classes.columns) == [*old.columns, *new]
    pd.testing.assert_frame_equal(fine_classes[new], table[new])


def test_bad_input_names_the_argument_and_the_fix(doublets):
    with pytest.raises(KeyError, match=r"refine"):
        fal.tl.mixed_lineage(doublets, "other")
    with pytest.raises(KeyError, match=r"counts_layer='counts'.*adata.layers"):
        fal.tl.mixed_lineage(doublets, doublets=True, counts_layer="counts")
    with pytest.raises(ValueError, match=r"counts_layer.*doublets=True"):
        fal.tl.mixed_lineage(doublets, counts_layer="counts")
    with pytest.raises(ValueError, match=r"min_overlap"):
        fal.tl.mixed_lineage(doublets, min_overlap=2)
    with pytest.raises(ValueError, match=r"scrublet_kwargs.*random_state="):
        fal.tl.mixed_lineage(doublets, doublets=True, scrublet_kwargs={"random_state": 1})
    lognorm = doublets.copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    with pytest.raises(ValueError, match=r"raw UMI counts.*counts_layer="):
        fal.tl.mixed_lineage(lognorm, doublets=True)
    lognorm.layers["counts"] = doublets.X.copy()
    assert fal.tl.mixed_lineage(lognorm, doublets=True, counts_layer="counts")["doublet_score"].notna().all()


@pytest.mark.skipif(find_spec("skimage") is not None, reason="scikit-image installed: scrublet finds its threshold")
def test_automatic_threshold_without_scikit_image_is_a_clear_error(doublets):
    with pytest.raises(ValueError, match=r"doublet_threshold=None.*scikit-image"):
        fal.tl.mixed_lineage(doublets, doublets=True, doublet_threshold=None)


def test_single_coarse_class_is_refused(doublets):
    one = doublets[doublets.obs["coarse"] == "C0"].copy()
    with pytest.raises(ValueError, match=r"at least 2"):
        fal.tl.mixed_lineage(one)
