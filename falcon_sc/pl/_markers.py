"""``fal.pl.fine_markers``: dot plots of the marker genes of each fine class, one panel per coarse class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData
from matplotlib.figure import Figure

from .._docs import doc_params
from .._layout import markers_key as markers_key_of
from .._layout import read_markers, read_results
from ..tl._markers import OTHER_COARSE, lognorm_expression
from ._utils import finish, plot_output

#: scanpy's dot plot sizes (inches): per gene column, per group row, legends, the least height of a plot
_COL, _ROW, _LEGENDS, _MIN_HEIGHT = (
    sc.pl.DotPlot.DEFAULT_CATEGORY_WIDTH,
    sc.pl.DotPlot.DEFAULT_CATEGORY_HEIGHT,
    sc.pl.DotPlot.DEFAULT_LEGENDS_WIDTH,
    sc.pl.DotPlot.MIN_FIGURE_HEIGHT,
)
#: inches per character of a tick label, and the gap between two panels
_CHAR, _GAP = 0.085, 0.35


@doc_params(plot_output=plot_output)
def fine_markers(
    adata: AnnData,
    key: str = "falcon",
    *,
    n_genes: int = 5,
    coarse: str | Sequence[str] | None = None,
    markers_key: str | None = None,
    standard_scale: str | None = "var",
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
    **kwds,
) -> Figure | None:
    """Dot plots of the marker genes of each fine class (:func:`falcon_sc.tl.fine_markers`), one per coarse class.

    Each panel, titled with its coarse class, shows the cells of one coarse class in rows by fine class and the top
    ``n_genes`` markers of each fine class in columns (grouped under the fine class's name): dot size is the share of
    cells expressing the gene, colour the mean log-normalised expression (the same values the markers were found on),
    scaled per gene with ``standard_scale="var"``. A coarse class whose single child was compared with the other coarse
    classes (``single_child="rest"``) shows that child beside the other coarse classes.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.fine_markers`; not modified.
    key
        ``key_added`` of :func:`~falcon_sc.tl.refine`.
    n_genes
        Markers shown per fine class (at most those stored).
    coarse
        Coarse class(es) to plot; default every coarse class with markers.
    markers_key
        ``key_added`` of :func:`~falcon_sc.tl.fine_markers`; default ``f"{key}_markers"``.
    standard_scale
        ``"var"`` scales each gene's mean expression to [0, 1] across the rows of a panel; ``None`` shows the means.
    {plot_output}
    **kwds
        Passed to :func:`scanpy.pl.dotplot` (e.g. ``cmap``, ``dendrogram=False``, ``swap_axes``).

    Returns
    -------
    The Figure (one panel per coarse class, panel ``i``'s axes among ``fig.axes``); ``None`` when it was shown.

    Raises
    ------
    KeyError
        No marker results (run :func:`~falcon_sc.tl.fine_markers` first), no FALCON results under ``key``, or a
        ``coarse`` class without markers.
    ValueError
        ``n_genes`` not a positive int.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> fal.tl.refine(adata, "coarse", n_fine=10)  # doctest: +SKIP
    >>> fal.tl.fine_markers(adata)  # doctest: +SKIP
    >>> fal.pl.fine_markers(adata, n_genes=5, coarse="T cell", save="t_cell_markers.png")  # doctest: +SKIP
    """
    res = read_results(adata, key, need=("relations", "labels"))
    markers_key = markers_key_of(key) if markers_key is None else markers_key
    stored = read_markers(adata, key, markers_key)
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes={n_genes!r} must be a positive int (markers shown per fine class).")
    table: pd.DataFrame = stored["markers"]
    available = list(dict.fromkeys(table["coarse"].astype(str)))
    chosen = available if coarse is None else [coarse] if isinstance(coarse, str) else [str(c) for c in coarse]
    missing = [c for c in chosen if c not in available]
    if missing:
        raise KeyError(f"coarse classes without markers: {missing}; those with markers: {available}.")
    if not chosen:
        raise KeyError(f"adata.uns[{markers_key!r}]['markers'] holds no marker genes (no coarse class was tested).")

    params = stored["params"]
    expr, _ = lognorm_expression(
        adata, layer=params.get("layer"), use_raw=bool(params["use_raw"]), input_kind=str(params["input_kind"])
    )
    labels = res.fine_labels()
    parent = res.parents()
    coarse_of_cell = labels.map(parent)
    panels = [_panel(table, c, labels, coarse_of_cell, int(n_genes)) for c in chosen]
    fig = plt.figure(figsize=(1.0, 1.0))
    boxes, size = _layout(panels, bool(kwds.get("swap_axes", False)))
    fig.set_size_inches(size if figsize is None else figsize)
    for (cells, groups, genes, title), box in zip(panels, boxes, strict=True):
        sub = expr[cells].copy()
        sub.obs["group"] = groups
        options = {"standard_scale": standard_scale, **kwds}
        x, y, w, h = box  # scanpy splits the axes' subplot spec: one grid cell per panel, placed exactly
        ax = fig.add_subplot(fig.add_gridspec(1, 1, left=x, right=x + w, bottom=y, top=y + h)[0])
        sc.pl.dotplot(sub, genes, "group", ax=ax, show=False, title=title, **options)
    return finish(fig, fig, show=show, save=save, name="fine_markers")


def _panel(
    table: pd.DataFrame, coarse: str, labels: pd.Series, coarse_of_cell: pd.Series, n_genes: int
) -> tuple[np.ndarray, pd.Categorical, dict[str, list[str]], str]:
    """One coarse class's panel: its cells (positions), their rows (categorical), the genes per fine class, title."""
    rows = table[table["coarse"].astype(str) == coarse]
    genes = {str(g): list(df["names"].astype(str))[:n_genes] for g, df in rows.groupby("group", sort=False)}
    inside = (coarse_of_cell == coarse).to_numpy()
    if (rows["reference"].astype(str) == OTHER_COARSE).any():  # a single child against the other coarse classes
        cells = np.arange(len(labels))
        groups = labels.where(inside, coarse_of_cell).to_numpy()
        order = [*genes, *dict.fromkeys(coarse_of_cell[~inside])]
        title = f"{coarse}: markers against the other coarse classes"
    else:
        cells = np.flatnonzero(inside)
        groups = labels.to_numpy()[cells]
        order = [f for f in dict.fromkeys(table["group"].astype(str)) if f in set(groups)]
        order += sorted(set(groups) - set(order))  # children with a single cell (untested) still get a row
        title = f"{coarse}: markers of each fine class against its siblings"
    return cells, pd.Categorical(groups, categories=order), genes, title


def _layout(panels: list, swapped: bool) -> tuple[list[tuple[float, float, float, float]], tuple[float, float]]:
    """Axes boxes (figure fractions) giving each panel scanpy's own size for a dot plot, stacked; figure size."""
    sizes, below, left = [], [], 0.3
    for _, groups, genes, _ in panels:
        names = [g for gs in genes.values() for g in gs]
        rows, cols = len(groups.categories) * _ROW, len(names) * _COL
        if swapped:
            rows, cols = cols, rows
        sizes.append((cols + _LEGENDS + 0.7, max(_MIN_HEIGHT, rows + 1.0)))
        row_labels, col_labels = list(groups.categories), names
        if swapped:
            row_labels, col_labels = col_labels, row_labels
        below.append(_CHAR * max(map(len, col_labels)) + 0.3)  # rotated column labels under the dots
        left = max(left, _CHAR * max(map(len, row_labels)) + 0.3)
    width = left + max(w for w, _ in sizes) + 0.2
    height = sum(h + b + _GAP for (_, h), b in zip(sizes, below, strict=True))
    boxes, top = [], height
    for (w, h), b in zip(sizes, below, strict=True):
        top -= h
        boxes.append((left / width, top / height, w / width, h / height))
        top -= b + _GAP
    return boxes, (width, height)
