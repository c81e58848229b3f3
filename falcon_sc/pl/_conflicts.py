"""``fal.pl.coarse_conflicts``: cells whose FALCON prediction lies under another coarse class, per coarse class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._docs import doc_params
from ..tl._conflicts import cell_conflicts
from ._utils import finish, new_axes, palette, plot_output, root_figure


@doc_params(plot_output=plot_output)
def coarse_conflicts(
    adata: AnnData,
    key: str = "falcon",
    *,
    kind: Literal["bar", "heatmap"] = "bar",
    coarse_key: str | None = None,
    min_confidence: float | None = None,
    ax: Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
) -> Axes | None:
    """Plot the coarse-label conflicts of :func:`falcon_sc.tl.coarse_conflicts`.

    A cell is flagged when FALCON's unrestricted top prediction is a fine class under another coarse class than its
    label (``obs[f"{key}_outside_parent"]``); its *predicted coarse class* is the other coarse class whose children
    get the highest summed probability (``obsm[f"{key}_probs"]``).

    ``kind="bar"``
        One horizontal bar per coarse class: the share of its cells flagged, split by predicted coarse class, with
        ``flagged / cells`` written at the end of the bar.
    ``kind="heatmap"``
        Given coarse label (rows) x predicted coarse class (columns): number of flagged cells.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine`; not modified.
    key
        ``key_added`` used in :func:`falcon_sc.tl.refine`.
    kind
        ``"bar"`` or ``"heatmap"``.
    coarse_key
        Column of ``adata.obs`` with the coarse labels; default: the one :func:`~falcon_sc.tl.refine` used.
    min_confidence
        Count a flagged cell only when its predicted coarse class has at least this probability.
    ax
        Axes to draw on. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Axes, or ``None`` when the figure was shown.

    Raises
    ------
    KeyError
        No FALCON results under ``key``: run :func:`~falcon_sc.tl.refine` first.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=600, n_genes=300, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", 6, n_epochs=3, show_progress=False)
    >>> ax = fal.pl.coarse_conflicts(adata, show=False)
    >>> ax = fal.pl.coarse_conflicts(adata, kind="heatmap", show=False)
    """
    if kind not in ("bar", "heatmap"):
        raise ValueError(f"kind must be 'bar' or 'heatmap', got {kind!r}")
    cells = cell_conflicts(adata, key, coarse_key=coarse_key, min_confidence=min_confidence)
    names = cells.coarse_names
    k = len(names)
    counts = np.zeros((k, k), dtype=np.int64)  # given x predicted other coarse class, flagged cells
    if k > 1:
        np.add.at(counts, (cells.coarse[cells.flagged], cells.other[cells.flagged]), 1)
    sizes = np.bincount(cells.coarse, minlength=k)
    flag_col = f"obs[{key + '_outside_parent'!r}]"
    conf = "" if min_confidence is None else f", predicted class probability >= {min_confidence:g}"
    panel = _Panel(cells.coarse_key, names, counts, sizes, float(np.clip(200.0 / max(k, 1), 6.0, 9.0)))
    if kind == "bar":
        fig, axes, _ = new_axes(ax, 1, figsize=figsize if figsize is not None else (7.5, max(2.5, 0.4 * k + 1.6)))
        _draw_bar(axes[0], panel, f"{flag_col}{conf}")
    else:
        size = (max(4.5, 0.5 * k + 3.0), max(3.5, 0.4 * k + 2.2))
        fig, axes, _ = new_axes(ax, 1, figsize=figsize if figsize is not None else size)
        _draw_heatmap(axes[0], panel, f"{flag_col}{conf}")
    return finish(fig, axes[0], show=show, save=save, name="coarse_conflicts")


@dataclass
class _Panel:
    """What both kinds draw: the coarse classes, flagged cells (given x predicted other class) and class sizes."""

    coarse_key: str
    names: list[str]
    counts: np.ndarray
    sizes: np.ndarray
    fontsize: float


def _draw_bar(a: Axes, panel: _Panel, flags: str) -> None:
    """One bar per coarse class: the share of its cells flagged, split by predicted coarse class."""
    names, counts, sizes, fontsize = panel.names, panel.counts, panel.sizes, panel.fontsize
    k, total = len(names), int(counts.sum())
    share = counts / np.maximum(sizes[:, None], 1) * 100.0
    colors = palette(k)
    y = np.arange(k)
    left = np.zeros(k)
    for j in range(k):
        if counts[:, j].any():
            a.barh(y, share[:, j], left=left, color=colors[j], label=names[j], height=0.7)
            left += share[:, j]
    xmax = max(float(left.max()), 1.0)
    for i in range(k):
        a.text(
            left[i] + 0.01 * xmax,
            i,
            f"{int(counts[i].sum())} / {int(sizes[i])} cells",
            va="center",
            ha="left",
            fontsize=fontsize - 1,
        )
    a.set_xlim(0, xmax * 1.3)
    a.set_yticks(y, names, fontsize=fontsize)
    a.invert_yaxis()
    a.set_ylabel(f"coarse label ({panel.coarse_key})")
    a.set_xlabel("cells flagged (% of the coarse class)")
    if total:
        a.legend(
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=fontsize - 1,
            frameon=False,
            title="predicted coarse class",
            title_fontsize=fontsize - 1,
            borderaxespad=0.0,
        )
    else:
        a.text(0.5, 0.5, "no cell flagged", transform=a.transAxes, ha="center", va="center", fontsize=9)
    a.set_title(
        f"coarse-label conflicts: cells predicted under another coarse class\n"
        f"{flags}; {total} of {int(sizes.sum())} cells",
        fontsize=fontsize + 1,
    )


def _draw_heatmap(a: Axes, panel: _Panel, flags: str) -> None:
    """Given coarse label (rows) x predicted coarse class (columns): flagged cells."""
    names, counts, sizes, fontsize = panel.names, panel.counts, panel.sizes, panel.fontsize
    k, total = len(names), int(counts.sum())
    shown = np.where(np.eye(k, dtype=bool), np.nan, counts.astype(float))  # a class cannot conflict with itself
    im = a.imshow(shown, cmap="Reds", aspect="auto", interpolation="nearest", vmin=0)
    a.set_facecolor("0.9")
    vmax = max(float(counts.max()), 1.0)
    for i in range(k):
        for j in range(k):
            if i != j and counts[i, j] > 0:
                a.text(
                    j,
                    i,
                    str(int(counts[i, j])),
                    ha="center",
                    va="center",
                    fontsize=fontsize - 1,
                    color="white" if counts[i, j] > 0.6 * vmax else "black",
                )
    a.set_xticks(range(k), names, rotation=90, fontsize=fontsize)
    a.set_yticks(range(k), [f"{n} ({int(s)} cells)" for n, s in zip(names, sizes, strict=True)], fontsize=fontsize)
    a.set_xlabel("predicted coarse class (grey diagonal: the label itself, never a conflict)")
    a.set_ylabel(f"coarse label ({panel.coarse_key})")
    root_figure(a).colorbar(im, ax=a, shrink=0.7, label="flagged cells")
    a.set_title(
        f"flagged cells: coarse label x predicted coarse class\n{flags}; {total} cells",
        fontsize=fontsize + 1,
    )
