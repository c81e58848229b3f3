"""The scanpy pipeline of the scale bench in a child process with a memory limit: ``python -m falcon_sc.bench._peer``.

The child reads the ``.h5ad`` into memory (as a scanpy user does), runs :func:`falcon_sc.baselines.leiden_scanpy`
under ``RLIMIT_AS`` and writes its labels and timings to a JSON file, so that a size that does not fit ends as a
``MemoryError`` (or a killed child) reported as "out of memory", never as the whole machine running out.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run_peer(
    path: str | Path, n_fine: int, limit_gb: float, seed: int, timeout_s: float | None = None
) -> dict[str, Any]:
    """Run the scanpy pipeline on the cells of ``path`` in a child process limited to ``limit_gb`` of address space.

    Returns ``{"status": "ok", "seconds", "cpu_seconds", "peak_mem_mb", "labels", "detail"}``, or ``{"status":
    "out of memory (limit ... GB)"}`` / ``{"status": "failed: ..."}``.
    """
    out = Path(path).with_suffix(".peer.json")
    cmd = [sys.executable, "-m", "falcon_sc.bench._peer", str(path), str(n_fine), str(limit_gb), str(seed), str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout_s:.0f} s"}
    if out.exists():
        result = json.loads(out.read_text())
        out.unlink()
        return result
    tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    if proc.returncode < 0 or "MemoryError" in tail[0]:
        return {"status": f"out of memory (limit {limit_gb:g} GB; {tail[0][:120]})"}
    return {"status": f"failed: {tail[0][:200]}"}


def _child(path: str, n_fine: int, limit_gb: float, seed: int, out: str) -> None:
    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import anndata as ad

    from falcon_sc.baselines import leiden_scanpy

    from .run import PeakMemory

    result: dict[str, Any]
    try:
        with PeakMemory() as mem:
            start, cpu = time.perf_counter(), time.process_time()
            adata = ad.read_h5ad(path)  # in memory: the scanpy pipeline needs X whole
            res = leiden_scanpy(adata, "coarse", n_fine, random_state=seed)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        i = res.info
        detail = (
            f"preprocess {i['seconds_preprocess']:.1f} s, neighbors "
            f"{i['seconds_neighbors']:.1f} s, leiden {i['seconds_leiden']:.1f} s ({i['n_evals']} resolutions)"
        )
        result = {
            "status": "ok",
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "peak_mem_mb": mem.peak_mb,
            "labels": [str(x) for x in res.labels],
            "detail": detail,
        }
    except MemoryError:
        result = {"status": f"out of memory (MemoryError under a {limit_gb:g} GB limit)"}
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
