"""``fal.pl.history``: what a user can act on from the training records of :func:`falcon_sc.tl.refine`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._docs import doc_params
from .._layout import FalconResults, read_results
from ._utils import finish, new_axes, plot_output

PANELS = ("loss", "fine_in_use", "relation", "loss_terms")
#: the panels drawn by default: did training settle, did the classes stabilise, was the relation revised
DEFAULT_PANELS = ("loss", "fine_in_use", "relation")
#: older panel names, still accepted: both are now the one ``"relation"`` panel
_ALIASES = {"relation_changes": "relation", "children": "relation"}
_TERMS = ("coarse", "neighbour", "confident", "regulariser")
#: colour of the marks of relation changes (no coarse class colour)
_CHANGE = "black"


@doc_params(plot_output=plot_output)
def history(
    adata: AnnData,
    key: str = "falcon",
    *,
    panels: Sequence[str] = DEFAULT_PANELS,
    ax: Sequence[Axes] | Axes | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
) -> Figure | None:
    """Plot what the training records ``uns[key]["history"]`` say a user can act on, one panel each (x axis: epoch).

    Each panel's title gives its verdict in words, and the curves show the evidence:

    ``"loss"``
        Did training settle? The total loss (mean over each epoch's steps). The title compares the last quarter of
        the epochs with the quarter before: "settled" (less than 2 % apart) or "still falling" (more epochs,
        ``n_epochs=``, may change the classes).
    ``"fine_in_use"``
        Did the classes stabilise? Fine classes holding cells in the teacher's predictions of each epoch (dashed:
        ``n_fine``) and, on the right axis, the share of the largest fine class. The title says from which epoch on
        both stayed put, or that they still moved in the last epoch.
    ``"relation"``
        Was the relation revised? The children of each coarse class after every epoch
        (``uns[key]["children_history"]``, one row per coarse class, the count written where it changes), with the
        epochs where fine classes changed parent marked by black lines. The title says how many changed and when,
        or that the warm start's relation was kept (and why no solve ran, if none did).
    ``"loss_terms"``
        The loss's terms (coarse likelihood, neighbour consistency, confident targets, regulariser), for
        developers.

    ``"relation_changes"`` and ``"children"`` (older names) draw the ``"relation"`` panel.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine`; not modified.
    key
        ``key_added`` used in :func:`falcon_sc.tl.refine`.
    panels
        Panels to draw, one above the other (shared epoch axis).
    ax
        Axes to draw on, one per panel. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Figure, or ``None`` when it was shown.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, show_progress=False)
    >>> fig = fal.pl.history(adata, show=False)
    >>> fig = fal.pl.history(adata, panels=("loss", "relation"), show=False)
    """
    res = read_results(adata, key, need=("history",))
    chosen = [panels] if isinstance(panels, str) else list(panels)
    unknown = [p for p in chosen if p not in PANELS and p not in _ALIASES]
    if unknown or not chosen:
        raise ValueError(f"unknown panels {unknown}: choose among {list(PANELS)}")
    chosen = list(dict.fromkeys(_ALIASES.get(p, p) for p in chosen))
    hist = res.history
    epoch = hist["epoch"].to_numpy() + 1 if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
    n_coarse = res.children_history.shape[1] if res.has("children_history") else 3
    heights = [max(2.3, 0.24 * n_coarse + 1.2) if p == "relation" else 2.3 for p in chosen]
    if figsize is None:
        figsize = (8.0, sum(heights) + 0.6)
    if ax is None:
        fig = plt.figure(figsize=figsize, layout="constrained")
        axes = list(
            np.atleast_1d(fig.subplots(len(chosen), 1, height_ratios=heights, sharex=True, squeeze=False)[:, 0])
        )
    else:
        fig, axes, _ = new_axes(ax, len(chosen), figsize=figsize)
    marker = "." if len(epoch) <= 60 else None
    for panel, a in zip(chosen, axes, strict=True):
        if panel == "loss":
            _loss(a, hist, epoch)
        elif panel == "loss_terms":
            _loss_terms(a, hist, epoch)
        elif panel == "fine_in_use":
            _fine_in_use(a, hist, epoch, res, marker)
        else:
            _relation(a, hist, epoch, res)
        a.set_xlim(epoch.min() - 0.5, epoch.max() + 0.5)
        a.set_xlabel("epoch")
        a.xaxis.set_tick_params(labelbottom=True)
    return finish(fig, fig, show=show, save=save, name="history")


def _legend_right(a: Axes, **kwargs) -> None:
    """Legend beside the axes (never over the curves)."""
    a.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, borderaxespad=0.0, **kwargs)


def _constant(values: np.ndarray) -> bool:
    return len(values) > 0 and bool(np.all(values == values[0]))


def _settled_from(values: np.ndarray, epoch: np.ndarray) -> int | None:
    """First epoch from which ``values`` no longer changed (``None`` when it changed in the last epoch)."""
    moved = np.flatnonzero(values[1:] != values[:-1])
    if len(moved) == 0:
        return int(epoch[0])
    last = int(moved[-1]) + 1
    return None if last == len(values) - 1 else int(epoch[last])


def _loss(a: Axes, hist: pd.DataFrame, epoch: np.ndarray) -> None:
    _column(hist, "loss", "falcon")
    loss = hist["loss"].to_numpy(dtype=float)
    a.plot(epoch, loss, color="tab:blue", lw=1.6)
    a.set_ylabel("training loss\n(mean over the epoch)")
    verdict = "too few epochs to judge"
    if len(loss) >= 8:
        q = len(loss) // 4
        before, last = float(np.mean(loss[-2 * q : -q])), float(np.mean(loss[-q:]))
        change = (last - before) / max(abs(before), 1e-12)
        if abs(change) < 0.02:
            verdict = f"settled: the last quarter of the epochs is within {abs(change):.1%} of the quarter before"
        elif change < 0:
            verdict = (
                f"still falling ({change:+.1%} in the last quarter of the epochs): more epochs (n_epochs=) may help"
            )
        else:
            verdict = f"rising ({change:+.1%} in the last quarter of the epochs)"
        verdict += " (shaded: the two quarters)"
        a.axvspan(epoch[-2 * q] - 0.5, epoch[-1] + 0.5, color="0.93", zorder=0, lw=0)
    a.set_title(f"Did training settle?\n{verdict}", fontsize=9, loc="left")


def _loss_terms(a: Axes, hist: pd.DataFrame, epoch: np.ndarray) -> None:
    for col in _TERMS:
        if col in hist.columns:
            a.plot(epoch, hist[col].to_numpy(dtype=float), label=col, lw=1.2)
    a.set_ylabel("loss term")
    a.set_title("terms of the training loss (mean over the epoch's steps)", fontsize=9, loc="left")
    if a.lines:
        _legend_right(a)


def _fine_in_use(a: Axes, hist: pd.DataFrame, epoch: np.ndarray, res: FalconResults, marker: str | None) -> None:
    _column(hist, "fine_in_use", res.key)
    in_use = hist["fine_in_use"].to_numpy(dtype=float)
    n_fine = res.params.get("n_fine")
    if not isinstance(n_fine, int | np.integer) and res.has("relations"):
        n_fine = len(res.relations)
    share = hist["largest_fine_share"].to_numpy(dtype=float) if "largest_fine_share" in hist.columns else None
    a.plot(epoch, in_use, color="tab:blue", marker=marker, ms=3, label="fine classes in use")
    top = float(in_use.max())
    if isinstance(n_fine, int | np.integer):
        a.axhline(int(n_fine), color="tab:blue", ls="--", lw=1, label=f"n_fine = {int(n_fine)}")
        top = max(top, float(n_fine))
    a.set_ylim(0, top * 1.15 + 0.5)
    a.set_ylabel("fine classes in use", color="tab:blue")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = a.get_legend_handles_labels()
    since = _settled_from(in_use, epoch)
    if share is not None:
        twin = a.twinx()
        (line,) = twin.plot(epoch, share, color="tab:orange", lw=1, label="largest class (share of cells, right)")
        twin.set_ylabel("largest class\n(share of cells)", color="tab:orange")
        twin.set_ylim(0, 1.05)
        handles, labels = [*handles, line], [*labels, str(line.get_label())]
        moved = np.abs(np.diff(share)) > 0.01  # the largest share counts as still when it moves by under 1 point
        last_move = int(np.flatnonzero(moved)[-1]) + 1 if moved.any() else 0
        share_since = None if moved.any() and last_move == len(share) - 1 else int(epoch[last_move])
        since = None if since is None or share_since is None else max(since, share_since)
    now = f"{int(in_use[-1])} fine classes in use" + (
        f", the largest {share[-1]:.0%} of the cells" if share is not None else ""
    )
    if since is None:
        verdict = f"still changing in the last epoch ({now})"
    elif since == int(epoch[0]):
        verdict = f"stable all through training ({now})"
    else:
        verdict = f"stable from epoch {since} on ({now})"
    a.set_title(f"Did the classes stabilise?\n{verdict}", fontsize=9, loc="left")
    a.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=7, frameon=False)


def _relation(a: Axes, hist: pd.DataFrame, epoch: np.ndarray, res: FalconResults) -> None:
    """Children per coarse class (rows) after each epoch, the epochs with relation changes marked, a verdict."""
    _column(hist, "relation_changes", res.key)
    changes = hist["relation_changes"].to_numpy(dtype=float)
    solves = int(hist["relation_solves"].sum()) if "relation_solves" in hist.columns else None
    if changes.any():
        at = epoch[changes > 0]
        verdict = (
            f"yes: {int(changes.sum())} fine class(es) changed parent in {len(at)} epoch(s), the last at epoch "
            f"{int(at.max())} (black lines)"
        )
    elif solves == 0:
        verdict = f"no: the relation was never re-solved ({_why_no_solve(res.params)}); the warm start's was kept"
    else:
        of = f" in the {solves} relation solves" if solves is not None else ""
        verdict = f"no: no fine class changed parent{of}; the warm start's relation was kept"
    a.set_title(f"Was the relation revised?\n{verdict}", fontsize=9, loc="left")
    if res.has("children_history"):
        _children(a, res, epoch)
    else:
        a.set_yticks([])
    for e in epoch[changes > 0]:
        a.axvline(e, color=_CHANGE, lw=1.0, ls="--")


def _why_no_solve(params) -> str:
    if not params.get("learn_relation", True):
        return "learn_relation=False"
    if "relation_every" in params:
        return f"training was shorter than relation_every={int(params['relation_every'])} steps"
    return "no relation solve ran"


def _children(a: Axes, res: FalconResults, epoch: np.ndarray) -> None:
    """Epochs x coarse class table of children: shaded by count, the count written where it changes."""
    children = np.asarray(res.children_history)
    if children.ndim != 2 or children.shape[0] == 0:
        raise ValueError(
            f"adata.uns[{res.key!r}]['children_history'] must be epochs x coarse classes, got {children.shape}"
        )
    names = res.coarse_names if res.has("relations") else None
    if names is None or len(names) != children.shape[1]:
        names = [str(i) for i in range(children.shape[1])]
    n_ep = min(len(epoch), children.shape[0])
    x = epoch[:n_ep]
    table = children[:n_ep].T
    a.imshow(
        table,
        aspect="auto",
        interpolation="nearest",
        cmap="Greys",
        vmin=0,
        vmax=max(float(table.max()) * 2.5, 1.0),
        extent=(x[0] - 0.5, x[-1] + 0.5, len(names) - 0.5, -0.5),
    )
    fontsize = float(np.clip(200.0 / len(names), 4.0, 8.0))
    a.set_yticks(range(len(names)), names, fontsize=fontsize)
    a.set_ylabel("children of each\ncoarse class")
    for j in range(len(names)):
        row = table[j]
        starts = [0, *(np.flatnonzero(row[1:] != row[:-1]) + 1)]
        for i in starts:  # the count at the start of each run, so a constant row reads as one number
            a.text(x[i], j, f" {int(row[i])}", ha="left", va="center", fontsize=fontsize, color="black")
    a.grid(False)


def _column(hist: pd.DataFrame, col: str, key: str) -> None:
    if col not in hist.columns:
        raise KeyError(
            f"adata.uns[{key!r}]['history'] has no column {col!r}; run fal.tl.refine(adata, coarse_key, "
            f"n_fine, key_added={key!r}) again with this version of falcon_sc"
        )
