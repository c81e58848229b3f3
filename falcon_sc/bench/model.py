"""Fit on some cells, label the others: agreement, and the cost of fit, predict, save and load.

``python -m falcon_sc.bench.model --dataset pbmc3k`` (or ``--n-cells 100000`` for a simulation).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def run_model_bench(
    dataset: str = "pbmc3k",
    *,
    n_cells: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> pd.DataFrame:
    """Fit :class:`~falcon_sc.FalconModel` on all cells and on one half, predict the other half, save and load.

    Parameters
    ----------
    dataset
        A bench dataset name (:func:`falcon_sc.bench.get_dataset`); ignored with ``n_cells``.
    n_cells
        Simulate this many cells x 2,000 genes instead (default simulator settings).
    random_state
        Seed of the split, the simulation and the model.
    accelerator
        Passed to the model.

    Returns
    -------
    One row per step (``fit_all``, ``fit_half``, ``predict_other_half``, ``save``, ``load``, ``predict_loaded``)
    with seconds and peak added memory; ``attrs`` holds ``agreement`` (clustering accuracy of the half model's
    labels on the other half against the labels the all-cells model gave the same cells), ``ari_half`` and
    ``ari_all`` (against the true fine labels, on that half), and ``identical_after_load``.
    """
    import falcon_sc as fal
    from falcon_sc import metrics

    from ._datasets import get_dataset
    from .run import PeakMemory

    if n_cells is not None:
        adata = fal.datasets.simulate(n_cells=n_cells, n_genes=2000, random_state=random_state)
        coarse_key, fine_key, batch_key = "coarse", "fine", None
    else:
        spec = get_dataset(dataset)
        adata = spec.loader()
        coarse_key, fine_key, batch_key = spec.coarse_key, spec.fine_key, spec.batch_key
    n_fine = int(adata.obs[fine_key].nunique())
    order = np.random.default_rng(random_state).permutation(adata.n_obs)
    train, test = adata[np.sort(order[: adata.n_obs // 2])].copy(), adata[np.sort(order[adata.n_obs // 2 :])].copy()
    rows = []

    def timed(step: str, fn):
        start = time.perf_counter()
        with PeakMemory() as mem:
            out = fn()
        rows.append({"step": step, "seconds": time.perf_counter() - start, "peak_mem_mb": mem.peak_mb})
        return out

    options: dict[str, Any] = {"accelerator": accelerator, "random_state": random_state, "show_progress": False}
    full = timed("fit_all", lambda: fal.FalconModel(adata, coarse_key, batch_key=batch_key).fit(n_fine, **options))
    half = timed("fit_half", lambda: fal.FalconModel(train, coarse_key, batch_key=batch_key).fit(n_fine, **options))
    predicted = timed("predict_other_half", lambda: half.predict(test, copy=True))
    reference = full.predict(test, copy=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        timed("save", lambda: half.save(path))
        loaded = timed("load", lambda: fal.FalconModel.load(path))
        again = timed("predict_loaded", lambda: loaded.predict(test, copy=True))
    df = pd.DataFrame(rows)
    truth = test.obs[fine_key].astype(str).to_numpy()
    df.attrs.update(
        dataset=f"simulated {n_cells} cells" if n_cells is not None else dataset,
        n_cells=adata.n_obs,
        agreement=metrics.clustering_accuracy(
            reference.obs["falcon"].astype(str).to_numpy(), predicted.obs["falcon"].astype(str).to_numpy()
        ),
        ari_half=metrics.ari(truth, predicted.obs["falcon"].astype(str).to_numpy()),
        ari_all=metrics.ari(truth, reference.obs["falcon"].astype(str).to_numpy()),
        identical_after_load=bool(np.array_equal(again.obsm["falcon_probs"], predicted.obsm["falcon_probs"])),
    )
    return df


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m falcon_sc.bench.model``: print the table and the agreement."""
    p = argparse.ArgumentParser(prog="python -m falcon_sc.bench.model", description=run_model_bench.__doc__)
    p.add_argument("--dataset", default="pbmc3k")
    p.add_argument("--n-cells", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args(argv)
    df = run_model_bench(args.dataset, n_cells=args.n_cells, random_state=args.seed, accelerator=args.accelerator)
    print(f"{df.attrs['dataset']} ({df.attrs['n_cells']} cells), fit on one half, predict the other:")
    print(df.to_string(index=False, float_format="{:.2f}".format))
    print(
        f"agreement with the all-cells model on the held-out half: {df.attrs['agreement']:.3f}; "
        f"ARI vs truth: half model {df.attrs['ari_half']:.3f}, all-cells model {df.attrs['ari_all']:.3f}; "
        f"identical predictions after save/load: {df.attrs['identical_after_load']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
