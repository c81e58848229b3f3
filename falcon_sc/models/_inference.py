"""What :meth:`FalconModel.predict <falcon_sc.FalconModel.predict>` computes for new cells, one or several schemes.

:class:`Inference` holds the probabilities, the embedding and the coarse groups the labels are restricted by.
With several coarse schemes (:func:`scheme_inference`), each new cell is read in every scheme whose column it
carries (a missing column or a missing value: no label there). Its fine classes are those that are a child of its
label in every scheme that labels it, as at fit time. Its within-class inputs are those of a *completed* group
(labels in every scheme): its labels where it has them, and where it lacks some, the completion whose allowed fine
classes receive the highest total probability (as the coarse class of an unlabelled cell is predicted with one
scheme). A cell with no label in any scheme is restricted to its completed group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._coarse import MISSING
from ..core.schemes import joint_groups, joint_relation
from ..pp import FeatureTransform

#: ``(inputs, groups) -> (probabilities, embedding)`` of a fitted model
Forward = Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Inference:
    """A prediction before it is written.

    Attributes
    ----------
    probs, embedding
        Cells x fine classes (the model's order) and cells x embedding dimensions.
    coarse
        Group of each cell (codes into ``coarse_names``) whose allowed fine classes (``relation``) its label is
        chosen among.
    coarse_names, relation
        The groups' names and the fine x groups 0/1 table.
    predicted
        The coarse class (with several schemes: the completed joint group) predicted for every cell, written to
        ``obs[f"{key_added}_coarse"]``; ``None`` when every cell carried its coarse labels.
    """

    probs: np.ndarray
    embedding: np.ndarray
    coarse: np.ndarray
    coarse_names: list[str]
    relation: np.ndarray
    predicted: pd.Categorical | None = None


def coarse_codes_of(
    col: pd.Series, coarse_names: Sequence[str], key: str, *, allow_missing: bool = False
) -> np.ndarray:
    """Codes of the labels of ``col`` into ``coarse_names`` (``-1`` for a missing label with ``allow_missing``).

    Raises
    ------
    ValueError
        Missing labels (one scheme) or labels the model was not fitted on, naming the column and the fix.
    """
    missing = col.isna().to_numpy()
    if missing.any() and not allow_missing:
        raise ValueError(f"adata.obs[{key!r}] has {int(missing.sum())} missing labels; fill or drop them.")
    values = col.astype(object).where(~missing, None).to_numpy()
    unknown = sorted({str(v) for v in values[~missing]} - set(coarse_names))
    if unknown:
        raise ValueError(
            f"adata.obs[{key!r}] has coarse labels the model was not fitted on: {unknown[:10]}; the model knows "
            f"{list(coarse_names)}. Rename them, or pass coarse_key=None to predict the coarse class."
        )
    lookup = {c: i for i, c in enumerate(coarse_names)}
    return np.array([-1 if m else lookup[str(v)] for v, m in zip(values, missing, strict=True)], dtype=np.int64)


def scheme_columns(obs: pd.DataFrame, keys: Sequence[str], coarse_key: Any) -> list[str | None]:
    """The ``obs`` column read for each scheme (``None``: the cells carry no label in that scheme).

    ``coarse_key=None`` reads every fitted column ``obs`` has; a list gives one column (or ``None``) per scheme, in
    the fitted order.
    """
    if coarse_key is None:
        return [k if k in obs else None for k in keys]
    if isinstance(coarse_key, str) or not isinstance(coarse_key, Sequence) or len(coarse_key) != len(keys):
        raise TypeError(
            f"coarse_key={coarse_key!r}: the model was fitted on {len(keys)} coarse schemes {list(keys)}; pass a list "
            "of one obs column (or None: no labels) per scheme, in that order, or coarse_key=None for the fitted "
            "columns adata.obs has."
        )
    for column in coarse_key:
        if column is not None and (not isinstance(column, str) or column not in obs):
            raise KeyError(f"coarse_key entry {column!r} is not a column of adata.obs.")
    return list(coarse_key)


def scheme_labels(obs: pd.DataFrame, columns: Sequence[str | None], names: Sequence[Sequence[str]]) -> np.ndarray:
    """Cells x schemes coarse codes (``-1``: no label in that scheme)."""
    codes = np.full((len(obs), len(columns)), -1, dtype=np.int64)
    for s, column in enumerate(columns):
        if column is not None:
            codes[:, s] = coarse_codes_of(obs[column], names[s], column, allow_missing=True)
    return codes


def _consistent(
    codes: np.ndarray, table: np.ndarray, keys: Sequence[str], names: Sequence[Sequence[str]]
) -> np.ndarray:
    """Cells x completed groups: whether the group agrees with every label the cell carries."""
    agree = ((codes[:, None, :] < 0) | (codes[:, None, :] == table[None, :, :])).all(axis=2)
    lost = ~agree.any(axis=1)
    if lost.any():
        row = codes[lost][0]
        combo = ", ".join(
            f"{k}={MISSING if c < 0 else names[s][c]}" for s, (k, c) in enumerate(zip(keys, row, strict=True))
        )
        raise ValueError(
            f"{int(lost.sum())} cells carry a combination of coarse labels the model never saw together (e.g. "
            f"{combo}); "
            "the model has no within-class inputs for it. Set the label of one scheme to NaN for these cells, so "
            "that the model completes it, or refit on cells that hold this combination."
        )
    return agree


def scheme_inference(
    adata: ad.AnnData,
    record: Mapping[str, Any],
    codes: np.ndarray,
    transform: FeatureTransform,
    forward: Forward,
    input_kind: str,
) -> Inference:
    """Probabilities, embedding and restricting groups of the cells of ``adata`` under several coarse schemes.

    Parameters
    ----------
    adata
        The new cells.
    record
        The model's schemes: ``keys``, ``names``, ``relations`` (fine x coarse per scheme) and ``groups`` (the
        completed groups x schemes whose within-class inputs the transform holds).
    codes
        Cells x schemes coarse codes of the new cells (``-1``: no label), from :func:`scheme_labels`.
    transform
        The fitted preprocessing (its within-class components are those of ``record["groups"]``).
    forward
        The model's network: inputs and groups to probabilities and embedding.
    input_kind
        What the expression matrix holds.
    """
    keys, names = list(record["keys"]), [list(n) for n in record["names"]]
    relations = [np.asarray(r) for r in record["relations"]]
    table = np.asarray(record["groups"], dtype=np.int64)
    allowed = joint_relation(relations, table).astype(float)  # fine x completed groups
    agree = _consistent(codes, table, keys, names)
    group = agree.argmax(axis=1)  # the only completion of a fully labelled cell
    probs, emb = forward(transform.transform(adata, group, input_kind=input_kind), group)
    open_ = agree.sum(axis=1) > 1
    if open_.any():
        group = _complete(adata, transform, forward, input_kind, agree, open_, allowed, (probs, emb, group))
    labelled: np.ndarray = np.asarray((codes >= 0).any(axis=1), dtype=bool)
    restrict = np.where(labelled[:, None], codes, table[group])  # no label at all: the completed group
    coarse, joint = joint_groups(restrict)
    joint_names = ["|".join(MISSING if c < 0 else names[s][c] for s, c in enumerate(row)) for row in joint]
    predicted = None
    if (codes < 0).any():
        completed = ["|".join(names[s][c] for s, c in enumerate(row)) for row in table]
        predicted = pd.Categorical.from_codes(group, categories=pd.Index(completed))
    return Inference(probs, emb, coarse, joint_names, joint_relation(relations, joint), predicted)


def _complete(
    adata: ad.AnnData,
    transform: FeatureTransform,
    forward: Forward,
    input_kind: str,
    agree: np.ndarray,
    open_: np.ndarray,
    allowed: np.ndarray,
    first: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Completed group of each cell that lacks labels: the one whose allowed fine classes get the most probability.

    ``first`` holds the probabilities and embedding of the first pass and each cell's group there; the rows of the
    open cells are replaced in place by those of their chosen group's inputs.
    """
    probs, emb, group = first
    group = group.copy()
    if transform.use_rep is not None or transform.n_comps_within == 0 or transform.model_input == "hvg":
        score = np.where(agree, probs @ allowed, -np.inf)  # the inputs do not depend on the group: one pass
        return np.where(open_, score.argmax(axis=1), group)
    best = np.full(adata.n_obs, -np.inf)
    for g in np.flatnonzero(agree[open_].any(axis=0)):
        hypothesis = np.full(adata.n_obs, g, dtype=np.int64)
        p, e = forward(transform.transform(adata, hypothesis, input_kind=input_kind), hypothesis)
        score = np.where(open_ & agree[:, g], p @ allowed[:, g], -np.inf)
        better = score > best
        probs[better], emb[better], group[better], best[better] = p[better], e[better], g, score[better]
    return group
