"""``fal.pl.relations``: the learned coarse-fine relation, optionally beside the true one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._docs import doc_params
from .._layout import FalconResults, read_results
from ..metrics import match_labels
from ._utils import category_order, finish, new_axes, obs_labels, palette, plot_output, root_figure

_AGREE, _DIFFER = "same parent in both panels", "matched class has another parent, or no match"
#: colour of the edges that differ between the panels: black, which no coarse class gets (tab10/tab20/gist_ncar)
_DIFFER_COLOR = "black"


@doc_params(plot_output=plot_output)
def relations(
    adata: AnnData,
    key: str = "falcon",
    *,
    true_key: str | None = None,
    kind: Literal["graph", "heatmap"] = "graph",
    coarse_key: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
) -> Axes | Figure | None:
    """Plot the learned coarse-fine relation (``uns[key]["relations"]``).

    ``kind="graph"`` draws a bipartite graph: coarse classes on the left, fine classes on the right, one edge from
    each fine class to its parent; node areas are proportional to the number of cells (fine classes without cells
    are hollow) and edge widths to the fine class size (legend under the graph). ``kind="heatmap"`` shows the fine x
    coarse table: dark cells mark each fine class's parent, rows are labelled with the fine class's number of cells
    (``uns[key]["fine_classes"]["n_cells"]``), e.g. ``"T cell/1 (312 cells)"``, and each cell of the heatmap holds
    the number of cells of that fine class carrying that coarse label.

    With ``true_key``, a second panel shows the true relation: each true fine class is attached to the coarse class
    holding most of its cells. Learned fine classes are paired one-to-one with true ones by the Hungarian matching of
    :func:`~falcon_sc.metrics.match_labels`; a pair whose classes share no cell is no pair (the matching pairs every
    class it can, even with a class none of its cells carry, and naming that class would read as an annotation).
    Labels name the partner and the cells carrying both labels in brackets (graph, e.g. ``"B/1  (CD19+ B: 65
    cells)"``) or after ``~`` (heatmap). Edges that the other panel does not have (the partner hangs under another
    coarse class, or there is no partner) are black and dashed (black is no coarse class's colour); heatmap: red row
    labels. A legend under the graph gives the cells of two edge widths (and, with two panels, the edge styles). In
    the heatmap the true panel is shaded by the share of each true class's cells per coarse class, with the cell
    counts written in.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine`; not modified.
    key
        ``key_added`` used in :func:`falcon_sc.tl.refine`.
    true_key
        Column of ``adata.obs`` with known fine labels, for the side-by-side comparison.
    kind
        ``"graph"`` or ``"heatmap"``.
    coarse_key
        Column with the coarse labels; default: the one :func:`~falcon_sc.tl.refine` used.
    ax
        Axes to draw on: one, or two when ``true_key`` is given. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Axes (one panel) or the Figure (two panels); ``None`` when the figure was shown.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, show_progress=False)
    >>> ax = fal.pl.relations(adata, show=False)  # bipartite graph coarse -> fine
    >>> fig = fal.pl.relations(adata, true_key="fine", show=False)  # next to the true relation
    >>> ax = fal.pl.relations(adata, kind="heatmap", show=False)
    """
    res = read_results(adata, key, need=("relations", "fine_classes"))
    if kind not in ("graph", "heatmap"):
        raise ValueError(f"kind must be 'graph' or 'heatmap', got {kind!r}")
    if coarse_key is not None and coarse_key not in adata.obs.columns:
        raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs; pass an existing column or None")
    learned = _learned(res, coarse_key or res.coarse_key)
    truth = None if true_key is None else _truth(res, learned, true_key)
    if figsize is None:
        figsize = _figsize(kind, learned, true_key)
    fig, axes, _ = new_axes(ax, 1 if true_key is None else 2, figsize=figsize)
    if truth is None:
        _draw_learned(axes[0], kind, res, learned)
        return finish(fig, axes[0], show=show, save=save, name="relations")
    _draw_compared(axes, kind, res, learned, truth, str(true_key))
    return finish(fig, fig, show=show, save=save, name="relations")


@dataclass
class _Coarse:
    """The coarse classes of both panels: names, cells and colours."""

    names: list[str]
    sizes: np.ndarray
    colors: list

    @property
    def smax(self) -> float:
        """Largest coarse class (the node areas' scale)."""
        return max(float(self.sizes.max()), 1.0)


@dataclass
class _Fine:
    """One panel's fine classes: parent (coarse index, -1: none), cells, labels, agreement with the other panel."""

    names: list[str]
    parent: np.ndarray
    sizes: np.ndarray
    text: list[str]
    ok: np.ndarray | None = None
    partners: list[str | None] | None = None


@dataclass
class _Learned:
    """The learned relation and the coarse labels it is drawn against."""

    coarse: _Coarse
    fine: _Fine
    values: np.ndarray  # fine x coarse, the relation
    coarse_key: str | None


@dataclass
class _Truth:
    """The true relation (each true class under the coarse class of most of its cells), and the matching."""

    fine: _Fine
    counts: np.ndarray  # true class x coarse class: cells
    learned_ok: np.ndarray
    learned_text: list[str]
    learned_partners: list[str | None]


def _learned(res: FalconResults, coarse_key: str | None) -> _Learned:
    rel = res.relations
    coarse_names = [str(c) for c in rel.columns]
    fine_names = [str(f) for f in rel.index]
    values = np.asarray(rel.to_numpy(), dtype=float)
    parent = np.where(values.max(axis=1) > 0, values.argmax(axis=1), -1)
    fine_sizes = _fine_sizes(res, fine_names)
    adata = res.adata
    if coarse_key is not None and coarse_key in adata.obs.columns:
        counts = obs_labels(adata, coarse_key, "coarse_key").value_counts()
        coarse_sizes = np.array([counts.get(c, 0) for c in coarse_names], dtype=float)
    else:
        coarse_sizes = np.array([fine_sizes[parent == c].sum() for c in range(len(coarse_names))], dtype=float)
    coarse = _Coarse(coarse_names, coarse_sizes, palette(len(coarse_names)))
    return _Learned(coarse, _Fine(fine_names, parent, fine_sizes, fine_names), values, coarse_key)


def _figsize(kind: str, learned: _Learned, true_key: str | None) -> tuple[float, float]:
    fine_names, coarse_names = learned.fine.names, learned.coarse.names
    height = max(3.0, 0.28 * max(len(fine_names), len(coarse_names)) + 1.0)
    width = 5.5
    if kind == "heatmap":  # room for the row labels ("name (n cells) ~ partner") and the columns
        longest = max(len(f) for f in fine_names) + 12 + (0 if true_key is None else 28)
        width = max(4.5, 0.075 * longest + 0.5 * len(coarse_names) + 1.5)
    return (width * (1 if true_key is None else 2), height + (1.2 if kind == "heatmap" else 0.0))


def _truth(res: FalconResults, learned: _Learned, true_key: str) -> _Truth:
    """Parents of the true fine classes, their order and the matching with the learned ones."""
    adata, key, coarse_key = res.adata, res.key, learned.coarse_key
    if coarse_key is None or coarse_key not in adata.obs.columns:
        raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs; pass coarse_key=")
    true = obs_labels(adata, true_key, "true_key")
    res.require("labels")
    pred = obs_labels(adata, key, "key")
    coarse = obs_labels(adata, coarse_key, "coarse_key")
    fine_names, parent = learned.fine.names, learned.fine.parent
    true_order = category_order(adata, true_key)
    table = pd.crosstab(true, coarse).reindex(index=true_order, columns=learned.coarse.names, fill_value=0)
    true_parent = table.to_numpy().argmax(axis=1)
    both = pd.crosstab(pred, true).stack()
    overlap = {(str(g), str(t)): int(n) for (g, t), n in both.items()}  # type: ignore[misc]
    shared = {  # cells carrying both labels of each matched pair; a pair sharing no cell is no match
        (str(g), str(t)): overlap.get((str(g), str(t)), 0)
        for g, t in match_labels(true.to_numpy(), pred.to_numpy()).items()
        if t is not None
    }
    matching: dict[str, str | None] = {g: (t if n > 0 else None) for (g, t), n in shared.items()}
    partner_of_true = {t: g for g, t in matching.items() if t is not None}
    learned_pos = {g: i for i, g in enumerate(fine_names)}
    true_idx = {t: i for i, t in enumerate(true_order)}
    # true fine classes grouped by their parent; inside a group in the order of their learned partners
    order = sorted(
        range(len(true_order)),
        key=lambda i: (
            true_parent[i],
            learned_pos.get(partner_of_true.get(true_order[i], ""), len(fine_names)),
            -table.iloc[i].sum(),
        ),
    )
    true_names = [true_order[i] for i in order]
    t_parent = true_parent[order]
    learned_partners = [matching.get(g) for g in fine_names]
    learned_ok = np.array(
        [p is not None and true_parent[true_idx[p]] == parent[i] for i, p in enumerate(learned_partners)]
    )
    true_ok = np.array(
        [
            t in partner_of_true and parent[learned_pos[partner_of_true[t]]] == t_parent[j]
            for j, t in enumerate(true_names)
        ]
    )
    fine = _Fine(
        names=true_names,
        parent=t_parent,
        sizes=table.to_numpy().sum(axis=1)[order].astype(float),
        text=[
            f"{t}  ({partner_of_true[t]}: {shared[(partner_of_true[t], t)]} cells)" if t in partner_of_true else t
            for t in true_names
        ],
        ok=true_ok,
        partners=[partner_of_true.get(t) for t in true_names],
    )
    return _Truth(
        fine=fine,
        counts=table.to_numpy()[order].astype(float),
        learned_ok=learned_ok,
        learned_text=[
            f"{g}  ({matching[g]}: {shared[(g, str(matching[g]))]} cells)" if matching.get(g) is not None else g
            for g in fine_names
        ],
        learned_partners=learned_partners,
    )


def _draw_learned(ax: Axes, kind: str, res: FalconResults, learned: _Learned) -> None:
    """One panel: the learned relation alone."""
    key, fine = res.key, learned.fine
    if kind == "graph":
        _draw_graph(ax, learned.coarse, fine, f"learned relation ({key}): fine class -> parent\nnode area ~ cells")
        return
    _draw_heatmap(
        ax,
        learned.coarse,
        _row_labels(fine.names, fine.sizes, None),
        None,
        f"learned relation ({key}): parent of each fine class\nnumbers: cells",
        learned.values,
        _learned_counts(res, learned),
    )


def _draw_compared(axes: list[Axes], kind: str, res: FalconResults, learned: _Learned, truth: _Truth, true_key: str):
    """Two panels: the learned relation (matched classes in the labels) and the true one."""
    key, coarse = res.key, learned.coarse
    if kind == "graph":
        note = "node area ~ cells; (X: n cells): paired class (legend)"
        fine = replace(learned.fine, text=truth.learned_text, ok=truth.learned_ok)
        _draw_graph(axes[0], coarse, fine, f"learned relation ({key})\n{note}")
        title = f"true relation ({true_key}): parent = coarse class of most cells\n{note}"
        _draw_graph(axes[1], coarse, truth.fine, title)
        return
    _draw_heatmap(
        axes[0],
        coarse,
        _row_labels(learned.fine.names, learned.fine.sizes, truth.learned_partners),
        truth.learned_ok,
        f"learned relation ({key}): parent of each fine class\n"
        "numbers: cells; ~ X: paired true class X (sharing cells); red: X has another parent, or no pair",
        learned.values,
        _learned_counts(res, learned),
    )
    _draw_heatmap(
        axes[1],
        coarse,
        _row_labels(truth.fine.names, truth.fine.sizes, truth.fine.partners),
        truth.fine.ok,
        f"true relation ({true_key}): cells of each true class per coarse class\n"
        "~ X: paired learned class X (sharing cells); red: X has another parent, or no pair",
        truth.counts / np.maximum(truth.fine.sizes[:, None], 1),
        truth.counts,
    )


def _fine_sizes(res: FalconResults, fine_names: list[str]) -> np.ndarray:
    fc = res.fine_classes
    if "n_cells" in fc.columns:
        sizes = fc["n_cells"].reindex(fine_names)
        if not sizes.isna().any():
            return sizes.to_numpy(dtype=float)
    if res.has("labels"):
        counts = res.labels.astype(str).value_counts()
        return np.array([counts.get(f, 0) for f in fine_names], dtype=float)
    return np.ones(len(fine_names))


def _ypos(n: int) -> np.ndarray:
    return np.array([0.5]) if n == 1 else np.linspace(1.0, 0.0, n)


def _draw_graph(ax: Axes, coarse: _Coarse, fine: _Fine, title: str) -> None:
    """Bipartite graph: coarse nodes left, fine nodes right, an edge from each fine class to its parent."""
    n_c, n_f = len(coarse.names), len(fine.text)
    yc, yf = _ypos(n_c), _ypos(n_f)
    for c in range(n_c):  # a coarse node sits at the centre of its children (fine nodes are grouped by parent)
        if (fine.parent == c).any():
            yc[c] = yf[fine.parent == c].mean()
    fontsize = float(np.clip(220.0 / max(n_f, n_c, 1), 5.0, 9.0))
    coarse_text = [f"{c} ({int(n)})" for c, n in zip(coarse.names, coarse.sizes, strict=True)]
    _graph_limits(ax, coarse_text, fine.text, fontsize)
    _graph_edges(ax, yc, yf, coarse, fine)
    area_c = 15.0 + 500.0 * np.asarray(coarse.sizes, dtype=float) / coarse.smax
    area_f = 15.0 + 500.0 * np.asarray(fine.sizes, dtype=float) / coarse.smax
    ax.scatter(np.zeros(n_c), yc, s=area_c, c=coarse.colors, marker="s", edgecolors="k", linewidths=0.6, zorder=3)
    fine_colors = [coarse.colors[p] if p >= 0 else "0.6" for p in fine.parent]
    face = [c if n > 0 else "white" for c, n in zip(fine_colors, fine.sizes, strict=True)]
    ax.scatter(np.ones(n_f), yf, s=area_f, c=face, edgecolors=fine_colors, linewidths=1.0, zorder=3)
    # labels next to the nodes, offset by the node radius (marker areas are in points^2)
    label: dict[str, Any] = {"textcoords": "offset points", "va": "center", "fontsize": fontsize}
    for text, y, s in zip(coarse_text, yc, area_c, strict=True):
        ax.annotate(text, (0.0, y), xytext=(-(np.sqrt(s) / 2 + 4), 0), ha="right", fontweight="bold", **label)
    for text, y, s in zip(fine.text, yf, area_f, strict=True):
        ax.annotate(text, (1.0, y), xytext=(np.sqrt(s / np.pi) + 4, 0), ha="left", **label)
    _graph_legend(ax, fontsize, max(float(fine.sizes.max()), 1.0), fine.ok is not None)
    ax.set_title(title, fontsize=fontsize + 2)
    ax.set_axis_off()


def _graph_limits(ax: Axes, coarse_text: list[str], fine_text: list[str], fontsize: float) -> None:
    """Axis limits leaving room for the labels (their width estimated as a share of the axes width)."""
    width_pt = max(ax.get_position().width * root_figure(ax).get_figwidth() * 72.0, 50.0)
    char = 0.55 * fontsize / width_pt
    left = 0.06 + char * max(len(c) for c in coarse_text)
    right = 0.06 + char * max(len(t) for t in fine_text)
    middle = max(1.0 - left - right, 0.3)
    span = 1.0 / middle
    ax.set_xlim(-left * span, 1.0 + right * span)
    ax.set_ylim(-0.08, 1.08)


def _graph_edges(ax: Axes, yc: np.ndarray, yf: np.ndarray, coarse: _Coarse, fine: _Fine) -> None:
    """One edge per fine class to its parent, as wide as the class is large; black and dashed where panels differ."""
    segments, seg_colors, widths, styles = [], [], [], []
    fmax = max(fine.sizes.max(), 1.0)
    for f in range(len(fine.text)):
        if fine.parent[f] < 0:
            continue
        segments.append([(0.0, yc[fine.parent[f]]), (1.0, yf[f])])
        bad = fine.ok is not None and not fine.ok[f]
        seg_colors.append(_DIFFER_COLOR if bad else coarse.colors[fine.parent[f]])
        widths.append(0.6 + 3.0 * fine.sizes[f] / fmax)
        styles.append((0, (4, 2)) if bad else "solid")
    ax.add_collection(
        LineCollection(segments, colors=seg_colors, linewidths=widths, linestyles=styles, alpha=0.7, zorder=1)
    )


def _graph_legend(ax: Axes, fontsize: float, fmax: float, compared: bool) -> None:
    """Legend under the axes: what the edge widths and (two panels) the edge styles mean."""
    widths = [(fmax, 3.6), (fmax / 4.0, 1.35)]
    handles = [Line2D([], [], color="0.5", lw=w, label=f"{max(int(round(n)), 1)} cells") for n, w in widths]
    title = "edge width ~ cells of the fine class"
    if compared:
        handles += [
            Line2D([], [], color="0.5", lw=1.5, label=_AGREE),
            Line2D([], [], color=_DIFFER_COLOR, lw=1.5, ls=(0, (4, 2)), label=_DIFFER),
        ]
        title = (
            "(X: n cells): X, the class of the other panel paired with this\none by the one-to-one Hungarian "
            "matching; n cells carry both\nlabels. No brackets: no paired class shares a cell.\n"
            f"{title};\nedge style: compared with the other panel"
        )
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.0, 0.0),
        fontsize=fontsize - 1,
        frameon=False,
        ncols=2 if compared else 1,
        title=title,
        title_fontsize=fontsize - 1,
        alignment="left",
    )


def _row_labels(names: list[str], sizes: np.ndarray, partners: list[str | None] | None) -> list[str]:
    """Heatmap row labels: ``"T cell/1 (312 cells)"``, with ``" ~ CD8 T"`` for the matched class of the other panel."""
    labels = []
    for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
        text = f"{name} ({int(n)} cells)"
        if partners is not None and partners[i] is not None:
            text += f" ~ {partners[i]}"
        labels.append(text)
    return labels


def _learned_counts(res: FalconResults, learned: _Learned) -> np.ndarray:
    """Cells of each learned fine class per coarse label (fine x coarse); without the labels, all at the parent."""
    adata, key, coarse_key = res.adata, res.key, learned.coarse_key
    fine_names, coarse_names = learned.fine.names, learned.coarse.names
    if key in adata.obs.columns and coarse_key is not None and coarse_key in adata.obs.columns:
        fine = adata.obs[key].astype(str)
        coarse = adata.obs[coarse_key].astype(str)
        table = pd.crosstab(fine, coarse).reindex(index=fine_names, columns=coarse_names, fill_value=0)
        return table.to_numpy(dtype=float)
    counts = np.zeros((len(fine_names), len(coarse_names)))
    parent = learned.fine.parent
    rows = np.flatnonzero(parent >= 0)
    counts[rows, parent[rows]] = learned.fine.sizes[rows]
    return counts


def _draw_heatmap(
    ax: Axes,
    coarse: _Coarse,
    row_labels: list[str],
    ok: np.ndarray | None,
    title: str,
    values: np.ndarray,
    counts: np.ndarray,
) -> None:
    values = np.asarray(values, dtype=float)
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    n_rows, n_cols = values.shape
    fontsize = float(np.clip(220.0 / max(n_rows, 1), 5.0, 9.0))
    ax.set_xticks(
        range(n_cols),
        [f"{c} ({int(n)} cells)" for c, n in zip(coarse.names, coarse.sizes, strict=True)],
        rotation=90,
        fontsize=fontsize,
    )
    ax.set_yticks(range(n_rows), row_labels, fontsize=fontsize)
    ax.set_xlabel("coarse class")
    if ok is not None:
        for label, good in zip(ax.get_yticklabels(), ok, strict=True):
            if not good:
                label.set_color("tab:red")
    if max(n_rows, n_cols) <= 40:  # the cells of each row in each coarse class, written in the heatmap's cells
        cell_font = float(np.clip(fontsize - 1.0, 4.5, 8.0))
        for i in range(n_rows):
            for j in range(n_cols):
                if counts[i, j] > 0:
                    ax.text(
                        j,
                        i,
                        f"{int(counts[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=cell_font,
                        color="white" if values[i, j] > 0.55 else "black",
                    )
    binary = bool(np.isin(values, (0.0, 1.0)).all())
    if not binary:  # a 0/1 relation needs no colour bar: dark = parent
        ax.figure.colorbar(im, ax=ax, shrink=0.6, label="share of the fine class's cells")
    ax.set_title(title, fontsize=fontsize + 1)
