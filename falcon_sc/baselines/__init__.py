"""Baselines: the within-coarse clusterings a scanpy user would run, and the methods of the seed papers.

Every baseline is a function ``(adata, coarse_key, n_fine, *, batch_key=None, random_state=0) -> BaselineResult``
that leaves ``adata`` untouched (supervised references also take ``fine_key``); adding one is a module with that
function plus one line in :data:`BASELINES`.
"""

from __future__ import annotations

from collections.abc import Callable

from ._common import BaselineResult, allot_clusters
from .ancor import ancor
from .erm import erm
from .gml import gml
from .kmeans_within import kmeans_within
from .leiden_scanpy import leiden_scanpy
from .leiden_within import leiden_within
from .scan_c import scan_c
from .sela import sela
from .subcluster import subcluster
from .wcl import wcl

BASELINES: dict[str, Callable[..., BaselineResult]] = {
    "erm": erm,
    "kmeans_within": kmeans_within,
    "leiden_within": leiden_within,
    "leiden_scanpy": leiden_scanpy,
    "subcluster": subcluster,
    "scan_c": scan_c,
    "sela": sela,
    "ancor": ancor,
    "gml": gml,
    "wcl": wcl,
}

__all__ = [
    "BASELINES",
    "BaselineResult",
    "allot_clusters",
    "ancor",
    "erm",
    "gml",
    "kmeans_within",
    "leiden_scanpy",
    "leiden_within",
    "scan_c",
    "sela",
    "subcluster",
    "wcl",
]
