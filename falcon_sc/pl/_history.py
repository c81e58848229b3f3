"""``fal.pl.history``: training curves of :func:`falcon_sc.tl.refine`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._docs import doc_params, plot_output
from ._utils import finish, get_results, new_axes, palette

PANELS = ("loss", "fine_in_use", "relation_changes", "children")
_LOSSES = ("loss", "coarse", "neighbour", "confident", "regulariser")


@doc_params(plot_output=plot_output)
def history(
    adata: AnnData,
    *,
    key: str = "falcon",
    panels: Sequence[str] = PANELS,
    ax: Sequence[Axes] | Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure | None:
    """Plot the training curves stored in ``uns[key]["history"]``, one panel per quantity.

    Panels (any subset of them, in any order):

    ``"loss"``
        Total loss and its terms (coarse likelihood, neighbour consistency, confident targets, regulariser).
    ``"fine_in_use"``
        Fine classes holding cells after each epoch (dashed: ``n_fine``) and, on the right axis, the share of the
        largest fine class.
    ``"relation_changes"``
        Fine classes that changed parent in the relation solves of each epoch.
    ``"children"``
        Children per coarse class after each epoch (``uns[key]["children_history"]``).

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine`; not modified.
    key
        ``key_added`` used in :func:`falcon_sc.tl.refine`.
    panels
        Panels to draw.
    ax
        Axes to draw on, one per panel. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Figure, or ``None`` when it was shown.
    """
    res = get_results(adata, key, ("history",))
    panels = [panels] if isinstance(panels, str) else list(panels)
    unknown = [p for p in panels if p not in PANELS]
    if unknown or not panels:
        raise ValueError(f"unknown panels {unknown}: choose among {list(PANELS)}")
    hist = res["history"]
    if not isinstance(hist, pd.DataFrame):
        hist = pd.DataFrame(hist)
    epoch = hist["epoch"].to_numpy() + 1 if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
    n = len(panels)
    ncols = min(n, 2)
    if figsize is None:
        figsize = (4.2 * ncols, 3.0 * int(np.ceil(n / ncols)))
    fig, axes, _ = new_axes(ax, n, figsize=figsize, ncols=ncols)
    for panel, a in zip(panels, axes, strict=True):
        if panel == "loss":
            for col in _LOSSES:
                if col in hist.columns:
                    a.plot(epoch, hist[col].to_numpy(dtype=float), label=col, lw=2.0 if col == "loss" else 1.2)
            a.set_ylabel("loss")
            a.legend(fontsize=7, frameon=False)
        elif panel == "fine_in_use":
            _column(hist, "fine_in_use", key)
            a.plot(
                epoch,
                hist["fine_in_use"].to_numpy(dtype=float),
                color="tab:blue",
                marker="." if len(epoch) <= 60 else None,
                label="in use",
            )
            n_fine = res.get("params", {}).get("n_fine")
            if n_fine is None and "relations" in res:
                n_fine = len(res["relations"])
            if n_fine is not None:
                a.axhline(n_fine, color="tab:blue", ls="--", lw=1, label="n_fine")
            a.set_ylabel("fine classes in use", color="tab:blue")
            if "largest_fine_share" in hist.columns:
                twin = a.twinx()
                twin.plot(epoch, hist["largest_fine_share"].to_numpy(dtype=float), color="tab:orange", lw=1)
                twin.set_ylabel("largest class share", color="tab:orange")
                twin.set_ylim(0, 1)
        elif panel == "relation_changes":
            _column(hist, "relation_changes", key)
            a.bar(
                epoch,
                hist["relation_changes"].to_numpy(dtype=float),
                color="tab:purple",
                width=max(0.8, len(epoch) / 150),
            )
            a.set_ylabel("relation changes")
        else:
            children = res.get("children_history")
            if children is None:
                raise KeyError(
                    f"adata.uns[{key!r}] has no 'children_history': run fal.tl.refine(adata, coarse_key, "
                    f"n_fine, key_added={key!r}) first"
                )
            children = np.asarray(children)
            names = [str(c) for c in res["relations"].columns] if "relations" in res else None
            names = (
                names
                if names is not None and len(names) == children.shape[1]
                else [str(i) for i in range(children.shape[1])]
            )
            x = np.arange(1, children.shape[0] + 1)
            for j, (name, color) in enumerate(zip(names, palette(len(names)), strict=True)):
                a.step(x, children[:, j] + 0.04 * (j - len(names) / 2), where="mid", color=color, label=name)
            a.set_ylabel("children per coarse class")
            a.legend(fontsize=7, frameon=False, ncols=2 if len(names) > 6 else 1)
        a.set_xlabel("epoch")
        a.set_title(panel.replace("_", " "), fontsize=10)
    return finish(fig, fig, show=show, save=save)


def _column(hist: pd.DataFrame, col: str, key: str) -> None:
    if col not in hist.columns:
        raise KeyError(
            f"adata.uns[{key!r}]['history'] has no column {col!r}; run fal.tl.refine(adata, coarse_key, "
            f"n_fine, key_added={key!r}) again with this version of falcon_sc"
        )
