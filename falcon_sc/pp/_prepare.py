"""Expression matrix -> model input: detect the input kind, normalise, select HVGs, batch-aware scaled PCA."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scanpy import logging as logg
from scipy import sparse

_CHUNK = 8192


@dataclass
class Prepared:
    """Model-ready views of an expression matrix.

    Attributes
    ----------
    embedding
        Cells x ``n_comps`` PCA of the scaled (per batch) log-normalised HVGs, float32.
    lognorm
        Cells x HVG log-normalised matrix (sparse stays sparse), float32.
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
    lognorm: sparse.csr_matrix | np.ndarray
    genes: pd.Index
    input_kind: str
    batches: np.ndarray
    input_kind_detected: str | None = None
    pca: ScaledPCA | None = None


def _matrix(adata: ad.AnnData, layer: str | None):
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} not found in adata.layers (available: {list(adata.layers)}); "
            "pass one of them or None for adata.X."
        )
    return adata.layers[layer]


def _check_matrix(X, name: str = "X") -> int:
    """Number of rows of a cells x genes matrix (2-d array or sparse); a ``ValueError`` naming it otherwise."""
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        what = f"shape {tuple(shape)}" if shape is not None else type(X).__name__
        raise ValueError(f"{name} must be a 2-d cells x genes matrix (numpy array or scipy sparse), got {what}.")
    return int(shape[0])


def _check_codes(name: str, codes, n_rows: int, rows: str = "row of X") -> np.ndarray:
    """``codes`` as an array of one non-negative integer code per row of the matrix; a ``ValueError`` otherwise."""
    arr = np.asarray(codes)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise ValueError(f"{name} must hold one code per {rows} ({n_rows}), got shape {arr.shape}.")
    if arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
        raise ValueError(
            f"{name} must hold non-negative integer codes (e.g. pandas.Categorical(...).codes), got dtype {arr.dtype}"
            + (f" with minimum {arr.min()}" if arr.dtype.kind in "iu" else "")
            + "."
        )
    return arr


def _check_n_comps(n_comps, name: str = "n_comps") -> None:
    if isinstance(n_comps, bool) or not isinstance(n_comps, int | np.integer) or n_comps < 1:
        raise ValueError(f"{name}={n_comps!r} must be a positive int.")


#: allowed values of ``input_kind`` (``"auto"`` detects the kind from the data)
INPUT_KINDS = ("auto", "counts", "normalized", "lognorm")
#: log1p-normalised values above this are implausible (e^30 ~ 1e13); scanpy's ``seurat`` HVG selection takes expm1
#: of the log data, whose square overflows float32 above ~44
_MAX_LOG = 30.0
#: rows whose sums lie within this relative distance of the median row sum count as "equal"
_SUM_RTOL = 1e-3
#: share of the probed non-empty rows that must have equal sums
_SUM_SHARE = 0.95
#: median distance to the nearest integer of within-row value ratios below which values lie on a lattice
_LATTICE_TOL = 1e-2


#: elements per chunk of the full scan of a dense matrix (:func:`check_values`)
_SCAN_ELEMENTS = 1 << 22


def _value_counts(vals: np.ndarray) -> tuple[int, int, int]:
    """Numbers of NaN, infinite and negative entries of ``vals`` (fast path: one min and one max)."""
    if vals.size == 0:
        return 0, 0, 0
    lo, hi = vals.min(), vals.max()
    if vals.dtype.kind in "biu":
        return 0, 0, int((vals < 0).sum()) if lo < 0 else 0
    if np.isfinite(lo) and np.isfinite(hi) and lo >= 0:
        return 0, 0, 0
    return int(np.isnan(vals).sum()), int(np.isinf(vals).sum()), int((vals < 0).sum())


def check_values(X, source: str = "X") -> None:
    """Raise a ``ValueError`` when ``X`` holds NaN, infinite or negative values, counted over the whole matrix.

    Every stored value is checked (sparse: the stored ``data``; dense: row chunks, never a second copy of ``X``),
    unlike :func:`detect_input_kind`, which probes some rows. Counts, normalised and log-normalised values are all
    finite and non-negative.

    Parameters
    ----------
    X
        Cells x genes, dense or sparse.
    source
        Name of the matrix in the message, e.g. ``"X"`` or ``"layers['counts']"``.

    Raises
    ------
    ValueError
        If ``X`` is not numeric, or holds NaN, infinite or negative values (the message gives how many).
    """
    if X is None:
        raise ValueError(f"adata.{source} is None: there is no expression matrix; pass layer=... or use_rep=....")
    if sparse.issparse(X):
        if X.format not in ("csr", "csc", "coo", "bsr"):
            X = X.tocsr()
        chunks: Iterable[np.ndarray] = [np.asarray(X.data)]
    else:
        step = max(1, _SCAN_ELEMENTS // max(1, X.shape[1])) if len(X.shape) == 2 else max(1, X.shape[0])
        chunks = (np.asarray(X[start : start + step]) for start in range(0, X.shape[0], step))
    n_nan = n_inf = n_neg = 0
    for vals in chunks:
        if vals.dtype.kind not in "biuf":
            raise ValueError(
                f"adata.{source} holds {vals.dtype} values; the expression matrix must be numeric (counts, normalised "
                "or log-normalised values)."
            )
        a, b, c = _value_counts(vals)
        n_nan, n_inf, n_neg = n_nan + a, n_inf + b, n_neg + c
    if n_nan or n_inf:
        what = " and ".join(f"{n:,} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
        more = f" (and {n_neg:,} negative)" if n_neg else ""
        raise ValueError(
            f"adata.{source} holds {what} values{more}; expression values must be finite: replace them (e.g. by 0) "
            "or pass another layer=..., or an embedding via use_rep=...."
        )
    if n_neg:
        raise ValueError(
            f"adata.{source} holds {n_neg:,} negative values (it looks scaled/centred). Pass raw counts, normalised or "
            "log-normalised values via layer=..., or an existing embedding via use_rep=...."
        )


def check_input_kind(input_kind) -> None:
    """Raise a ``ValueError`` naming ``input_kind`` unless it is one of :data:`INPUT_KINDS`."""
    if not isinstance(input_kind, str) or input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind={input_kind!r} must be one of {', '.join(map(repr, INPUT_KINDS))}.")


@dataclass(frozen=True)
class _Evidence:
    """What the probed rows tell about the input kind."""

    n_rows: int  # probed rows with at least one non-zero value
    integer: bool
    max: float
    row_sum: float  # median sum of the non-empty probed rows
    sums_equal: bool
    expm1_sums_equal: bool
    expm1_row_sum: float
    lattice: float  # median distance to an integer of value / smallest value in the row (nan: too few ratios)
    expm1_lattice: float  # the same on expm1 of the values


def _probe(X, n_probe: int, random_state: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-zero values of up to ``n_probe`` random rows, their row index (sorted) and the number of probed rows."""
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(X.shape[0], size=min(n_probe, X.shape[0]), replace=False))
    if sparse.issparse(X):
        sub = sparse.csr_matrix(X[rows])
        vals = np.asarray(sub.data, dtype=np.float64)
        row_of = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    else:
        sub = np.asarray(X[rows])
        row_of, col = np.nonzero(sub)  # row-major: sorted by row; NaN and inf are non-zero
        vals = sub[row_of, col].astype(np.float64)
    if not np.all(np.isfinite(vals)):
        raise ValueError("The expression matrix holds NaN or infinite values; clean it or pass another layer=.")
    if vals.size and vals.min() < 0:
        raise ValueError(
            "The expression matrix holds negative values (it looks scaled/centred). Pass raw counts, normalised or "
            "log-normalised values via layer=..., or an existing embedding via use_rep=..."
        )
    keep = vals > 0  # explicit zeros of a sparse matrix
    return vals[keep], row_of[keep], rows.size


def _equal_sums(vals: np.ndarray, row_of: np.ndarray) -> tuple[float, bool]:
    sums = np.bincount(row_of, weights=vals)
    sums = sums[sums > 0]
    median = float(np.median(sums)) if sums.size else 0.0
    if sums.size < 3:
        return median, False
    return median, bool(np.mean(np.abs(sums - median) <= _SUM_RTOL * median) >= _SUM_SHARE)


def _lattice(vals: np.ndarray, row_of: np.ndarray) -> float:
    """Median distance to the nearest integer of every value divided by the smallest value of its row.

    Counts scaled per cell (normalize_total, CPM) give integer ratios (the smallest value is usually one count);
    other values give ratios spread uniformly around integers (median distance ~0.25). Ratios of 1 (the smallest
    values themselves) and above 100 (rounding) carry no evidence and are left out.
    """
    starts = np.flatnonzero(np.r_[True, row_of[1:] != row_of[:-1]])
    smallest = np.minimum.reduceat(vals, starts)
    ratio = vals / np.repeat(smallest, np.diff(np.r_[starts, vals.size]))
    ratio = ratio[(ratio >= 1.5) & (ratio <= 100)]
    if ratio.size < 20:
        return np.nan
    return float(np.median(np.abs(ratio - np.rint(ratio))))


def _evidence(X, n_probe: int, random_state: int) -> _Evidence:
    vals, row_of, _ = _probe(X, n_probe, random_state)
    if vals.size == 0:
        return _Evidence(0, True, 0.0, 0.0, False, False, 0.0, np.nan, np.nan)
    integer = bool(np.all(np.abs(vals - np.rint(vals)) <= 1e-6 * np.maximum(vals, 1.0)))
    vmax = float(vals.max())
    row_sum, sums_equal = _equal_sums(vals, row_of)
    lattice = expm1_lattice = np.nan
    expm1_row_sum, expm1_sums_equal = 0.0, False
    if not integer:
        lattice = _lattice(vals, row_of)
        if vmax <= _MAX_LOG:
            e = np.expm1(vals)
            expm1_row_sum, expm1_sums_equal = _equal_sums(e, row_of)
            expm1_lattice = _lattice(e, row_of)
    return _Evidence(
        n_rows=int(np.unique(row_of).size),
        integer=integer,
        max=vmax,
        row_sum=row_sum,
        sums_equal=sums_equal,
        expm1_sums_equal=expm1_sums_equal,
        expm1_row_sum=expm1_row_sum,
        lattice=lattice,
        expm1_lattice=expm1_lattice,
    )


def _decide(ev: _Evidence) -> tuple[str, str]:
    """Input kind and the evidence for it, in words (see :func:`detect_input_kind`)."""
    if ev.integer:
        if ev.sums_equal and ev.n_rows >= 5:
            return "normalized", f"integer values, but every cell sums to ~{ev.row_sum:.3g}"
        return "counts", "non-negative integers"
    if ev.sums_equal:
        return "normalized", f"row sums ~{ev.row_sum:.3g}"
    if ev.max > _MAX_LOG:
        return "normalized", f"values up to {ev.max:.3g}, too large to be logged"
    if ev.expm1_sums_equal:
        return "lognorm", f"expm1 of the values sums to ~{ev.expm1_row_sum:.3g} per cell"
    raw_ok = ev.lattice <= _LATTICE_TOL
    log_ok = ev.expm1_lattice <= _LATTICE_TOL
    if raw_ok and (not log_ok or 10 * ev.lattice <= ev.expm1_lattice):
        return "normalized", "values are multiples of a per-cell unit (scaled counts)"
    if log_ok and (not raw_ok or 10 * ev.expm1_lattice <= ev.lattice):
        return "lognorm", "expm1 of the values are multiples of a per-cell unit (log1p of scaled counts)"
    return "lognorm", f"non-integer values up to {ev.max:.3g} (at most {_MAX_LOG:g})"


def detect_input_kind(X, *, n_probe: int = 2000, random_state: int = 0) -> str:
    """Tell raw counts, normalised (not logged) values and log-normalised values apart by probing rows.

    The rule, on the non-zero values of ``n_probe`` random rows (all-zero rows are ignored):

    1. all values are integers -> ``"counts"``; unless at least 5 non-empty rows are probed and 95% of them sum to
       the same value (within 0.1%), which only normalised data do -> ``"normalized"`` (processed like counts);
    2. 95% of the rows sum to the same value (CPM/TPM ~1e6, ``normalize_total`` output) -> ``"normalized"``;
    3. a value exceeds 30 (log1p-normalised data stay below ~15; expm1 of them would overflow) -> ``"normalized"``
       (TPM/CPM of a gene subset, where the rows no longer sum to a constant);
    4. ``expm1`` of the rows sums to the same value -> ``"lognorm"`` (``log1p`` of normalised counts);
    5. within each row, values divided by the row's smallest value are integers (scaled counts) ->
       ``"normalized"``, or the same holds after ``expm1`` -> ``"lognorm"`` (when both hold, for tiny values, the
       closer fit wins);
    6. otherwise (non-integer values up to 30, e.g. ``log2(TPM + 1)``) -> ``"lognorm"``.

    A matrix without any non-zero value is ``"counts"``.

    Parameters
    ----------
    X
        Cells x genes, dense or sparse.
    n_probe
        Number of rows inspected.
    random_state
        Seed for the probed rows.

    Returns
    -------
    ``"counts"``, ``"normalized"`` or ``"lognorm"``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> fal.pp.detect_input_kind(adata.X)
    'counts'
    >>> sc.pp.normalize_total(adata, target_sum=1e4)
    >>> fal.pp.detect_input_kind(adata.X)
    'normalized'
    >>> sc.pp.log1p(adata)
    >>> fal.pp.detect_input_kind(adata.X)
    'lognorm'

    Raises
    ------
    ValueError
        If the matrix holds negative or non-finite values (scaled data cannot be normalised again), is not 2-d, or
        ``n_probe`` is not a positive int.
    """
    _check_matrix(X)
    _check_n_comps(n_probe, "n_probe")
    return _decide(_evidence(X, n_probe, random_state))[0]


def resolve_input_kind(
    X, input_kind: str = "auto", *, source: str = "X", n_probe: int = 2000, random_state: int = 0
) -> tuple[str, str, str]:
    """Kind to process ``X`` as: the ``input_kind`` override, or the detected kind for ``"auto"``.

    Checks that the override is possible: no kind holds negative or non-finite values, and ``"lognorm"`` values
    above 30 (whose expm1 overflows in HVG selection) are refused, over the whole matrix.

    Returns
    -------
    The kind used, the detected kind and the evidence for the detected kind, in words.
    """
    check_input_kind(input_kind)
    try:
        check_values(X, source)
        detected, why = _decide(_evidence(X, n_probe, random_state))
    except ValueError as err:
        if input_kind == "auto":
            raise
        raise ValueError(
            f"input_kind={input_kind!r} cannot be used on {source}: {err} Counts, normalised and log-normalised "
            "values are all non-negative and finite."
        ) from None
    kind = detected if input_kind == "auto" else input_kind
    if kind == "lognorm":
        vmax = float(X.max()) if X.shape[0] and X.shape[1] else 0.0
        if vmax > _MAX_LOG:
            if input_kind == "lognorm":
                raise ValueError(
                    f"input_kind='lognorm' but {source} holds values up to {vmax:.3g}: log1p-normalised values stay "
                    f"below ~15 and expm1 of values above {_MAX_LOG:g} overflows in HVG selection. These values are "
                    "not logged: pass input_kind='normalized' (or 'counts', or 'auto' to detect)."
                )
            raise ValueError(
                f"The probed rows of {source} look log-normalised ({why}) but other rows hold values up to "
                f"{vmax:.3g}, too large to be logged; pass input_kind='normalized' if the matrix is not logged, or "
                "clean the matrix."
            )
    if input_kind != "auto" and input_kind != detected:
        same = {input_kind, detected} <= {"counts", "normalized"}  # processed the same way
        (logg.info if same else logg.warning)(
            f"input_kind={input_kind!r} overrides the detected {detected!r} ({why}) for {source}"
        )
    return kind, detected, why


def _batch_codes(adata: ad.AnnData, batch_key: str | None) -> np.ndarray:
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if batch_key not in adata.obs:
        raise KeyError(f"batch_key={batch_key!r} is not a column of adata.obs; pass an existing column or None.")
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(f"batch_key={batch_key!r} has missing values; fill them before calling.")
    return pd.Categorical(col).codes.astype(np.int64)


def _dense_rows(X, start: int, stop: int) -> np.ndarray:
    block = X[start:stop]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def _top_eigenvectors(sym: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenvalues (descending) and eigenvectors of a symmetric matrix (LAPACK ``evr`` on that subset)."""
    from scipy.linalg import eigh

    m = sym.shape[0]
    evals, evecs = eigh(sym, subset_by_index=[m - k, m - 1], driver="evr")
    return evals[::-1], evecs[:, ::-1]


def batch_stats(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and inverse standard deviation of the rows of ``X`` (0 for constant genes), float64."""
    mu = np.asarray(X.mean(axis=0)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0)).ravel() if sparse.issparse(X) else (X**2).mean(axis=0)
    sd = np.sqrt(np.maximum(sq - mu**2, 0.0))
    inv = np.where(sd > 1e-8, 1.0 / np.maximum(sd, 1e-12), 0.0)
    return mu.astype(np.float64), inv.astype(np.float64)


@dataclass
class ScaledPCA:
    """Principal components of a matrix whose genes are centred and scaled within each batch: fitted, replayable.

    Attributes
    ----------
    mean, scale
        Batches x genes: per-batch gene means and inverse standard deviations (0 for constant genes).
    loadings
        Genes x components.

    Examples
    --------
    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> X = np.random.default_rng(0).poisson(2.0, size=(100, 20)).astype(np.float32)
    >>> batches = np.repeat([0, 1], 50)
    >>> pca = fal.pp.ScaledPCA.fit(X, batches, n_comps=5)
    >>> pca.n_comps, pca.mean.shape, pca.loadings.shape
    (5, (2, 20), (20, 5))
    >>> pca.transform(X[:3], batches[:3]).shape  # replayed on (new) rows of a fitted batch
    (3, 5)
    """

    mean: np.ndarray
    scale: np.ndarray
    loadings: np.ndarray

    @classmethod
    def fit(cls, X, batches: np.ndarray, n_comps: int) -> ScaledPCA:
        """Fit on cells x genes ``X`` (dense or CSR, never densified whole) with integer batch codes ``batches``.

        The covariance of the per-batch standardised matrix is accumulated in row chunks (genes x genes) and its
        top eigenvectors are the loadings (the cells x cells Gram matrix when there are fewer cells than genes).
        Signs are fixed so that each component's largest absolute loading is positive.
        """
        batches = _check_codes("batches", batches, _check_matrix(X))
        _check_n_comps(n_comps)
        n, g = X.shape
        n_comps = min(n_comps, g - 1, n - 1)
        n_batches = int(batches.max()) + 1
        order = np.argsort(batches, kind="stable")
        mean = np.zeros((n_batches, g))
        scale = np.ones((n_batches, g))
        for b in range(n_batches):
            mean[b], scale[b] = batch_stats(X[order[batches[order] == b]])
        Xo = X[order]
        bo = batches[order]
        if n <= g:
            # fewer cells than genes: eigenvectors of the cells x cells Gram matrix are cheaper and exact
            z = (_dense_rows(Xo, 0, n) - mean[bo]) * scale[bo]
            evals, u = _top_eigenvectors(z @ z.T, n_comps)
            top = z.T @ (u / np.sqrt(np.clip(evals, 1e-12, None)))
        else:
            cov = np.zeros((g, g))
            for start in range(0, n, _CHUNK):
                stop = min(start + _CHUNK, n)
                z = (_dense_rows(Xo, start, stop) - mean[bo[start:stop]]) * scale[bo[start:stop]]
                cov += z.T @ z
            top = _top_eigenvectors(cov, n_comps)[1]
        signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
        return cls(mean=mean, scale=scale, loadings=top * np.where(signs == 0, 1.0, signs))

    @property
    def n_comps(self) -> int:
        """Number of components."""
        return int(self.loadings.shape[1])

    def transform(
        self, X, batches: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of the rows of ``X``, each standardised with the statistics of its batch.

        ``mean``/``scale`` (batches x genes, indexed by ``batches``) default to the fitted ones; pass tables with
        rows from :func:`batch_stats` to standardise a batch unseen at fit time within itself, as the fit did.
        """
        mean = self.mean if mean is None else mean
        scale = self.scale if scale is None else scale
        n = X.shape[0]
        out = np.empty((n, self.n_comps), dtype=np.float32)
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            b = batches[start:stop]
            out[start:stop] = ((_dense_rows(X, start, stop) - mean[b]) * scale[b]) @ self.loadings
        return out


def batch_scaled_pca(X, batches: np.ndarray, n_comps: int) -> np.ndarray:
    """PCA of ``X`` after centring and scaling every gene within each batch, without densifying ``X``.

    Centring within batches removes additive (log-scale multiplicative) batch shifts before the components are
    found. :class:`ScaledPCA` keeps the fitted statistics and loadings to apply them to new cells.

    Parameters
    ----------
    X
        Cells x genes (log-normalised), dense or CSR.
    batches
        Integer batch code per cell.
    n_comps
        Number of components.

    Returns
    -------
    Cells x ``n_comps`` float32 scores.

    Examples
    --------
    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> X = np.log1p(np.random.default_rng(0).poisson(2.0, size=(100, 20))).astype(np.float32)
    >>> scores = fal.pp.batch_scaled_pca(X, np.repeat([0, 1], 50), n_comps=5)
    >>> scores.shape, scores.dtype
    ((100, 5), dtype('float32'))
    """
    return ScaledPCA.fit(X, batches, n_comps).transform(X, batches)


def prepare(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
    random_state: int = 0,
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

    Returns
    -------
    :class:`Prepared` with the embedding, the log-normalised HVG matrix and the input kind (used and detected).

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
    if n_top_genes < 2:
        raise ValueError(f"n_top_genes={n_top_genes} must be at least 2.")
    if n_comps < 2:
        raise ValueError(f"n_comps={n_comps} must be at least 2.")
    X = _matrix(adata, layer)
    batches = _batch_codes(adata, batch_key)
    source = f"layers[{layer!r}]" if layer is not None else "X"
    kind, detected, why = resolve_input_kind(X, input_kind, source=source, random_state=random_state)
    how = f"{why}, detected" if kind == detected else f"input_kind={input_kind!r}"
    X = sparse.csr_matrix(X, dtype=np.float32) if sparse.issparse(X) else np.asarray(X, dtype=np.float32)
    tmp = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"batch": pd.Categorical(batches)}, index=adata.obs_names))
    tmp.var_names = adata.var_names
    if kind == "counts":
        logg.info(f"    {source} holds raw counts ({how}): normalize_total(1e4) + log1p")
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
    elif kind == "normalized":
        logg.info(
            f"    {source} holds normalised, not logged values (TPM/CPM-like; {how}): rescaled to 1e4 per cell + log1p"
        )
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
    else:
        logg.info(f"    {source} holds log-normalised values ({how}): used as they are")
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


@dataclass
class WithinClassPCA:
    """Components fitted inside one coarse class: its :class:`ScaledPCA` and the batches it saw, in its row order."""

    pca: ScaledPCA
    batches: np.ndarray


def fit_within_class_pca(
    X, groups: np.ndarray, batches: np.ndarray, n_comps: int, n_groups: int | None = None
) -> list[WithinClassPCA | None]:
    """One :class:`WithinClassPCA` per group ``0..n_groups-1`` (``None`` for groups too small for a component)."""
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    fitted: list[WithinClassPCA | None] = []
    for g in range(n_groups):
        idx = np.flatnonzero(groups == g)
        k = min(n_comps, idx.size - 1, X.shape[1] - 1)
        if k < 1:
            fitted.append(None)
            continue
        seen, local = np.unique(batches[idx], return_inverse=True)
        fitted.append(WithinClassPCA(ScaledPCA.fit(X[idx], local.astype(np.int64), k), seen))
    return fitted


def batch_stats_table(pca: ScaledPCA, X, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local batch index per row and mean/scale tables: fitted rows, then one row per unseen batch (code < 0).

    Unseen batches (``codes`` -1, -2, ...) are standardised within themselves, as the fit did with each batch; a
    batch of one cell, which has no spread, gets the mean of the fitted batches' statistics.
    """
    mean, scale = pca.mean, pca.scale
    local = codes.copy()
    extra_mean, extra_scale = [], []
    for j, new in enumerate(sorted(set(codes[codes < 0].tolist()), reverse=True)):
        rows = np.flatnonzero(codes == new)
        if rows.size >= 2:
            mu, inv = batch_stats(X[rows])
        else:
            mu, inv = mean.mean(axis=0), scale.mean(axis=0)
        extra_mean.append(mu)
        extra_scale.append(inv)
        local[rows] = mean.shape[0] + j
    if extra_mean:
        mean = np.vstack([mean, *extra_mean])
        scale = np.vstack([scale, *extra_scale])
    return local, mean, scale


def within_class_scores(
    fitted: list[WithinClassPCA | None], X, groups: np.ndarray, batches: np.ndarray, n_comps: int
) -> np.ndarray:
    """Cells x ``n_comps`` coordinates of each cell on its own group's fitted components (zero-padded).

    Batches a group did not see at fit time (including codes < 0) are standardised within themselves
    (:func:`batch_stats_table`).
    """
    out = np.zeros((X.shape[0], n_comps), dtype=np.float32)
    for g, fit in enumerate(fitted):
        idx = np.flatnonzero(groups == g)
        if fit is None or idx.size == 0:
            continue
        lookup = {int(b): i for i, b in enumerate(fit.batches)}
        for b in np.unique(batches[idx]):  # batches this group did not see at fit time: -1, -2, ...
            lookup.setdefault(int(b), -1 - sum(v < 0 for v in lookup.values()))
        codes = np.array([lookup[int(b)] for b in batches[idx]], dtype=np.int64)
        local, mean, scale = batch_stats_table(fit.pca, X[idx], codes)
        out[idx, : fit.pca.n_comps] = fit.pca.transform(X[idx], local, mean, scale)
    return out


def within_class_pca(X, groups: np.ndarray, batches: np.ndarray, n_comps: int) -> np.ndarray:
    """PCA computed separately inside each group (coarse class), stacked into one cells x ``n_comps`` array.

    Each group's cells get coordinates on that group's own top components (scaled within batches), which resolve
    the variation *inside* a coarse class far better than a global PCA dominated by differences between classes.
    Coordinates of different groups are not comparable: use them only for searches inside a group. Groups too
    small for ``n_comps`` components get fewer, zero-padded.

    Parameters
    ----------
    X
        Cells x genes log-normalised matrix (dense or CSR).
    groups
        Group per cell.
    batches
        Batch code per cell (centring and scaling are done per batch inside each group).
    n_comps
        Components per group.

    Returns
    -------
    Cells x ``n_comps`` float32 array.

    Examples
    --------
    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> X = np.log1p(np.random.default_rng(0).poisson(2.0, size=(100, 20))).astype(np.float32)
    >>> groups = np.repeat([0, 1], 50)  # e.g. coarse class codes
    >>> within = fal.pp.within_class_pca(X, groups, np.zeros(100, dtype=int), n_comps=4)
    >>> within.shape
    (100, 4)
    """
    n_rows = _check_matrix(X)
    groups, batches = _check_codes("groups", groups, n_rows), _check_codes("batches", batches, n_rows)
    _check_n_comps(n_comps)
    return within_class_scores(fit_within_class_pca(X, groups, batches, n_comps), X, groups, batches, n_comps)
