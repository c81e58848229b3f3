"""Wall time and peak memory of ``tl.refine`` on large simulated data."""

from __future__ import annotations

import time

import pandas as pd

from .run import PeakMemory


def run_scale_bench(
    n_cells: int = 100_000, n_genes: int = 2000, *, n_batches: int = 1, random_state: int = 0, accelerator: str = "auto"
) -> pd.DataFrame:
    """Simulate ``n_cells`` x ``n_genes`` counts and time ``fal.tl.refine`` on them (simulation not included).

    Parameters
    ----------
    n_cells, n_genes
        Size of the simulated count matrix (default children per coarse class of :func:`falcon_sc.datasets.simulate`).
    n_batches
        Simulated batches (``batch_key="batch"`` when more than one).
    random_state
        Seed of the simulation and of refine.
    accelerator
        Passed to refine.

    Returns
    -------
    One row: cells, genes, seconds, peak_mem_mb (peak resident memory added during refine), accuracy, ARI,
    within-coarse ARI.
    """
    from falcon_sc import datasets, metrics, tl

    adata = datasets.simulate(n_cells=n_cells, n_genes=n_genes, n_batches=n_batches, random_state=random_state)
    n_fine = adata.obs["fine"].nunique()
    batch_key = "batch" if n_batches > 1 else None
    with PeakMemory() as mem:
        start = time.perf_counter()
        tl.refine(adata, "coarse", n_fine, batch_key=batch_key, random_state=random_state, accelerator=accelerator)
        seconds = time.perf_counter() - start
    scores = metrics.evaluate(adata.obs["fine"], adata.obs["falcon"], coarse=adata.obs["coarse"])
    return pd.DataFrame(
        [
            {
                "n_cells": n_cells,
                "n_genes": n_genes,
                "seconds": round(seconds, 1),
                "peak_mem_mb": round(mem.peak_mb, 1),
                "accuracy": scores["accuracy"],
                "ari": scores["ari"],
                "within_coarse_ari": scores["within_coarse_ari"],
            }
        ]
    )
