"""Datasets with coarse and fine labels: real data (offline) and a hierarchical count simulator.

Every loader returns an :class:`~anndata.AnnData` with categorical ``obs["coarse"]`` and ``obs["fine"]`` and
``uns["falcon_dataset"] = {"name": ..., "relation": <table fine, coarse>, "source": ...}``;
:func:`true_relation` reads the relation as a dict.
"""

from __future__ import annotations

from ._digits import DIGIT_PARITY, DIGIT_SHAPES, digits
from ._packaged import pbmc3k, zeisel
from ._pbmc68k import PBMC68K_RELATION, pbmc68k
from ._simulate import PRESETS, simulate, simulate_preset
from ._utils import true_relation

__all__ = [
    "DIGIT_PARITY",
    "DIGIT_SHAPES",
    "digits",
    "PBMC68K_RELATION",
    "PRESETS",
    "pbmc3k",
    "pbmc68k",
    "simulate",
    "simulate_preset",
    "true_relation",
    "zeisel",
]
