"""Coarse labels from one or several ``obs`` columns (coarse schemes), read and checked once for every entry point."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .core.schemes import joint_groups
from .errors import DegenerateInputError

MISSING = "NA"
"""How a missing label is written in the name of a joint group."""


@dataclass
class CoarseSchemes:
    """Coarse labels of every sample in each scheme.

    Attributes
    ----------
    keys
        The ``obs`` columns, one per scheme (the first names the fine classes).
    names
        Coarse class names per scheme.
    codes
        Samples x schemes coarse class index (``-1``: no label in that scheme).
    joint
        Joint group per sample (same labels in every scheme).
    table
        Joint groups x schemes coarse class index.
    """

    keys: list[str]
    names: list[list[str]]
    codes: np.ndarray
    joint: np.ndarray
    table: np.ndarray

    @property
    def n_coarse(self) -> list[int]:
        """Coarse classes per scheme."""
        return [len(n) for n in self.names]

    @property
    def joint_names(self) -> list[str]:
        """``"loop|even"``-style name of each joint group (``NA`` where a scheme has no label)."""
        return ["|".join(MISSING if c < 0 else self.names[s][c] for s, c in enumerate(row)) for row in self.table]


def check_coarse_labels(col: pd.Series, coarse_key: str) -> pd.Categorical:
    """Coarse labels as a categorical without unused categories; missing or str-colliding labels are errors."""
    if col.isna().any():
        raise ValueError(f"adata.obs[{coarse_key!r}] has {int(col.isna().sum())} missing labels; fill or drop them.")
    coarse = pd.Categorical(col).remove_unused_categories()
    names = pd.Series([str(c) for c in coarse.categories])
    if names.duplicated().any():
        clash = sorted(set(names[names.duplicated()]))
        groups = [[c for c in coarse.categories if str(c) == n] for n in clash]
        raise ValueError(
            f"adata.obs[{coarse_key!r}] mixes labels that are the same once written as text: "
            f"{', '.join(' and '.join(repr(c) for c in g) for g in groups[:5])}; make the column one type, e.g. "
            f"adata.obs[{coarse_key!r}] = adata.obs[{coarse_key!r}].astype(str)."
        )
    return coarse


def as_keys(coarse_key: str | Sequence[str]) -> list[str]:
    """``coarse_key`` as a list of columns (one scheme: a one-element list)."""
    if isinstance(coarse_key, str):
        return [coarse_key]
    if not isinstance(coarse_key, Sequence) or not coarse_key or not all(isinstance(k, str) for k in coarse_key):
        raise TypeError(
            f"coarse_key={coarse_key!r} must be an obs column name or a non-empty list of them (several schemes)."
        )
    if len(set(coarse_key)) != len(coarse_key):
        raise ValueError(f"coarse_key={list(coarse_key)!r} names a column twice.")
    return list(coarse_key)


def coarse_schemes(obs: pd.DataFrame, keys: list[str]) -> CoarseSchemes:
    """Read and check the coarse labels of every scheme.

    With one scheme every sample needs a label; with several, a label may be missing (NaN) in some schemes but
    every sample needs one in at least one scheme.
    """
    for key in keys:
        if key not in obs:
            raise KeyError(f"coarse_key {key!r} is not a column of adata.obs (columns: {list(obs.columns)}).")
    names, codes = [], []
    for key in keys:
        col = obs[key]
        present = col.notna().to_numpy()
        if len(keys) == 1 or not present.any():
            cat = check_coarse_labels(col, key)  # the single-scheme rule (and a column with no labels at all)
        else:
            cat = check_coarse_labels(col[present], key)
        cat_full = pd.Categorical(col.astype(object).where(col.notna(), None), categories=cat.categories)
        names.append([str(c) for c in cat.categories])
        codes.append(np.asarray(cat_full.codes, dtype=np.int64))
    code_array = np.stack(codes, axis=1)
    unlabelled: np.ndarray = np.asarray((code_array < 0).all(axis=1), dtype=bool)
    if unlabelled.any():
        raise ValueError(
            f"{int(unlabelled.sum())} cells have no label in any of the coarse schemes {keys} (e.g. "
            f"{list(obs.index[unlabelled][:3])}); give them a label in one scheme or drop them."
        )
    joint, table = joint_groups(code_array)
    return CoarseSchemes(keys=keys, names=names, codes=code_array, joint=joint, table=table)


def check_children_fit(
    sizes: Sequence[int] | np.ndarray, names: Sequence[str], children: Sequence[float] | np.ndarray, why: str
) -> None:
    """Refuse fine classes a coarse class cannot hold: more children than it has cells (samples).

    Parameters
    ----------
    sizes
        Cells per coarse class.
    names
        The coarse class names.
    children
        Fine classes each coarse class must hold (a prior may give fractions, e.g. ``n_fine / n_coarse``).
    why
        Where the counts come from, for the message (e.g. ``"children_prior='uniform' (n_fine=60 / 4 coarse
        classes)"``).

    Raises
    ------
    falcon_sc.errors.DegenerateInputError
        Naming every such class with its size and the children asked, before any training.
    """
    over = [(n, int(s), float(c)) for n, s, c in zip(names, sizes, children, strict=True) if c > s]
    if not over:
        return
    listed = ", ".join(f"{n!r} has {s} cell{'s' if s != 1 else ''} for {c:g} fine classes" for n, s, c in over[:10])
    raise DegenerateInputError(
        f"{why} asks more fine classes than cells of {len(over)} coarse class{'es' if len(over) > 1 else ''}: "
        f"{listed}{' ...' if len(over) > 10 else ''}. A coarse class can hold at most one fine class per cell: "
        "lower n_fine, give the counts per class (a children_prior mapping, or n_fine as a mapping), or use "
        "children_prior='size' (children in proportion to the class sizes)."
    )
