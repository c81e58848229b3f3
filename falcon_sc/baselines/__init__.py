"""Baselines: the within-coarse clusterings a scanpy user would run.

Every baseline is a function ``(adata, coarse_key, n_fine, *, batch_key=None, random_state=0) -> BaselineResult``
that leaves ``adata`` untouched; adding one is a module with that function plus one line in :data:`BASELINES`.
"""

from __future__ import annotations

from collections.abc import Callable

from ._common import BaselineResult, allot_clusters
from .kmeans_within import kmeans_within
from .leiden_within import leiden_within
from .subcluster import subcluster

BASELINES: dict[str, Callable[..., BaselineResult]] = {
    "kmeans_within": kmeans_within,
    "leiden_within": leiden_within,
    "subcluster": subcluster,
}

__all__ = ["BASELINES", "BaselineResult", "allot_clusters", "kmeans_within", "leiden_within", "subcluster"]
