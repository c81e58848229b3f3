from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

import falcon_sc as fal
from falcon_sc import pl


@pytest.fixture(scope="module")
def adata():
    data = fal.datasets.simulate(n_cells=600, n_genes=300, children=(1, 2, 3), random_state=0)
    fal.tl.refine(data, "coarse", 6, n_epochs=3, show_progress=False, random_state=0)
    return data


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _snapshot(adata):
    return (
        list(adata.obs.columns),
        sorted(adata.uns.keys()),
        sorted(adata.uns["falcon"].keys()),
        sorted(adata.obsm.keys()),
        adata.obs["falcon"].astype(str).tolist(),
    )


def test_relations_graph(adata):
    before = _snapshot(adata)
    ax = pl.relations(adata, show=False)
    assert isinstance(ax, Axes)
    rel = adata.uns["falcon"]["relations"]
    edges = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(edges) == 1 and len(edges[0].get_segments()) == int(rel.to_numpy().sum())
    # coarse nodes + fine nodes
    offsets = [len(c.get_offsets()) for c in ax.collections if not isinstance(c, LineCollection)]
    assert offsets == [rel.shape[1], rel.shape[0]]
    assert len(ax.texts) == rel.shape[0] + rel.shape[1]
    assert _snapshot(adata) == before


def test_relations_with_truth(adata, tmp_path):
    before = _snapshot(adata)
    fig = pl.relations(adata, true_key="fine", show=False, save=tmp_path / "rel")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    n_true = adata.obs["fine"].nunique()
    assert sum(isinstance(t.get_text(), str) for t in fig.axes[1].texts) == n_true + adata.obs["coarse"].nunique()
    assert (tmp_path / "rel.png").stat().st_size > 0
    assert _snapshot(adata) == before


def test_relations_heatmap(adata):
    fig = pl.relations(adata, true_key="fine", kind="heatmap", show=False)
    heat = [a for a in fig.axes if a.images]
    assert len(heat) == 2
    assert heat[0].images[0].get_array().shape == adata.uns["falcon"]["relations"].shape
    ax = pl.relations(adata, kind="heatmap", show=False)
    assert isinstance(ax, Axes) and len(ax.images) == 1


def test_relations_on_given_axes(adata):
    fig, axs = plt.subplots(1, 2)
    assert pl.relations(adata, true_key="fine", ax=axs, show=False) is fig
    with pytest.raises(ValueError, match="2 Axes"):
        pl.relations(adata, true_key="fine", ax=axs[0], show=False)


def test_history(adata, tmp_path):
    before = _snapshot(adata)
    fig = pl.history(adata, show=False, save=tmp_path / "hist.pdf")
    assert isinstance(fig, Figure)
    main = [a for a in fig.axes if a.get_title()]
    assert len(main) == 4
    n_epochs = len(adata.uns["falcon"]["history"])
    loss_ax = main[0]
    assert len(loss_ax.lines) == 5 and all(len(line.get_xdata()) == n_epochs for line in loss_ax.lines)
    assert (tmp_path / "hist.pdf").stat().st_size > 0
    fig = pl.history(adata, panels=["loss"], show=False)
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="unknown panels"):
        pl.history(adata, panels=["nope"], show=False)
    assert _snapshot(adata) == before


def test_confusion(adata, tmp_path):
    before = _snapshot(adata)
    ax = pl.confusion(adata, "fine", show=False, save=tmp_path / "conf.png")
    assert isinstance(ax, Axes)
    values = ax.images[0].get_array()
    n_true, n_pred = adata.obs["fine"].nunique(), adata.obs["falcon"].nunique()
    assert values.shape == (n_true, n_pred)
    np.testing.assert_allclose(np.asarray(values).sum(axis=1), 1.0, rtol=1e-6)
    # columns follow the Hungarian matching: matched pairs on the diagonal
    matching = fal.metrics.match_labels(adata.obs["fine"].astype(str), adata.obs["falcon"].astype(str))
    cols = [t.get_text() for t in ax.get_xticklabels()]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    for i, row in enumerate(rows[: min(n_true, n_pred)]):
        assert matching[cols[i]] == row
    assert (tmp_path / "conf.png").stat().st_size > 0
    counts = pl.confusion(adata, "fine", normalize=False, show=False).images[0].get_array()
    assert np.asarray(counts).sum() == adata.n_obs
    assert _snapshot(adata) == before


@pytest.mark.parametrize(
    "plot",
    [
        lambda a: pl.relations(a, key="other", show=False),
        lambda a: pl.history(a, key="other", show=False),
        lambda a: pl.confusion(a, "fine", key="other", show=False),
    ],
)
def test_missing_results(adata, plot):
    with pytest.raises(KeyError, match=r"'other'.*fal\.tl\.refine\(.*key_added='other'\) first"):
        plot(adata)


def test_missing_true_key(adata):
    with pytest.raises(KeyError, match="nope"):
        pl.confusion(adata, "nope", show=False)
    with pytest.raises(KeyError, match="nope"):
        pl.relations(adata, true_key="nope", show=False)
