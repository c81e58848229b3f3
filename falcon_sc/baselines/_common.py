"""Shared pieces of the baselines: result type, input checks, shared embedding, cluster allotment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..core.prior import proportional_counts as allot_clusters
from ..pp import prepare

__all__ = [
    "BaselineResult",
    "allot_clusters",
    "check_n_fine",
    "coarse_labels",
    "embed",
    "fine_names",
    "majority_parent",
]


@dataclass
class BaselineResult:
    """Fine labels found by a method.

    Attributes
    ----------
    labels
        One fine label per cell (``str``), named ``"<coarse>/<i>"``.
    relation
        Fine label -> coarse label.
    info
        Method specific extras (e.g. the Leiden resolution and the cluster count reached).
    adata
        The annotated copy the method worked on, when it keeps one (FALCON: for the relation figure of the bench).
    embedding
        Cells x dimensions representation the labels were read from, for methods that learn one.

    Examples
    --------
    Every baseline returns one; a new method builds it from its labels:

    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> res = fal.baselines.BaselineResult(
    ...     labels=np.array(["T/1", "T/2", "T/1", "B/1"]), relation={"T/1": "T", "T/2": "T", "B/1": "B"}
    ... )
    >>> res.n_fine
    3
    """

    labels: np.ndarray
    relation: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    adata: AnnData | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_fine(self) -> int:
        """Number of distinct fine labels."""
        return len(np.unique(self.labels))


def coarse_labels(adata: AnnData, coarse_key: str) -> pd.Categorical:
    """Return ``adata.obs[coarse_key]`` as a string categorical (observed categories only).

    Raises
    ------
    TypeError
        If ``adata`` is not an AnnData.
    KeyError
        If ``coarse_key`` is not a column of ``adata.obs``.
    ValueError
        If some cells have no coarse label.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if coarse_key not in adata.obs.columns:
        raise KeyError(f"coarse_key {coarse_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    col = adata.obs[coarse_key]
    if col.isna().any():
        raise ValueError(f"coarse_key {coarse_key!r}: {int(col.isna().sum())} cells have no coarse label")
    values = col.astype(str).to_numpy()
    return pd.Categorical(values, categories=sorted(pd.unique(values)))


def check_n_fine(n_fine: int, n_coarse: int, n_obs: int) -> int:
    """Validate the requested number of fine classes (the same rule as :func:`falcon_sc.tl.refine`)."""
    if isinstance(n_fine, bool) or not isinstance(n_fine, int | np.integer):
        raise TypeError(f"n_fine must be an int, got {type(n_fine).__name__}.")
    n_fine = int(n_fine)
    if n_fine <= n_coarse:
        raise ValueError(
            f"n_fine={n_fine} must exceed the number of coarse classes ({n_coarse}); with n_fine <= n_coarse there is "
            "nothing to refine."
        )
    if n_fine > n_obs:
        raise ValueError(f"n_fine={n_fine} is larger than the number of cells ({n_obs})")
    return n_fine


def embed(adata: AnnData, *, batch_key: str | None = None, random_state: int = 0) -> np.ndarray:
    """Shared PCA embedding of ``adata`` (cells x comps) from :func:`falcon_sc.pp.prepare`; ``adata`` is untouched."""
    return prepare(adata, batch_key=batch_key, random_state=random_state).embedding


def majority_parent(labels: np.ndarray, coarse: np.ndarray) -> dict[str, str]:
    """Fine label -> the coarse label most of its cells carry (first in sorted order on ties)."""
    table = pd.crosstab(pd.Series(np.asarray(labels).astype(str)), pd.Series(np.asarray(coarse).astype(str)))
    return {
        str(f): str(table.columns[int(np.argmax(row))]) for f, row in zip(table.index, table.to_numpy(), strict=True)
    }


def fine_names(coarse: str, cluster_ids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Name clusters ``"<coarse>/<i>"``, ``i = 1, 2, ...`` by decreasing size (ties by first id), as ``refine`` does."""
    ids, counts = np.unique(cluster_ids, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    rank = {c: i for i, c in enumerate(order)}
    names = [f"{coarse}/{i + 1}" for i in range(len(order))]
    return np.array([names[rank[c]] for c in cluster_ids], dtype=object), names
