"""How well ``obs["falcon_outside_parent"]`` finds cells with a wrong coarse label, on simulated data.

``python -m falcon_sc.bench.conflicts --seeds 3`` simulates each preset, gives a share of the cells (default 2 %) a
wrong coarse label (a random other coarse class), runs :func:`falcon_sc.tl.refine` with its default settings on the
noisy labels (``n_fine`` = the true number of fine classes) and prints the precision and recall of the flag against
the set of mislabelled cells. For reference it also scores a plain neighbour vote (a cell is flagged when most of
its 15 nearest neighbours in the global PCA carry another coarse label) and reports, for the mislabelled cells,
where the network's unrestricted prediction points: to the cell's true coarse class, to the wrong label it was given,
or to a third class.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DETECTORS", "mislabel", "run_conflict_bench"]


def mislabel(
    adata, coarse_key: str, fraction: float, *, key_added: str | None = None, random_state: int = 0
) -> np.ndarray:
    """Give ``fraction`` of the cells a random other coarse label; return the mask of the cells changed.

    The noisy labels go to ``obs[key_added]`` (default ``f"{coarse_key}_noisy"``, categorical with the categories of
    ``obs[coarse_key]``); ``obs[coarse_key]`` is left as it is.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    rng = np.random.default_rng(random_state)
    clean = pd.Categorical(adata.obs[coarse_key])
    names = list(clean.categories)
    if len(names) < 2:
        raise ValueError(f"obs[{coarse_key!r}] needs at least 2 coarse classes to mislabel cells")
    codes = clean.codes.astype(np.int64).copy()
    n_wrong = max(1, int(round(fraction * adata.n_obs)))
    cells = rng.choice(adata.n_obs, n_wrong, replace=False)
    shift = rng.integers(1, len(names), n_wrong)  # a random *other* class
    codes[cells] = (codes[cells] + shift) % len(names)
    adata.obs[key_added or f"{coarse_key}_noisy"] = pd.Categorical.from_codes(codes, pd.Index(names))
    mask = np.zeros(adata.n_obs, dtype=bool)
    mask[cells] = True
    return mask


def _precision_recall(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((flag & truth).sum())
    precision = tp / int(flag.sum()) if flag.any() else float("nan")
    recall = tp / int(truth.sum()) if truth.any() else float("nan")
    return precision, recall


def _neighbour_vote(adata, coarse_key: str, n_neighbors: int = 15, random_state: int = 0) -> np.ndarray:
    """Cells most of whose ``n_neighbors`` nearest neighbours (global PCA of the HVGs) carry another label."""
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    tmp = sc.AnnData(adata.X.copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=min(2000, tmp.n_vars))
    sc.pp.pca(tmp, n_comps=50, mask_var="highly_variable", random_state=random_state)
    nn = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(tmp.obsm["X_pca"])
    idx = nn.kneighbors(return_distance=False)[:, :n_neighbors]
    labels = pd.Categorical(adata.obs[coarse_key]).codes
    same = (labels[idx] == labels[:, None]).mean(axis=1)
    return same < 0.5


DETECTORS = {
    "refine": "obs['falcon_outside_parent'] (refine defaults)",
    "predict_coarse": "model.predict without coarse labels: predicted coarse != given",
    "knn_vote": "15-NN majority vote in the global PCA",
    "refine_no_within": "obs['falcon_outside_parent'], refine n_comps_within=0",
}


def run_conflict_bench(
    presets: Sequence[str] = ("balanced", "imbalanced"),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    fraction: float = 0.02,
    no_within: bool = False,
    accelerator: str = "cpu",
) -> pd.DataFrame:
    """Precision and recall of ``obs["falcon_outside_parent"]`` against deliberately mislabelled cells.

    For every preset and seed: simulate, give ``fraction`` of the cells a random other coarse label
    (:func:`mislabel`), run :func:`~falcon_sc.tl.refine` with its default settings on the noisy labels
    (``n_fine`` = the true number of fine classes) and score the cells it flags. Three other detectors are scored
    on the same cells for comparison (``DETECTORS``): the fitted model's
    :meth:`~falcon_sc.FalconModel.predict` without coarse labels (it predicts the coarse class, trying each coarse
    class's within-class inputs; a cell counts when the predicted coarse class differs from the given one), a
    neighbour vote, and (``no_within=True``, one more refine per run) refine without the within-class principal
    components.

    Parameters
    ----------
    presets
        Names of :func:`falcon_sc.datasets.simulate_preset` settings.
    seeds
        Seeds of the simulation, of the mislabelling and of :func:`~falcon_sc.tl.refine`.
    fraction
        Share of the cells given a random other coarse label.
    no_within
        Also score refine with ``n_comps_within=0`` (network inputs that do not depend on the coarse label).
    accelerator
        Passed to :func:`~falcon_sc.tl.refine` (default ``"cpu"``: the same seed gives the same flags).

    Returns
    -------
    One row per preset, seed and detector: ``n_cells``, ``n_mislabelled``, ``n_flagged``, ``precision``,
    ``recall``. ``attrs["diagnosis"]`` holds, per preset and seed, where refine's unrestricted top prediction of
    the mislabelled cells points (share under their true coarse class ``to_true``, under the wrong label they were
    given ``to_given``, elsewhere ``to_third``), the mean probability the network gives the given label's children
    for mislabelled (``p_given_mislabelled``) and for correctly labelled cells (``p_given_clean``), the fine-label
    ``accuracy`` and the ``seconds`` of refine.
    """
    import falcon_sc as fal

    rows, diagnosis = [], []
    for preset in presets:
        for seed in seeds:
            adata = fal.datasets.simulate_preset(preset, random_state=seed)
            wrong = mislabel(adata, "coarse", fraction, random_state=seed)
            n_fine = int(adata.obs["fine"].nunique())
            options: dict[str, Any] = dict(random_state=seed, accelerator=accelerator, show_progress=False)
            start = time.perf_counter()
            model = fal.tl.refine(adata, "coarse_noisy", n_fine, return_model=True, **options)
            assert isinstance(model, fal.FalconModel)
            seconds = time.perf_counter() - start
            given = adata.obs["coarse_noisy"].astype(str).to_numpy()
            flags = {"refine": adata.obs["falcon_outside_parent"].to_numpy().astype(bool)}
            bare = adata.copy()
            del bare.obs["coarse_noisy"]
            labelled = model.predict(bare, key_added="bench", copy=True)
            assert labelled is not None
            predicted = labelled.obs["bench_coarse"].astype(str).to_numpy()
            flags["predict_coarse"] = predicted != given
            flags["knn_vote"] = _neighbour_vote(adata, "coarse_noisy", random_state=seed)
            if no_within:
                other = adata.copy()
                fal.tl.refine(other, "coarse_noisy", n_fine, n_comps_within=0, key_added="nowithin", **options)
                flags["refine_no_within"] = other.obs["nowithin_outside_parent"].to_numpy().astype(bool)
            for name, flag in flags.items():
                precision, recall = _precision_recall(flag, wrong)
                rows.append(
                    {
                        "preset": preset,
                        "seed": seed,
                        "detector": name,
                        "n_cells": adata.n_obs,
                        "n_mislabelled": int(wrong.sum()),
                        "n_flagged": int(flag.sum()),
                        "precision": precision,
                        "recall": recall,
                    }
                )
            rel = adata.uns["falcon"]["relations"]
            names = np.asarray(rel.columns.astype(str))
            probs = np.asarray(adata.obsm["falcon_probs"], dtype=float)
            top_parent = names[rel.to_numpy().argmax(axis=1)][probs.argmax(axis=1)]
            per_coarse = probs @ rel.to_numpy().astype(float)
            p_given = per_coarse[np.arange(adata.n_obs), pd.Categorical(given, categories=names).codes]
            true_c = adata.obs["coarse"].astype(str).to_numpy()
            diagnosis.append(
                {
                    "preset": preset,
                    "seed": seed,
                    "to_true": float((top_parent[wrong] == true_c[wrong]).mean()),
                    "to_given": float((top_parent[wrong] == given[wrong]).mean()),
                    "to_third": float(((top_parent != true_c) & (top_parent != given))[wrong].mean()),
                    "p_given_mislabelled": float(p_given[wrong].mean()),
                    "p_given_clean": float(p_given[~wrong].mean()),
                    "accuracy": fal.metrics.clustering_accuracy(
                        adata.obs["fine"].astype(str).to_numpy(), adata.obs["falcon"].astype(str).to_numpy()
                    ),
                    "seconds": seconds,
                }
            )
    df = pd.DataFrame(rows)
    df.attrs["diagnosis"] = pd.DataFrame(diagnosis)
    return df


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m falcon_sc.bench.conflicts``: print (and optionally save) the tables."""
    p = argparse.ArgumentParser(
        prog="python -m falcon_sc.bench.conflicts",
        description="Precision/recall of obs['falcon_outside_parent'] against deliberately mislabelled cells.",
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    p.add_argument("--presets", default="balanced,imbalanced", help="comma separated simulate_preset names")
    p.add_argument("--fraction", type=float, default=0.02, help="share of cells given a wrong coarse label")
    p.add_argument("--no-within", action="store_true", help="also run refine with n_comps_within=0")
    p.add_argument("--accelerator", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", type=Path, default=None, help="also write OUT/conflicts.csv and OUT/diagnosis.csv")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if not 0.0 < args.fraction < 1.0:
        p.error("--fraction must lie strictly between 0 and 1")
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    df = run_conflict_bench(
        presets, range(args.seeds), fraction=args.fraction, no_within=args.no_within, accelerator=args.accelerator
    )
    fmt = "{:.3f}".format
    print(
        f"Cells flagged as coarse conflicts vs the {args.fraction:.0%} of cells given a random other coarse label "
        f"(refine with default settings on the noisy labels, n_fine = true count). Detectors:"
    )
    for name in df["detector"].unique():
        print(f"  {name:<17} {DETECTORS[name]}")
    print()
    print(df.to_string(index=False, float_format=fmt))
    summary = df.groupby(["preset", "detector"], sort=False)[["n_flagged", "precision", "recall"]].mean()
    print(f"\nmean over {args.seeds} seed(s):")
    print(summary.to_string(float_format=fmt))
    print(
        "\nwhere refine's unrestricted prediction of the mislabelled cells points (to_true: their true coarse class; "
        "to_given: the wrong label they were given), and the probability of the given label's children:"
    )
    print(df.attrs["diagnosis"].to_string(index=False, float_format=fmt))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "conflicts.csv", index=False)
        df.attrs["diagnosis"].to_csv(args.out / "diagnosis.csv", index=False)
        print(f"\nwrote {args.out / 'conflicts.csv'} and {args.out / 'diagnosis.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
