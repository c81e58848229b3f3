"""``fal.pl.n_fine``: the evidence behind ``n_fine="auto"`` (children per coarse class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from .._docs import doc_params
from .._layout import read_results
from ._utils import finish, new_axes, palette, plot_output


@doc_params(plot_output=plot_output)
def n_fine(
    adata: AnnData,
    key: str = "falcon",
    *,
    max_children: int | None = None,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
) -> Axes | None:
    """Plot how the number of fine classes of each coarse class was estimated (``refine(..., n_fine="auto")``).

    Each coarse class is over-clustered and its clusters are merged, most inter-connected pair first; a line shows,
    for every number ``k`` of clusters, the highest connectivity between two of them (mean over the Leiden seeds).
    Merging stops when it falls below the threshold (dashed line): the marked point is the estimate. A coarse class
    whose line stays above the threshold down to ``k = 2`` gets one fine class: its dot sits at ``k = 1``, joined to
    the last merge by a dotted line; a class too small to cut has a hollow dot at ``k = 1``. The connectivity (y axis)
    is PAGA's: the kNN edges between two clusters over the number expected at random inside the coarse class, near 0
    for distinct populations and above the threshold (up to about 2) for pieces of one (:mod:`falcon_sc.core.n_fine`).

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine` with ``n_fine="auto"`` (or a mapping); not modified.
    key
        ``key_added`` used in :func:`falcon_sc.tl.refine`.
    max_children
        Right end of the x axis (default: a few past the largest estimate).
    ax
        Axes to draw on. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Axes, or ``None`` when the figure was shown.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> fal.tl.refine(adata, "coarse", n_fine="auto")  # doctest: +SKIP
    >>> fal.pl.n_fine(adata)  # doctest: +SKIP
    """
    res = read_results(adata, key, need=("n_fine_estimate", "n_fine_evidence"))
    table, evidence = res.get("n_fine_estimate"), res.get("n_fine_evidence")
    stored = res.get("n_fine_threshold")
    threshold = float(np.nan if stored is None else stored)
    if figsize is None:
        figsize = (8.0, max(4.2, 0.2 * len(table) + 1.5))
    fig, (a,), _ = new_axes(ax, 1, figsize=figsize)
    right = int(max_children) if max_children is not None else int(table["used"].max()) + 6
    curves = evidence.groupby(["coarse", "n_children"], sort=False)["connectivity"].mean()
    for color, (coarse, row) in zip(palette(len(table)), table.iterrows(), strict=True):
        has_curve = coarse in curves.index.get_level_values(0)
        curve = curves.loc[coarse] if has_curve else curves.iloc[:0]
        curve = curve[curve.index <= right].sort_index()
        k = int(row["estimated"])
        note = f"{coarse}: {k}" + (f" (given {int(row['used'])})" if row["given"] else "")
        if not has_curve:
            note += " (too few cells to cut)"
        a.plot(curve.index, curve.to_numpy(), "-", color=color, lw=1.4, label=note)
        if k in curve.index:
            a.plot([k], [curve.loc[k]], "o", color=color, ms=7, mec="black")
        elif k == 1 and 2 in curve.index:  # one class: the last two clusters were merged (dotted: that merge)
            a.plot([1, 2], [curve.loc[2], curve.loc[2]], ":", color=color, lw=1.2)
            a.plot([1], [curve.loc[2]], "o", color=color, ms=7, mec="black")
        elif k == 1:  # never cut: a hollow dot at k = 1 on the threshold
            a.plot([1], [threshold if np.isfinite(threshold) else 0.0], "o", mfc="white", mec=color, ms=7, mew=1.5)
    if np.isfinite(threshold):
        a.axhline(threshold, color="grey", ls="--", lw=1)
        a.text(
            right + 0.4,
            threshold,
            f"threshold {threshold:g}: merged above, kept apart below",
            va="bottom",
            ha="right",
            fontsize="small",
            color="grey",
        )
    a.set_xlim(0.5, right + 0.5)
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_xlabel("fine classes in the coarse class (k)")
    a.set_ylabel("PAGA connectivity of the most\nconnected pair of the k clusters")
    a.set_title(
        f"n_fine estimate: {int(table['used'].sum())} fine classes (dot: each coarse class's estimate)\n"
        "connectivity: kNN edges between two clusters over those expected at random (near 0: distinct populations)",
        fontsize=9,
    )
    a.legend(
        title="coarse: estimate",
        fontsize="small",
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        ncols=1 if len(table) <= 16 else 2,
    )
    return finish(fig, a, show=show, save=save, name="n_fine")
