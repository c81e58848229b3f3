"""Benchmark methods by name, all with one signature ``(adata, coarse_key, n_fine, *, batch_key, seed, fine_key)``.

``fine_key`` names the true fine labels; only the references that are meant to see them (``erm``,
``falcon_oracle_relation``) read it. ``n_fine`` is the total number of fine classes, or (``run(known_counts=True)``)
a mapping coarse label -> count, passed on as it is; only the methods whose function takes one accept it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from falcon_sc.baselines import BASELINES, BaselineResult
from falcon_sc.baselines._common import majority_parent

Method = Callable[..., BaselineResult]


def accepts(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _baseline(fn: Callable[..., BaselineResult]) -> Method:
    supervised = accepts(fn, "fine_key")

    def method(
        adata: AnnData, coarse_key: str, n_fine: int, *, batch_key: str | None, seed: int, fine_key: str | None = None
    ) -> BaselineResult:
        extra = {"fine_key": fine_key} if supervised else {}
        return fn(adata, coarse_key, n_fine, batch_key=batch_key, random_state=seed, **extra)

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


def falcon(
    adata: AnnData, coarse_key: str, n_fine: int, *, batch_key: str | None, seed: int, fine_key: str | None = None
) -> BaselineResult:
    """FALCON: :func:`falcon_sc.tl.refine` with its defaults on a copy of ``adata``."""
    return refine_copy(adata, coarse_key, n_fine, batch_key=batch_key, seed=seed)


def falcon_oracle_relation(
    adata: AnnData, coarse_key: str, n_fine: int, *, batch_key: str | None, seed: int, fine_key: str | None = None
) -> BaselineResult:
    """FALCON with the relation fixed to the truth: each coarse class gets its true number of children.

    The paper's oracle-relation ablation, an upper reference: ``children_prior`` = true children counts (majority
    parent of each true fine class) and ``learn_relation=False``.
    """
    if fine_key is None or fine_key not in adata.obs.columns:
        raise KeyError(f"falcon_oracle_relation needs the true fine labels: fine_key {fine_key!r} is not in obs")
    coarse = adata.obs[coarse_key].astype(str).to_numpy()
    parents = pd.Series(majority_parent(adata.obs[fine_key].astype(str).to_numpy(), coarse))
    counts = parents.value_counts().reindex(np.unique(coarse), fill_value=0)
    if (counts == 0).any():
        raise ValueError(f"coarse classes without a true fine class: {list(counts.index[counts == 0])}")
    prior = {str(k): int(v) for k, v in counts.items()}
    if isinstance(n_fine, Mapping):  # known counts: the prior holds them already, refine takes the total with it
        n_fine = sum(prior.values())
    return refine_copy(
        adata, coarse_key, n_fine, batch_key=batch_key, seed=seed, children_prior=prior, learn_relation=False
    )


def refine_copy(
    adata: AnnData, coarse_key: str, n_fine: int, *, batch_key: str | None, seed: int, **kwargs
) -> BaselineResult:
    """:func:`falcon_sc.tl.refine` on a copy of ``adata`` (``kwargs`` passed on), as a :class:`BaselineResult`.

    ``info["warm_start_labels"]`` holds the warm start's labels; ``adata`` of the result is the annotated copy.
    """
    from falcon_sc import tl

    work = adata.copy()
    key = "falcon"
    tl.refine(
        work, coarse_key, n_fine, batch_key=batch_key, key_added=key, random_state=seed, show_progress=False, **kwargs
    )
    labels = work.obs[key].astype(str).to_numpy()
    coarse = work.obs[coarse_key].astype(str).to_numpy()
    relation = complete_relation(labels, coarse, relations_to_dict(work.uns[key]["relations"]))
    info = {}
    warm = f"{key}_warm_start"
    if warm in work.obs.columns:  # the warm start's fine labels (refine writes them; older versions do not)
        info["warm_start_labels"] = work.obs[warm].astype(str).to_numpy()
    return BaselineResult(labels=labels, relation=relation, info=info, adata=work)


METHODS: dict[str, Method] = {
    "falcon": falcon,
    "falcon_oracle_relation": falcon_oracle_relation,
    **{name: _baseline(fn) for name, fn in BASELINES.items()},
}


def get_method(name: str) -> Method:
    """Return the method registered as ``name``."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}: use one of {sorted(METHODS)}") from None
