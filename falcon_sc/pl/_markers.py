"""``fal.pl.fine_markers``: one dot plot of the marker genes of every fine class, rows grouped by coarse class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    """One dot plot of the marker genes of every fine class (:func:`falcon_sc.tl.fine_markers`).

    Rows are the fine classes, grouped by coarse class (lines between the groups; a renamed class's coarse class in
    brackets); columns are the top ``n_genes`` markers of each fine class, grouped under its name. Dot size is the
    share of the row's cells expressing the gene; colour the row's mean log-normalised expression (the values the
    markers were found on), with ``standard_scale="var"`` scaled per gene to [0, 1] across the rows shown (0: the
    lowest row, 1: the highest; the colour bar says so), as scanpy's ``standard_scale``. One legend for the figure.
    A coarse class with a single fine class is shown too: with its markers against the other coarse classes when
    :func:`~falcon_sc.tl.fine_markers` ran with ``single_child="rest"``, else as a row whose label says it has none.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.fine_markers`; not modified.
    key
        ``key_added`` of :func:`~falcon_sc.tl.refine`.
    n_genes
        Markers shown per fine class (at most those stored).
    coarse
        Coarse class(es) to plot; default every coarse class with cells.
    markers_key
        ``key_added`` of :func:`~falcon_sc.tl.fine_markers`; default ``f"{key}_markers"``.
    standard_scale
        ``"var"`` scales each gene's mean expression to [0, 1] across the rows; ``"group"`` each row's across the
        genes; ``None`` shows the means (log1p of counts per 1e4).
    {plot_output}
    **kwds
        Passed to :func:`scanpy.pl.dotplot` (e.g. ``cmap``, ``dendrogram=False``, ``swap_axes``).

    Returns
    -------
    The Figure (scanpy's dot plot: the dots, the gene group brackets and the legends among ``fig.axes``); ``None``
    when it was shown.

    Raises
    ------
    KeyError
        No marker results (run :func:`~falcon_sc.tl.fine_markers` first), no FALCON results under ``key``, or a
        ``coarse`` class without cells, or no marker genes for the classes chosen.
    ValueError
        ``n_genes`` not a positive int.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> fal.tl.refine(adata, "coarse", n_fine=10)  # doctest: +SKIP
    >>> fal.tl.fine_markers(adata)  # doctest: +SKIP
    >>> fal.pl.fine_markers(adata, n_genes=5, coarse="T cell", save="_t_cell.png")  # doctest: +SKIP
    """
    res = read_results(adata, key, need=("relations", "labels"))
    markers_key = markers_key_of(key) if markers_key is None else markers_key
    stored = read_markers(adata, key, markers_key)
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes={n_genes!r} must be a positive int (markers shown per fine class).")
    table: pd.DataFrame = stored["markers"]
    parent = res.parents()
    labels = res.fine_labels()
    present = set(labels)
    every = [c for c in res.coarse_names if any(p == c and f in present for f, p in parent.items())]
    chosen = every if coarse is None else [coarse] if isinstance(coarse, str) else [str(c) for c in coarse]
    missing = [c for c in chosen if c not in every]
    if missing:
        raise KeyError(f"coarse classes without cells or markers: {missing}; those with cells: {every}.")
    if table.empty and coarse is None:
        raise KeyError(f"adata.uns[{markers_key!r}]['markers'] holds no marker genes (no coarse class was tested).")
    params = stored["params"]
    expr, _ = lognorm_expression(
        adata, layer=params.get("layer"), use_raw=bool(params["use_raw"]), input_kind=str(params["input_kind"])
    )
    rows = [f for c in chosen for f in parent if parent[f] == c and f in present]
    genes = {f: list(df["names"].astype(str))[: int(n_genes)] for f, df in table.groupby("group", sort=False)}
    genes = {f: genes[f] for f in rows if f in genes}
    if not genes:
        raise KeyError(f"no marker genes for the fine classes of {chosen}; run fal.tl.fine_markers (single_child=).")
    inside = labels.isin(rows).to_numpy()
    sub = expr[inside].copy()
    names = {f: _row_name(f, parent[f], f in genes, table) for f in rows}
    sub.obs["fine class"] = pd.Categorical(labels[inside].map(names).to_numpy(), categories=[names[f] for f in rows])
    options: dict = {"standard_scale": standard_scale, **kwds}
    legend = {
        "colorbar_title": options.pop("colorbar_title", _COLORBAR.get(standard_scale, "mean expression")),
        "size_title": options.pop("size_title", "% of the row's cells\nexpressing the gene"),
    }
    plot = sc.pl.dotplot(sub, genes, "fine class", show=False, return_fig=True, figsize=figsize, **options)
    plot.legend(width=2.2, **legend)
    plot.make_figure()
    fig = plot.fig
    fig.suptitle(
        "marker genes of each fine class against its siblings (columns, under its name); rows: fine classes, grouped"
        " by coarse class",
        y=1.0 + 0.4 / fig.get_figheight(),
        fontsize=10,
    )
    _separate(plot, [sum(parent[f] == c for f in rows) for c in chosen], bool(kwds.get("swap_axes", False)))
    return finish(fig, fig, show=show, save=save, name="fine_markers")


_COLORBAR = {
    "var": "mean expression, scaled per gene\n(0: lowest row, 1: highest row)",
    "group": "mean log-expression,\nscaled per row",
    None: "mean log-expression\n(log1p of counts per 1e4)",
}


def _row_name(fine: str, parent: str, has_markers: bool, table: pd.DataFrame) -> str:
    """Row label: the fine class, its coarse class when the name does not show it, and why it has no markers."""
    name = fine if fine.startswith(f"{parent}/") else f"{fine} ({parent})"
    if not has_markers:
        return f"{name}: no markers (only child; single_child='rest' tests it)"
    reference = table.loc[table["group"].astype(str) == fine, "reference"].astype(str)
    if (reference == OTHER_COARSE).any():
        return f"{name} (only child: vs the other coarse classes)"
    return name


def _separate(plot, block_sizes: list[int], swapped: bool) -> None:
    """Lines between the coarse classes' blocks of rows (columns when swapped)."""
    ax = plot.ax_dict["mainplot_ax"]
    edges = np.cumsum(block_sizes)[:-1]
    for edge in edges:
        if swapped:
            ax.axvline(edge, color="0.3", lw=0.8)
        else:
            ax.axhline(edge, color="0.3", lw=0.8)
