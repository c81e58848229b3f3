"""``fal.pl.history``: training curves of :func:`falcon_sc.tl.refine`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .._docs import doc_params, plot_output
from .._layout import FalconResults, read_results
from ._utils import finish, new_axes, palette, root_figure

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
    """Plot the training curves stored in ``uns[key]["history"]``, one panel per quantity (x axis: epoch).

    Panels (any subset of them, in any order):

    ``"loss"``
        Total loss and its terms (coarse likelihood, neighbour consistency, confident targets, regulariser), the
        mean over each epoch's optimisation steps.
    ``"fine_in_use"``
        Fine classes holding cells in the teacher's predictions of each epoch (dashed: ``n_fine``) and, on the right
        axis, the share of the largest fine class.
    ``"relation_changes"``
        Fine classes that changed parent in the relation solves of each epoch.
    ``"children"``
        Children per coarse class after each epoch (``uns[key]["children_history"]``); with more than 8 coarse
        classes an epochs x coarse class heatmap.

    A quantity that did not change during training is stated in its panel as text (e.g. "constant: 10 of 10 fine
    classes in use every epoch", "no fine class changed parent in the 300 relation solves") instead of a flat line
    or an empty panel. Legends sit beside or below the axes, never over the curves.

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

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, show_progress=False)
    >>> fig = fal.pl.history(adata, show=False)
    >>> fig = fal.pl.history(adata, panels=("loss", "children"), show=False)
    """
    res = read_results(adata, key, need=("history",))
    panels = [panels] if isinstance(panels, str) else list(panels)
    unknown = [p for p in panels if p not in PANELS]
    if unknown or not panels:
        raise ValueError(f"unknown panels {unknown}: choose among {list(PANELS)}")
    hist = res.history
    epoch = hist["epoch"].to_numpy() + 1 if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
    n = len(panels)
    ncols = min(n, 2)
    if figsize is None:
        figsize = (5.4 * ncols, 3.4 * int(np.ceil(n / ncols)))
    fig, axes, _ = new_axes(ax, n, figsize=figsize, ncols=ncols)
    marker = "." if len(epoch) <= 60 else None
    for panel, a in zip(panels, axes, strict=True):
        if panel == "loss":
            for col in _LOSSES:
                if col in hist.columns:
                    a.plot(epoch, hist[col].to_numpy(dtype=float), label=col, lw=2.0 if col == "loss" else 1.2)
            a.set_ylabel("loss (mean over the epoch's steps)")
            a.set_title("training loss and its terms", fontsize=10)
            _legend_right(a)
        elif panel == "fine_in_use":
            _fine_in_use(a, hist, epoch, res, marker)
        elif panel == "relation_changes":
            _relation_changes(a, hist, epoch, res)
        else:
            _children(a, res, marker)
        a.set_xlabel("epoch")
    return finish(fig, fig, show=show, save=save)


def _legend_right(a: Axes, **kwargs) -> None:
    """Legend beside the axes (never over the curves)."""
    a.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False, borderaxespad=0.0, **kwargs)


def _note(a: Axes, text: str) -> None:
    """Write ``text`` in the middle of an otherwise empty panel (a quantity that did not change)."""
    a.set_yticks([])
    width = max(int(a.get_position().width * root_figure(a).get_figwidth() * 72.0 / 5.0), 40)  # ~characters per line
    text = "\n".join(_wrap(line, width) for line in text.split("\n"))
    a.text(
        0.5,
        0.5,
        text,
        transform=a.transAxes,
        ha="center",
        va="center",
        fontsize=8.5,
        bbox={"boxstyle": "round,pad=0.5", "facecolor": "0.95", "edgecolor": "0.7"},
    )


def _constant(values: np.ndarray) -> bool:
    return len(values) > 0 and bool(np.all(values == values[0]))


def _fine_in_use(a: Axes, hist: pd.DataFrame, epoch: np.ndarray, res: FalconResults, marker: str | None) -> None:
    _column(hist, "fine_in_use", res.key)
    in_use = hist["fine_in_use"].to_numpy(dtype=float)
    n_fine = res.params.get("n_fine")
    if n_fine is None and res.has("relations"):
        n_fine = len(res.relations)
    of = f" of {int(n_fine)}" if n_fine is not None else ""
    share = hist["largest_fine_share"].to_numpy(dtype=float) if "largest_fine_share" in hist.columns else None
    a.set_xlim(epoch.min() - 0.5, epoch.max() + 0.5)
    a.set_title("fine classes in use (teacher's predictions)", fontsize=10)
    if _constant(in_use):
        text = f"constant: {int(in_use[0])}{of} fine classes in use every epoch"
        if share is None or _constant(share):
            if share is not None:
                text += f"\nlargest fine class: {share[0]:.0%} of the cells every epoch"
            _note(a, text)
            return
        # only the largest class's share moves: draw it, state the constant count in the panel's title
        a.plot(epoch, share, color="tab:orange", marker=marker, lw=1.2)
        a.set_ylim(0, 1)
        a.set_ylabel("largest fine class (share of cells)")
        a.set_title(f"fine classes in use: {int(in_use[0])}{of} every epoch\nlargest fine class's share", fontsize=10)
        return
    a.plot(epoch, in_use, color="tab:blue", marker=marker, label="fine classes in use")
    if n_fine is not None:
        a.axhline(n_fine, color="tab:blue", ls="--", lw=1, label=f"n_fine = {int(n_fine)}")
    a.set_ylabel("fine classes in use", color="tab:blue")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = a.get_legend_handles_labels()
    if share is not None:
        twin = a.twinx()
        (line,) = twin.plot(epoch, share, color="tab:orange", lw=1, label="largest class share (right)")
        twin.set_ylabel("largest class share", color="tab:orange")
        twin.set_ylim(0, 1)
        handles, labels = [*handles, line], [*labels, line.get_label()]
    a.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, frameon=False, ncols=3)


def _relation_changes(a: Axes, hist: pd.DataFrame, epoch: np.ndarray, res: FalconResults) -> None:
    _column(hist, "relation_changes", res.key)
    changes = hist["relation_changes"].to_numpy(dtype=float)
    a.set_title("relation changes (fine classes that changed parent)", fontsize=10)
    a.set_xlim(epoch.min() - 0.5, epoch.max() + 0.5)
    if not changes.any():
        solves = int(hist["relation_solves"].sum()) if "relation_solves" in hist.columns else None
        params = res.params
        if solves == 0:
            if not params.get("learn_relation", True):
                why = "learn_relation=False"
            elif "relation_every" in params:
                why = f"training was shorter than relation_every={int(params['relation_every'])} steps"
            else:
                why = "no relation solve ran"
            text = f"the relation was never re-solved\n({why}):\nevery fine class kept its initial parent"
        else:
            of = f"\nin the {solves} relation solves" if solves is not None else ""
            text = f"no fine class changed parent{of}:\nthe initial relation was kept all through training"
        _note(a, text)
        return
    a.bar(epoch, changes, color="tab:purple", width=max(0.8, len(epoch) / 150))
    a.set_ylabel("fine classes that changed parent")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    a.set_ylim(0, changes.max() * 1.1 + 0.5)
    first = epoch[changes > 0]
    a.text(
        0.98,
        0.95,
        f"{int(changes.sum())} changes in {len(first)} epoch(s); last at epoch {int(first.max())}",
        transform=a.transAxes,
        ha="right",
        va="top",
        fontsize=7,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )


def _children(a: Axes, res: FalconResults, marker: str | None) -> None:
    children = res.children_history
    if children.ndim != 2 or children.shape[0] == 0:
        raise ValueError(
            f"adata.uns[{res.key!r}]['children_history'] must be epochs x coarse classes, got {children.shape}"
        )
    names = res.coarse_names if res.has("relations") else None
    if names is None or len(names) != children.shape[1]:
        names = [str(i) for i in range(children.shape[1])]
    x = np.arange(1, children.shape[0] + 1)
    a.set_title("children per coarse class", fontsize=10)
    if all(_constant(children[:, j]) for j in range(children.shape[1])):
        pairs = ", ".join(f"{name}: {int(n)}" for name, n in zip(names, children[0], strict=True))
        a.set_xlim(x[0] - 0.5, x[-1] + 0.5)
        _note(a, "constant every epoch (children per coarse class):\n" + pairs)
        return
    if len(names) > 8:  # many coarse classes: epochs x coarse heatmap instead of overlapping step lines
        im = a.imshow(
            children.T,
            aspect="auto",
            interpolation="nearest",
            cmap="viridis",
            extent=(x[0] - 0.5, x[-1] + 0.5, len(names) - 0.5, -0.5),
        )
        a.set_yticks(range(len(names)), names, fontsize=float(np.clip(200.0 / len(names), 4.0, 8.0)))
        bar = a.figure.colorbar(im, ax=a, shrink=0.8, label="children (fine classes)")
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        return
    for j, (name, color) in enumerate(zip(names, palette(len(names)), strict=True)):
        # small vertical offsets so that classes with the same count stay visible
        a.step(x, children[:, j] + 0.04 * (j - len(names) / 2), where="mid", color=color, label=name, marker=marker)
    a.set_ylabel("children (fine classes)")
    a.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_right(a, title="coarse class", title_fontsize=7)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _column(hist: pd.DataFrame, col: str, key: str) -> None:
    if col not in hist.columns:
        raise KeyError(
            f"adata.uns[{key!r}]['history'] has no column {col!r}; run fal.tl.refine(adata, coarse_key, "
            f"n_fine, key_added={key!r}) again with this version of falcon_sc"
        )
