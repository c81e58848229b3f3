"""Where FALCON results live in an AnnData: every key written, the writers, and the reader ``tl`` and ``pl`` share.

A run of :func:`falcon_sc.tl.refine` (or :meth:`~falcon_sc.FalconModel.predict`, or
:func:`~falcon_sc.tl.refine_images`) under ``key_added`` writes

- ``obs``: ``key_added`` (fine label, categorical, categories in the order of the relation's rows),
  ``{key_added}_confidence``, ``{key_added}_outside_parent`` and, when the run has them,
  ``{key_added}_neighbour_coarse``, ``{key_added}_warm_start`` and ``{key_added}_coarse`` (predicted coarse class);
- ``obsm``: ``{key_added}_probs`` (columns: the relation's rows) and ``{key_added}_embedding``;
- ``uns[key_added]``: ``relations`` (fine x coarse 0/1 table, rows ordered by parent then name), ``fine_classes``
  (parent, cells, mean confidence), ``scheme_relations`` (several coarse schemes), then the run's records
  ``history``, ``children_history``, ``partition_choice``, ``n_fine_estimate``, ``n_fine_evidence``,
  ``n_fine_threshold`` and ``params``.

:func:`falcon_sc.tl.fine_markers` writes ``uns[f"{key}_markers"]`` (``markers`` and ``params``).
:func:`falcon_sc.tl.mixed_lineage` (``inplace=True``) adds columns to ``uns[key]["fine_classes"]`` and, with
``doublets=True``, ``obs[f"{key}_doublet_score"]`` and ``obs[f"{key}_predicted_doublet"]``.

This module imports no other part of the package than :mod:`falcon_sc.core`: models, ``tl`` and ``pl`` import it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scanpy import logging as logg

from .core.labels import restricted_probs

__all__ = [
    "WRITTEN_OBSM_SUFFIXES",
    "WRITTEN_OBS_SUFFIXES",
    "FalconResults",
    "check_key_added",
    "check_obs_key",
    "fine_order",
    "history_table",
    "is_markers_of",
    "markers_key",
    "missing_results",
    "partition_choice",
    "read_markers",
    "read_results",
    "relations_table",
    "uns_params",
    "write_fit_extras",
    "write_labels",
    "write_markers",
    "written_keys",
]

#: suffixes of the ``obs`` columns a FALCON run writes (after ``key_added``)
WRITTEN_OBS_SUFFIXES = ("", "_confidence", "_outside_parent", "_warm_start", "_coarse", "_neighbour_coarse")
#: suffixes of the ``obsm`` entries a FALCON run writes (after ``key_added``)
WRITTEN_OBSM_SUFFIXES = ("_probs", "_embedding")

#: what :class:`FalconResults` reads from ``obs`` and ``obsm``: name -> (slot, suffix after the key)
_CELL_FIELDS: dict[str, tuple[str, str]] = {
    "labels": ("obs", ""),
    "confidence": ("obs", "_confidence"),
    "outside_parent": ("obs", "_outside_parent"),
    "warm_start": ("obs", "_warm_start"),
    "predicted_coarse": ("obs", "_coarse"),
    "neighbour_coarse": ("obs", "_neighbour_coarse"),
    "probs": ("obsm", "_probs"),
    "embedding": ("obsm", "_embedding"),
}
#: entries of ``uns[key]`` and the type each must have (``None``: any)
_UNS_FIELDS: dict[str, type | None] = {
    "relations": pd.DataFrame,
    "fine_classes": pd.DataFrame,
    "scheme_relations": Mapping,
    "history": None,
    "children_history": None,
    "partition_choice": pd.DataFrame,
    "n_fine_estimate": pd.DataFrame,
    "n_fine_evidence": pd.DataFrame,
    "n_fine_threshold": None,
    "params": Mapping,
    "conflicts": pd.DataFrame,
}


# ---------------------------------------------------------------------- keys
def written_keys(key_added: str) -> dict[str, list[str]]:
    """Every key a FALCON run under ``key_added`` may write, per slot of the AnnData.

    Examples
    --------
    >>> from falcon_sc._layout import written_keys
    >>> written_keys("falcon")["obsm"]
    ['falcon_probs', 'falcon_embedding']
    """
    return {
        "obs": [f"{key_added}{suffix}" for suffix in WRITTEN_OBS_SUFFIXES],
        "obsm": [f"{key_added}{suffix}" for suffix in WRITTEN_OBSM_SUFFIXES],
        "uns": [key_added],
    }


def check_key_added(key_added: Any, *, coarse_keys: Sequence[str | None], batch_key: str | None) -> None:
    """Refuse a ``key_added`` that is no name or whose written ``obs`` columns would overwrite the user's columns.

    Every entry point that writes results (``refine``, ``refine_images``, ``FalconModel.write_fit_results``,
    ``FalconModel.predict``) runs this check before any work.

    Parameters
    ----------
    key_added
        Prefix of the keys to write.
    coarse_keys
        Columns of ``obs`` with coarse labels the run reads (``None`` entries are skipped).
    batch_key
        Column of ``obs`` with the batches, or ``None``.

    Raises
    ------
    TypeError
        ``key_added`` is not a string.
    ValueError
        ``key_added`` is empty, or one of the ``obs`` columns it writes (:data:`WRITTEN_OBS_SUFFIXES`) is a coarse
        key or the batch key.
    """
    if not isinstance(key_added, str):
        raise TypeError(
            f"key_added={key_added!r} must be a non-empty string (the prefix of the keys written), "
            f"got {type(key_added).__name__}."
        )
    if not key_added:
        raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
    written = written_keys(key_added)["obs"]
    keys = [coarse_keys] if isinstance(coarse_keys, str) else list(coarse_keys)
    for key in keys:
        if key is not None and key in written:
            raise ValueError(
                f"key_added={key_added!r} would overwrite the coarse labels: refine writes obs columns {written} and "
                f"coarse_key={key!r} is one of them, so it would overwrite adata.obs[{key!r}]; choose another "
                "key_added."
            )
    if batch_key is not None and batch_key in written:
        raise ValueError(
            f"key_added={key_added!r} would overwrite the batches: refine writes obs columns {written} and "
            f"batch_key={batch_key!r} is one of them, so it would overwrite adata.obs[{batch_key!r}]; choose another "
            "key_added."
        )


def check_obs_key(name: str, value: Any, obs: pd.DataFrame | None = None) -> str:
    """The one check of a key argument that names an ``obs`` column (``coarse_key``, ``batch_key``, ...).

    Parameters
    ----------
    name
        Name of the argument, for the message.
    value
        What was passed.
    obs
        ``adata.obs``: the column must exist there (``None``: only the type is checked).

    Returns
    -------
    ``value``.

    Raises
    ------
    TypeError
        ``value`` is not a string (``None``, a number, a list).
    ValueError
        ``value`` is the empty string.
    KeyError
        ``value`` is not a column of ``obs`` (the message lists the columns).
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{name}={value!r} must be the name of a column of adata.obs (a string), got {type(value).__name__}."
        )
    if not value:
        raise ValueError(f"{name}='' must be the name of a column of adata.obs (a non-empty string).")
    if obs is not None and value not in obs.columns:
        raise KeyError(f"{name}={value!r} is not a column of adata.obs (columns: {list(obs.columns)[:30]}).")
    return value


# ---------------------------------------------------------------------- fine classes: parents, order, relation
def _parents(
    relation: np.ndarray, coarse_names: Sequence[str], schemes: Mapping[str, Any] | None
) -> tuple[np.ndarray, list[str]]:
    """Parent of each fine class and the coarse names it indexes (the first scheme's with several)."""
    if schemes is None:
        return np.asarray(relation).argmax(axis=1), [str(c) for c in coarse_names]
    return np.asarray(schemes["relations"][0]).argmax(axis=1), [str(c) for c in schemes["names"][0]]


def fine_order(relation: np.ndarray, fine_names: Sequence[str], schemes: Mapping[str, Any] | None = None) -> np.ndarray:
    """Order of the fine classes in every table written: by parent (coarse class), then by name.

    ``relation`` is fine x coarse (the joint groups' with several schemes, whose first scheme then gives the parent;
    ``schemes`` as in :func:`write_labels`).
    """
    parent = _parents(relation, [], schemes)[0]
    return np.lexsort((np.asarray(fine_names), parent))


def relations_table(
    relation: np.ndarray,
    fine_names: Sequence[str],
    coarse_names: Sequence[str],
    schemes: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The fine x coarse 0/1 table ``uns[key]["relations"]``, rows in :func:`fine_order`.

    With several coarse schemes, the first scheme's table.

    Examples
    --------
    >>> import numpy as np
    >>> from falcon_sc._layout import relations_table
    >>> relations_table(np.array([[0, 1], [1, 0], [0, 1]]), ["B/2", "A/1", "B/1"], ["A", "B"])
         A  B
    A/1  1  0
    B/1  0  1
    B/2  0  1
    """
    return _scheme_tables(relation, fine_names, coarse_names, schemes)[0]


def _scheme_tables(
    relation: np.ndarray, fine_names: Sequence[str], coarse_names: Sequence[str], schemes: Mapping[str, Any] | None
) -> list[pd.DataFrame]:
    order = fine_order(relation, fine_names, schemes)
    index = [str(n) for n in np.asarray(fine_names)[order]]
    if schemes is None:
        return [pd.DataFrame(np.asarray(relation)[order].astype(np.int8), index=index, columns=list(coarse_names))]
    return [
        pd.DataFrame(np.asarray(r)[order].astype(np.int8), index=index, columns=list(n))
        for r, n in zip(schemes["relations"], schemes["names"], strict=True)
    ]


# ---------------------------------------------------------------------- writing
def added_keys(adata: ad.AnnData, key_added: str) -> str:
    """The keys of :func:`written_keys` that ``adata`` holds, one per line in scanpy's ``added`` style."""
    keys = written_keys(key_added)
    lines = [f"    'obs[{k!r}]'" for k in keys["obs"] if k in adata.obs.columns]
    lines += [f"    'obsm[{k!r}]'" for k in keys["obsm"] if k in adata.obsm]
    lines += [f"    'uns[{k!r}]'" for k in keys["uns"] if k in adata.uns]
    return "\n".join(lines)


def _warn_overwrite(adata: ad.AnnData, obs: list[str], obsm: list[str], uns: list[str]) -> None:
    """One warning naming every key about to be overwritten."""
    present = [
        *(f"adata.obs[{k!r}]" for k in obs if k in adata.obs.columns),
        *(f"adata.obsm[{k!r}]" for k in obsm if k in adata.obsm),
        *(f"adata.uns[{k!r}]" for k in uns if k in adata.uns),
    ]
    if present:
        logg.warning("overwriting " + ", ".join(present))


def write_labels(
    adata: ad.AnnData,
    key_added: str,
    *,
    probs: np.ndarray,
    embedding: np.ndarray,
    coarse: np.ndarray,
    relation: np.ndarray,
    fine_names: Sequence[str],
    coarse_names: Sequence[str],
    schemes: Mapping[str, Any] | None = None,
    neighbour_coarse: np.ndarray | None = None,
    warm_start: pd.Categorical | np.ndarray | None = None,
    coarse_predicted: bool = False,
) -> None:
    """Write a run's labels: its ``obs`` and ``obsm`` keys, and ``uns[key_added]`` with the relation.

    ``uns[key_added]`` gets ``relations`` and ``fine_classes`` (and ``scheme_relations`` with several coarse
    schemes). Each cell's label is its most probable fine class among the children of its coarse class. Keys that
    exist are overwritten, after one warning that names them all. Call :func:`write_fit_extras` next for the run's
    records.

    Parameters
    ----------
    adata
        The cells the probabilities belong to (same order).
    key_added
        Prefix of the keys (checked beforehand with :func:`check_key_added`).
    probs
        Cells x fine classes, in the order of ``fine_names`` (NaN and infinite values count as 0).
    embedding
        Cells x dimensions, the network's representation.
    coarse
        Coarse class of each cell, as codes into ``coarse_names`` (the joint groups with several schemes).
    relation
        Fine x coarse 0/1, the fine classes each coarse class (``coarse_names``) allows.
    fine_names, coarse_names
        Names of the fine classes (the rows of ``relation``, the columns of ``probs``) and of the coarse classes.
    schemes
        Several coarse schemes: ``{"keys": [column per scheme], "names": [coarse names per scheme], "relations":
        [fine x coarse 0/1 per scheme]}``; the first scheme gives the parents and ``uns[key_added]["relations"]``,
        every scheme a table of ``uns[key_added]["scheme_relations"]``.
    neighbour_coarse
        Coarse class (code into ``coarse_names``) most of each cell's neighbours carry, or ``None``: written to
        ``obs[f"{key_added}_neighbour_coarse"]``, and a cell whose neighbours carry another class than its own is
        flagged in ``obs[f"{key_added}_outside_parent"]`` too.
    warm_start
        Fine label of each cell in the warm start (``obs[f"{key_added}_warm_start"]``, categorical), or ``None``.
    coarse_predicted
        ``coarse`` was predicted (no coarse labels were given): written to ``obs[f"{key_added}_coarse"]``.
    """
    relation = np.asarray(relation).astype(bool)
    coarse = np.asarray(coarse)
    parent, parent_names = _parents(relation, coarse_names, schemes)
    restricted = restricted_probs(probs, relation, coarse)
    label = restricted.argmax(axis=1)
    finite = np.where(np.isfinite(probs), probs, 0)
    lost = int((~(np.where(relation[:, coarse].T, finite, 0) > 0).any(axis=1)).sum())
    if lost:
        logg.warning(
            f"{lost} cells gave no probability to any child of their coarse class: they get its children with equal "
            "confidence (the first child as label); training may have diverged, try a smaller lr"
        )
    names = np.asarray(fine_names)
    sizes = np.bincount(label, minlength=relation.shape[0])
    order = fine_order(relation, fine_names, schemes)
    ordered_names = [str(n) for n in names[order]]
    extra = {"_neighbour_coarse": neighbour_coarse is not None, "_warm_start": warm_start is not None}
    extra["_coarse"] = coarse_predicted
    obs_keys = [f"{key_added}{s}" for s in ("", "_confidence", "_outside_parent", *(s for s in extra if extra[s]))]
    _warn_overwrite(adata, obs_keys, written_keys(key_added)["obsm"], [key_added])

    adata.obs[key_added] = pd.Categorical(names[label], categories=ordered_names)
    confidence = restricted[np.arange(len(label)), label].astype(np.float32)
    adata.obs[f"{key_added}_confidence"] = confidence
    top = finite.argmax(axis=1)  # the unrestricted prediction falls outside the cell's coarse class
    outside = ~relation[top, coarse] & (finite.max(axis=1) > 0)
    adata.obs[f"{key_added}_outside_parent"] = outside
    adata.obsm[f"{key_added}_probs"] = probs[:, order].astype(np.float32)
    adata.obsm[f"{key_added}_embedding"] = embedding.astype(np.float32)
    tables = _scheme_tables(relation, fine_names, coarse_names, schemes)
    fine_classes = pd.DataFrame(
        {
            "parent": [parent_names[p] for p in parent[order]],
            "n_cells": sizes[order],
            "mean_confidence": [float(confidence[label == f].mean()) if sizes[f] else np.nan for f in order],
        },
        index=ordered_names,
    )
    adata.uns[key_added] = {"relations": tables[0], "fine_classes": fine_classes}
    if schemes is not None:
        adata.uns[key_added]["scheme_relations"] = dict(zip(schemes["keys"], tables, strict=True))
    _write_cell_extras(adata, key_added, coarse, coarse_names, neighbour_coarse, warm_start, coarse_predicted)
    used = int((sizes > 0).sum())
    if used < relation.shape[0]:
        logg.warning(
            f"only {used} of {relation.shape[0]} fine classes hold cells (partial collapse); see "
            f"uns[{key_added!r}]['history']['fine_in_use']. The data may hold fewer distinct groups than n_fine asks "
            "for: try a smaller n_fine or n_fine='auto'"
        )


def _write_cell_extras(
    adata: ad.AnnData,
    key_added: str,
    coarse: np.ndarray,
    coarse_names: Sequence[str],
    neighbour_coarse: np.ndarray | None,
    warm_start: pd.Categorical | np.ndarray | None,
    coarse_predicted: bool,
) -> None:
    """The ``obs`` columns some runs add: neighbour vote, warm start, predicted coarse class."""
    categories = pd.Index([str(c) for c in coarse_names])
    if neighbour_coarse is not None:  # also flag cells whose neighbours carry another coarse label
        vote = np.asarray(neighbour_coarse, dtype=np.int64)
        adata.obs[f"{key_added}_neighbour_coarse"] = pd.Categorical.from_codes(vote, categories)
        outside = adata.obs[f"{key_added}_outside_parent"].to_numpy(dtype=bool) | (vote != coarse)
        adata.obs[f"{key_added}_outside_parent"] = outside
    if warm_start is not None:
        warm = warm_start if isinstance(warm_start, pd.Categorical) else pd.Categorical(np.asarray(warm_start))
        adata.obs[f"{key_added}_warm_start"] = warm
    if coarse_predicted:
        adata.obs[f"{key_added}_coarse"] = pd.Categorical.from_codes(np.asarray(coarse, dtype=np.int64), categories)


def history_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per-epoch training records as ``uns[key]["history"]`` holds them (one row per epoch, no ``children``)."""
    return pd.DataFrame([{k: v for k, v in r.items() if k != "children"} for r in records])


def partition_choice(use_warm: np.ndarray, scores: np.ndarray, coarse_names: Sequence[str]) -> pd.DataFrame:
    """The guard's choice per coarse class (``uns[key]["partition_choice"]``): kept partition and both silhouettes.

    ``scores`` is coarse classes x 2: the silhouette of the trained partition, then of the warm start's.
    """
    return pd.DataFrame(
        {
            "kept": np.where(np.asarray(use_warm, dtype=bool), "warm start", "trained"),
            "silhouette_trained": scores[:, 0],
            "silhouette_warm_start": scores[:, 1],
        },
        index=list(coarse_names),
    )


def uns_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as ``uns`` stores them, writable to h5ad: ``None`` values left out, lists as arrays, keys str.

    Examples
    --------
    >>> from falcon_sc._layout import uns_params
    >>> uns_params({"hidden": [64, 64], "checkpoint_path": None, "children_prior": {1: 2}})
    {'hidden': array([64, 64]), 'children_prior': {'1': 2}}
    """
    out: dict[str, Any] = {}
    for k, v in copy.deepcopy(dict(params)).items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            v = {str(kk): vv for kk, vv in v.items()}
        elif isinstance(v, list | tuple):
            v = np.asarray(v)
        out[str(k)] = v
    return out


def write_fit_extras(
    adata: ad.AnnData,
    key_added: str,
    *,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] | None = None,
    partition_choice: pd.DataFrame | None = None,
    n_fine_estimate: Mapping[str, Any] | None = None,
) -> None:
    """Add a run's records to ``uns[key_added]`` (written by :func:`write_labels` just before).

    Parameters
    ----------
    adata
        The AnnData :func:`write_labels` wrote into.
    key_added
        Its ``key_added``.
    params
        The run's parameters, stored through :func:`uns_params` as ``params``.
    history
        Per-epoch training records (dicts; ``children``: children per coarse class): ``history``
        (:func:`history_table`) and, when every record has ``children``, ``children_history`` (epochs x coarse
        classes). ``None`` (a prediction): neither.
    partition_choice
        The guard's choice (:func:`partition_choice`), or ``None`` when the guard did not run. The coarse classes
        that kept the warm start are logged.
    n_fine_estimate
        ``{"table": ..., "evidence": ..., "threshold": ...}`` of ``n_fine="auto"`` (or known counts): written as
        ``n_fine_estimate``, ``n_fine_evidence`` and ``n_fine_threshold``.
    """
    uns = adata.uns[key_added]
    if history is not None:
        uns["history"] = history_table(history)
        if len(history) and all("children" in r for r in history):
            uns["children_history"] = np.array([r["children"] for r in history], dtype=np.int64)
    if partition_choice is not None:
        uns["partition_choice"] = partition_choice
        kept = [str(c) for c, how in partition_choice["kept"].items() if how == "warm start"]
        if kept:
            logg.info(f"    warm-start partition kept (better separated than the trained one) in: {', '.join(kept)}")
    if n_fine_estimate is not None:
        uns["n_fine_estimate"] = n_fine_estimate["table"]
        uns["n_fine_evidence"] = n_fine_estimate["evidence"]
        uns["n_fine_threshold"] = n_fine_estimate["threshold"]
    uns["params"] = uns_params(params)


# ---------------------------------------------------------------------- reading
def missing_results(key: str, missing: Sequence[str]) -> KeyError:
    """The error of every reader when ``key`` holds no (or not all the needed) FALCON results."""
    what = (
        f"{missing[0]} is missing" if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]} are missing"
    )
    return KeyError(
        f"no FALCON results under key {key!r} ({what}): run fal.tl.refine(adata, coarse_key, n_fine, "
        f"key_added={key!r}) first, or pass the key_added you used as key="
    )


def _where(key: str, name: str) -> str:
    """Where field ``name`` of the results under ``key`` lives, as the messages name it."""
    if name in _CELL_FIELDS:
        slot, suffix = _CELL_FIELDS[name]
        return f"adata.{slot}[{key + suffix!r}]"
    if _UNS_FIELDS.get(name) is pd.DataFrame:
        return f"adata.uns[{key!r}]: the {name!r} table"
    return f"adata.uns[{key!r}][{name!r}]"


@dataclass(frozen=True)
class FalconResults:
    """The FALCON results under one key of an AnnData, read by :func:`read_results` (nothing is copied).

    Fields of the run are attributes: ``labels`` (``obs[key]``), ``confidence``, ``outside_parent``, ``warm_start``,
    ``predicted_coarse``, ``neighbour_coarse`` (``obs`` columns), ``probs``, ``embedding`` (``obsm``),
    ``relations``, ``fine_classes``, ``scheme_relations``, ``history``, ``children_history``, ``partition_choice``,
    ``n_fine_estimate``, ``n_fine_evidence``, ``n_fine_threshold``, ``params`` (entries of ``uns[key]``). Reading one
    that is missing raises the KeyError of :func:`missing_results`; :meth:`get` returns ``None`` instead.
    """

    adata: ad.AnnData = field(repr=False)
    key: str

    @property
    def uns(self) -> Mapping[str, Any]:
        """``adata.uns[key]`` (empty when absent)."""
        res = self.adata.uns.get(self.key)
        return res if isinstance(res, Mapping) else {}

    def has(self, name: str) -> bool:
        """Whether field ``name`` was written (and, for ``uns`` entries, has the type the layout gives it)."""
        if name in _CELL_FIELDS:
            slot, suffix = _CELL_FIELDS[name]
            column = self.key + suffix
            return column in (self.adata.obs.columns if slot == "obs" else self.adata.obsm)
        if name not in _UNS_FIELDS:
            raise ValueError(f"{name!r} is not a field of FALCON results: choose among {[*_CELL_FIELDS, *_UNS_FIELDS]}")
        kind = _UNS_FIELDS[name]
        return name in self.uns and (kind is None or isinstance(self.uns[name], kind))

    def get(self, name: str) -> Any:
        """Field ``name``, or ``None`` when it was not written."""
        if not self.has(name):
            return None
        if name in _CELL_FIELDS:
            slot, suffix = _CELL_FIELDS[name]
            if slot == "obs":
                return self.adata.obs[self.key + suffix]
            return np.asarray(self.adata.obsm[self.key + suffix])
        return self.uns[name]

    def require(self, *names: str) -> FalconResults:
        """Check that every field of ``names`` was written; the KeyError lists all that are missing."""
        missing = [_where(self.key, n) for n in names if not self.has(n)]
        uns_missing = any(n in _UNS_FIELDS for n in names) and not isinstance(self.adata.uns.get(self.key), Mapping)
        if uns_missing:  # name the entry as a whole rather than each of its parts
            missing = [f"adata.uns[{self.key!r}]"] + [m for m in missing if not m.startswith("adata.uns[")]
        if missing:
            raise missing_results(self.key, missing)
        return self

    def _field(self, name: str) -> Any:
        return self.require(name).get(name)

    # obs / obsm
    @property
    def labels(self) -> pd.Series:
        """``obs[key]``: the fine label of each cell."""
        return self._field("labels")

    @property
    def outside_parent(self) -> np.ndarray:
        """``obs[f"{key}_outside_parent"]`` as booleans."""
        return self._field("outside_parent").to_numpy().astype(bool)

    @property
    def probs(self) -> np.ndarray:
        """``obsm[f"{key}_probs"]``: cells x fine classes (the rows of :attr:`relations`)."""
        return self._field("probs")

    @property
    def embedding(self) -> np.ndarray:
        """``obsm[f"{key}_embedding"]``: the network's representation of each cell."""
        return self._field("embedding")

    # uns
    @property
    def relations(self) -> pd.DataFrame:
        """Fine x coarse 0/1 table (rows ordered by parent, then name)."""
        return self._field("relations")

    @property
    def fine_classes(self) -> pd.DataFrame:
        """Parent, number of cells and mean confidence of each fine class."""
        return self._field("fine_classes")

    @property
    def history(self) -> pd.DataFrame:
        """Per-epoch training record (a table)."""
        hist = self._field("history")
        return hist if isinstance(hist, pd.DataFrame) else pd.DataFrame(hist)

    @property
    def children_history(self) -> np.ndarray:
        """Epochs x coarse classes: children of each coarse class after each epoch."""
        return np.asarray(self._field("children_history"))

    @property
    def params(self) -> Mapping[str, Any]:
        """Parameters of the run (empty when none were stored)."""
        params = self.get("params")
        return params if params is not None else {}

    @property
    def coarse_key(self) -> str | None:
        """Column of ``obs`` with the coarse labels of the run (``None``: several schemes, or not stored)."""
        key = self.params.get("coarse_key")
        return key if isinstance(key, str) else None

    @property
    def coarse_names(self) -> list[str]:
        """Coarse classes, the columns of :attr:`relations`."""
        return [str(c) for c in self.relations.columns]

    @property
    def fine_names(self) -> list[str]:
        """Fine classes, the rows of :attr:`relations` (the columns of :attr:`probs`)."""
        return [str(f) for f in self.relations.index]

    def fine_labels(self) -> pd.Series:
        """``obs[key]`` as strings; cells without a label are an error."""
        col = self.labels
        if col.isna().any():
            raise ValueError(
                f"adata.obs[{self.key!r}] has {int(col.isna().sum())} cells without a fine label; drop them or rerun "
                "refine."
            )
        return col.astype(str)

    def parents(self) -> dict[str, str]:
        """Parent coarse class of each fine class (rows of :attr:`relations`, in order); orphans are an error."""
        relations = self.relations
        values = np.asarray(relations.to_numpy(), dtype=float)
        orphans = [str(f) for f, row in zip(relations.index, values, strict=True) if not (row > 0).any()]
        if orphans:
            raise ValueError(f"adata.uns[{self.key!r}]['relations'] has fine classes without a parent: {orphans[:10]}.")
        columns = relations.columns.astype(str)
        return {str(f): columns[row.argmax()] for f, row in zip(relations.index, values, strict=True)}

    def fine_class_tables(self) -> list[tuple[str, Any, str]]:
        """Every table of ``uns[key]`` indexed by the fine classes, as ``(where, container, name)``.

        The table is ``container[name]``: ``relations``, ``fine_classes``, each of ``scheme_relations``.
        """
        res = self.uns
        out: list[tuple[str, Any, str]] = [(f"adata.uns[{self.key!r}]['relations'].index", res, "relations")]
        if isinstance(res.get("fine_classes"), pd.DataFrame):
            out.append((f"adata.uns[{self.key!r}]['fine_classes'].index", res, "fine_classes"))
        schemes = res.get("scheme_relations")
        for scheme, table in schemes.items() if isinstance(schemes, Mapping) else ():
            if isinstance(table, pd.DataFrame):
                where = f"adata.uns[{self.key!r}]['scheme_relations'][{scheme!r}].index"
                out.append((where, schemes, scheme))
        return out


def read_results(adata: Any, key: str, *, need: Iterable[str] = ("relations",)) -> FalconResults:
    """The FALCON results under ``key``, after checking that every field in ``need`` was written.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine` (or predict, or refine_images).
    key
        Its ``key_added``.
    need
        Fields the caller reads (names of :class:`FalconResults` fields, e.g. ``"relations"``, ``"labels"``,
        ``"probs"``); ``uns[key]`` itself is needed only when one of them lives there.

    Raises
    ------
    TypeError
        ``adata`` is not an AnnData, or ``key`` not a string.
    ValueError
        ``key`` is the empty string.
    KeyError
        A needed field is missing: one error listing them all, naming ``key`` and what to run.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> from falcon_sc._layout import read_results
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> read_results(adata, "falcon")
    Traceback (most recent call last):
    ...
    KeyError: "no FALCON results under key 'falcon' (adata.uns['falcon'] is missing): run fal.tl.refine(...) first..."
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if not isinstance(key, str):
        raise TypeError(f"key must be a str (the key_added of fal.tl.refine), got {key!r}.")
    if not key:
        raise ValueError("key must be a str (the key_added of fal.tl.refine), not the empty string ''.")
    return FalconResults(adata, key).require(*need)


# ---------------------------------------------------------------------- marker genes (fal.tl.fine_markers)
def markers_key(key: str) -> str:
    """Default ``uns`` key of :func:`~falcon_sc.tl.fine_markers` for the results under ``key``."""
    return f"{key}_markers"


def write_markers(adata: ad.AnnData, key_added: str, table: pd.DataFrame, params: Mapping[str, Any]) -> None:
    """``uns[key_added] = {"markers": table, "params": params}`` (a warning when it exists)."""
    if key_added in adata.uns:
        logg.warning(f"overwriting adata.uns[{key_added!r}]")
    adata.uns[key_added] = {"markers": table.copy(), "params": dict(params)}


def is_markers_of(entry: Any, key: str) -> bool:
    """Whether a ``uns`` entry holds :func:`~falcon_sc.tl.fine_markers` results for the results under ``key``."""
    return (
        isinstance(entry, Mapping)
        and isinstance(entry.get("markers"), pd.DataFrame)
        and "group" in entry["markers"]
        and isinstance(entry.get("params"), Mapping)
        and str(entry["params"].get("key")) == key
    )


def read_markers(adata: ad.AnnData, key: str, name: str | None = None) -> Mapping[str, Any]:
    """``uns[name]`` (default :func:`markers_key`) after checking it holds the marker genes of the results ``key``."""
    name = markers_key(key) if name is None else name
    stored = adata.uns.get(name)
    if not isinstance(stored, Mapping) or "markers" not in stored or "params" not in stored:
        raise KeyError(
            f"no marker genes under adata.uns[{name!r}]: run fal.tl.fine_markers(adata, key={key!r}) first, "
            "or pass the key_added you used there as markers_key="
        )
    return stored
