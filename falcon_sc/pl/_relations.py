"""``fal.pl.relations``: the learned coarse-fine relation, optionally beside the true one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._docs import doc_params, plot_output
from ..metrics import match_labels
from ._utils import category_order, finish, get_results, new_axes, obs_labels, palette

_AGREE, _DIFFER = "same parent in both panels", "matched class has another parent (or no match)"


@doc_params(plot_output=plot_output)
def relations(
    adata: AnnData,
    *,
    key: str = "falcon",
    true_key: str | None = None,
    kind: Literal["graph", "heatmap"] = "graph",
    coarse_key: str | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | Figure | None:
    """Plot the learned coarse-fine relation (``uns[key]["relations"]``).

    ``kind="graph"`` draws a bipartite graph: coarse classes on the left, fine classes on the right, one edge from
    each fine class to its parent; node areas are proportional to the number of cells (fine classes without cells
    are hollow) and edge widths to the fine class size. ``kind="heatmap"`` shows the fine x coarse table: dark
    cells mark each fine class's parent, rows are labelled with the fine class's number of cells
    (``uns[key]["fine_classes"]["n_cells"]``), e.g. ``"T cell/1 (312 cells)"``, and each cell of the heatmap holds
    the number of cells of that fine class carrying that coarse label.

    With ``true_key``, a second panel shows the true relation: each true fine class is attached to the coarse class
    holding most of its cells. Learned fine classes are matched to true ones with
    :func:`~falcon_sc.metrics.match_labels`; labels show the partner in brackets (graph) or after ``~`` (heatmap),
    and edges that the other panel does not have (the partner hangs under another coarse class, or there is no
    partner) are red and dashed (heatmap: red row labels). In the heatmap the true panel is shaded by the share of
    each true class's cells per coarse class, with the cell counts written in.

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
    res = get_results(adata, key, ("relations", "fine_classes"))
    if kind not in ("graph", "heatmap"):
        raise ValueError(f"kind must be 'graph' or 'heatmap', got {kind!r}")
    if coarse_key is not None and coarse_key not in adata.obs.columns:
        raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs; pass an existing column or None")
    rel = res["relations"]
    coarse_names = [str(c) for c in rel.columns]
    fine_names = [str(f) for f in rel.index]
    values = np.asarray(rel.to_numpy(), dtype=float)
    parent = np.where(values.max(axis=1) > 0, values.argmax(axis=1), -1)
    fine_sizes = _fine_sizes(adata, key, res, fine_names)
    coarse_key = coarse_key or res.get("params", {}).get("coarse_key")
    if coarse_key is not None and coarse_key in adata.obs.columns:
        counts = obs_labels(adata, coarse_key, "coarse_key").value_counts()
        coarse_sizes = np.array([counts.get(c, 0) for c in coarse_names], dtype=float)
    else:
        coarse_sizes = np.array([fine_sizes[parent == c].sum() for c in range(len(coarse_names))], dtype=float)
    colors = palette(len(coarse_names))

    n_panels = 1 if true_key is None else 2
    if figsize is None:
        height = max(3.0, 0.28 * max(len(fine_names), len(coarse_names)) + 1.0)
        width = 5.5
        if kind == "heatmap":  # room for the row labels ("name (n cells) ~ partner") and the columns
            longest = max(len(f) for f in fine_names) + 12 + (0 if true_key is None else 28)
            width = max(4.5, 0.075 * longest + 0.5 * len(coarse_names) + 1.5)
        figsize = (width * n_panels, height + (1.2 if kind == "heatmap" else 0.0))
    fig, axes, _ = new_axes(ax, n_panels, figsize=figsize)

    learned_text = fine_names
    learned_ok = None
    if true_key is not None:
        if coarse_key is None or coarse_key not in adata.obs.columns:
            raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs; pass coarse_key=")
        true = obs_labels(adata, true_key, "true_key")
        pred = obs_labels(adata, key, "key") if key in adata.obs.columns else None
        if pred is None:
            raise KeyError(
                f"adata.obs[{key!r}] is missing: run fal.tl.refine(adata, coarse_key, n_fine, key_added={key!r}) first"
            )
        coarse = obs_labels(adata, coarse_key, "coarse_key")
        table = pd.crosstab(true, coarse)
        true_order = category_order(adata, true_key)
        table = table.reindex(index=true_order, columns=coarse_names, fill_value=0)
        true_parent = table.to_numpy().argmax(axis=1)
        matching = match_labels(true.to_numpy(), pred.to_numpy())  # learned -> true (or None)
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
        t_sizes = table.to_numpy().sum(axis=1)[order].astype(float)
        learned_text = [f"{g}  ({matching[g]})" if matching.get(g) is not None else g for g in fine_names]
        learned_ok = np.array(
            [
                matching.get(g) is not None and true_parent[true_idx[matching[g]]] == parent[i]
                for i, g in enumerate(fine_names)
            ]
        )
        true_text = [f"{t}  ({partner_of_true[t]})" if t in partner_of_true else t for t in true_names]
        true_ok = np.array(
            [
                t in partner_of_true and parent[learned_pos[partner_of_true[t]]] == t_parent[j]
                for j, t in enumerate(true_names)
            ]
        )
        smax = max(coarse_sizes.max(), 1.0)
        true_counts = table.to_numpy()[order].astype(float)
        if kind == "graph":
            note = "node area ~ cells; (in brackets: matched class of the other panel)"
            _draw_graph(
                axes[0],
                coarse_names,
                coarse_sizes,
                parent,
                fine_sizes,
                learned_text,
                learned_ok,
                colors,
                smax,
                f"learned relation ({key})\n{note}",
            )
            _draw_graph(
                axes[1],
                coarse_names,
                coarse_sizes,
                t_parent,
                t_sizes,
                true_text,
                true_ok,
                colors,
                smax,
                f"true relation ({true_key}): parent = coarse class of most cells\n{note}",
            )
        else:
            learned_partner = [matching.get(g) for g in fine_names]
            true_partner = [partner_of_true.get(t) for t in true_names]
            _draw_heatmap(
                axes[0],
                coarse_names,
                coarse_sizes,
                _row_labels(fine_names, fine_sizes, learned_partner),
                learned_ok,
                f"learned relation ({key}): parent of each fine class\n"
                "numbers: cells; ~ X: matched true class X; red: X has another parent",
                values,
                _learned_counts(adata, key, coarse_key, fine_names, coarse_names, parent, fine_sizes),
            )
            _draw_heatmap(
                axes[1],
                coarse_names,
                coarse_sizes,
                _row_labels(true_names, t_sizes, true_partner),
                true_ok,
                f"true relation ({true_key}): cells of each true class per coarse class\n"
                "~ X: matched learned class X; red: X has another parent",
                true_counts / np.maximum(t_sizes[:, None], 1),
                true_counts,
            )
        out: Axes | Figure = fig
    else:
        smax = max(coarse_sizes.max(), 1.0)
        if kind == "graph":
            _draw_graph(
                axes[0],
                coarse_names,
                coarse_sizes,
                parent,
                fine_sizes,
                learned_text,
                None,
                colors,
                smax,
                f"learned relation ({key}): fine class -> parent\nnode area ~ cells",
            )
        else:
            _draw_heatmap(
                axes[0],
                coarse_names,
                coarse_sizes,
                _row_labels(fine_names, fine_sizes, None),
                None,
                f"learned relation ({key}): parent of each fine class\nnumbers: cells",
                values,
                _learned_counts(adata, key, coarse_key, fine_names, coarse_names, parent, fine_sizes),
            )
        out = axes[0]
    return finish(fig, out, show=show, save=save)


def _fine_sizes(adata: AnnData, key: str, res: dict, fine_names: list[str]) -> np.ndarray:
    fc = res["fine_classes"]
    if isinstance(fc, pd.DataFrame) and "n_cells" in fc.columns:
        sizes = fc["n_cells"].reindex(fine_names)
        if not sizes.isna().any():
            return sizes.to_numpy(dtype=float)
    if key in adata.obs.columns:
        counts = adata.obs[key].astype(str).value_counts()
        return np.array([counts.get(f, 0) for f in fine_names], dtype=float)
    return np.ones(len(fine_names))


def _ypos(n: int) -> np.ndarray:
    return np.array([0.5]) if n == 1 else np.linspace(1.0, 0.0, n)


def _draw_graph(
    ax: Axes,
    coarse_names: list[str],
    coarse_sizes: np.ndarray,
    parent: np.ndarray,
    fine_sizes: np.ndarray,
    fine_text: list[str],
    ok: np.ndarray | None,
    colors: list,
    smax: float,
    title: str,
) -> None:
    n_c, n_f = len(coarse_names), len(fine_text)
    yc, yf = _ypos(n_c), _ypos(n_f)
    for c in range(n_c):  # a coarse node sits at the centre of its children (fine nodes are grouped by parent)
        if (parent == c).any():
            yc[c] = yf[parent == c].mean()
    fontsize = float(np.clip(220.0 / max(n_f, n_c, 1), 5.0, 9.0))
    coarse_text = [f"{c} ({int(n)})" for c, n in zip(coarse_names, coarse_sizes, strict=True)]
    # leave room for the labels: estimate their width as a share of the axes width
    fig = ax.figure
    width_pt = max(ax.get_position().width * fig.get_figwidth() * 72.0, 50.0)
    char = 0.55 * fontsize / width_pt
    left = 0.06 + char * max(len(c) for c in coarse_text)
    right = 0.06 + char * max(len(t) for t in fine_text)
    middle = max(1.0 - left - right, 0.3)
    span = 1.0 / middle
    ax.set_xlim(-left * span, 1.0 + right * span)
    legend = ok is not None and not ok.all()
    ax.set_ylim(-0.32 if legend else -0.08, 1.08)

    segments, seg_colors, widths, styles = [], [], [], []
    fmax = max(fine_sizes.max(), 1.0)
    for f in range(n_f):
        if parent[f] < 0:
            continue
        segments.append([(0.0, yc[parent[f]]), (1.0, yf[f])])
        bad = ok is not None and not ok[f]
        seg_colors.append("tab:red" if bad else colors[parent[f]])
        widths.append(0.6 + 3.0 * fine_sizes[f] / fmax)
        styles.append((0, (4, 2)) if bad else "solid")
    ax.add_collection(
        LineCollection(segments, colors=seg_colors, linewidths=widths, linestyles=styles, alpha=0.7, zorder=1)
    )

    area_c = 15.0 + 500.0 * np.asarray(coarse_sizes, dtype=float) / smax
    area_f = 15.0 + 500.0 * np.asarray(fine_sizes, dtype=float) / smax
    ax.scatter(np.zeros(n_c), yc, s=area_c, c=colors, marker="s", edgecolors="k", linewidths=0.6, zorder=3)
    fine_colors = [colors[p] if p >= 0 else "0.6" for p in parent]
    face = [c if n > 0 else "white" for c, n in zip(fine_colors, fine_sizes, strict=True)]
    ax.scatter(np.ones(n_f), yf, s=area_f, c=face, edgecolors=fine_colors, linewidths=1.0, zorder=3)
    # labels next to the nodes, offset by the node radius (marker areas are in points^2)
    for text, y, s in zip(coarse_text, yc, area_c, strict=True):
        ax.annotate(
            text,
            (0.0, y),
            xytext=(-(np.sqrt(s) / 2 + 4), 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=fontsize,
            fontweight="bold",
        )
    for text, y, s in zip(fine_text, yf, area_f, strict=True):
        ax.annotate(
            text,
            (1.0, y),
            xytext=(np.sqrt(s / np.pi) + 4, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize=fontsize,
        )
    if legend:
        handles = [
            Line2D([], [], color="0.4", lw=1.5, label=_AGREE),
            Line2D([], [], color="tab:red", lw=1.5, ls=(0, (4, 2)), label=_DIFFER),
        ]
        ax.legend(
            handles=handles,
            loc="lower left",
            fontsize=fontsize - 1,
            frameon=False,
            ncols=1,
            title="edge, compared with the other panel",
            title_fontsize=fontsize - 1,
        )
    ax.set_title(title, fontsize=fontsize + 2)
    ax.set_axis_off()


def _row_labels(names: list[str], sizes: np.ndarray, partners: list[str | None] | None) -> list[str]:
    """Heatmap row labels: ``"T cell/1 (312 cells)"``, with ``" ~ CD8 T"`` for the matched class of the other panel."""
    labels = []
    for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
        text = f"{name} ({int(n)} cells)"
        if partners is not None and partners[i] is not None:
            text += f" ~ {partners[i]}"
        labels.append(text)
    return labels


def _learned_counts(
    adata: AnnData,
    key: str,
    coarse_key: str | None,
    fine_names: list[str],
    coarse_names: list[str],
    parent: np.ndarray,
    fine_sizes: np.ndarray,
) -> np.ndarray:
    """Cells of each learned fine class per coarse label (fine x coarse); without the labels, all at the parent."""
    if key in adata.obs.columns and coarse_key is not None and coarse_key in adata.obs.columns:
        fine = adata.obs[key].astype(str)
        coarse = adata.obs[coarse_key].astype(str)
        table = pd.crosstab(fine, coarse).reindex(index=fine_names, columns=coarse_names, fill_value=0)
        return table.to_numpy(dtype=float)
    counts = np.zeros((len(fine_names), len(coarse_names)))
    rows = np.flatnonzero(parent >= 0)
    counts[rows, parent[rows]] = fine_sizes[rows]
    return counts


def _draw_heatmap(
    ax: Axes,
    coarse_names: list[str],
    coarse_sizes: np.ndarray,
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
        [f"{c} ({int(n)} cells)" for c, n in zip(coarse_names, coarse_sizes, strict=True)],
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
