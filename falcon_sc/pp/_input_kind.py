"""Which kind of values an expression matrix holds: raw counts, normalised (not logged) or log-normalised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scanpy import logging as logg
from scipy import sparse

from .._checks import check_bool, check_int
from ._checks import check_input_kind, check_matrix, check_values, matrix_max
from ._chunks import is_out_of_core, read_row_set

#: log1p-normalised values above this are implausible (e^30 ~ 1e13); scanpy's ``seurat`` HVG selection takes expm1
#: of the log data, whose square overflows float32 above ~44
MAX_LOG = 30.0
#: rows whose sums lie within this relative distance of the median row sum count as "equal"
_SUM_RTOL = 1e-3
#: share of the probed non-empty rows that must have equal sums
_SUM_SHARE = 0.95
#: median distance to the nearest integer of within-row value ratios below which values lie on a lattice
_LATTICE_TOL = 1e-2


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


def _probe(X: Any, n_probe: int, random_state: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Non-zero values of up to ``n_probe`` random rows, their row index (sorted) and the number of probed rows."""
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(X.shape[0], size=min(n_probe, X.shape[0]), replace=False))
    if is_out_of_core(X):  # only the probed rows are read
        X, rows = read_row_set(X, rows), np.arange(rows.size)
    if sparse.issparse(X):
        sub = sparse.csr_matrix(X[rows])
        vals = np.asarray(sub.data, dtype=np.float64)
        row_of = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    else:
        dense = np.asarray(X[rows])
        row_of, col = np.nonzero(dense)  # row-major: sorted by row; NaN and inf are non-zero
        vals = dense[row_of, col].astype(np.float64)
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


def _evidence(X: Any, n_probe: int, random_state: int) -> _Evidence:
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
        if vmax <= MAX_LOG:
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
    if ev.max > MAX_LOG:
        return "normalized", f"values up to {ev.max:.3g}, too large to be logged"
    if ev.expm1_sums_equal:
        return "lognorm", f"expm1 of the values sums to ~{ev.expm1_row_sum:.3g} per cell"
    raw_ok = ev.lattice <= _LATTICE_TOL
    log_ok = ev.expm1_lattice <= _LATTICE_TOL
    if raw_ok and (not log_ok or 10 * ev.lattice <= ev.expm1_lattice):
        return "normalized", "values are multiples of a per-cell unit (scaled counts)"
    if log_ok and (not raw_ok or 10 * ev.expm1_lattice <= ev.lattice):
        return "lognorm", "expm1 of the values are multiples of a per-cell unit (log1p of scaled counts)"
    return "lognorm", f"non-integer values up to {ev.max:.3g} (at most {MAX_LOG:g})"


def detect_input_kind(X: Any, *, n_probe: int = 2000, random_state: int = 0) -> str:
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
        ``n_probe`` is below 1.
    TypeError
        If ``n_probe`` is not an int.
    """
    check_matrix(X)
    check_int("n_probe", n_probe, 1)
    return _decide(_evidence(X, n_probe, random_state))[0]


def _check_lognorm_range(X: Any, input_kind: str, source: str, why: str) -> None:
    """Refuse ``"lognorm"`` for a matrix with values above :data:`MAX_LOG` (one pass over ``X``)."""
    vmax = matrix_max(X)  # scipy's X.max() sums duplicate entries of the user's matrix in place
    if vmax <= MAX_LOG:
        return
    if input_kind == "lognorm":
        raise ValueError(
            f"input_kind='lognorm' but {source} holds values up to {vmax:.3g}: log1p-normalised values stay "
            f"below ~15 and expm1 of values above {MAX_LOG:g} overflows in HVG selection. These values are "
            "not logged: pass input_kind='normalized' (or 'counts', or 'auto' to detect)."
        )
    raise ValueError(
        f"The probed rows of {source} look log-normalised ({why}) but other rows hold values up to "
        f"{vmax:.3g}, too large to be logged; pass input_kind='normalized' if the matrix is not logged, or "
        "clean the matrix."
    )


def resolve_input_kind(
    X: Any,
    input_kind: str = "auto",
    *,
    source: str = "X",
    n_probe: int = 2000,
    random_state: int = 0,
    values_checked: bool = False,
) -> tuple[str, str, str]:
    """Kind to process ``X`` as: the ``input_kind`` override, or the detected kind for ``"auto"``.

    Checks that the override is possible: no kind holds negative or non-finite values, and ``"lognorm"`` values
    above 30 (whose expm1 overflows in HVG selection) are refused, over the whole matrix.

    Parameters
    ----------
    X
        Cells x genes, dense or sparse.
    input_kind
        One of :data:`~falcon_sc.pp._checks.INPUT_KINDS`.
    source
        Name of the matrix in messages, e.g. ``"X"`` or ``"layers['counts']"``.
    n_probe, random_state
        As in :func:`detect_input_kind`.
    values_checked
        ``True`` when the caller has already run :func:`~falcon_sc.pp.check_values` on this very ``X``: the full
        scan for NaN, infinite and negative values is then skipped (the probed rows are still checked).

    Returns
    -------
    The kind used, the detected kind and the evidence for the detected kind, in words.
    """
    check_input_kind(input_kind)
    check_bool("values_checked", values_checked)
    try:
        if not values_checked:
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
        _check_lognorm_range(X, input_kind, source, why)
    if input_kind != "auto" and input_kind != detected:
        same = {input_kind, detected} <= {"counts", "normalized"}  # processed the same way
        (logg.info if same else logg.warning)(
            f"input_kind={input_kind!r} overrides the detected {detected!r} ({why}) for {source}"
        )
    return kind, detected, why
