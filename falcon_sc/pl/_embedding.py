"""``fal.pl.embedding``: UMAP of FALCON's learned representation, coloured by fine class or any obs column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from scipy import sparse

from .._docs import doc_params
from .._layout import FalconResults, read_results
from ..core.progress import phase
from ._utils import family_colors, finish, new_axes, plot_output
from ._utils import palette as default_palette


@doc_params(plot_output=plot_output)
def embedding(
    adata: AnnData,
    key: str = "falcon",
    *,
    color: str | Sequence[str] | None = None,
    basis: str = "umap",
    recompute: bool = False,
    store: bool = False,
    n_neighbors: int = 15,
    random_state: int = 0,
    legend_loc: Literal["right margin", "on data"] | None = "right margin",
    palette: Literal["distinct", "family"] | Sequence | Mapping[str, object] | None = None,
    size: float | None = None,
    ncols: int = 3,
    ax: Axes | Sequence[Axes] | None = None,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
    save: bool | str | Path | None = None,
) -> Axes | list[Axes] | None:
    """Scatter plot of the cells on a UMAP of FALCON's representation, coloured by fine class or other columns.

    With ``basis="umap"`` the coordinates are a UMAP of ``obsm[f"{key}_embedding"]`` (the penultimate layer of the
    FALCON network): scanpy's ``sc.pp.neighbors(use_rep=...)`` and ``sc.tl.umap`` run on a throw-away AnnData, so
    ``adata`` is not modified; ``store=True`` keeps the coordinates in ``obsm[f"{key}_umap"]`` (the only key this
    function may write), and a stored ``obsm[f"{key}_umap"]`` is reused unless ``recompute=True``. Any other
    ``basis`` names coordinates already in ``obsm`` (``"X_umap"``, or ``"pca"`` for ``obsm["X_pca"]``), drawn as
    they are (first two columns).

    Each category gets its own colour and the legend names the categories. The fine classes ``obs[key]`` are
    coloured by family: each takes the hue its parent coarse class has in :func:`~falcon_sc.pl.relations`, one shade
    per sibling (darker to lighter), so colours never suggest a match with another panel's classes. Other categorical
    columns take ``uns[f"{column}_colors"]`` when it holds one colour per category (as scanpy stores them), else a
    qualitative palette. Numeric columns and genes get a colour bar.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine`; not modified unless ``store=True``.
    key
        ``key_added`` used in :func:`falcon_sc.tl.refine`.
    color
        Column(s) of ``adata.obs`` or gene(s) of ``adata.var_names`` to colour by, one panel each, side by side;
        default: the fine classes ``obs[key]``.
    basis
        ``"umap"``: UMAP of ``obsm[f"{key}_embedding"]``; otherwise a key of ``adata.obsm`` (``"X_"`` may be
        left out) with the coordinates to draw.
    recompute
        Compute the UMAP even when ``obsm[f"{key}_umap"]`` is there.
    store
        Write the UMAP coordinates to ``adata.obsm[f"{key}_umap"]``.
    n_neighbors
        Neighbours of the kNN graph the UMAP is computed from.
    random_state
        Seed of the neighbour search and of the UMAP.
    legend_loc
        ``"right margin"`` (legend beside each panel), ``"on data"`` (category names at their cells' median) or
        ``None``.
    palette
        Colours of the categories: a list (in category order) or a mapping category -> colour, for every
        categorical panel; ``"distinct"`` gives the fine classes a qualitative palette instead of the family
        shades; ``"family"`` colours every categorical column by family: each category in the hue of the coarse
        class holding most of its cells (e.g. true fine labels beside FALCON's, in the same colour code).
    size
        Marker area in points²; default ``min(20, 120000 / n_cells)``.
    ncols
        Panels per row.
    ax
        Axes to draw on, one per panel. Default: a new figure.
    {plot_output}

    Returns
    -------
    The Axes (one panel) or a list of Axes (one per ``color``), as scanpy's plots; ``None`` when the figure was
    shown.

    Raises
    ------
    KeyError
        No FALCON results under ``key`` (run :func:`~falcon_sc.tl.refine` first), a ``color`` that is neither an
        obs column nor a gene, or a ``basis`` that is not in ``adata.obsm``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=600, n_genes=300, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", 6, n_epochs=3, show_progress=False)
    >>> ax = fal.pl.embedding(adata, show=False)  # coloured by the fine classes obs["falcon"]
    >>> axs = fal.pl.embedding(adata, color=["falcon", "fine", "falcon_confidence"], show=False)
    >>> len(axs)
    3
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}")
    columns = [key] if color is None else ([color] if isinstance(color, str) else list(color))
    if not columns:
        raise ValueError("color is empty: pass an obs column, a gene, or a list of them")
    if color is None:
        read_results(adata, key, need=("labels",))
    for c in columns:
        if c not in adata.obs.columns and c not in adata.var_names:
            raise KeyError(
                f"color {c!r} is neither a column of adata.obs ({list(adata.obs.columns)}) nor a gene of "
                "adata.var_names"
            )
    if legend_loc not in ("right margin", "on data", None):
        raise ValueError(f"legend_loc must be 'right margin', 'on data' or None, got {legend_loc!r}")
    if not isinstance(ncols, int | np.integer) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    xy, axis_name = _coordinates(adata, key, basis, recompute, store, n_neighbors, random_state)

    n = len(columns)
    ncols = min(n, int(ncols))
    nrows = int(np.ceil(n / ncols))
    if figsize is None:
        figsize = (5.6 * ncols, 4.2 * nrows)
    fig, axes, _ = new_axes(ax, n, figsize=figsize, ncols=ncols)
    s = float(size) if size is not None else float(min(20.0, 120000.0 / max(adata.n_obs, 1)))
    order = np.random.default_rng(0).permutation(adata.n_obs)  # no class systematically drawn on top
    for c, a in zip(columns, axes, strict=True):
        values = _values(adata, c)
        family = False
        if isinstance(values, pd.Categorical):
            category_colors, family = _category_colors(adata, key, c, values, palette)
            _categorical(a, xy, values, category_colors, order, s, legend_loc)
        else:
            sc_ = a.scatter(
                xy[order, 0],
                xy[order, 1],
                c=values[order],
                s=s,
                cmap="viridis",
                linewidths=0,
                rasterized=True,
                plotnonfinite=True,
            )
            fig.colorbar(sc_, ax=a, shrink=0.7, label=c)
        a.set_xlabel(f"{axis_name}1")
        a.set_ylabel(f"{axis_name}2")
        a.set_xticks([])
        a.set_yticks([])
        a.set_title(_title(c, key, adata, family), fontsize=10)
    out = axes[0] if n == 1 else axes
    return finish(fig, out, show=show, save=save, name="embedding")


def _title(column: str, key: str, adata: AnnData, family: bool = False) -> str:
    if column == key:
        note = "\ncolour: hue of the parent coarse class, a shade per class" if family else ""
        return f"FALCON fine classes ({column}){note}"
    if family:
        return f"{column}\ncolour: hue of the coarse class of most of its cells, a shade per class"
    if column not in adata.obs.columns:
        return f"{column} (expression)"
    return column


def _coordinates(
    adata: AnnData, key: str, basis: str, recompute: bool, store: bool, n_neighbors: int, random_state: int
) -> tuple[np.ndarray, str]:
    if not isinstance(basis, str) or not basis:
        raise TypeError(f"basis must be 'umap' or a key of adata.obsm, got {basis!r}")
    if basis != "umap":
        name = basis if basis in adata.obsm else f"X_{basis}"
        if name not in adata.obsm:
            raise KeyError(
                f"basis {basis!r}: neither obsm[{basis!r}] nor obsm['X_{basis}'] exists (keys: "
                f"{list(adata.obsm.keys())}); pass basis='umap' for a UMAP of obsm[{key + '_embedding'!r}]"
            )
        xy = np.asarray(adata.obsm[name])
        if xy.ndim != 2 or xy.shape[1] < 2:
            raise ValueError(f"adata.obsm[{name!r}] needs at least 2 columns to draw, has shape {xy.shape}")
        label = name.removeprefix("X_")
        label = "UMAP" if label.lower().endswith("umap") else label.upper() if len(label) <= 5 else label
        return xy[:, :2].astype(float), label
    stored = f"{key}_umap"
    if stored in adata.obsm and not recompute:
        xy = np.asarray(adata.obsm[stored], dtype=float)
        if xy.ndim == 2 and xy.shape[1] >= 2:
            return xy[:, :2], "UMAP"
    rep = read_results(adata, key, need=("embedding",)).embedding
    import scanpy as sc

    tmp = AnnData(obs=pd.DataFrame(index=adata.obs_names.copy()))
    tmp.obsm["X_rep"] = np.asarray(rep, dtype=np.float32)
    with phase(f"UMAP of obsm[{key + '_embedding'!r}]") as found:
        sc.pp.neighbors(tmp, use_rep="X_rep", n_neighbors=int(n_neighbors), random_state=random_state)
        sc.tl.umap(tmp, random_state=random_state)
        found.append(f"{adata.n_obs:,} cells" + ("" if store else "; store=True keeps it for the next plot"))
    xy = np.asarray(tmp.obsm["X_umap"], dtype=float)
    if store:
        adata.obsm[stored] = xy.astype(np.float32)
    return xy, "UMAP"


def _values(adata: AnnData, column: str) -> pd.Categorical | np.ndarray:
    if column in adata.obs.columns:
        col = adata.obs[column]
        if isinstance(col.dtype, pd.CategoricalDtype):
            return pd.Categorical(col).remove_unused_categories()
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            cat = pd.Categorical(col.astype("string").astype(object).where(col.notna(), None))
            return cat
        return col.to_numpy(dtype=float)
    x = adata[:, column].X
    x = x.toarray() if sparse.issparse(x) else np.asarray(x)
    return x.ravel().astype(float)


def _category_colors(
    adata: AnnData,
    key: str,
    column: str,
    values: pd.Categorical,
    user: Literal["distinct", "family"] | Sequence | Mapping[str, object] | None,
) -> tuple[dict[str, Any], bool]:
    """Colours of the categories of ``column``, and whether they are the fine classes' family shades."""
    names = [str(c) for c in values.categories]
    if isinstance(user, str) and user not in ("distinct", "family"):
        raise ValueError(f"palette must be 'distinct', 'family', a list or a mapping of colours, got {user!r}")
    if user == "family" and column != key:
        family = _column_family(adata, key, column, names)
        if family is not None:
            return family, True
    if user is not None and not isinstance(user, str):
        if isinstance(user, Mapping):
            missing = [n for n in names if n not in user]
            if missing:
                raise KeyError(f"palette has no colour for the categories {missing[:5]} of {column!r}")
            return {n: user[n] for n in names}, False
        user = list(user)
        if len(user) < len(names):
            raise ValueError(f"palette has {len(user)} colours for the {len(names)} categories of {column!r}")
        return dict(zip(names, user[: len(names)], strict=True)), False
    res = FalconResults(adata, key)
    fine = res.get("fine_classes")
    if user in (None, "family") and column == key and fine is not None and "parent" in fine.columns:
        coarse = res.coarse_names if res.has("relations") else sorted(set(fine["parent"]))
        family = family_colors({str(f): str(p) for f, p in fine["parent"].items()}, coarse)
        if all(n in family for n in names):
            return {n: family[n] for n in names}, True
    stored = adata.uns.get(f"{column}_colors")
    if user is None and column in adata.obs.columns and stored is not None:
        all_names = (
            [str(c) for c in adata.obs[column].cat.categories]
            if isinstance(adata.obs[column].dtype, pd.CategoricalDtype)
            else []
        )
        stored = list(stored)
        if all_names and len(stored) == len(all_names):
            lookup = dict(zip(all_names, stored, strict=True))
            return {n: lookup[n] for n in names}, False
    return dict(zip(names, default_palette(len(names)), strict=True)), False


def _column_family(adata: AnnData, key: str, column: str, names: list[str]) -> dict[str, Any] | None:
    """Colours of another column's categories: the hue of the coarse class holding most of each one's cells."""
    res = FalconResults(adata, key)
    coarse_key = res.coarse_key
    if coarse_key is None or coarse_key not in adata.obs.columns or column not in adata.obs.columns:
        return None
    majority = pd.crosstab(adata.obs[column].astype(str), adata.obs[coarse_key].astype(str)).idxmax(axis=1)
    coarse = res.coarse_names if res.has("relations") else sorted(str(c) for c in set(majority))
    return dict(family_colors({n: str(majority[n]) for n in names if n in majority.index}, coarse))


def _categorical(
    a: Axes,
    xy: np.ndarray,
    values: pd.Categorical,
    colors: dict[str, Any],
    order: np.ndarray,
    s: float,
    legend_loc: str | None,
) -> None:
    import matplotlib.colors as mcolors

    names = [str(c) for c in values.categories]
    codes = np.asarray(values.codes)
    rgba: np.ndarray = np.array([mcolors.to_rgba(colors[n]) for n in names] + [mcolors.to_rgba("0.8")], dtype=float)
    point_colors = rgba[np.where(codes >= 0, codes, len(names))]
    a.scatter(xy[order, 0], xy[order, 1], c=point_colors[order], s=s, linewidths=0, rasterized=True)
    if legend_loc == "right margin":
        handles = [
            Line2D([], [], ls="", marker="o", markersize=6, markeredgewidth=0, color=colors[n], label=n) for n in names
        ]
        if (codes < 0).any():
            handles.append(Line2D([], [], ls="", marker="o", markersize=6, markeredgewidth=0, color="0.8", label="NA"))
        a.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=7,
            frameon=False,
            ncols=1 if len(handles) <= 14 else 2,
        )
    elif legend_loc == "on data":
        import matplotlib.patheffects as pe

        for i, n in enumerate(names):
            mask = codes == i
            if mask.any():
                x, y = np.median(xy[mask], axis=0)
                a.text(
                    x,
                    y,
                    n,
                    fontsize=8,
                    fontweight="bold",
                    ha="center",
                    va="center",
                    path_effects=[pe.withStroke(linewidth=2.5, foreground="white")],
                )
