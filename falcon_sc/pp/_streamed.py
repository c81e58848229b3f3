"""The preprocessing of :func:`falcon_sc.pp.prepare` on an out-of-core matrix (backed AnnData, dask), in row chunks.

Nothing of the expression matrix is held whole: every pass reads :data:`~falcon_sc.pp._chunks.CHUNK_CELLS` cells,
normalises them as the in-memory path does (the normalisation works row by row), and adds them to summaries:

1. per batch, sums and sums of squares of every gene's log-normalised values and of their ``expm1`` (the seurat HVG
   dispersions, :func:`~falcon_sc.pp._hvg.seurat_hvg`), non-zero counts, and each gene's smallest and largest value
   (the variation check);
2. per coarse class and batch (when the classes are given), cells, sums and genes x genes second moments of the
   HVGs (:class:`Moments`, one matrix product per chunk): the covariance of the cells standardised within batches
   follows for every class and for all cells, whose top eigenvectors are the loadings (exact PCA, as
   :class:`~falcon_sc.pp.ScaledPCA`);
3. the projection of every chunk on the global loadings and on its class's (the cells x components scores, kept in
   memory; :func:`score_both`).

Memory: a few chunks (one float64 dense chunk of 20,000 cells x 2,000 HVGs is 320 MB) plus at most
:data:`MAX_COVARIANCES` second moments (32 MB each for 2,000 HVGs; more classes x batches take more passes, not more
memory) plus the outputs (cells x components float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from ._checks import block_range
from ._chunks import row_blocks
from ._hvg import seurat_hvg
from ._pca import ScaledPCA, WithinClassPCA, fixed_signs, inverse_sd, top_eigenvectors
from ._rows import normalised_block

#: genes x genes second moments (one per coarse class and batch) accumulated in one pass (each n_genes^2 float64:
#: 32 MB for 2,000 HVGs, 512 MB in all); more classes x batches take more passes over the file, not more memory
MAX_COVARIANCES = 16


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
    moments
        The :class:`Moments` the global PCA was fitted from (per coarse class and batch when the classes were
        known), reused by the within-class components of the same classes.
    within
        The within-class components fitted and scored in the same passes as the global ones (when
        :func:`~falcon_sc.pp.prepare` was given the classes and ``n_comps_within``).
    """

    X: Any
    kind: str
    columns: np.ndarray
    moments: Moments | None = None
    within: WithinScores | None = None

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
class Moments:
    """Per key (a coarse class and batch): cells, sums and second moments (genes x genes) of the selected genes.

    Every within-class and global statistic of the PCA follows from these: the batch tables (means and inverse
    standard deviations) and the covariance of the cells standardised within their batches,
    ``sum_b D_b (S_b - n_b m_b m_b^T) D_b``, so one pass of matrix products serves the global and every within-class
    PCA. The in-memory path standardises first and then multiplies; both are exact (float64) and agree to rounding.
    """

    groups: np.ndarray
    batches: np.ndarray
    n_batches: int
    counts: np.ndarray
    sums: np.ndarray
    second: dict[int, np.ndarray]

    @classmethod
    def gather(cls, lognorm: StreamedLognorm, groups: np.ndarray, batches: np.ndarray) -> Moments:
        """Passes over ``lognorm`` in row chunks, each holding at most :data:`MAX_COVARIANCES` second moments."""
        n_batches = int(batches.max()) + 1
        keys = groups * n_batches + batches
        n_keys = int(keys.max()) + 1
        counts = np.bincount(keys, minlength=n_keys)
        present = np.flatnonzero(counts)
        g = lognorm.shape[1]
        sums = np.zeros((n_keys, g))
        second: dict[int, np.ndarray] = {}
        for first in range(0, present.size, MAX_COVARIANCES):
            chosen = present[first : first + MAX_COVARIANCES]
            second.update({int(k): np.zeros((g, g)) for k in chosen})
            wanted = set(chosen.tolist())
            for start, stop, block in lognorm.blocks():
                for key, rows in _batch_rows(keys[start:stop]):
                    if key in wanted:
                        part = block if rows is None else block[rows]
                        d = part.toarray() if sparse.issparse(part) else np.asarray(part)
                        d = d.astype(np.float64, copy=False)
                        second[key] += d.T @ d
                        sums[key] += d.sum(axis=0)
        return cls(groups, batches, n_batches, counts, sums, second)

    def _keys(self, group: int | None) -> list[int]:
        """The keys of one group (``None``: every group), those that hold cells."""
        ks = np.flatnonzero(self.counts)
        return [int(k) for k in ks if group is None or k // self.n_batches == group]

    def pca(self, group: int | None, n_comps: int) -> WithinClassPCA:
        """Batch tables and top ``n_comps`` loadings of one group (``None``: all cells, per batch)."""
        g = self.sums.shape[1]
        by_batch: dict[int, list[int]] = {}
        for key in self._keys(group):
            by_batch.setdefault(key % self.n_batches, []).append(key)
        seen = np.array(sorted(by_batch), dtype=np.int64)
        mean, scale = np.zeros((seen.size, g)), np.zeros((seen.size, g))
        cov = np.zeros((g, g))
        for i, b in enumerate(seen):
            n = float(sum(self.counts[k] for k in by_batch[b]))
            total = sum(self.sums[k] for k in by_batch[b])
            second = sum(self.second[k] for k in by_batch[b])
            mean[i] = total / n
            scale[i] = inverse_sd(mean[i], np.diag(second) / n)
            centred = second - n * np.outer(mean[i], mean[i])
            cov += scale[i][:, None] * centred * scale[i][None, :]
        loadings = fixed_signs(top_eigenvectors(cov, n_comps)[1])
        return WithinClassPCA(ScaledPCA(mean, scale, loadings), seen)


def global_pca(moments: Moments, n_comps: int) -> ScaledPCA:
    """:meth:`ScaledPCA.fit <falcon_sc.pp.ScaledPCA.fit>` of all cells from their moments."""
    n, g = int(moments.counts.sum()), moments.sums.shape[1]
    return moments.pca(None, min(n_comps, g - 1, n - 1)).pca


def fit_grouped_pca(moments: Moments, n_comps: int, n_groups: int) -> list[WithinClassPCA | None]:
    """:func:`~falcon_sc.pp._pca.fit_within_class_pca` from moments: one fit per group ``0..n_groups-1``.

    A group of fewer than 2 cells gets ``None`` (as in memory); a group of fewer cells than genes gets its top
    components from the covariance, the same subspace as the in-memory path's Gram matrix.
    """
    g = moments.sums.shape[1]
    sizes = np.bincount(moments.groups, minlength=n_groups)
    fitted: list[WithinClassPCA | None] = []
    for grp in range(n_groups):
        k = min(n_comps, int(sizes[grp]) - 1, g - 1)
        fitted.append(moments.pca(grp, k) if k >= 1 else None)
    return fitted


@dataclass
class WithinScores:
    """Within-class components of the classes ``groups`` (``n_comps`` each): the fits and every cell's scores."""

    groups: np.ndarray
    n_comps: int
    fits: list[WithinClassPCA | None]
    scores: np.ndarray


def score_both(
    lognorm: StreamedLognorm, pca: ScaledPCA, batches: np.ndarray, within: WithinScores | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Global scores, and the within-class scores of ``within`` (fits given), in one pass over the chunks."""
    from ._pca import within_class_scores

    k = 0 if within is None else within.n_comps

    def score(i: int, j: int, rows: Any) -> np.ndarray:
        out = pca.transform(rows, batches[i:j])
        if within is None:
            return out
        return np.hstack([out, within_class_scores(within.fits, rows, within.groups[i:j], batches[i:j], k)])

    both = streamed_scores(lognorm, pca.n_comps + k, score)
    if within is None:
        return both, None
    return np.ascontiguousarray(both[:, : pca.n_comps]), np.ascontiguousarray(both[:, pca.n_comps :])


def streamed_scores(lognorm: StreamedLognorm, width: int, score: Any) -> np.ndarray:
    """Cells x ``width`` float32: ``score(start, stop, rows)`` of every chunk of the streamed matrix."""
    out = np.zeros((lognorm.shape[0], width), dtype=np.float32)
    for start, stop, block in lognorm.blocks():
        out[start:stop] = score(start, stop, block)
    return out
