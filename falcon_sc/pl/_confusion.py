"""``fal.pl.confusion``: true fine x predicted fine contingency table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from .._docs import doc_params, plot_output
from .._layout import read_results
from ..metrics import match_labels
from ._utils import category_order, finish, new_axes, obs_labels


@doc_params(plot_output=plot_output)
def confusion(
    adata: AnnData,
    true_key: str,
    *,
    key: str = "falcon",
    normalize: bool = True,
    annotate: bool | None = None,
    cmap: str = "Blues",
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Heatmap of true fine classes (rows) x predicted fine classes (columns).

    Columns are ordered by the Hungarian matching (:func:`~falcon_sc.metrics.match_labels`): the predicted class
    matched to the first true class comes first, and so on; unmatched predicted classes come last. Matched pairs
    are outlined, so a good prediction reads as an outlined diagonal.

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
    rows = category_order(adata, true_key)
    matching = {
        str(g): None if t is None else str(t) for g, t in match_labels(true.to_numpy(), pred.to_numpy()).items()
    }
    partner = {t: g for g, t in matching.items() if t is not None}
    pred_order = category_order(adata, key)
    cols = [partner[t] for t in rows if t in partner] + [g for g in pred_order if matching.get(g) is None]
    table = pd.crosstab(true, pred).reindex(index=rows, columns=cols, fill_value=0)
    counts = table.to_numpy(dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0) if normalize else counts

    n_r, n_c = values.shape
    if figsize is None:
        figsize = (max(4.0, 0.42 * n_c + 3.0), max(3.0, 0.35 * n_r + 2.0))
    fig, axes, _ = new_axes(ax, 1, figsize=figsize)
    a = axes[0]
    im = a.imshow(values, cmap=cmap, aspect="auto", interpolation="nearest", vmin=0.0, vmax=1.0 if normalize else None)
    fontsize = float(np.clip(200.0 / max(n_r, n_c, 1), 5.0, 9.0))
    a.set_xticks(range(n_c), cols, rotation=90, fontsize=fontsize)
    a.set_yticks(range(n_r), rows, fontsize=fontsize)
    a.set_xlabel(f"predicted ({key})")
    a.set_ylabel(f"true ({true_key})")
    for i, t in enumerate(rows):
        if t in partner:
            j = cols.index(partner[t])
            a.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="tab:red", lw=1.2))
    if annotate is None:
        annotate = max(n_r, n_c) <= 20
    if annotate:
        vmax = values.max() if values.size else 1.0
        for i in range(n_r):
            for j in range(n_c):
                if counts[i, j] == 0:
                    continue
                text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                a.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=fontsize - 1,
                    color="white" if values[i, j] > 0.6 * vmax else "black",
                )
    fig.colorbar(im, ax=a, shrink=0.7, label="share of the true class's cells" if normalize else "cells")
    what = "share of each true class's cells" if normalize else "cells"
    a.set_title(
        f"true ({true_key}) x predicted ({key}) fine classes: {what}\n"
        "columns in the order of the Hungarian matching; red outline: matched pair",
        fontsize=9,
    )
    return finish(fig, a, show=show, save=save)
