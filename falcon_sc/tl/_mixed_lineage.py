"""``fal.tl.mixed_lineage``: fine classes whose markers are another coarse class's (doublets, mislabelled cells)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scanpy import logging as logg
from scipy import sparse

from .._checks import check_bool, check_int, check_number
from .._layout import read_results
from ._doublets import DOUBLET_OBS_SUFFIXES, check_doublet_options, per_fine_class, scrublet_scores
from ._markers import OTHER_COARSE, fine_markers, lognorm_expression, rank_groups

#: columns of the table (``parent`` and ``n_cells`` are those of ``uns[key]["fine_classes"]``, never overwritten)
COLUMNS = (
    "parent",
    "n_cells",
    "other_coarse",
    "marker_overlap",
    "shared_markers",
    "other_expressing",
    "siblings_expressing",
    "mixed_lineage",
)
#: lineage genes (the first ones) whose mean value is a cell's score for another coarse class
N_EXPRESSING_GENES = 10
#: adjusted p-value below which a gene up in a coarse class (against the rest) counts as one of its lineage genes
MAX_PVAL_ADJ = 0.05


def mixed_lineage(
    adata: ad.AnnData,
    key: str = "falcon",
    *,
    n_genes: int = 20,
    min_overlap: float = 0.25,
    min_expressing: float = 0.3,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var"] = "wilcoxon",
    layer: str | None = None,
    use_raw: bool | None = None,
    input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
    doublets: bool = False,
    counts_layer: str | None = None,
    doublet_threshold: float | None = 0.25,
    scrublet_kwargs: Mapping[str, Any] | None = None,
    random_state: int = 0,
    inplace: bool = False,
) -> pd.DataFrame:
    """Flag fine classes whose marker genes are the lineage genes of another coarse class.

    A fine class made of doublets (a T cell and a monocyte captured together) or of cells given the wrong coarse
    label sits under one coarse class but is told apart from its siblings by the genes of another: its top markers
    against its siblings (:func:`~falcon_sc.tl.fine_markers`) are that other class's markers. Per fine class
    ``f`` under parent ``p`` and every other coarse class ``c``:

    1. the *lineage genes of c seen from p*: genes up in ``c`` against all other cells
       (:func:`scanpy.tl.rank_genes_groups`, one run, each coarse class against the rest; positive log fold change,
       adjusted p-value below 0.05), best first, leaving out every gene that is also up in ``p`` against the rest
       (MHC class II genes mark both B cells and myeloid cells: they say nothing about a B cell subclass), the first
       ``n_genes`` kept;
    2. ``marker_overlap``: the share of ``f``'s top ``n_genes`` markers against its siblings (positive log fold
       change) that are lineage genes of ``c``;
    3. ``other_expressing``: the share of ``f``'s cells that express ``c``'s lineage genes: a cell's score is its
       mean (log-normalised) value over the first 10 lineage genes, and it counts when the score reaches the
       midpoint between the median score of ``p``'s cells and that of ``c``'s cells; ``siblings_expressing`` is the
       same share among the other cells of ``p``, for comparison.

    The coarse class with the largest overlap (ties: the larger ``other_expressing``) is reported. A fine class is
    flagged (``mixed_lineage``) when ``marker_overlap >= min_overlap`` **and** ``other_expressing >=
    min_expressing``: its markers are another lineage's and many of its cells express them. Genes shared by two
    lineages for biological reasons (NK genes of cytotoxic T cells, MHC class II genes of B cells and myeloid cells)
    are up in both coarse classes and therefore left out; still, read the flagged classes' ``shared_markers``.

    With ``doublets=True``, :func:`scanpy.pp.scrublet` scores every cell (on a copy of the raw counts; the simulated
    doublets are sums of two random cells) and the table gets each fine class's mean ``doublet_score`` and the
    ``doublet_share`` of cells scored above ``doublet_threshold``.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`~falcon_sc.tl.refine`; not modified unless ``inplace=True``.
    key
        ``key_added`` of :func:`~falcon_sc.tl.refine`.
    n_genes
        Markers per fine class, and lineage genes per coarse class, compared.
    min_overlap
        Flag threshold on ``marker_overlap`` (0 to 1); the default, 0.25, asks for 5 of the top 20 markers.
    min_expressing
        Flag threshold on ``other_expressing`` (0 to 1). Doublets sit between their two parents, below the purer
        cells of the other class: on pbmc68k the T-monocyte class reaches 0.44 (its siblings 0.03), the classes of
        simulated doublets 0.98 or more; the default, 0.3, lies between those and the clean classes (at most 0.11).
    method, layer, use_raw, input_kind
        Test and expression values of the marker genes, as in :func:`~falcon_sc.tl.fine_markers` (log-normalised
        values are used as they are, counts are normalised and logged on a copy).
    doublets
        Also run :func:`scanpy.pp.scrublet` and add ``doublet_score`` and ``doublet_share`` per fine class.
    counts_layer
        Layer holding the raw UMI counts scrublet needs; ``None`` uses ``X`` (which must then hold counts).
    doublet_threshold
        Scrublet score above which a cell is a predicted doublet (scrublet's ``threshold``); ``None`` lets scrublet
        choose it from its simulated doublets, which needs scikit-image.
    scrublet_kwargs
        Further arguments of :func:`scanpy.pp.scrublet`, e.g. ``{"expected_doublet_rate": 0.06}`` or
        ``{"batch_key": "sample"}`` (one run per sample, as scrublet advises).
    random_state
        Seed of scrublet's simulated doublets.
    inplace
        Also write the table's columns (all but ``parent`` and ``n_cells``) into ``adata.uns[key]["fine_classes"]``
        beside its own, and with ``doublets``, each cell's ``obs[f"{key}_doublet_score"]`` and
        ``obs[f"{key}_predicted_doublet"]``; nothing else is written. The table is returned either way.

    Returns
    -------
    One row per fine class (index: the rows of ``uns[key]["relations"]``), columns

    ``parent``, ``n_cells``
        Its coarse class and its cells.
    ``other_coarse``
        The other coarse class whose lineage genes it shares most (``""`` when there is none).
    ``marker_overlap``
        Share of its top ``n_genes`` markers that are lineage genes of ``other_coarse`` (NaN when it has no markers:
        a single child of its coarse class, or a class of fewer than 2 cells).
    ``shared_markers``
        Those genes, comma-separated, in the order of the lineage genes.
    ``other_expressing``, ``siblings_expressing``
        Share of its cells, and of the other cells of its parent, expressing ``other_coarse``'s lineage genes.
    ``mixed_lineage``
        The flag.
    ``doublet_score``, ``doublet_share``
        With ``doublets=True``: mean scrublet score of its cells, and share of its cells predicted doublets.

    Raises
    ------
    KeyError
        No FALCON results under ``key`` (run :func:`~falcon_sc.tl.refine` first), ``layer`` or ``counts_layer`` not
        in ``adata.layers``.
    TypeError
        An argument of the wrong type.
    ValueError
        A bad value; fewer than 2 coarse classes; ``doublets=True`` on a matrix without raw counts (pass
        ``counts_layer=``); ``counts_layer`` or ``scrublet_kwargs`` without ``doublets=True``;
        ``doublet_threshold=None`` without scikit-image. All raised before any test runs.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=600, n_genes=300, children=(2, 2), random_state=0)
    >>> fal.tl.refine(adata, "coarse", 4, n_epochs=3, show_progress=False)
    >>> table = fal.tl.mixed_lineage(adata, doublets=True)
    >>> table.columns.tolist()[2:]  # doctest: +NORMALIZE_WHITESPACE
    ['other_coarse', 'marker_overlap', 'shared_markers', 'other_expressing', 'siblings_expressing', 'mixed_lineage',
     'doublet_score', 'doublet_share']
    >>> flags = fal.tl.mixed_lineage(adata, inplace=True)["mixed_lineage"]
    >>> flags.equals(adata.uns["falcon"]["fine_classes"]["mixed_lineage"])
    True
    """
    start = logg.info(f"looking for fine classes of {key!r} with another coarse class's markers")
    res = read_results(adata, key, need=("relations", "labels") + (("fine_classes",) if inplace else ()))
    _check_options(n_genes, min_overlap, min_expressing, doublets, counts_layer, scrublet_kwargs, random_state, inplace)
    counts = check_doublet_options(adata, counts_layer, doublet_threshold, scrublet_kwargs)[0] if doublets else None
    parent, labels = res.parents(), res.fine_labels()
    coarse = labels.map(parent)
    present = [c for c in res.coarse_names if (coarse == c).sum() >= 2]
    if len(present) < 2:
        raise ValueError(
            f"mixed_lineage compares coarse classes, but adata.uns[{key!r}] has {len(present)} coarse class(es) with 2 "
            "cells or more: it needs at least 2."
        )
    with sc.settings.verbosity.override(min(sc.settings.verbosity, sc.Verbosity.error)):  # single children: NaN
        markers = fine_markers(
            adata,
            key,
            n_genes=n_genes,
            method=method,
            layer=layer,
            use_raw=use_raw,
            input_kind=input_kind,
            inplace=False,
        )
    use_raw = adata.raw is not None and layer is None if use_raw is None else bool(use_raw)
    expr, _ = lognorm_expression(adata, layer=layer, use_raw=use_raw, input_kind=input_kind)
    lineage = lineage_genes(
        rank_groups(expr, coarse, present, {c: c for c in present}, method, None, OTHER_COARSE), n_genes
    )
    table = _overlap_table(expr, labels, parent, markers, lineage, n_genes)
    table["mixed_lineage"] = (table["marker_overlap"] >= min_overlap) & (table["other_expressing"] >= min_expressing)
    cells = None
    if doublets:
        cells = scrublet_scores(
            adata, counts, threshold=doublet_threshold, random_state=random_state, scrublet_kwargs=scrublet_kwargs
        )
        table = table.join(per_fine_class(cells, labels, list(table.index)))
    if inplace:
        _write(adata, key, table, cells)
    flagged = table.index[table["mixed_lineage"]].tolist()
    logg.info("    finished", time=start, deep=f"flagged fine classes: {', '.join(flagged) if flagged else 'none'}")
    return table


def lineage_genes(coarse_table: pd.DataFrame, n_genes: int) -> dict[tuple[str, str], list[str]]:
    """``{(c, p): genes}``: the first ``n_genes`` genes up in ``c`` against the rest and not up in ``p``.

    ``coarse_table`` is the tidy table of every coarse class against the rest (all genes, best first).
    """
    up = coarse_table[coarse_table["logfoldchanges"] > 0]
    up_any = {c: set(g["names"]) for c, g in up.groupby("group")}
    significant = up[up["pvals_adj"] < MAX_PVAL_ADJ]
    ranked = {c: list(g["names"]) for c, g in significant.groupby("group", sort=False)}
    names = list(dict.fromkeys(coarse_table["group"]))
    return {
        (c, p): [g for g in ranked.get(c, []) if g not in up_any.get(p, set())][:n_genes]
        for c in names
        for p in names
        if c != p
    }


# ---------------------------------------------------------------------- internals
def _check_options(
    n_genes: Any,
    min_overlap: Any,
    min_expressing: Any,
    doublets: Any,
    counts_layer: Any,
    scrublet_kwargs: Any,
    random_state: Any,
    inplace: Any,
) -> None:
    """Check the options of :func:`mixed_lineage` that :func:`fine_markers` does not check itself."""
    check_int("n_genes", n_genes, 1)
    check_number("min_overlap", min_overlap, low=0.0, high=1.0)
    check_number("min_expressing", min_expressing, low=0.0, high=1.0)
    check_bool("doublets", doublets)
    check_int("random_state", random_state, 0)
    check_bool("inplace", inplace)
    if not doublets and (counts_layer is not None or scrublet_kwargs):
        given = "counts_layer" if counts_layer is not None else "scrublet_kwargs"
        raise ValueError(f"{given} is used by the scrublet doublet score only: pass doublets=True, or drop {given}.")


def _expressing(X: Any, coarse: np.ndarray, genes: np.ndarray, c: str, p: str) -> np.ndarray:
    """Which cells express the lineage genes ``genes`` of ``c`` (columns of ``X``), as seen from parent ``p``.

    A cell's lineage score is its mean value over ``genes``; it expresses ``c`` when the score reaches the midpoint
    between the median score of ``p``'s cells and that of ``c``'s cells (halfway from its parent's level to ``c``'s).
    """
    sub = X[:, genes]
    score = np.asarray(sub.mean(axis=1)).ravel()
    cut = (np.median(score[coarse == p]) + np.median(score[coarse == c])) / 2
    return score >= cut


def _overlap_table(
    expr: ad.AnnData,
    labels: pd.Series,
    parent: dict[str, str],
    markers: pd.DataFrame,
    lineage: dict[tuple[str, str], list[str]],
    n_genes: int,
) -> pd.DataFrame:
    """One row per fine class: the other coarse class it shares most lineage genes with, and the scores."""
    X = sparse.csr_matrix(expr.X) if sparse.issparse(expr.X) else np.asarray(expr.X)
    up = markers[markers["logfoldchanges"] > 0]
    top = {f: set(g["names"]) for f, g in up.groupby("group")}
    lab, coarse = labels.to_numpy(), labels.map(parent).to_numpy()
    expressing = {
        (c, p): _expressing(X, coarse, expr.var_names.get_indexer(genes[:N_EXPRESSING_GENES]), c, p)
        for (c, p), genes in lineage.items()
        if genes
    }
    rows = []
    for f, p in parent.items():
        mine, siblings = lab == f, (coarse == p) & (lab != f)
        row = {"parent": p, "n_cells": int(mine.sum()), "other_coarse": "", "marker_overlap": np.nan}
        row |= {"shared_markers": "", "other_expressing": np.nan, "siblings_expressing": np.nan}
        best = (-1.0, -1.0)
        for (c, q), genes in lineage.items():
            if q != p or not mine.any() or (c, q) not in expressing:
                continue
            shared = [g for g in genes if g in top.get(f, set())]
            overlap = len(shared) / n_genes if f in top else np.nan
            share = float(expressing[c, q][mine].mean())
            rank = (np.nan_to_num(overlap, nan=-0.5), share)
            if rank > best:
                best = rank
                row |= {"other_coarse": c, "marker_overlap": overlap, "shared_markers": ", ".join(shared)}
                sib = float(expressing[c, q][siblings].mean()) if siblings.any() else np.nan
                row |= {"other_expressing": share, "siblings_expressing": sib}
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.Index(list(parent)), columns=list(COLUMNS[:-1]))
    table["n_cells"] = table["n_cells"].astype(np.int64)
    return table


def _write(adata: ad.AnnData, key: str, table: pd.DataFrame, cells: pd.DataFrame | None) -> None:
    """The table's columns into ``uns[key]["fine_classes"]``; with scrublet's cells, their ``obs`` columns."""
    fine_classes = adata.uns[key]["fine_classes"].copy()
    new = [c for c in table.columns if c not in ("parent", "n_cells")]
    again = [c for c in new if c in fine_classes.columns]
    if again:
        logg.warning(f"overwriting columns {again} of adata.uns[{key!r}]['fine_classes']")
    for col in new:
        fine_classes[col] = table[col].reindex(fine_classes.index).to_numpy()
    adata.uns[key]["fine_classes"] = fine_classes
    if cells is None:
        return
    obs_keys = [f"{key}{s}" for s in DOUBLET_OBS_SUFFIXES]
    again = [k for k in obs_keys if k in adata.obs.columns]
    if again:
        logg.warning(f"overwriting adata.obs columns {again}")
    adata.obs[obs_keys[0]] = cells["doublet_score"].to_numpy()
    adata.obs[obs_keys[1]] = cells["predicted_doublet"].to_numpy()
