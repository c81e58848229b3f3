"""``fal.pl.confusion``: true fine x predicted fine contingency table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from .._docs import doc_params
from .._layout import FalconResults, read_results
from ..metrics import match_labels
from ._utils import category_order, finish, new_axes, obs_labels, plot_output


@doc_params(plot_output=plot_output)
def confusion(
    adata: AnnData,
    true_key: str,
    key: str = "falcon",
    *,
    normalize: bool = True,
    annotate: bool | None = None,
    cmap: str = "Blues",
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
) -> Axes | None:
    """Heatmap of true fine classes (rows) x predicted fine classes (columns).

    Rows are grouped by coarse class (the coarse label of most of each true class's cells, the coarse classes in the
    order of the relation; lines between the groups, their names on the right) when the results name their coarse
    labels. Columns are ordered by the Hungarian matching (:func:`~falcon_sc.metrics.match_labels`): the predicted
    class matched to the first true class comes first, and so on; the other predicted classes follow the partners of
    their parent's group (last without coarse labels). Matched pairs that share cells are outlined, so a good
    prediction reads as an outlined diagonal (a pair sharing no cell is left out: the matching pairs every class it
    can).

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine`; not modified.
    true_key
        Column of ``adata.obs`` with the known fine labels.
    key
        Column of ``adata.obs`` with the predicted labels (``key_added`` of :func:`falcon_sc.tl.refine`).
    normalize
        Show the share of each true class's cells (rows sum to 1) instead of counts.
    annotate
        Write the values in the cells; default: when the table has at most 20 rows and columns.
    cmap
        Colormap.
    ax
        Axes to draw on. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Axes, or ``None`` when the figure was shown.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, show_progress=False)
    >>> ax = fal.pl.confusion(adata, "fine", show=False)  # shares of each true class
    >>> ax = fal.pl.confusion(adata, "fine", normalize=False, show=False)  # cell counts
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if key not in adata.obs.columns:
        read_results(adata, key, need=("labels",))  # raises the KeyError with the fix
    true = obs_labels(adata, true_key, "true_key")
    pred = obs_labels(adata, key, "key")
    layout = _layout(adata, key, true, pred, category_order(adata, true_key), category_order(adata, key))
    rows, cols = layout.rows, layout.cols
    table = pd.crosstab(true, pred).reindex(index=rows, columns=cols, fill_value=0)
    counts = table.to_numpy(dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0) if normalize else counts

    n_r, n_c = values.shape
    if figsize is None:
        figsize = (max(4.0, 0.42 * n_c + 3.5), max(3.0, 0.35 * n_r + 2.0))
    fig, axes, _ = new_axes(ax, 1, figsize=figsize)
    a = axes[0]
    im = a.imshow(values, cmap=cmap, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0 if normalize else None)
    fontsize = float(np.clip(200.0 / max(n_r, n_c, 1), 5.0, 9.0))
    a.set_xticks(range(n_c), cols, rotation=90, fontsize=fontsize)
    a.set_yticks(range(n_r), rows, fontsize=fontsize)
    a.set_xlabel(f"predicted ({key})")
    a.set_ylabel(f"true ({true_key})")
    for i, t in enumerate(rows):  # matched pairs sharing cells (an empty cell is no pair)
        if t in layout.partner:
            j = cols.index(layout.partner[t])
            a.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="tab:red", lw=1.2))
    _groups(a, layout, fontsize)
    if annotate is None:
        annotate = max(n_r, n_c) <= 20
    if annotate:
        _annotate(a, values, counts, normalize, fontsize)
    fig.colorbar(im, ax=a, shrink=0.7, label="share of the true class's cells" if normalize else "cells")
    what = "share of each true class's cells" if normalize else "cells"
    grouped = f"; rows and columns grouped by coarse class ({layout.coarse_key})" if layout.groups else ""
    a.set_title(
        f"true ({true_key}) x predicted ({key}) fine classes: {what}\n"
        f"columns in the order of the Hungarian matching{grouped}\nred outline: matched pair (sharing cells)",
        fontsize=9,
    )
    return finish(fig, a, show=show, save=save, name="confusion")


@dataclass
class _Layout:
    """Rows (true classes), columns (predicted), matched partner of each true class, coarse groups of the rows."""

    rows: list[str]
    cols: list[str]
    partner: dict[str, str]
    groups: list[tuple[str, int, int]]  # (coarse class, first row, last row + 1)
    coarse_key: str | None


def _layout(
    adata: AnnData, key: str, true: pd.Series, pred: pd.Series, true_order: list[str], pred_order: list[str]
) -> _Layout:
    """Rows grouped by the coarse class of most of their cells; columns: each row's partner, then the others."""
    both = pd.crosstab(true, pred).stack()
    overlap = {(str(t), str(g)): int(n) for (t, g), n in both.items()}  # type: ignore[misc]
    partner = {
        str(t): str(g)
        for g, t in match_labels(true.to_numpy(), pred.to_numpy()).items()
        if t is not None and overlap.get((str(t), str(g)), 0) > 0
    }
    res = FalconResults(adata, key)
    coarse_key = res.coarse_key
    groups: list[tuple[str, int, int]] = []
    rows = list(true_order)
    if coarse_key is not None and coarse_key in adata.obs.columns:
        coarse = adata.obs[coarse_key].astype(str)
        names = res.coarse_names if res.has("relations") else category_order(adata, coarse_key)
        names = [c for c in names if c in set(coarse)] + sorted(set(coarse) - set(names))
        majority = pd.crosstab(true, coarse).idxmax(axis=1)
        rank = {c: i for i, c in enumerate(names)}
        rows = sorted(true_order, key=lambda t: rank[str(majority[t])])  # stable: categorical order inside a group
        for c in names:
            inside = [i for i, t in enumerate(rows) if majority[t] == c]
            if inside:
                groups.append((c, inside[0], inside[-1] + 1))
        parent = res.parents() if res.has("relations") else {}
        cols: list[str] = []
        for c, first, end in groups:  # each group's partners, then its other predicted classes (by parent)
            cols += [partner[t] for t in rows[first:end] if t in partner]
            cols += [g for g in pred_order if parent.get(g) == c and g not in partner.values() and g not in cols]
        cols += [g for g in pred_order if g not in partner.values() and g not in cols]
        return _Layout(rows, cols, partner, groups, coarse_key)
    used = set(partner.values())
    cols = [partner[t] for t in rows if t in partner] + [g for g in pred_order if g not in used]
    return _Layout(rows, cols, partner, groups, None)


def _groups(a: Axes, layout: _Layout, fontsize: float) -> None:
    """Lines between the coarse groups of rows, their names on the right."""
    if len(layout.groups) < 2:
        return
    for _, _, end in layout.groups[:-1]:
        a.axhline(end - 0.5, color="0.3", lw=0.8)
    right = a.secondary_yaxis("right")
    right.set_yticks([(s + e - 1) / 2 for _, s, e in layout.groups], [c for c, _, _ in layout.groups])
    right.tick_params(labelsize=fontsize, length=0)
    right.set_ylabel(f"coarse class of most cells ({layout.coarse_key})", fontsize=fontsize)


def _annotate(a: Axes, values: np.ndarray, counts: np.ndarray, normalize: bool, fontsize: float) -> None:
    """Values written in the non-empty cells."""
    vmax = values.max() if values.size else 1.0
    for i, j in zip(*np.nonzero(counts), strict=True):
        text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
        color = "white" if values[i, j] > 0.6 * vmax else "black"
        a.text(j, i, text, ha="center", va="center", fontsize=fontsize - 1, color=color)
