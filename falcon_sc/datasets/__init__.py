"""Datasets with coarse and fine labels: real data (offline), readers of local image datasets and a count simulator.

Every loader returns an :class:`~anndata.AnnData` with categorical ``obs["coarse"]`` and ``obs["fine"]`` and
``uns["falcon_dataset"] = {"name": ..., "relation": <table fine, coarse>, "source": ...}``;
:func:`true_relation` reads the relation as a dict.
"""

from __future__ import annotations

from ._cifar import CIFAR68_REMOVED, CIFAR_SI_FRACTIONS, cifar100
from ._digits import DIGIT_PARITY, DIGIT_SHAPES, digits
from ._image_folder import image_folder
from ._imagenet import BREEDS_DATASETS, breeds, breeds_classes, tiered_imagenet
from ._packaged import kang, moncada, pbmc3k, zeisel
from ._pbmc68k import PBMC68K_RELATION, pbmc68k
from ._simulate import PRESETS, simulate, simulate_h5ad, simulate_preset
from ._utils import true_relation

__all__ = [
    "BREEDS_DATASETS",
    "CIFAR68_REMOVED",
    "CIFAR_SI_FRACTIONS",
    "breeds",
    "breeds_classes",
    "cifar100",
    "image_folder",
    "kang",
    "moncada",
    "tiered_imagenet",
    "DIGIT_PARITY",
    "DIGIT_SHAPES",
    "digits",
    "PBMC68K_RELATION",
    "PRESETS",
    "pbmc3k",
    "pbmc68k",
    "simulate",
    "simulate_h5ad",
    "simulate_preset",
    "true_relation",
    "zeisel",
]
