"""Baselines: the within-coarse clusterings a scanpy user would run, and the methods of the seed papers.

Every baseline is a function ``(adata, coarse_key, n_fine, *, batch_key=None, random_state=0) -> BaselineResult``
that leaves ``adata`` untouched (supervised references also take ``fine_key``); adding one is a module with that
function plus one line in :data:`BASELINES`. :func:`kmeans_within`, :func:`leiden_within`, :func:`leiden_scanpy`
and :func:`subcluster` also take ``n_fine`` as a mapping coarse label -> number of fine classes (known counts, one per
coarse class), which each class then gets exactly. Those in :data:`IMAGE_BASELINES` also run on images (flattened in
the rows of ``X``) when given any of the image options ``image_shape``, ``width``, ``checkpoint`` (and ``view`` for
the neural ones), as :func:`falcon_sc.tl.refine_images` takes them.
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

IMAGE_BASELINES: tuple[str, ...] = ("erm", "kmeans_within", "scan_c", "sela", "ancor", "gml", "wcl")
"""Baselines that take the image options (``image_shape``, ``width``, ``checkpoint``; the neural ones also ``view``
and ``n_steps``): ResNet-18 on random views, k-means on the initial image features."""

__all__ = [
    "BASELINES",
    "IMAGE_BASELINES",
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
