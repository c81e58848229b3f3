"""Reproducible comparison of FALCON with the within-coarse baselines.

``falcon_sc.bench.run(datasets, methods, seeds, out)`` or ``python -m falcon_sc.bench run ...`` (``falcon-bench``);
the real-cell suite with its fixed tuning / held-out split: ``falcon_sc.bench.run_real(split)`` or
``python -m falcon_sc.bench real --split ...``; ablations of refine's options on it: ``run_ablation`` or
``falcon-bench ablation``; the children per coarse class of each allotment vs the truth: ``count_errors`` or
``falcon-bench counts``.
"""

from __future__ import annotations

from ._datasets import DATASETS, DEFAULT_DATASETS, DatasetSpec, LoadedDataset, get_dataset
from ._methods import METHODS, get_method
from .ablation import ABLATIONS, run_ablation
from .counts import count_errors
from .real import real_specs, run_real
from .run import METRICS, PeakMemory, pivot_markdown, run, summary_markdown

__all__ = [
    "ABLATIONS",
    "DATASETS",
    "DEFAULT_DATASETS",
    "METHODS",
    "METRICS",
    "DatasetSpec",
    "LoadedDataset",
    "PeakMemory",
    "count_errors",
    "get_dataset",
    "get_method",
    "pivot_markdown",
    "real_specs",
    "run",
    "run_ablation",
    "run_real",
    "summary_markdown",
]
