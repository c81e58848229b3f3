"""``fal.tl.coarse_conflicts``: cells whose FALCON prediction disagrees with their coarse label, per coarse class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import check_bool
from .._layout import check_obs_key, read_results

COLUMNS = ("n_cells", "n_flagged", "share_flagged", "top_other", "n_top_other")


@dataclass
class CellConflicts:
    """Per-cell view of the coarse-label conflicts (internal; shared by ``tl`` and ``pl``).

    ``coarse`` are the cells' coarse labels as codes into ``coarse_names``; ``flagged`` the cells counted as
    conflicts; ``other`` the coarse class (code) a cell's probabilities favour among the coarse classes other than its
    own; ``other_prob`` the probability the network gives that class (its fine classes' probabilities summed).
    """

    coarse_key: str
    coarse_names: list[str]
    coarse: np.ndarray
    flagged: np.ndarray
    other: np.ndarray
    other_prob: np.ndarray


def cell_conflicts(
    adata: AnnData, key: str = "falcon", *, coarse_key: str | None = None, min_confidence: float | None = None
) -> CellConflicts:
    """Per-cell conflicts behind :func:`coarse_conflicts` (see there for the arguments)."""
    if coarse_key is not None:
        check_obs_key("coarse_key", coarse_key)
    res = read_results(adata, key, need=("relations", "probs", "outside_parent"))
    if min_confidence is not None:
        if isinstance(min_confidence, bool) or not isinstance(min_confidence, int | float | np.floating | np.integer):
            raise TypeError(f"min_confidence must be a number in [0, 1] or None, got {min_confidence!r}")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must lie in [0, 1], got {min_confidence!r}")
    rel = res.relations
    if res.has("scheme_relations"):
        schemes = list(res.get("scheme_relations"))
        raise ValueError(
            f"uns[{key!r}] comes from refine on several coarse schemes {schemes}: obs[{key + '_outside_parent'!r}] "
            "then refers to the joint groups; coarse_conflicts supports one coarse scheme"
        )
    if coarse_key is None:
        coarse_key = res.coarse_key
        if coarse_key is None:
            raise KeyError(f"uns[{key!r}]['params'] names no coarse_key: pass coarse_key= (a column of adata.obs)")
    if coarse_key not in adata.obs.columns:
        raise KeyError(
            f"coarse_key {coarse_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}); "
            "pass the coarse labels refine was run on as coarse_key="
        )
    coarse_names = [str(c) for c in rel.columns]
    labels = adata.obs[coarse_key]
    if labels.isna().any():
        raise ValueError(f"adata.obs[{coarse_key!r}] has {int(labels.isna().sum())} missing labels")
    labels = labels.astype(str).to_numpy()
    unknown = sorted(set(labels) - set(coarse_names))
    if unknown:
        raise ValueError(
            f"adata.obs[{coarse_key!r}] has coarse labels {unknown[:5]} that are not columns of "
            f"uns[{key!r}]['relations'] ({coarse_names}): pass the coarse_key refine was run on"
        )
    coarse = pd.Categorical(labels, categories=coarse_names).codes.astype(np.int64)
    probs = np.asarray(res.probs, dtype=np.float64)
    relation = np.asarray(rel.to_numpy(), dtype=np.float64)
    if probs.shape != (adata.n_obs, relation.shape[0]):
        raise ValueError(
            f"adata.obsm[{key + '_probs'!r}] has shape {probs.shape}, expected (n_obs, {relation.shape[0]}) fine "
            f"classes as in uns[{key!r}]['relations']; run fal.tl.refine again"
        )
    per_coarse = (
        np.where(np.isfinite(probs), probs, 0.0) @ relation
    )  # cells x coarse: summed over each class's children
    others = per_coarse.copy()
    others[np.arange(len(coarse)), coarse] = -np.inf
    other = others.argmax(axis=1) if len(coarse_names) > 1 else np.full(len(coarse), -1)
    other_prob = per_coarse[np.arange(len(coarse)), other] if len(coarse_names) > 1 else np.zeros(len(coarse))
    if res.has("neighbour_coarse"):  # flagged by the neighbour vote: the neighbours' label is the other class
        vote_col = res.get("neighbour_coarse").astype(str)
        vote = pd.Categorical(vote_col, categories=coarse_names).codes.astype(np.int64)
        by_vote = (vote >= 0) & (vote != coarse)
        other = np.where(by_vote, vote, other)
        other_prob = np.where(by_vote, 1.0, other_prob)
    flagged = res.outside_parent
    if min_confidence is not None:
        flagged = flagged & (other_prob >= float(min_confidence))
    return CellConflicts(coarse_key, coarse_names, coarse, flagged, other, other_prob)


def coarse_conflicts(
    adata: AnnData,
    key: str = "falcon",
    *,
    coarse_key: str | None = None,
    min_confidence: float | None = None,
    inplace: bool = False,
    store: bool | None = None,
) -> pd.DataFrame:
    """Summarise, per coarse class, the cells whose FALCON prediction lies under another coarse class.

    :func:`~falcon_sc.tl.refine` flags a cell in ``obs[f"{key}_outside_parent"]`` when its unrestricted top
    prediction (the most probable of *all* fine classes, not only the children of its own coarse label) is a fine
    class under another coarse class: a possible coarse mislabel, a doublet or a cell between two types. This
    function counts the flags per coarse class and names the coarse class the flagged cells are predicted to belong
    to: for each cell, the probabilities of ``obsm[f"{key}_probs"]`` are summed over the children of every coarse
    class (relation ``uns[key]["relations"]``) and the most probable coarse class other than the cell's own is
    its *predicted other coarse class*.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`~falcon_sc.tl.refine`; not modified unless ``inplace=True``.
    key
        ``key_added`` used in :func:`~falcon_sc.tl.refine`.
    coarse_key
        Column of ``adata.obs`` with the coarse labels; default: the one :func:`~falcon_sc.tl.refine` used
        (``uns[key]["params"]["coarse_key"]``).
    min_confidence
        Count a flagged cell only when the network gives its predicted other coarse class at least this
        probability (0 to 1); ``None`` counts every flag.
    inplace
        Also write the table to ``adata.uns[key]["conflicts"]`` (the only key written). As for every function of
        :mod:`falcon_sc.tl` whose result is a table, the table is returned either way.
    store
        Older name of ``inplace`` (kept working).

    Returns
    -------
    One row per coarse class (index: the coarse classes in the order of ``uns[key]["relations"].columns``), columns

    ``n_cells``
        Cells with this coarse label.
    ``n_flagged``
        Those flagged (and, with ``min_confidence``, confident enough).
    ``share_flagged``
        ``n_flagged / n_cells`` (0 for an empty class).
    ``top_other``
        The predicted other coarse class most common among the flagged cells (``""`` when none is flagged).
    ``n_top_other``
        Flagged cells predicted to belong to ``top_other``.

    Notes
    -----
    How many mislabelled cells the flag finds depends on what the network was shown. With
    :func:`~falcon_sc.tl.refine`'s defaults it finds few: on simulations with 2 % of the cells given a random other
    coarse label (``python -m falcon_sc.bench.conflicts --seeds 3 --no-within``, 3 seeds each) the few flags were
    mostly right (precision 0.83-1.0 per run) but caught only 2-4 % of the mislabelled cells, because the
    within-class principal components (``n_comps_within``) are computed inside each cell's *given* coarse class and
    the warm start is fitted to clusters found inside the given classes, so the given label reaches the network's
    input and targets. With
    ``n_comps_within=0`` the mean recall rose to 0.78 (balanced) and 0.93 (imbalanced) at mean precision 0.97 and
    0.99; with
    ``n_comps_within=0, init="random"`` every mislabelled cell of the easy simulation in the tests was caught. To
    screen coarse labels, run refine with ``n_comps_within=0``.

    Raises
    ------
    TypeError
        ``key`` or ``coarse_key`` not a string (e.g. ``None`` for ``key``), ``inplace`` or ``store`` not a bool.
    KeyError
        No FALCON results under ``key`` (run :func:`~falcon_sc.tl.refine` first), or ``coarse_key`` not in
        ``adata.obs``.
    ValueError
        An empty ``key`` or ``coarse_key``, ``min_confidence`` outside [0, 1], coarse labels that are not in the
        relation, or results of refine on several coarse schemes.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=600, n_genes=300, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", 6, n_epochs=3, show_progress=False)
    >>> table = fal.tl.coarse_conflicts(adata)
    >>> list(table.columns)
    ['n_cells', 'n_flagged', 'share_flagged', 'top_other', 'n_top_other']
    >>> fal.tl.coarse_conflicts(adata, min_confidence=0.9, inplace=True)  # doctest: +SKIP
    >>> adata.uns["falcon"]["conflicts"]  # doctest: +SKIP
    """
    check_bool("inplace", inplace)
    if store is not None:
        check_bool("store", store)
        inplace = inplace or store
    cells = cell_conflicts(adata, key, coarse_key=coarse_key, min_confidence=min_confidence)
    rows = []
    for c in range(len(cells.coarse_names)):
        mine = cells.coarse == c
        n_cells = int(mine.sum())
        hit = mine & cells.flagged
        n_flagged = int(hit.sum())
        top, n_top = "", 0
        if n_flagged:
            counts = np.bincount(cells.other[hit], minlength=len(cells.coarse_names))
            top, n_top = cells.coarse_names[int(counts.argmax())], int(counts.max())
        rows.append(
            {
                "n_cells": n_cells,
                "n_flagged": n_flagged,
                "share_flagged": n_flagged / n_cells if n_cells else 0.0,
                "top_other": top,
                "n_top_other": n_top,
            }
        )
    table = pd.DataFrame(rows, index=pd.Index(cells.coarse_names, name="coarse"), columns=list(COLUMNS))
    if inplace:
        adata.uns[key]["conflicts"] = table
    return table
