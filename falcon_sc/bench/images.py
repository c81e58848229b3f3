"""The image bench: FALCON on images (a ResNet on random views) against k-means inside coarse classes.

``python -m falcon_sc.bench images --dataset digits --seeds 3``. Only the offline ``digits`` dataset is wired in so
far; the paper's CIFAR / BREEDS / tieredImageNet readers are not built yet.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

IMAGE_DATASETS = ("digits",)
IMAGE_METHODS = ("falcon", "kmeans_within")


def _dataset(name: str):
    from falcon_sc import datasets

    if name != "digits":
        raise ValueError(f"unknown image dataset {name!r}: available {list(IMAGE_DATASETS)}")
    return datasets.digits()


def run_image_bench(
    dataset: str = "digits",
    methods: Sequence[str] = IMAGE_METHODS,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    width: int = 16,
    accelerator: str = "auto",
) -> pd.DataFrame:
    """Score each method and seed on an image dataset against its true fine labels.

    ``falcon``: :func:`falcon_sc.tl.refine_images` (ResNet-18 of the given ``width``; for digits random crops of
    50-100 % of the area and no flip). ``kmeans_within``: k-means inside each coarse class on the initial features
    (the pixels' principal components), clusters allotted by class size as in the cell bench.

    Returns
    -------
    One row per run: dataset, method, seed, the :func:`falcon_sc.metrics.evaluate` scores and seconds (the warm
    start's scores for falcon as ``warm_*``).
    """
    from falcon_sc import metrics, tl
    from falcon_sc.baselines import allot_clusters
    from falcon_sc.baselines.kmeans_within import kmeans_per_class
    from falcon_sc.core.views import ViewConfig
    from falcon_sc.tl._refine_images import _images, _initial_features

    unknown = sorted(set(methods) - set(IMAGE_METHODS))
    if unknown:
        raise ValueError(f"unknown image method(s) {unknown}: available {list(IMAGE_METHODS)}")
    adata = _dataset(dataset)
    truth, coarse = adata.obs["fine"].astype(str).to_numpy(), adata.obs["coarse"]
    n_fine = len(set(truth))
    rows = []
    for seed in seeds:
        for method in methods:
            start = time.perf_counter()
            extra = {}
            if method == "falcon":
                out = tl.refine_images(
                    adata,
                    "coarse",
                    n_fine,
                    width=width,
                    view=ViewConfig(scale=(0.5, 1.0), flip=0.0),
                    accelerator=accelerator,
                    random_state=seed,
                    show_progress=False,
                    copy=True,
                )
                labels = out.obs["falcon"].astype(str).to_numpy()
                warm = out.obs["falcon_warm_start"].astype(str).to_numpy()
                extra = {f"warm_{k}": v for k, v in metrics.evaluate(truth, warm, coarse=coarse).items()}
            else:
                space = _initial_features(_images(adata, None), None, "resnet18", width, "cpu", seed)
                codes = coarse.cat.codes.to_numpy()
                sizes = np.bincount(codes)
                res = kmeans_per_class(space, codes, list(coarse.cat.categories), allot_clusters(sizes, n_fine), seed)
                labels = res.labels
            seconds = time.perf_counter() - start
            scores = metrics.evaluate(truth, labels, coarse=coarse)
            rows.append({"dataset": dataset, "method": method, "seed": seed, **scores, "seconds": seconds, **extra})
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per method."""
    cols = ["accuracy", "macro_accuracy", "ari", "within_coarse_ari", "seconds"]
    grouped = df.groupby("method", sort=False)[cols]
    mean, sd = grouped.mean(), grouped.std().fillna(0.0)
    return mean.round(3).astype(str) + " ± " + sd.round(3).astype(str)
