"""Benchmark methods by name, all with one signature ``(adata, coarse_key, n_fine, *, batch_key, seed)``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from anndata import AnnData

from falcon_sc.baselines import BASELINES, BaselineResult
from falcon_sc.baselines._common import majority_parent

Method = Callable[..., BaselineResult]


def _baseline(fn: Callable[..., BaselineResult]) -> Method:
    def method(adata: AnnData, coarse_key: str, n_fine: int, *, batch_key: str | None, seed: int) -> BaselineResult:
        return fn(adata, coarse_key, n_fine, batch_key=batch_key, random_state=seed)

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


def relations_to_dict(relations: pd.DataFrame) -> dict[str, str]:
    """Turn a fine x coarse 0/1 relation table into a fine -> coarse dict.

    A fine class marked under several coarse classes keeps the highest entry (the first on ties); one marked under
    none is left out.
    """
    values = relations.to_numpy(dtype=float)
    out: dict[str, str] = {}
    for fine, row in zip(relations.index, values, strict=True):
        if row.size and row.max() > 0:
            out[str(fine)] = str(relations.columns[int(np.argmax(row))])
    return out


def complete_relation(labels: np.ndarray, coarse: np.ndarray, relation: dict[str, str]) -> dict[str, str]:
    """Copy of ``relation`` where every label without an entry gets the majority coarse class of its cells."""
    return {**majority_parent(labels, coarse), **relation}


def falcon(adata: AnnData, coarse_key: str, n_fine: int, *, batch_key: str | None, seed: int) -> BaselineResult:
    """FALCON: :func:`falcon_sc.tl.refine` on a copy of ``adata``."""
    from falcon_sc import tl

    work = adata.copy()
    key = "falcon"
    tl.refine(work, coarse_key, n_fine, batch_key=batch_key, key_added=key, random_state=seed)
    labels = work.obs[key].astype(str).to_numpy()
    coarse = work.obs[coarse_key].astype(str).to_numpy()
    relation = complete_relation(labels, coarse, relations_to_dict(work.uns[key]["relations"]))
    return BaselineResult(labels=labels, relation=relation)


METHODS: dict[str, Method] = {"falcon": falcon, **{name: _baseline(fn) for name, fn in BASELINES.items()}}


def get_method(name: str) -> Method:
    """Return the method registered as ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: use one of {sorted(METHODS)}") from None
