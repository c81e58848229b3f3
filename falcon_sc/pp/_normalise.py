"""Expression matrix -> model input: normalise by the input kind, select highly variable genes, batch-aware PCA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scanpy import logging as logg
from scipy import sparse

from .._checks import check_bool, check_int
from ._checks import check_codes, check_variation, expression_matrix, matrix_source, obs_batch_codes
from ._chunks import CHUNK_CELLS, is_out_of_core
from ._input_kind import resolve_input_kind
from ._pca import ScaledPCA
from ._rows import log_normalised_rows
from ._streamed import GeneStats, Moments, StreamedLognorm, WithinScores, fit_grouped_pca, global_pca, score_both


@dataclass
class Prepared:
    """Model-ready views of an expression matrix.

    Attributes
    ----------
    embedding
        Cells x ``n_comps`` PCA of the scaled (per batch) log-normalised HVGs, float32.
    lognorm
        Cells x HVG log-normalised matrix (sparse stays sparse), float32; for out-of-core input (backed AnnData,
        dask) a :class:`~falcon_sc.pp._streamed.StreamedLognorm` that computes it chunk by chunk when read.
    genes
        Names of the selected genes.
    input_kind
        ``"counts"``, ``"normalized"`` or ``"lognorm"``: the kind the input was processed as (the ``input_kind``
        override, or the detected kind).
    batches
        Integer batch code per cell.
    input_kind_detected
        The kind :func:`detect_input_kind` found in the input.
    pca
        The fitted per-batch scaling and loadings that gave ``embedding``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> prepared = fal.pp.prepare(adata, n_top_genes=100, n_comps=10)
    >>> prepared.embedding.shape, prepared.lognorm.shape, prepared.input_kind
    ((300, 10), (300, 100), 'counts')
    """

    embedding: np.ndarray
    lognorm: sparse.csr_matrix | np.ndarray | StreamedLognorm
    genes: pd.Index
    input_kind: str
    batches: np.ndarray
    input_kind_detected: str | None = None
    pca: ScaledPCA | None = None


def say_normalisation(kind: str, source: str, how: str) -> None:
    """Log how the input kind ``kind`` of ``source`` is normalised."""
    if kind == "counts":
        logg.info(f"    {source} holds raw counts ({how}): normalize_total(1e4) + log1p")
    elif kind == "normalized":
        logg.info(
            f"    {source} holds normalised, not logged values (TPM/CPM-like; {how}): rescaled to 1e4 per cell + log1p"
        )
    else:
        logg.info(f"    {source} holds log-normalised values ({how}): used as they are")


def _log_normalised(tmp: ad.AnnData, kind: str, source: str, how: str) -> None:
    """Normalise ``tmp`` in place by its input kind: counts and normalised values to 1e4 per cell + log1p."""
    say_normalisation(kind, source, how)
    log_normalised_rows(tmp, kind)


def check_normalised(
    X: Any, names: pd.Index, kind: str, source: str, n_comps: int, ranges: tuple[np.ndarray, np.ndarray] | None = None
) -> None:
    """Refuse a normalised matrix where fewer than 2 genes vary; warn when constant genes cap the components.

    A ``DegenerateInputError`` (:func:`check_variation`) when fewer than 2 genes vary (e.g. rows proportional to each
    other, which normalisation makes equal); a warning when the genes that vary are fewer than ``n_comps`` + 1.
    ``ranges``: per gene smallest and largest normalised value, when computed over row chunks (``X`` then gives only
    the shape).
    """
    scaled = kind != "lognorm"
    varies = check_variation(
        X,
        f"{source} after normalize_total(1e4) + log1p" if scaled else source,
        what="every cell has the same profile up to its total: the rows are proportional"
        if scaled
        else "every cell has the same values",
        names=names,
        rtol=1e-5 if scaled else 0.0,  # float32 rounding of the normalisation
        ranges=ranges,
    )
    n_varying = int(varies.sum())
    n_obs, n_vars = X.shape
    possible = min(n_comps, n_vars - 1, n_obs - 1)
    if n_varying - 1 < possible:
        logg.warning(
            f"only {n_varying} of the {n_vars} genes of {source} vary across the cells: the principal components "
            f"stop at {n_varying - 1} (n_comps={n_comps} asked)"
        )


def prepare(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
    random_state: int = 0,
    values_checked: bool = False,
    groups: np.ndarray | None = None,
    n_comps_within: int = 0,
) -> Prepared:
    """Turn counts, normalised or log-normalised values into model inputs, leaving ``adata`` untouched.

    Counts get ``normalize_total(1e4)`` + ``log1p``; normalised, not logged values (CPM, TPM, ``normalize_total``
    output) are rescaled to 1e4 per cell (``normalize_total(1e4)``, which puts them on the scale of normalised
    counts) + ``log1p``; log-normalised values are used as they are. Highly variable genes are then selected
    (``seurat`` flavour on the log data, per batch when ``batch_key`` is given); genes are centred and scaled within
    each batch and projected on their top principal components.

    Parameters
    ----------
    adata
        Annotated data matrix; never modified.
    layer
        Layer holding the expression values; ``None`` uses ``adata.X``.
    batch_key
        Column of ``adata.obs`` with batches/donors.
    n_top_genes
        Number of highly variable genes (all genes when there are fewer).
    n_comps
        Number of principal components.
    input_kind
        What the matrix holds: ``"auto"`` detects it (:func:`detect_input_kind`); ``"counts"``, ``"normalized"``
        (normalised, not logged) or ``"lognorm"`` (``log1p`` of normalised values) override the detection.
    random_state
        Seed for the probe of the input kind.
    values_checked
        ``True`` when the caller has already run :func:`check_values` on the matrix ``layer`` names: the full scan
        for NaN, infinite and negative values is not repeated (only the probed rows are checked again). With the
        default ``False`` every value is checked here.
    groups
        Coarse class code per cell, optional. Only used with out-of-core input (a backed AnnData or a dask ``X``,
        read in row chunks, see :doc:`/scale`): the per-class statistics of the within-class components are then
        gathered in the same pass as the global ones (:class:`FeatureTransform` passes them).
    n_comps_within
        With ``groups`` and out-of-core input: components fitted inside each class, scored in the same pass as the
        global components (kept in ``lognorm.within`` for :class:`FeatureTransform`); 0 fits none.

    Returns
    -------
    :class:`Prepared` with the embedding, the log-normalised HVG matrix and the input kind (used and detected).

    Raises
    ------
    TypeError
        If ``adata`` is not an AnnData, or ``n_top_genes``/``n_comps`` not ints.
    ValueError
        If ``n_top_genes`` or ``n_comps`` is below 2, or the matrix holds NaN, infinite or negative values.
    falcon_sc.errors.DegenerateInputError
        If fewer than 2 genes vary across the cells once normalised (all-zero or constant matrix, or rows that are
        proportional to each other).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> prepared = fal.pp.prepare(adata, n_top_genes=100, n_comps=10)
    >>> prepared.embedding.shape, len(prepared.genes), prepared.input_kind_detected
    ((300, 10), 100, 'counts')
    >>> adata.shape  # untouched
    (300, 200)
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    check_int("n_top_genes", n_top_genes, 2)
    check_int("n_comps", n_comps, 2)
    check_bool("values_checked", values_checked)
    X = expression_matrix(adata, layer)
    batches = obs_batch_codes(adata, batch_key)
    source = matrix_source(layer)
    kind, detected, why = resolve_input_kind(
        X, input_kind, source=source, random_state=random_state, values_checked=values_checked
    )
    how = f"{why}, detected" if kind == detected else f"input_kind={input_kind!r}"
    if is_out_of_core(X):
        groups = np.zeros(adata.n_obs, dtype=np.int64) if groups is None else check_codes("groups", groups, adata.n_obs)
        settings = {"batch_key": batch_key, "n_top_genes": n_top_genes, "n_comps": n_comps, "source": source}
        check_int("n_comps_within", n_comps_within, 0)
        settings["n_comps_within"] = int(n_comps_within)
        return _prepare_streamed(adata, X, (kind, detected, how), batches, groups, **settings)
    X = sparse.csr_matrix(X, dtype=np.float32) if sparse.issparse(X) else np.asarray(X, dtype=np.float32)
    tmp = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"batch": pd.Categorical(batches)}, index=adata.obs_names))
    tmp.var_names = adata.var_names
    _log_normalised(tmp, kind, source, how)
    check_normalised(tmp.X, tmp.var_names, kind, source, n_comps)
    if tmp.n_vars > n_top_genes:
        sc.pp.highly_variable_genes(
            tmp, n_top_genes=n_top_genes, flavor="seurat", batch_key="batch" if batch_key is not None else None
        )
        tmp = tmp[:, tmp.var["highly_variable"].to_numpy()]
    pca = ScaledPCA.fit(tmp.X, batches, n_comps)
    emb = pca.transform(tmp.X, batches)
    lognorm = tmp.X if not sparse.issparse(tmp.X) else sparse.csr_matrix(tmp.X)
    return Prepared(
        embedding=emb,
        lognorm=lognorm,
        genes=tmp.var_names.copy(),
        input_kind=kind,
        batches=batches,
        input_kind_detected=detected,
        pca=pca,
    )


def _prepare_streamed(
    adata: ad.AnnData,
    X: Any,
    kinds: tuple[str, str, str],
    batches: np.ndarray,
    groups: np.ndarray,
    *,
    batch_key: str | None,
    n_top_genes: int,
    n_comps: int,
    source: str,
    n_comps_within: int,
) -> Prepared:
    """:func:`prepare` on an out-of-core matrix, in row chunks (:mod:`falcon_sc.pp._streamed`): the same steps.

    ``kinds``: the input kind used, the detected one and why, in words.
    """
    kind, detected, how = kinds
    say_normalisation(kind, source, how)
    start = logg.info(f"    {source} is out of core: read in chunks of {CHUNK_CELLS:,} cells")
    stats = GeneStats.gather(X, kind, batches, int(batches.max()) + 1)
    check_normalised(X, adata.var_names, kind, source, n_comps, ranges=(stats.lo, stats.hi))
    lognorm = StreamedLognorm(X, kind, stats.hvg(n_top_genes, batch_key is not None, adata.var_names))
    start = logg.info(f"    gene statistics and {lognorm.shape[1]} HVGs", time=start)
    lognorm.moments = Moments.gather(lognorm, groups, batches)
    pca = global_pca(lognorm.moments, n_comps)
    within = None
    if n_comps_within > 0:
        fits = fit_grouped_pca(lognorm.moments, n_comps_within, int(groups.max()) + 1)
        within = WithinScores(groups, n_comps_within, fits, np.zeros((0, n_comps_within), dtype=np.float32))
    start = logg.info("    second moments (per class and batch), global and within-class components", time=start)
    emb, scores = score_both(lognorm, pca, batches, within)
    if within is not None and scores is not None:
        within.scores = scores
        lognorm.within = within
        lognorm.moments = None  # every fit is done: free the second moments (32 MB per class and batch)
    logg.info("    scores", time=start)
    return Prepared(
        embedding=emb,
        lognorm=lognorm,
        genes=adata.var_names[lognorm.columns].copy(),
        input_kind=kind,
        batches=batches,
        input_kind_detected=detected,
        pca=pca,
    )
