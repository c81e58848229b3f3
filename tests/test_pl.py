from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
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
    main = [a for a in fig.axes if a.get_title("left")]
    assert [a.get_title("left").split("\n")[0] for a in main] == [
        "Did training settle?",
        "Did the classes stabilise?",
        "Was the relation revised?",
    ]
    n_epochs = len(adata.uns["falcon"]["history"])
    assert len(main[0].lines) == 1 and len(main[0].lines[0].get_xdata()) == n_epochs
    assert (tmp_path / "hist.pdf").stat().st_size > 0
    fig = pl.history(adata, panels=["loss_terms"], show=False)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 4
    assert len(pl.history(adata, panels=["relation_changes", "children"], show=False).axes) == 1  # older names
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
    # matched pairs sharing cells are outlined, each on a non-empty cell, in the Hungarian matching's pairs
    matching = fal.metrics.match_labels(adata.obs["fine"].astype(str), adata.obs["falcon"].astype(str))
    cols = [t.get_text() for t in ax.get_xticklabels()]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    outlined = [(int(p.get_y() + 0.5), int(p.get_x() + 0.5)) for p in ax.patches]
    assert outlined and all(np.asarray(values)[i, j] > 0 and matching[cols[j]] == rows[i] for i, j in outlined)
    overlap = pd.crosstab(adata.obs["fine"].astype(str), adata.obs["falcon"].astype(str))
    assert len(outlined) == sum(t is not None and overlap.loc[t, g] > 0 for g, t in matching.items())
    # rows grouped by the coarse class of most of their cells
    majority = pd.crosstab(adata.obs["fine"].astype(str), adata.obs["coarse"].astype(str)).idxmax(axis=1)
    seen = [majority[r] for r in rows]
    assert seen == sorted(seen, key=list(adata.uns["falcon"]["relations"].columns).index)
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


@pytest.mark.parametrize(
    "plot",
    [
        lambda a: pl.relations(a, show=False),
        lambda a: pl.history(a, show=False),
        lambda a: pl.confusion(a, "fine", show=False),
        lambda a: pl.embedding(a, show=False),
        lambda a: pl.coarse_conflicts(a, show=False),
    ],
)
def test_not_an_anndata(adata, plot):
    with pytest.raises(TypeError, match="adata must be an AnnData, got csr_matrix"):
        plot(adata.X)


def test_bad_plot_options(adata):
    with pytest.raises(KeyError, match="coarse_key 'nope' is not a column of adata.obs"):
        pl.relations(adata, coarse_key="nope", show=False)
    with pytest.raises(ValueError, match="kind must be 'graph' or 'heatmap', got 'pie'"):
        pl.relations(adata, kind="pie", show=False)
    with pytest.raises(ValueError, match="unknown panels \\['lr'\\]"):
        pl.history(adata, panels=("loss", "lr"), show=False)


# ---------------------------------------------------------------- figures that say what they show


def _history_adata(history: pd.DataFrame, children: np.ndarray, coarse: list[str], n_fine: int) -> AnnData:
    small = AnnData(obs=pd.DataFrame(index=["a", "b"]))
    small.uns["falcon"] = {
        "history": history,
        "children_history": children,
        "relations": pd.DataFrame(np.zeros((n_fine, len(coarse)), dtype=np.int8), columns=coarse),
        "params": {"n_fine": n_fine, "learn_relation": True, "relation_every": 30},
    }
    return small


def _texts(ax):
    return " ".join(t.get_text() for t in ax.texts)


def test_history_says_what_to_act_on_when_nothing_changed():
    n = 20
    hist = pd.DataFrame(
        {
            "epoch": range(n),
            "loss": np.r_[np.linspace(1.0, 0.2, n // 2), np.full(n - n // 2, 0.2)],
            "fine_in_use": 10,
            "largest_fine_share": 0.22,
            "relation_changes": 0,
            "relation_solves": 2,
        }
    )
    small = _history_adata(hist, np.tile([2, 4, 2, 1, 1], (n, 1)), ["T", "M", "B", "NK", "P"], 10)
    fig = pl.history(small, show=False)
    loss, in_use, relation = fig.axes[:3]
    assert "settled" in loss.get_title("left")
    # the classes: drawn (a flat line is the picture of stability), the verdict in the title
    assert len(in_use.lines[0].get_xdata()) == n
    title = in_use.get_title("left")
    assert "stable all through training (10 fine classes in use, the largest 22% of the cells)" in title
    assert "no fine class changed parent in the 40 relation solves" in relation.get_title("left")
    # the relation: one row per coarse class, the count written once for a constant row
    assert relation.images[0].get_array().shape == (5, n)
    assert [t.get_text() for t in relation.get_yticklabels()] == ["T", "M", "B", "NK", "P"]
    assert _texts(relation).split() == ["2", "4", "2", "1", "1"]
    for a in (loss, in_use, relation):
        assert a.get_xlabel() == "epoch"
    # no solve at all: the panel says why
    hist["relation_solves"] = 0
    fig = pl.history(_history_adata(hist, np.tile([2, 4, 2, 1, 1], (n, 1)), ["T", "M", "B", "NK", "P"], 10), show=False)
    assert "relation_every=30" in fig.axes[2].get_title("left")


def test_history_varying_quantities_and_many_coarse_classes():
    n = 12
    hist = pd.DataFrame(
        {
            "epoch": range(n),
            "loss": np.linspace(1.0, 0.2, n),
            "fine_in_use": [4, 5] + [6] * (n - 2),
            "largest_fine_share": np.r_[np.linspace(0.4, 0.2, 4), np.full(n - 4, 0.2)],
            "relation_changes": [0, 2, 1] + [0] * (n - 3),
            "relation_solves": 1,
        }
    )
    children = np.tile([2, 2, 2], (n, 1))
    children[5:] = [1, 2, 3]
    fig = pl.history(_history_adata(hist, children, ["C0", "C1", "C2"], 6), show=False)
    loss, in_use, relation = fig.axes[0], fig.axes[1], fig.axes[2]
    assert "still falling" in loss.get_title("left") and "n_epochs" in loss.get_title("left")
    assert "stable from epoch 4 on" in in_use.get_title("left")
    assert "3 fine class(es) changed parent in 2 epoch(s), the last at epoch 3" in relation.get_title("left")
    assert [line.get_xdata()[0] for line in relation.lines] == [2, 3]  # the epochs with changes, marked
    assert _texts(relation).split() == ["2", "1", "2", "2", "3"]  # the count where it changes
    # many coarse classes: one row each
    names = [f"type {i}" for i in range(30)]
    many = np.random.default_rng(0).integers(1, 4, (n, 30))
    fig = pl.history(_history_adata(hist, many, names, 60), panels=["relation"], show=False)
    ax = fig.axes[0]
    assert ax.images and ax.images[0].get_array().shape == (30, n)
    assert [t.get_text() for t in ax.get_yticklabels()] == names


def test_relations_heatmap_counts(adata, tmp_path):
    before = _snapshot(adata)
    ax = pl.relations(adata, kind="heatmap", show=False, save=tmp_path / "heat.png")
    fine = adata.uns["falcon"]["fine_classes"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{f} ({int(n)} cells)" for f, n in zip(fine.index, fine["n_cells"], strict=True)]
    written = sorted(int(t.get_text()) for t in ax.texts)
    assert written == sorted(int(n) for n in fine["n_cells"] if n > 0)
    assert "parent of each fine class" in ax.get_title()
    assert (tmp_path / "heat.png").stat().st_size > 0
    fig = pl.relations(adata, kind="heatmap", true_key="fine", show=False)
    true_ax = [a for a in fig.axes if a.images][1]
    assert sum(int(t.get_text()) for t in true_ax.texts) == adata.n_obs
    assert "cells of each true class per coarse class" in true_ax.get_title()
    assert _snapshot(adata) == before


def test_confusion_title(adata):
    ax = pl.confusion(adata, "fine", show=False)
    assert "share of each true class's cells" in ax.get_title() and "Hungarian" in ax.get_title()


@pytest.fixture
def with_umap(adata):
    """A copy whose UMAP is stored already (random coordinates), so the plots do not compute one."""
    data = adata.copy()
    data.obsm["falcon_umap"] = np.random.default_rng(0).normal(size=(data.n_obs, 2)).astype(np.float32)
    return data


def _snapshot_all(a):
    return (
        list(a.obs.columns),
        sorted(a.uns.keys()),
        sorted(a.uns["falcon"].keys()),
        sorted(a.obsm.keys()),
        a.obs["falcon"].astype(str).tolist(),
    )


def test_embedding_computes_umap_without_touching_adata(adata, tmp_path):
    before = _snapshot_all(adata)
    ax = pl.embedding(adata, show=False, save=tmp_path / "emb.png")
    assert isinstance(ax, Axes)
    assert _snapshot_all(adata) == before  # the UMAP lives on a throw-away AnnData
    assert (tmp_path / "emb.png").stat().st_size > 0
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("UMAP1", "UMAP2")
    assert "falcon" in ax.get_title()
    xy = ax.collections[0].get_offsets()
    assert xy.shape == (adata.n_obs, 2)
    # store=True keeps the coordinates (the only key written), and they are reused afterwards
    data = adata.copy()
    pl.embedding(data, store=True, show=False)
    assert set(data.obsm) - set(adata.obsm) == {"falcon_umap"}
    np.testing.assert_allclose(np.sort(data.obsm["falcon_umap"], axis=0), np.sort(np.asarray(xy), axis=0), rtol=1e-5)


def test_embedding_colours_each_fine_class(with_umap):
    ax = pl.embedding(with_umap, show=False)
    names = [str(c) for c in with_umap.obs["falcon"].cat.categories]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == names
    colours = {to_rgba(h.get_color()) for h in legend.legend_handles}
    assert len(colours) == len(names)  # one colour per fine class (not the matched true class's)
    # every cell drawn once, at its stored coordinates, in the colour of its own fine class
    points = ax.collections[0]
    offsets, faces = np.asarray(points.get_offsets()), points.get_facecolors()
    stored = np.asarray(with_umap.obsm["falcon_umap"])
    order = np.lexsort(offsets.T)
    np.testing.assert_allclose(offsets[order], stored[np.lexsort(stored.T)], rtol=1e-6)
    colour_of = {
        t.get_text(): to_rgba(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    cell = int(np.flatnonzero((stored == offsets[0]).all(axis=1))[0])
    assert tuple(faces[0]) == colour_of[str(with_umap.obs["falcon"].iloc[cell])]


def test_embedding_fine_class_colours_follow_the_parent(with_umap):
    from falcon_sc.pl._utils import palette

    ax = pl.embedding(with_umap, show=False)
    legend = ax.get_legend()
    colour_of = {
        t.get_text(): to_rgba(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    fine = with_umap.uns["falcon"]["fine_classes"]
    coarse = list(with_umap.uns["falcon"]["relations"].columns)
    hues = dict(zip(coarse, palette(len(coarse)), strict=True))
    for parent, group in fine.groupby("parent"):
        if len(group) == 1:  # an only child takes its parent's colour
            assert np.allclose(colour_of[group.index[0]][:3], hues[parent][:3])
        else:  # siblings: shades of the parent's hue, darker to lighter
            light = [sum(colour_of[f][:3]) for f in group.index]
            assert light == sorted(light) and len(set(light)) == len(light)
    distinct = pl.embedding(with_umap, palette="distinct", show=False).get_legend()
    assert [to_rgba(h.get_color()) for h in distinct.legend_handles] == [to_rgba(c) for c in palette(len(fine))]
    assert pl.embedding(with_umap, palette="distinct", show=False).get_title() == "FALCON fine classes (falcon)"
    with pytest.raises(ValueError, match="palette"):
        pl.embedding(with_umap, palette="viridis", show=False)


def test_embedding_several_columns(with_umap, tmp_path):
    before = _snapshot_all(with_umap)
    axs = pl.embedding(with_umap, color=["falcon", "fine", "falcon_confidence"], show=False, save=tmp_path / "three")
    assert isinstance(axs, list) and len(axs) == 3
    titles = [a.get_title() for a in axs]
    assert titles[0].startswith("FALCON fine classes (falcon)\ncolour: hue of the parent coarse class")
    assert titles[1:] == ["fine", "falcon_confidence"]
    assert all(a.get_xlabel() == "UMAP1" and a.get_ylabel() == "UMAP2" for a in axs)
    assert len(axs[0].figure.axes) == 4  # + the colour bar of the numeric column
    assert (tmp_path / "three.png").stat().st_size > 0
    ax = pl.embedding(with_umap, color="falcon", legend_loc="on data", show=False)
    assert {t.get_text() for t in ax.texts} == set(with_umap.obs["falcon"].astype(str))
    # other coordinates already in obsm
    with_umap.obsm["X_pca"] = np.asarray(with_umap.obsm["falcon_embedding"])[:, :5]
    ax = pl.embedding(with_umap, basis="pca", show=False)
    assert ax.get_xlabel() == "PCA1"
    del with_umap.obsm["X_pca"]
    assert _snapshot_all(with_umap) == before


def test_embedding_errors(adata, with_umap):
    with pytest.raises(KeyError, match=r"'other'.*fal\.tl\.refine\(.*key_added='other'\) first"):
        pl.embedding(adata, key="other", show=False)
    no_emb = adata.copy()
    del no_emb.obsm["falcon_embedding"]
    with pytest.raises(KeyError, match="falcon_embedding"):
        pl.embedding(no_emb, show=False)
    with pytest.raises(KeyError, match="nope"):
        pl.embedding(with_umap, color="nope", show=False)
    with pytest.raises(KeyError, match="X_tsne"):
        pl.embedding(with_umap, basis="tsne", show=False)
    with pytest.raises(ValueError, match="legend_loc"):
        pl.embedding(with_umap, legend_loc="top", show=False)
    with pytest.raises(ValueError, match="2 Axes"):
        pl.embedding(with_umap, color=["falcon", "fine"], ax=plt.subplots()[1], show=False)


@pytest.mark.parametrize("kind", ["bar", "heatmap"])
def test_coarse_conflicts_plot(adata, tmp_path, kind):
    data = adata.copy()
    flag = np.zeros(data.n_obs, dtype=bool)
    flag[:7] = True
    data.obs["falcon_outside_parent"] = flag
    before = _snapshot_all(data)
    ax = pl.coarse_conflicts(data, kind=kind, show=False, save=tmp_path / f"conf_{kind}.png")
    assert isinstance(ax, Axes)
    assert "7" in ax.get_title() and "falcon_outside_parent" in ax.get_title()
    assert (tmp_path / f"conf_{kind}.png").stat().st_size > 0
    table = fal.tl.coarse_conflicts(data)
    if kind == "bar":
        widths = [p.get_width() for p in ax.patches]
        assert np.isclose(sum(widths), (100 * table["share_flagged"]).sum())
        assert [t.get_text() for t in ax.get_yticklabels()] == list(table.index)
    else:
        shown = np.asarray(ax.images[0].get_array().filled(0))
        assert shown.sum() == 7 and np.all(np.diag(shown) == 0)
    assert _snapshot_all(data) == before
    with pytest.raises(KeyError, match=r"fal\.tl\.refine\(.*key_added='other'\) first"):
        pl.coarse_conflicts(data, key="other", show=False)
    with pytest.raises(ValueError, match="kind"):
        pl.coarse_conflicts(data, kind="pie", show=False)


def test_embedding_family_palette_for_other_columns(with_umap):
    """``palette="family"``: another column's categories in the hue of the coarse class of most of their cells."""
    from falcon_sc.pl._utils import palette

    ax = pl.embedding(with_umap, color="fine", palette="family", show=False)
    legend = ax.get_legend()
    colour_of = {
        t.get_text(): to_rgba(h.get_color()) for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    majority = pd.crosstab(with_umap.obs["fine"].astype(str), with_umap.obs["coarse"].astype(str)).idxmax(axis=1)
    coarse = list(with_umap.uns["falcon"]["relations"].columns)
    hues = dict(zip(coarse, palette(len(coarse)), strict=True))
    for name, parent in majority.items():
        if (majority == parent).sum() == 1:  # an only child takes its coarse class's colour
            assert np.allclose(colour_of[name][:3], hues[parent][:3])
    assert "coarse class of most of its cells" in ax.get_title()
