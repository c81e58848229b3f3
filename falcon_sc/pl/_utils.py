"""Shared helpers of the plotting functions: obs look-up, figure set-up, show/save (results: ``falcon_sc._layout``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure


def obs_labels(adata: AnnData, column: str, what: str) -> pd.Series:
    """Return ``adata.obs[column]`` as strings (a copy), raising a clear KeyError when it is missing."""
    if column not in adata.obs.columns:
        raise KeyError(f"{what} {column!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    col = adata.obs[column]
    if col.isna().any():
        raise ValueError(f"adata.obs[{column!r}] has {int(col.isna().sum())} missing labels")
    return col.astype(str)


def category_order(adata: AnnData, column: str) -> list[str]:
    """Observed labels of ``adata.obs[column]``: categorical order when categorical, else sorted."""
    col = adata.obs[column]
    present = set(col.astype(str))
    if isinstance(col.dtype, pd.CategoricalDtype):
        return [str(c) for c in col.cat.categories if str(c) in present]
    return sorted(present)


def new_axes(
    ax: Axes | Sequence[Axes] | None, n: int, *, figsize: tuple[float, float], ncols: int | None = None
) -> tuple[Figure, list[Axes], bool]:
    """Axes to draw ``n`` panels on: the user's (``ax``) or a new figure. Returns (figure, axes, created)."""
    if ax is None:
        ncols = n if ncols is None else ncols
        nrows = int(np.ceil(n / ncols))
        fig, axs = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
        flat = list(axs.ravel())
        for extra in flat[n:]:
            extra.remove()
        return fig, flat[:n], True
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    if len(axes) != n or not all(isinstance(a, Axes) for a in axes):
        raise ValueError(f"this plot draws {n} panel(s): pass ax as {'one Axes' if n == 1 else f'{n} Axes'}")
    return root_figure(axes[0]), axes, False


def root_figure(ax: Axes) -> Figure:
    """The figure ``ax`` is drawn in (the figure holding its subfigure, if any)."""
    fig = ax.figure
    while not isinstance(fig, Figure):
        fig = fig.figure
    return fig


#: docstring fragment of the figure options shared by every plot (``{plot_output}``, filled by ``doc_params``)
plot_output = """\
figsize
    Size of a new figure.
show
    Show the figure; default: when scanpy's ``autoshow`` is on and the backend is interactive.
save
    As in scanpy's plots: ``True`` or a ``str`` writes the figure to scanpy's ``settings.figdir`` as
    ``f"{name}{save}{settings.plot_suffix}.{ext}"`` (``name``: the plot's name, e.g. ``history``; ``ext`` from a
    ``save`` ending in ``.png``, ``.pdf`` or ``.svg``, else ``settings.file_format_figs``), so ``save="_pbmc.png"``
    writes ``figures/history_pbmc.png``; ``None`` follows ``settings.autosave``. A :class:`pathlib.Path` is written
    to exactly that path instead (``.png`` appended when it has no suffix)."""

#: the file endings scanpy's ``save=`` recognises
_SAVE_EXTS = (".svg", ".pdf", ".png")


def figure_path(name: str, save: bool | str | Path) -> Path:
    """Where ``save`` writes the figure of plot ``name``: scanpy's ``figdir`` rule, or a :class:`~pathlib.Path`."""
    import scanpy as sc

    if isinstance(save, os.PathLike):
        path = Path(save)
        return path if path.suffix else path.with_suffix(".png")
    suffix = "" if save is True else str(save)
    ext = str(sc.settings.file_format_figs)
    for candidate in _SAVE_EXTS:
        if suffix.endswith(candidate):
            suffix, ext = suffix[: -len(candidate)], candidate[1:]
            break
    return Path(sc.settings.figdir) / f"{name}{suffix}{sc.settings.plot_suffix}.{ext}"


def finish(fig: Figure, out: Any, *, show: bool | None, save: bool | str | Path | None, name: str) -> Any:
    """Save and/or show ``fig`` as scanpy's plots do; return ``out`` unless the figure was shown.

    ``name`` is the plot's name, the start of the file name under scanpy's ``settings.figdir``.
    """
    import scanpy as sc
    from scanpy import logging as logg

    if save is None:
        save = bool(sc.settings.autosave)
    if save is not False:
        if not isinstance(save, bool | str | os.PathLike):
            raise TypeError(f"save must be True, a str or a pathlib.Path, got {type(save).__name__}")
        path = figure_path(name, save)
        path.parent.mkdir(parents=True, exist_ok=True)
        logg.warning(f"saving figure to file {path}")  # as scanpy: at warning level, so the user sees it
        fig.savefig(path, dpi=150, bbox_inches="tight")
    if show is None:
        interactive = matplotlib.get_backend().lower() not in {"agg", "pdf", "ps", "svg", "cairo", "template"}
        show = bool(sc.settings.autoshow) and interactive
    if show:
        plt.show()
        return None
    return out


def palette(n: int) -> list:
    """``n`` distinct colours (tab10, tab20, then a sampled colormap)."""
    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        if isinstance(cmap, ListedColormap):
            return [tuple(float(v) for v in c) for c in np.asarray(cmap.colors)[:n]]
    return [plt.get_cmap("gist_ncar")(x) for x in np.linspace(0.05, 0.95, n)]


def family_colors(fine_parent: Mapping[str, str], coarse_names: Sequence[str]) -> dict[str, tuple]:
    """A colour per fine class: the hue of its parent coarse class, one shade per sibling (darker to lighter).

    Coarse classes get the colours of :func:`palette` in the order of ``coarse_names``, as in the relation plots.
    ``fine_parent`` maps each fine class to its parent, in the order the shades are given.
    """
    import matplotlib.colors as mcolors

    hues = dict(zip([str(c) for c in coarse_names], palette(len(coarse_names)), strict=True))
    siblings: dict[str, list[str]] = {}
    for fine, parent in fine_parent.items():
        siblings.setdefault(str(parent), []).append(str(fine))
    colors: dict[str, tuple] = {}
    for parent, names in siblings.items():
        base = np.array(mcolors.to_rgb(hues.get(parent, "0.5")))
        n = len(names)
        for i, name in enumerate(names):
            t = 0.0 if n == 1 else -0.45 + 0.9 * i / (n - 1)  # < 0: darker, > 0: towards white
            shade = base * (1.0 + t) if t < 0 else base + (1.0 - base) * t
            colors[name] = tuple(float(v) for v in np.clip(shade, 0.0, 1.0))
    return colors
