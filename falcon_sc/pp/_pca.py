"""Principal components of genes centred and scaled within each batch: global, and fitted inside each coarse class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.linalg import eigh

from .._checks import check_int
from ..core.progress import bar
from ._checks import check_codes, check_matrix

#: rows per chunk of the covariance accumulation and of the projection
_CHUNK = 8192


def _dense_rows(X: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``X`` as a dense float64 array."""
    block = X[start:stop]
    block = block.toarray() if sparse.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def standardised(X: Any, start: int, stop: int, batches: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Rows ``start:stop`` of ``X``, dense float64, centred and scaled with the tables of their batches."""
    b = batches[start:stop]
    return (_dense_rows(X, start, stop) - mean[b]) * scale[b]


def top_eigenvectors(sym: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenvalues (descending) and eigenvectors of a symmetric matrix (LAPACK ``evr`` on that subset)."""
    m = sym.shape[0]
    evals, evecs = eigh(sym, subset_by_index=[m - k, m - 1], driver="evr")
    return evals[::-1], evecs[:, ::-1]


def batch_stats(X: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and inverse standard deviation of the rows of ``X`` (0 for constant genes), float64."""
    mu = np.asarray(X.mean(axis=0)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0)).ravel() if sparse.issparse(X) else (X**2).mean(axis=0)
    return mu.astype(np.float64), inverse_sd(mu, sq).astype(np.float64)


def inverse_sd(mean: np.ndarray, mean_sq: np.ndarray) -> np.ndarray:
    """Inverse standard deviation per gene from its mean and mean square (0 for constant genes)."""
    sd = np.sqrt(np.maximum(mean_sq - mean**2, 0.0))
    return np.where(sd > 1e-8, 1.0 / np.maximum(sd, 1e-12), 0.0)


def fixed_signs(top: np.ndarray) -> np.ndarray:
    """Loadings (genes x components) with each component's largest absolute loading made positive."""
    signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    return top * np.where(signs == 0, 1.0, signs)


def _loadings(Xo: Any, bo: np.ndarray, mean: np.ndarray, scale: np.ndarray, n_comps: int) -> np.ndarray:
    """Top ``n_comps`` loadings (genes x components) of the rows of ``Xo`` standardised with the tables of ``bo``."""
    n, g = Xo.shape
    if n <= g:
        # fewer cells than genes: eigenvectors of the cells x cells Gram matrix are cheaper and exact
        z = standardised(Xo, 0, n, bo, mean, scale)
        evals, u = top_eigenvectors(z @ z.T, n_comps)
        return z.T @ (u / np.sqrt(np.clip(evals, 1e-12, None)))
    cov = np.zeros((g, g))
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        z = standardised(Xo, start, stop, bo, mean, scale)
        cov += z.T @ z
    return top_eigenvectors(cov, n_comps)[1]


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
    def fit(cls, X: Any, batches: np.ndarray, n_comps: int) -> ScaledPCA:
        """Fit on cells x genes ``X`` (dense or CSR, never densified whole) with integer batch codes ``batches``.

        The covariance of the per-batch standardised matrix is accumulated in row chunks (genes x genes) and its
        top eigenvectors are the loadings (the cells x cells Gram matrix when there are fewer cells than genes).
        Signs are fixed so that each component's largest absolute loading is positive.
        """
        batches = check_codes("batches", batches, check_matrix(X))
        check_int("n_comps", n_comps, 1)
        n, g = X.shape
        n_comps = min(n_comps, g - 1, n - 1)
        n_batches = int(batches.max()) + 1
        order = np.argsort(batches, kind="stable")
        mean = np.zeros((n_batches, g))
        scale = np.ones((n_batches, g))
        for b in range(n_batches):
            mean[b], scale[b] = batch_stats(X[order[batches[order] == b]])
        top = _loadings(X[order], batches[order], mean, scale, n_comps)
        return cls(mean=mean, scale=scale, loadings=fixed_signs(top))

    @property
    def n_comps(self) -> int:
        """Number of components."""
        return int(self.loadings.shape[1])

    def transform(
        self, X: Any, batches: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None
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
            out[start:stop] = standardised(X, start, stop, batches, mean, scale) @ self.loadings
        return out


def batch_scaled_pca(X: Any, batches: np.ndarray, n_comps: int) -> np.ndarray:
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


@dataclass
class WithinClassPCA:
    """Components fitted inside one coarse class: its :class:`ScaledPCA` and the batches it saw, in its row order."""

    pca: ScaledPCA
    batches: np.ndarray


def fit_within_class_pca(
    X: Any, groups: np.ndarray, batches: np.ndarray, n_comps: int, n_groups: int | None = None
) -> list[WithinClassPCA | None]:
    """One :class:`WithinClassPCA` per group ``0..n_groups-1`` (``None`` for groups too small for a component)."""
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    fitted: list[WithinClassPCA | None] = []
    for g in bar(range(n_groups), "within-class components"):
        idx = np.flatnonzero(groups == g)
        k = min(n_comps, idx.size - 1, X.shape[1] - 1)
        if k < 1:
            fitted.append(None)
            continue
        seen, local = np.unique(batches[idx], return_inverse=True)
        fitted.append(WithinClassPCA(ScaledPCA.fit(X[idx], local.astype(np.int64), k), seen))
    return fitted


def batch_stats_table(pca: ScaledPCA, X: Any, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    fitted: list[WithinClassPCA | None], X: Any, groups: np.ndarray, batches: np.ndarray, n_comps: int
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


def within_class_pca(X: Any, groups: np.ndarray, batches: np.ndarray, n_comps: int) -> np.ndarray:
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
    n_rows = check_matrix(X)
    groups, batches = check_codes("groups", groups, n_rows), check_codes("batches", batches, n_rows)
    check_int("n_comps", n_comps, 1)
    return within_class_scores(fit_within_class_pca(X, groups, batches, n_comps), X, groups, batches, n_comps)
