"""``n_fine="auto"`` and known counts: estimated children per coarse class, evidence, plot, errors."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pytest

import falcon_sc as fal
from falcon_sc.core.n_fine import estimate_children, merge_curve
from falcon_sc.core.neighbors import within_class_neighbors

from ..conftest import CHILDREN_UNEVEN, FAST

matplotlib.use("Agg")


def test_estimate_children_on_separated_blobs():
    rng = np.random.default_rng(0)
    # group 0: three blobs in different directions (neighbours are found by cosine); group 1: one Gaussian blob.
    # 10 dimensions: the two halves of a Gaussian blob are connected at about 0.5 there (0.3, the threshold, in 5-D)
    centres = 10 * np.eye(10)
    X = np.vstack([rng.normal(centres[i], 0.5, (120, 10)) for i in range(3)] + [rng.normal(centres[3], 1.0, (200, 10))])
    groups = np.repeat([0, 1], [360, 200])
    nb = within_class_neighbors(X, groups, 20, random_state=0)
    est = estimate_children(nb, groups)
    assert est.counts.tolist() == [3, 1]
    assert set(est.evidence.columns) == {"group", "n_children", "seed", "connectivity"}
    # the evidence says why: at 3 clusters group 0's best merge is far below the threshold, above it at 4+
    curve = est.evidence[(est.evidence["group"] == 0) & (est.evidence["seed"] == 0)].set_index("n_children")
    assert curve.loc[3, "connectivity"] < est.threshold
    assert (curve.loc[curve.index > 3, "connectivity"] >= est.threshold).all()


def test_merge_curve_of_one_group_ignores_the_others():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    groups = np.repeat([0, 1], 150)
    nb = within_class_neighbors(X, groups, 15, random_state=0)
    labels = np.concatenate([np.arange(150) % 5, 5 + np.arange(150) % 4])
    both = merge_curve(labels, groups, nb)
    alone = merge_curve(labels[:150], groups[:150], nb[:150])
    assert both[0] == alone[0]
    assert sorted(both[1]) == [2, 3, 4]


@pytest.fixture(scope="module")
def auto(sim_uneven):
    return fal.tl.refine(sim_uneven, "coarse", "auto", copy=True, **FAST)


def test_auto_recovers_the_children_counts(sim_uneven, auto):
    table = auto.uns["falcon"]["n_fine_estimate"]
    assert table["estimated"].tolist() == list(CHILDREN_UNEVEN)  # C0 has a single subtype: one child
    assert not table["given"].any()
    assert auto.uns["falcon"]["relations"].sum(axis=0).tolist() == list(CHILDREN_UNEVEN)
    assert auto.uns["falcon"]["params"]["n_fine"] == sum(CHILDREN_UNEVEN)
    truth = sim_uneven.obs["fine"].astype(str).to_numpy()
    assert fal.metrics.evaluate(truth, auto.obs["falcon"].astype(str).to_numpy())["ari"] > 0.9


def test_auto_results_write_and_plot(auto, tmp_path):
    auto.write_h5ad(tmp_path / "auto.h5ad")
    back = ad.read_h5ad(tmp_path / "auto.h5ad")
    assert back.uns["falcon"]["n_fine_estimate"]["used"].tolist() == list(CHILDREN_UNEVEN)
    ax = fal.pl.n_fine(back, show=False, save=tmp_path / "n_fine.png")
    assert "6 fine classes" in ax.get_title()
    assert (tmp_path / "n_fine.png").exists()
    with pytest.raises(KeyError, match="n_fine_estimate"):
        fal.pl.n_fine(fal.tl.refine(back, "coarse", 6, copy=True, **FAST), show=False)


def test_known_counts_are_kept(sim_uneven):
    out = fal.tl.refine(sim_uneven, "coarse", {"C2": 4}, copy=True, **FAST)
    table = out.uns["falcon"]["n_fine_estimate"]
    assert table.loc["C2", "used"] == 4 and table.loc["C2", "given"]
    assert table.loc["C0", "used"] == 1
    assert out.uns["falcon"]["relations"]["C2"].sum() == 4  # pinned through every relation solve


@pytest.mark.parametrize(
    "n_fine, extra, match",
    [
        ({"C9": 2}, {}, "not coarse classes"),
        ({"C1": 0}, {}, "must be an int >= 1"),
        ({"C1": 2.5}, {}, "must be an int >= 1"),
        ("auto", {"children_prior": "size"}, "cannot be combined"),
    ],
)
def test_bad_n_fine(sim_uneven, n_fine, extra, match):
    with pytest.raises(TypeError, match="give an int, 'auto' or a mapping"):
        fal.tl.refine(sim_uneven, "coarse", "many", copy=True, **FAST)
    with pytest.raises(ValueError, match=match):
        fal.tl.refine(sim_uneven, "coarse", n_fine, copy=True, **FAST, **extra)
