"""The preprocessing of :func:`falcon_sc.pp.prepare` on an out-of-core matrix (backed AnnData, dask), in row chunks.

Nothing of the expression matrix is held whole: every pass reads :data:`~falcon_sc.pp._chunks.CHUNK_CELLS` cells,
normalises them as the in-memory path does (the normalisation works row by row), and adds them to summaries:

1. per batch, sums and sums of squares of every gene's log-normalised values and of their ``expm1`` (the seurat HVG
   dispersions, :func:`~falcon_sc.pp._hvg.seurat_hvg`), non-zero counts, and each gene's smallest and largest value
   (the variation check);
2. the genes x genes covariance of the HVGs standardised within batches, whose top eigenvectors are the loadings
   (exact PCA, as :class:`~falcon_sc.pp.ScaledPCA`);
3. the projection of every chunk on the loadings (the cells x ``n_comps`` embedding, kept in memory).

The within-class components take three more passes (per class and batch statistics, the covariances of at most
:data:`MAX_COVARIANCES` classes at a time, the projection).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._checks import block_range
from ._chunks import row_blocks
from ._hvg import seurat_hvg
from ._pca import ScaledPCA, WithinClassPCA, fixed_signs, inverse_sd, standardised, top_eigenvectors

#: genes x genes covariances accumulated in one pass of the within-class components (each n_genes^2 float64: 32 MB
#: for 2,000 HVGs); more coarse classes take more passes
MAX_COVARIANCES = 16


def normalised_block(raw: Any, kind: str) -> Any:
    """Rows read from the matrix, log-normalised by the input kind (float32 CSR, or a float32 array)."""
    from ._normalise import log_normalised_rows

    block = sparse.csr_matrix(raw, dtype=np.float32) if sparse.issparse(raw) else np.asarray(raw, dtype=np.float32)
    if kind != "lognorm":
        tmp = ad.AnnData(X=block)
        log_normalised_rows(tmp, kind)
        block = tmp.X
    return block


@dataclass
class StreamedLognorm:
    """Cells x HVG log-normalised values of an out-of-core matrix, computed chunk by chunk whenever they are read.

    Attributes
    ----------
    X
        The out-of-core matrix (cells x all genes).
    kind
        Its input kind (``"counts"``, ``"normalized"`` or ``"lognorm"``).
    columns
        Columns of ``X`` of the selected genes, in order.
    """

    X: Any
    kind: str
    columns: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Cells x selected genes."""
        return int(self.X.shape[0]), int(self.columns.size)

    def blocks(self) -> Iterator[tuple[int, int, Any]]:
        """``(start, stop, rows)``: consecutive chunks of the cells' log-normalised selected genes."""
        every = self.columns.size == self.X.shape[1] and (np.diff(self.columns) == 1).all()
        for start, stop, raw in row_blocks(self.X):
            block = normalised_block(raw, self.kind)
            yield start, stop, block if every else block[:, self.columns]


def _column_sums(block: Any, power: int = 1) -> np.ndarray:
    """Per column, the float64 sum of the values (``power`` 2: of their squares)."""
    if sparse.issparse(block):
        data = np.asarray(block.data, dtype=np.float64) ** power
        return np.bincount(block.indices, weights=data, minlength=block.shape[1])
    return (np.asarray(block, dtype=np.float64) ** power).sum(axis=0)


def _nonzero(block: Any) -> np.ndarray:
    if sparse.issparse(block):
        return np.bincount(block.indices[block.data != 0], minlength=block.shape[1])
    return (np.asarray(block) != 0).sum(axis=0)


def _expm1(block: Any) -> Any:
    if sparse.issparse(block):
        out = block.copy()
        out.data = np.expm1(out.data)
        return out
    return np.expm1(block)


def _batch_rows(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray | None]]:
    """``(code, rows)`` of each code present (``rows`` ``None`` when every row has it)."""
    present = np.unique(codes)
    if present.size == 1:
        yield int(present[0]), None
        return
    for code in present:
        yield int(code), np.flatnonzero(codes == code)


@dataclass
class GeneStats:
    """What the first pass gathers: per batch (rows) and gene (columns), sums of the log-normalised values."""

    n_cells: np.ndarray
    log_sum: np.ndarray
    log_sq: np.ndarray
    expm1_sum: np.ndarray
    expm1_sq: np.ndarray
    expressed: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def gather(cls, X: Any, kind: str, batches: np.ndarray, n_batches: int) -> GeneStats:
        """One pass over ``X`` in row chunks."""
        g = int(X.shape[1])
        tables = {k: np.zeros((n_batches, g)) for k in ("log_sum", "log_sq", "expm1_sum", "expm1_sq", "expressed")}
        lo, hi = np.full(g, np.inf), np.full(g, -np.inf)
        n_cells = np.bincount(batches, minlength=n_batches)
        for start, stop, raw in row_blocks(X):
            block = normalised_block(raw, kind)
            b_lo, b_hi = block_range(block)
            np.minimum(lo, b_lo, out=lo)
            np.maximum(hi, b_hi, out=hi)
            for b, rows in _batch_rows(batches[start:stop]):
                part = block if rows is None else block[rows]
                e = _expm1(part)
                tables["log_sum"][b] += _column_sums(part)
                tables["log_sq"][b] += _column_sums(part, 2)
                tables["expm1_sum"][b] += _column_sums(e)
                tables["expm1_sq"][b] += _column_sums(e, 2)
                tables["expressed"][b] += _nonzero(part)
        return cls(n_cells=n_cells, lo=lo, hi=hi, **tables)

    def hvg(self, n_top_genes: int, batched: bool, names: pd.Index) -> np.ndarray:
        """Columns of the highly variable genes (all genes when there are at most ``n_top_genes``)."""
        if self.log_sum.shape[1] <= n_top_genes:
            return np.arange(self.log_sum.shape[1])
        mask = seurat_hvg(
            self.expm1_sum, self.expm1_sq, self.n_cells, self.expressed, n_top_genes, batched, names=names
        )
        return np.flatnonzero(mask)


@dataclass
class _GroupTables:
    """Per group (coarse class) and batch: cells, sums and sums of squares of the selected genes."""

    counts: np.ndarray
    sums: np.ndarray
    squares: np.ndarray
    small: dict[int, list[Any]]

    def batch_tables(self, group: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batches the group holds, and their mean and inverse-sd tables (as :func:`batch_stats`)."""
        seen = np.flatnonzero(self.counts[group] > 0)
        n = self.counts[group, seen][:, None]
        mean = self.sums[group, seen] / n
        return seen, mean, inverse_sd(mean, self.squares[group, seen] / n)


def _group_tables(lognorm: StreamedLognorm, groups: np.ndarray, batches: np.ndarray, small: set[int]) -> _GroupTables:
    """One pass: per group and batch sums of the selected genes; the rows of the ``small`` groups, kept in memory."""
    n_groups, n_batches, g = int(groups.max()) + 1, int(batches.max()) + 1, lognorm.shape[1]
    tables = _GroupTables(
        counts=np.zeros((n_groups, n_batches), dtype=np.int64),
        sums=np.zeros((n_groups, n_batches, g)),
        squares=np.zeros((n_groups, n_batches, g)),
        small={grp: [] for grp in small},
    )
    for start, stop, block in lognorm.blocks():
        gb, bb = groups[start:stop], batches[start:stop]
        for code, rows in _batch_rows(gb * n_batches + bb):
            part = block if rows is None else block[rows]
            grp, b = divmod(code, n_batches)
            tables.counts[grp, b] += part.shape[0]
            tables.sums[grp, b] += _column_sums(part)
            tables.squares[grp, b] += _column_sums(part, 2)
        for grp in small.intersection(np.unique(gb).tolist()):
            tables.small[grp].append(block[gb == grp])
    return tables


def _covariances(
    lognorm: StreamedLognorm, groups: np.ndarray, batches: np.ndarray, tables: dict[int, tuple]
) -> dict[int, np.ndarray]:
    """One pass: genes x genes covariance of each group in ``tables`` (standardised within its batches)."""
    g = lognorm.shape[1]
    covs = {grp: np.zeros((g, g)) for grp in tables}
    for start, stop, block in lognorm.blocks():
        gb = groups[start:stop]
        for grp in set(tables).intersection(np.unique(gb).tolist()):
            rows = np.flatnonzero(gb == grp)
            local, mean, scale = tables[grp]
            z = standardised(block[rows], 0, rows.size, local[batches[start:stop][rows]], mean, scale)
            covs[grp] += z.T @ z
    return covs


def _stack(parts: list[Any]) -> Any:
    return sparse.vstack(parts, format="csr") if sparse.issparse(parts[0]) else np.vstack(parts)


def fit_grouped_pca(
    lognorm: StreamedLognorm,
    groups: np.ndarray,
    batches: np.ndarray,
    n_comps: int,
    n_groups: int,
    tables: _GroupTables | None = None,
) -> list[WithinClassPCA | None]:
    """:func:`~falcon_sc.pp._pca.fit_within_class_pca` on a streamed matrix: one fit per group ``0..n_groups-1``.

    Groups with no more cells than genes are fitted in memory (their rows are gathered in the first pass) exactly
    as the in-memory path fits them; larger ones from their covariance, accumulated over row chunks.
    """
    g = lognorm.shape[1]
    sizes = np.bincount(groups, minlength=n_groups)
    ks = [min(n_comps, int(s) - 1, g - 1) for s in sizes]
    small = {grp for grp in range(n_groups) if ks[grp] >= 1 and sizes[grp] <= g}
    if tables is None or small:
        tables = _group_tables(lognorm, groups, batches, small)
    fitted: list[WithinClassPCA | None] = [None] * n_groups
    for grp in sorted(small):
        seen, local = np.unique(batches[groups == grp], return_inverse=True)
        pca = ScaledPCA.fit(_stack(tables.small[grp]), local.astype(np.int64), ks[grp])
        fitted[grp] = WithinClassPCA(pca, seen)
    large = [grp for grp in range(n_groups) if ks[grp] >= 1 and grp not in small]
    for first in range(0, len(large), MAX_COVARIANCES):
        chosen = {}
        for grp in large[first : first + MAX_COVARIANCES]:
            seen, mean, scale = tables.batch_tables(grp)
            local = np.full(int(batches.max()) + 1, -1, dtype=np.int64)
            local[seen] = np.arange(seen.size)
            chosen[grp] = (local, mean, scale)
        for grp, cov in _covariances(lognorm, groups, batches, chosen).items():
            _, mean, scale = chosen[grp]
            loadings = fixed_signs(top_eigenvectors(cov, ks[grp])[1])
            fitted[grp] = WithinClassPCA(ScaledPCA(mean, scale, loadings), tables.batch_tables(grp)[0])
    return fitted


def global_pca(lognorm: StreamedLognorm, stats: GeneStats, batches: np.ndarray, n_comps: int) -> ScaledPCA:
    """:meth:`ScaledPCA.fit <falcon_sc.pp.ScaledPCA.fit>` on a streamed matrix (batch tables from the first pass)."""
    n, g = lognorm.shape
    k = min(n_comps, g - 1, n - 1)
    cols = lognorm.columns
    tables = _GroupTables(
        counts=stats.n_cells[None, :],
        sums=stats.log_sum[None][:, :, cols],
        squares=stats.log_sq[None][:, :, cols],
        small={},
    )
    fit = fit_grouped_pca(lognorm, np.zeros(n, dtype=np.int64), batches, k, 1, tables)[0]
    assert fit is not None  # prepare refuses data with fewer than 2 varying genes
    return fit.pca


def streamed_scores(lognorm: StreamedLognorm, width: int, score: Any) -> np.ndarray:
    """Cells x ``width`` float32: ``score(start, stop, rows)`` of every chunk of the streamed matrix."""
    out = np.zeros((lognorm.shape[0], width), dtype=np.float32)
    for start, stop, block in lognorm.blocks():
        out[start:stop] = score(start, stop, block)
    return out
