"""Wall time and peak memory of ``tl.refine`` and of the standard scanpy pipeline on large simulated data."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .run import PeakMemory

SCALE_METHODS = ("leiden_scanpy", "falcon")
"""Methods of the scale bench, in their default run order: the scanpy pipeline
(:func:`falcon_sc.baselines.leiden_scanpy`) first, then :func:`falcon_sc.tl.refine`."""


def resolve_scale_methods(methods: str | Sequence[str]) -> list[str]:
    """Method names of :func:`run_scale_bench` in run order; ``ValueError`` for an unknown or repeated one."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m) for m in methods]
    names = [m for m in names if m]
    names = list(SCALE_METHODS) if names in ([], ["all"], ["both"]) else names
    unknown = sorted(set(names) - set(SCALE_METHODS))
    if unknown:
        raise ValueError(f"unknown scale method(s) {unknown}: use {', '.join(SCALE_METHODS)} or 'all'")
    if len(set(names)) != len(names):
        raise ValueError(f"methods listed twice: {names}")
    return names


def run_scale_bench(
    n_cells: int = 100_000,
    n_genes: int = 2000,
    *,
    n_batches: int = 1,
    random_state: int = 0,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    methods: str | Sequence[str] = SCALE_METHODS,
    warmup: bool = False,
) -> pd.DataFrame:
    """Simulate ``n_cells`` x ``n_genes`` counts and time each method on them, one after the other in this process.

    ``falcon`` is :func:`falcon_sc.tl.refine` with its defaults (on ``adata`` itself, as a user calls it);
    ``leiden_scanpy`` is what a scanpy user runs today (:func:`falcon_sc.baselines.leiden_scanpy`: normalise, HVGs,
    scale, PCA, neighbours, Leiden restricted to each coarse class with a resolution search; on a copy of ``X``,
    which is counted in its memory). The simulation is not timed. Methods run in the order given; the default runs
    the scanpy pipeline first (torch's OpenMP runtime, loaded by refine, could otherwise slow the numba/BLAS code of
    the scanpy pipeline; compare both orders with ``methods``).

    Parameters
    ----------
    n_cells, n_genes
        Size of the simulated count matrix (default children per coarse class of :func:`falcon_sc.datasets.simulate`).
    n_batches
        Simulated batches (``batch_key="batch"`` when more than one).
    random_state
        Seed of the simulation and of the methods.
    accelerator
        Passed to refine.
    methods
        ``"falcon"``, ``"leiden_scanpy"`` or both, as a sequence or a comma separated string (``"all"``: both, the
        scanpy pipeline first).
    warmup
        First run every method, untimed, on 5,000 simulated cells, so that one-off costs (imports, numba
        compilation of UMAP and pynndescent, which the two methods partly share) fall on neither timing. Without it
        the method that runs first pays them, as in a fresh Python session.

    Returns
    -------
    One row per method, in run order: method, order (1 = ran first), cells, genes, seconds (wall), cpu_seconds
    (process CPU time, all threads; less sensitive than wall time to other load on a shared machine), peak_mem_mb
    (peak resident memory added during the call), accuracy, macro accuracy, ARI, within-coarse ARI, the number of fine
    labels found and ``detail`` (for the scanpy pipeline: seconds per stage). ``attrs["ratio"]`` holds falcon seconds
    / scanpy pipeline seconds when both ran.
    """
    from falcon_sc import datasets, metrics

    names = resolve_scale_methods(methods)
    if warmup:
        small = datasets.simulate(
            n_cells=5000, n_genes=min(n_genes, 500), n_batches=n_batches, random_state=random_state
        )
        for name in names:
            _run(name, small, batch_key="batch" if n_batches > 1 else None, seed=random_state, accelerator=accelerator)
    adata = datasets.simulate(n_cells=n_cells, n_genes=n_genes, n_batches=n_batches, random_state=random_state)
    batch_key = "batch" if n_batches > 1 else None
    rows = []
    for order, name in enumerate(names, start=1):
        detail = ""
        with PeakMemory() as mem:
            start, cpu_start = time.perf_counter(), time.process_time()
            labels, i = _run(name, adata, batch_key=batch_key, seed=random_state, accelerator=accelerator)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        if name == "leiden_scanpy":
            detail = (
                f"preprocess {i['seconds_preprocess']:.1f} s, neighbors {i['seconds_neighbors']:.1f} s, "
                f"leiden {i['seconds_leiden']:.1f} s ({i['n_evals']} resolutions, r={i['resolution']:.3g})"
            )
        scores = metrics.evaluate(adata.obs["fine"], labels, coarse=adata.obs["coarse"])
        rows.append(
            {
                "method": name,
                "order": order,
                "n_cells": n_cells,
                "n_genes": n_genes,
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu_seconds, 1),
                "peak_mem_mb": round(mem.peak_mb, 1),
                "accuracy": scores["accuracy"],
                "macro_accuracy": scores["macro_accuracy"],
                "ari": scores["ari"],
                "within_coarse_ari": scores["within_coarse_ari"],
                "n_fine_pred": len(np.unique(labels)),
                "detail": detail,
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["ratio"] = scale_ratio(df)
    return df


def _run(
    name: str, adata, *, batch_key: str | None, seed: int, accelerator: Literal["auto", "cpu", "cuda"]
) -> tuple[np.ndarray, dict]:
    """Labels (and ``info``) of one method on the simulated ``adata``; refine writes ``obs["falcon"]`` in place."""
    from falcon_sc import tl
    from falcon_sc.baselines import leiden_scanpy

    n_fine = adata.obs["fine"].nunique()
    if name == "falcon":
        tl.refine(
            adata,
            "coarse",
            n_fine,
            batch_key=batch_key,
            random_state=seed,
            accelerator=accelerator,
            show_progress=False,
        )
        return adata.obs["falcon"].astype(str).to_numpy(), {}
    res = leiden_scanpy(adata, "coarse", n_fine, batch_key=batch_key, random_state=seed)
    return res.labels, res.info


def scale_ratio(df: pd.DataFrame) -> float:
    """Falcon seconds / scanpy pipeline seconds of a :func:`run_scale_bench` table (NaN unless both ran)."""
    sec = dict(zip(df["method"], df["seconds"], strict=True))
    if "falcon" not in sec or "leiden_scanpy" not in sec or not sec["leiden_scanpy"]:
        return float("nan")
    return round(float(sec["falcon"]) / float(sec["leiden_scanpy"]), 2)


#: peak memory of the scanpy pipeline per cell (2,000 genes), measured at 100,000 cells (5.3 GB): a size whose
#: estimate exceeds the peer's memory limit is reported as skipped instead of run
PEER_BYTES_PER_CELL = 55_000
#: sizes of ``falcon-bench scale --backed`` by default
BACKED_SIZES = (10_000, 100_000, 300_000, 1_000_000)


def _scores(truth: Any, labels: Any, coarse: Any) -> dict[str, float]:
    from falcon_sc import metrics

    s = metrics.evaluate(truth, labels, coarse=coarse)
    return {k: s[k] for k in ("accuracy", "macro_accuracy", "ari", "within_coarse_ari")}


def _backed_falcon(path: Path, seed: int, accelerator: str) -> dict[str, Any]:
    """Run refine on the file opened with ``backed="r"``: seconds, peak added memory, scores, neighbour recall."""
    import anndata as ad

    from falcon_sc import tl

    adata = ad.read_h5ad(path, backed="r")
    try:
        n_fine = adata.obs["fine"].nunique()
        with PeakMemory() as mem:
            start, cpu = time.perf_counter(), time.process_time()
            model = tl.refine(
                adata, "coarse", n_fine, random_state=seed, accelerator=accelerator, show_progress=False,
                return_model=True,
            )  # fmt: skip
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        recall = model._outcome.neighbour_recall if model._outcome is not None else None
        labels = adata.obs["falcon"].astype(str).to_numpy()
        row = {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mem_mb": mem.peak_mb, "status": "ok"}
        row["detail"] = "" if recall is None else f"neighbour recall {recall:.3f}"
        return {**row, **_scores(adata.obs["fine"], labels, adata.obs["coarse"]), "n_fine_pred": len(set(labels))}
    finally:
        adata.file.close()


def _peer_row(path: Path, n_cells: int, n_fine: int, seed: int, max_cells: int, limit_gb: float) -> dict[str, Any]:
    """The scanpy pipeline on the same file in a child process, or why it did not run."""
    import anndata as ad

    from ._peer import run_peer

    need = n_cells * PEER_BYTES_PER_CELL / 2**30
    if n_cells > max_cells or need > limit_gb:
        why = f"~{need:.0f} GB estimated" if need > limit_gb else f"above --peer-max-cells {max_cells:,}"
        return {"status": f"skipped ({why}; limit {limit_gb:g} GB)"}
    res = run_peer(path, n_fine, limit_gb, seed)
    if res["status"] != "ok":
        return res
    obs = ad.read_h5ad(path, backed="r")
    try:
        scores = _scores(obs.obs["fine"], res["labels"], obs.obs["coarse"])
    finally:
        obs.file.close()
    keep = ("seconds", "cpu_seconds", "peak_mem_mb", "status", "detail")
    return {**{k: res[k] for k in keep}, **scores, "n_fine_pred": len(set(res["labels"]))}


def run_backed_scale(
    sizes: Sequence[int] = BACKED_SIZES,
    n_genes: int = 2000,
    *,
    n_batches: int = 1,
    random_state: int = 0,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    peer_max_cells: int = 300_000,
    peer_limit_gb: float = 16.0,
    workdir: str | Path | None = None,
    methods: str | Sequence[str] = SCALE_METHODS,
) -> pd.DataFrame:
    """Time refine on simulated cells read from a backed ``.h5ad``, for each size, beside the scanpy pipeline.

    Each size is simulated straight into an ``.h5ad`` file (:func:`falcon_sc.datasets.simulate_h5ad`, block by
    block: the counts are never in memory) in ``workdir`` (default: a temporary folder, removed afterwards), opened
    with ``backed="r"`` and refined (:func:`falcon_sc.tl.refine` with its defaults; the expression matrix is read in
    chunks). The scanpy pipeline (:func:`falcon_sc.baselines.leiden_scanpy`) reads the same file into memory in a
    child process whose address space is limited to ``peer_limit_gb`` (``RLIMIT_AS``): a size that does not fit is
    reported as out of memory, and sizes above ``peer_max_cells`` or whose estimated need
    (:data:`PEER_BYTES_PER_CELL`) exceeds the limit are skipped.

    Returns
    -------
    One row per size and method: n_cells, method, status, seconds (wall, the file's reading included), cpu_seconds,
    peak_mem_mb (peak resident memory added: for refine in this process, for the scanpy pipeline in its child,
    reading the file included), cells_per_second, accuracy, macro accuracy, ARI, within-coarse ARI, n_fine_pred,
    write_seconds (simulating and writing the file, not timed) and ``detail`` (refine: the recall of the
    approximate neighbour search; scanpy: seconds per stage).
    """
    from falcon_sc import datasets

    names = resolve_scale_methods(methods)
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for n_cells in sizes:
            path = Path(tmp) / f"sim_{n_cells}.h5ad"
            start = time.perf_counter()
            sim = datasets.simulate_h5ad(path, n_cells=n_cells, n_genes=n_genes, n_batches=n_batches,
                                         random_state=random_state)  # fmt: skip
            n_fine = sim.obs["fine"].nunique()
            sim.file.close()
            write = time.perf_counter() - start
            for name in names:
                if name == "falcon":
                    row = _backed_falcon(path, random_state, accelerator)
                else:
                    row = _peer_row(path, n_cells, n_fine, random_state, peer_max_cells, peer_limit_gb)
                secs = row.get("seconds")
                row["cells_per_second"] = round(n_cells / secs) if secs else None
                rows.append({"n_cells": n_cells, "method": name, **row, "write_seconds": round(write, 1)})
            path.unlink()
    cols = ["n_cells", "method", "status", "seconds", "cpu_seconds", "peak_mem_mb", "cells_per_second", "accuracy",
            "macro_accuracy", "ari", "within_coarse_ari", "n_fine_pred", "write_seconds", "detail"]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=cols)
