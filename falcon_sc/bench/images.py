"""The image bench: FALCON on images (a ResNet on random views) against the within-coarse baselines.

``python -m falcon_sc.bench images --dataset digits --seeds 3 --out falcon_images``. The paper's datasets are read
from local folders the user names (``--root``, and ``--hierarchy`` for BREEDS / tieredImageNet); nothing is
downloaded. Every method fits on the chosen split's images and is scored on them (the cell bench's protocol); the
tables, figures and columns are the cell bench's (:func:`falcon_sc.bench.run.summary_markdown`).
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from falcon_sc._checks import check_choice
from falcon_sc.core.views import ViewConfig

from .run import COLUMNS, METRICS, WARM_METRICS, PeakMemory, plot_metrics, summary_markdown


@dataclass(frozen=True)
class ImageSettings:
    """How a dataset is trained: backbone, width, views, epochs, batch size (the reference's where it gives them)."""

    backbone: Literal["resnet18", "resnet50"] = "resnet18"
    width: int = 64
    view: ViewConfig = ViewConfig()
    teacher_view: Literal["strong", "centre"] = "strong"
    n_epochs: int | None = None
    batch_size: int = 256
    needs_root: bool = True
    needs_hierarchy: bool = False


DIGITS = ImageSettings(width=16, view=ViewConfig(scale=(0.5, 1.0), flip=0.0), needs_root=False)
CIFAR = ImageSettings(n_epochs=100)  # ResNet-18 (CIFAR stem), two strong views, 100 epochs, batch 256
IMAGENET = ImageSettings(backbone="resnet50", teacher_view="centre", n_epochs=60, needs_hierarchy=True)

IMAGE_DATASETS: dict[str, ImageSettings] = {
    "digits": DIGITS,
    "cifar100": CIFAR,
    "cifar68": CIFAR,
    "cifar_si": CIFAR,
    "living17": IMAGENET,
    "nonliving26": IMAGENET,
    "entity30": IMAGENET,
    "entity13": IMAGENET,
    "tiered": IMAGENET,
}
"""Image datasets by name and how each is trained."""

PUBLISHED: dict[str, str] = {
    "cifar100": "59.6 / 42.5",
    "cifar68": "60.4 / 47.0",
    "cifar_si": "55.6 / 39.1",
    "living17": "71.8 / 60.3",
    "tiered": "53.4 / 41.6",
}
"""FALCON's published accuracy / ARI (%, mean of 3 runs) on the paper's benchmarks (``docs/images.md``)."""

IMAGE_SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
"""Splits of :func:`load_image_dataset` (``digits`` has none: ``"train"`` and ``"all"`` both mean every image)."""


def load_image_dataset(
    name: str, root: str | Path | None = None, *, hierarchy: str | Path | None = None, split: str = "train"
) -> AnnData:
    """The images of ``name`` with ``obs["coarse"]`` and ``obs["fine"]`` (pixels in ``X`` or files in ``obs["path"]``).

    Raises
    ------
    ValueError
        An unknown name or split (:data:`IMAGE_SPLITS`; ``digits`` takes ``"train"`` or ``"all"`` only), or a
        missing ``root`` / ``hierarchy`` for a dataset read from disk.
    """
    from falcon_sc import datasets

    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image dataset {name!r}: available {list(IMAGE_DATASETS)}")
    check_choice("split", split, IMAGE_SPLITS)
    if name == "digits" and split not in ("train", "all"):
        raise ValueError(
            f"split={split!r}: digits has no {split} split (every method fits and is scored on all 1,797 images); "
            "use split='train' (the default) or 'all'."
        )
    settings = IMAGE_DATASETS[name]
    if settings.needs_root and root is None:
        raise ValueError(f"--dataset {name} is read from local files: give --root PATH (see docs/datasets.md).")
    if settings.needs_hierarchy and hierarchy is None:
        raise ValueError(f"--dataset {name} needs its hierarchy files: give --hierarchy PATH (see docs/datasets.md).")
    if name == "digits":
        return datasets.digits()
    assert root is not None  # every dataset but digits needs_root (checked above)
    if name.startswith("cifar"):
        return datasets.cifar100(root, split=split, variant=name)
    assert hierarchy is not None  # the ImageNet datasets need their hierarchy files (checked above)
    if name == "tiered":
        return datasets.tiered_imagenet(root, hierarchy_dir=hierarchy, split=split)
    return datasets.breeds(root, name, hierarchy_dir=hierarchy, split=split)


def _falcon(adata: AnnData, n_fine: int, s: ImageSettings, seed: int, options: dict) -> tuple[np.ndarray, dict]:
    from falcon_sc import tl

    out = tl.refine_images(
        adata,
        "coarse",
        n_fine,
        backbone=s.backbone,
        width=s.width,
        view=s.view,
        teacher_view=s.teacher_view,
        n_epochs=s.n_epochs,
        batch_size=s.batch_size,
        random_state=seed,
        show_progress=False,
        copy=True,
        **options,
    )
    assert out is not None  # copy=True returns the AnnData
    warm = out.obs["falcon_warm_start"].astype(str).to_numpy()
    return out.obs["falcon"].astype(str).to_numpy(), {"warm_start_labels": warm}


def _baseline(name: str) -> Callable[..., tuple[np.ndarray, dict]]:
    def method(adata: AnnData, n_fine: int, s: ImageSettings, seed: int, options: dict) -> tuple[np.ndarray, dict]:
        from falcon_sc.baselines import BASELINES

        extra: dict[str, Any] = {"fine_key": "fine"} if name == "erm" else {}
        if name != "kmeans_within":
            extra["view"] = s.view
        res = BASELINES[name](adata, "coarse", n_fine, width=s.width, random_state=seed, **extra, **options)
        return np.asarray(res.labels).astype(str), dict(res.info)

    return method


IMAGE_METHODS: dict[str, Callable[..., tuple[np.ndarray, dict]]] = {
    "falcon": _falcon,
    **{m: _baseline(m) for m in ("kmeans_within", "scan_c", "sela", "ancor", "gml", "wcl", "erm")},
}
"""Methods of the image bench: FALCON, k-means within coarse on the initial features, the seed baselines, and the
supervised reference ``erm``."""


def run_image_bench(
    dataset: str = "digits",
    methods: Sequence[str] = ("falcon", "kmeans_within"),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    root: str | Path | None = None,
    hierarchy: str | Path | None = None,
    split: str = "train",
    width: int | None = None,
    n_epochs: int | None = None,
    checkpoint: str | Path | None = None,
    accelerator: str = "auto",
    out: str | Path | None = None,
    plots: bool = True,
) -> pd.DataFrame:
    """Score each method and seed on an image dataset against its true fine labels.

    Parameters
    ----------
    dataset
        A name of :data:`IMAGE_DATASETS`.
    methods
        Names of :data:`IMAGE_METHODS`.
    seeds
        Seeds; each method runs once per seed.
    root, hierarchy, split
        Where the dataset's files are and which split to fit and score (:func:`load_image_dataset`).
    width, n_epochs
        Override the dataset's ResNet width and FALCON's epochs (:data:`IMAGE_DATASETS`).
    checkpoint
        Local self-supervised checkpoint for the backbone (every method's initial features and network).
    accelerator
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    out
        Folder for ``runs.csv``, ``summary.md`` and the bar charts (``None``: nothing written).
    plots
        Draw the bar charts.

    Returns
    -------
    One row per run with the cell bench's columns (a failed run has its error in ``error``).
    """
    from falcon_sc import metrics

    unknown = sorted(set(methods) - set(IMAGE_METHODS))
    if unknown:
        raise ValueError(f"unknown image method(s) {unknown}: available {list(IMAGE_METHODS)}")
    settings = IMAGE_DATASETS.get(dataset)
    if settings is None:
        raise ValueError(f"unknown image dataset {dataset!r}: available {list(IMAGE_DATASETS)}")
    if width is not None:
        settings = replace(settings, width=int(width))
    if n_epochs is not None:
        settings = replace(settings, n_epochs=int(n_epochs))
    adata = load_image_dataset(dataset, root, hierarchy=hierarchy, split=split)
    truth, coarse = adata.obs["fine"].astype(str).to_numpy(), adata.obs["coarse"].astype(str).to_numpy()
    n_fine = len(set(truth))
    options: dict[str, Any] = {"accelerator": accelerator}
    if checkpoint is not None:
        options["checkpoint"] = str(checkpoint)
    rows = []
    for seed in seeds:
        for method in methods:
            row: dict[str, Any] = {
                "dataset": dataset,
                "method": method,
                "seed": seed,
                "n_cells": adata.n_obs,
                "n_fine_true": n_fine,
                "error": "",
            }
            try:
                with PeakMemory() as mem:
                    start = time.perf_counter()
                    labels, info = IMAGE_METHODS[method](adata, n_fine, settings, seed, options)
                    row["seconds"] = time.perf_counter() - start
                row["peak_mem_mb"], row["maxrss_delta_mb"] = mem.peak_mb, mem.maxrss_delta_mb
                scores = metrics.evaluate(truth, labels, coarse=coarse)
                row.update({k: float(scores[k]) for k in METRICS if k in scores})
                row["n_fine_pred"] = int(len(np.unique(labels)))
                warm = info.pop("warm_start_labels", None)
                if warm is not None:
                    warm_scores = metrics.evaluate(truth, warm, coarse=coarse)
                    row.update({f"warm_{k}": float(warm_scores[k]) for k in WARM_METRICS if k in warm_scores})
                row["info"] = json.dumps(info, default=str) if info else ""
            except Exception as err:  # noqa: BLE001 - one failed run is recorded, the bench goes on
                row["error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
            rows.append(row)
    df = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    df["error"] = df["error"].fillna("").astype(str)
    df["info"] = df["info"].fillna("").astype(str)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / "runs.csv", index=False)
        (folder / "summary.md").write_text(summary_markdown(df))
        if plots:
            plot_metrics(df, folder)
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per method (failed runs left out)."""
    cols = ["accuracy", "macro_accuracy", "ari", "within_coarse_ari", "seconds"]
    grouped = df[df["error"] == ""].groupby("method", sort=False)[cols]
    mean, sd = grouped.mean(), grouped.std().fillna(0.0)
    return mean.round(3).astype(str) + " ± " + sd.round(3).astype(str)
