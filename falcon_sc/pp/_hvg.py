"""Highly variable genes (scanpy's ``seurat`` flavour) from per-gene summary statistics.

:func:`falcon_sc.pp.prepare` calls ``scanpy.pp.highly_variable_genes(flavor="seurat")`` on an in-memory matrix; the
streamed path (:mod:`falcon_sc.pp._streamed`) has only per-batch sums accumulated over row chunks. The functions here
reproduce scanpy 1.11's selection from those sums (same dispersions, 20 mean bins, single-gene bins, ties and batch
combination), so both paths select the same genes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

#: mean bins of the seurat flavour (scanpy's default ``n_bins``)
N_BINS = 20


def _normalised_dispersions(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Normalised dispersion per gene from the mean and (unbiased) variance of ``expm1`` of the log data."""
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    df["mean_bin"] = pd.cut(df["means"], bins=N_BINS)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one = stats["dev"].isnull()  # a bin of one gene: its normalised dispersion is 1
    stats.loc[one, "dev"] = stats.loc[one, "avg"]
    stats.loc[one, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    return ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy()


def _top(norm: np.ndarray, n_top: int) -> np.ndarray:
    """Genes whose normalised dispersion reaches the ``n_top``-th highest (ties all kept, NaN never)."""
    finite = np.sort(norm[~np.isnan(norm)])[::-1]
    if finite.size == 0:
        return np.zeros(norm.size, dtype=bool)
    cut = finite[min(n_top, norm.size, finite.size) - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cut


def mean_var(total: np.ndarray, total_sq: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased variance per gene from the sum and the sum of squares of ``n`` values."""
    mean = total / max(n, 1)
    var = np.maximum(total_sq / max(n, 1) - mean**2, 0.0)
    if n > 1:
        var *= n / (n - 1)
    return mean, var


def seurat_hvg(
    total: np.ndarray,
    total_sq: np.ndarray,
    n_cells: np.ndarray,
    expressed: np.ndarray,
    n_top: int,
    batched: bool,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Boolean mask of the ``n_top`` highly variable genes, as ``scanpy.pp.highly_variable_genes(flavor="seurat")``.

    Parameters
    ----------
    total, total_sq
        Batches x genes sums and sums of squares of ``expm1`` of the log-normalised values.
    n_cells
        Cells per batch.
    expressed
        Batches x genes number of cells with a non-zero value (with ``batched``, genes unexpressed in a batch are left
        out of that batch's bins and count as not variable there, as in scanpy).
    n_top
        Number of genes to select.
    batched
        Whether a ``batch_key`` was given (scanpy ranks genes by the number of batches where they are variable, then
        by their mean normalised dispersion).
    names
        Gene names: ties are broken in the order of the names, as scanpy's grouping by name does.
    """
    if not batched:
        mean, var = mean_var(total[0], total_sq[0], int(n_cells[0]))
        return _top(_normalised_dispersions(mean, var), n_top)
    n_genes = total.shape[1]
    norms = np.zeros((total.shape[0], n_genes))
    n_hvg = np.zeros(n_genes, dtype=np.int64)
    for b in range(total.shape[0]):
        keep = expressed[b] > 0  # genes unexpressed in a batch: dispersion 0 and not variable there
        mean, var = mean_var(total[b, keep], total_sq[b, keep], int(n_cells[b]))
        norm = _normalised_dispersions(mean, var)
        n_hvg[keep] += _top(norm, n_top)
        norms[b, keep] = norm
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a gene NaN in every batch stays NaN
        mean_norm = np.nanmean(norms, axis=0)  # pandas' mean over batches skips NaN
    index = pd.Index(np.arange(n_genes) if names is None else np.asarray(names, dtype=str))
    df = pd.DataFrame({"n": n_hvg, "norm": mean_norm, "pos": np.arange(n_genes)}, index=index).sort_index()
    df = df.sort_values(["n", "norm"], ascending=False, na_position="last")  # scanpy: grouped by name, then sorted
    mask = np.zeros(n_genes, dtype=bool)
    mask[df["pos"].to_numpy()[:n_top]] = True
    return mask
