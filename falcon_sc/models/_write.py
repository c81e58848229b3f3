"""Writing a fit's labels and records into an AnnData (the keys of :func:`falcon_sc.tl.refine`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scanpy import logging as logg

from ..core.labels import fine_class_names, restricted_probs
from ._pipeline import Outcome, Problem
from ._state import FittedState

#: suffixes of the ``obs`` columns :func:`falcon_sc.tl.refine` writes (after ``key_added``)
WRITTEN_OBS_SUFFIXES = ("", "_confidence", "_outside_parent", "_warm_start", "_coarse", "_neighbour_coarse")


def choice_table(fitted: FittedState, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kept": np.where(fitted.use_warm, "warm start", "trained"),
            "silhouette_trained": scores[:, 0],
            "silhouette_warm_start": scores[:, 1],
        },
        index=fitted.coarse_names,
    )


def check_key_added(key_added: Any, coarse_key: Any, batch_key: Any) -> None:
    """``key_added`` is a non-empty string whose written ``obs`` columns leave the coarse and batch columns alone."""
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
    written = [f"{key_added}{suffix}" for suffix in WRITTEN_OBS_SUFFIXES]
    keys = list(coarse_key) if isinstance(coarse_key, list | tuple) else [coarse_key]
    for key in keys:
        if key in written:
            raise ValueError(
                f"key_added={key_added!r} would overwrite the coarse labels: refine writes obs columns {written} "
                f"and coarse_key={key!r} is one of them; choose another key_added."
            )
    if batch_key is not None and batch_key in written:
        raise ValueError(
            f"key_added={key_added!r} would overwrite the batches: refine writes obs columns {written} and "
            f"batch_key={batch_key!r} is one of them; choose another key_added."
        )


def check_written_keys(key_added: str, coarse_key: str | list[str] | None, batch_key: str | None) -> None:
    """Refuse a ``key_added`` whose written ``obs`` columns would overwrite the coarse or batch column."""
    suffixes = ("confidence", "outside_parent", "warm_start", "coarse", "neighbour_coarse")
    written = {key_added, *(f"{key_added}_{s}" for s in suffixes)}
    keys = [coarse_key] if not isinstance(coarse_key, list | tuple) else list(coarse_key)
    for name, value in [*(("coarse_key", k) for k in keys), ("batch_key", batch_key)]:
        if value is not None and value in written:
            raise ValueError(
                f"key_added={key_added!r} would overwrite adata.obs[{value!r}] (the {name}); choose another key_added."
            )


def uns_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as ``uns`` stores them, writable to h5ad: ``None`` values left out, lists as arrays, keys str."""
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


def parents_of(
    relation: np.ndarray, coarse_names: list[str], schemes: dict[str, Any] | None
) -> tuple[np.ndarray, list[str]]:
    """Parent of each fine class and the coarse names it indexes (the first scheme's with several)."""
    if schemes is None:
        return relation.argmax(axis=1), coarse_names
    return schemes["relations"][0].argmax(axis=1), schemes["names"][0]


def fine_order(
    relation: np.ndarray, fine_names: list[str], coarse_names: list[str], schemes: dict[str, Any] | None
) -> np.ndarray:
    """Fine classes by parent, then name (the order of every written table)."""
    return np.lexsort((np.asarray(fine_names), parents_of(relation, coarse_names, schemes)[0]))


def write_labels(
    adata: ad.AnnData,
    key_added: str,
    *,
    probs: np.ndarray,
    embedding: np.ndarray,
    coarse: np.ndarray,
    relation: np.ndarray,
    fine_names: list[str],
    coarse_names: list[str],
    schemes: dict[str, Any] | None = None,
) -> None:
    """Fine labels, confidences, probabilities, embedding, relation and fine-class table of a fit or a prediction."""
    relation = relation.astype(bool)
    parent, parent_names = parents_of(relation, coarse_names, schemes)
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
    order = fine_order(relation, fine_names, coarse_names, schemes)
    ordered_names = [str(n) for n in names[order]]
    for key in (key_added, f"{key_added}_confidence", f"{key_added}_outside_parent"):
        if key in adata.obs:
            logg.warning(f"overwriting adata.obs[{key!r}]")
    adata.obs[key_added] = pd.Categorical(names[label], categories=ordered_names)
    adata.obs[f"{key_added}_confidence"] = restricted[np.arange(len(label)), label].astype(np.float32)
    top = finite.argmax(axis=1)  # the unrestricted prediction falls outside the cell's coarse class
    adata.obs[f"{key_added}_outside_parent"] = ~relation[top, coarse] & (finite.max(axis=1) > 0)
    adata.obsm[f"{key_added}_probs"] = probs[:, order].astype(np.float32)
    adata.obsm[f"{key_added}_embedding"] = embedding.astype(np.float32)
    if schemes is None:
        relations = pd.DataFrame(relation[order].astype(np.int8), index=ordered_names, columns=coarse_names)
    else:  # the first scheme's relation, as with one scheme; every scheme's under "scheme_relations"
        tables = [
            pd.DataFrame(r[order].astype(np.int8), index=ordered_names, columns=n)
            for r, n in zip(schemes["relations"], schemes["names"], strict=True)
        ]
        relations = tables[0]
    conf = adata.obs[f"{key_added}_confidence"].to_numpy()
    fine_classes = pd.DataFrame(
        {
            "parent": [parent_names[p] for p in parent[order]],
            "n_cells": sizes[order],
            "mean_confidence": [float(conf[label == f].mean()) if sizes[f] else np.nan for f in order],
        },
        index=ordered_names,
    )
    if key_added in adata.uns:
        logg.warning(f"overwriting adata.uns[{key_added!r}]")
    adata.uns[key_added] = {
        "relations": relations,
        "fine_classes": fine_classes,
    }
    if schemes is not None:
        adata.uns[key_added]["scheme_relations"] = dict(zip(schemes["keys"], tables, strict=True))
    used = int((sizes > 0).sum())
    if used < relation.shape[0]:
        logg.warning(
            f"only {used} of {relation.shape[0]} fine classes hold cells (partial collapse); see "
            f"uns[{key_added!r}]['history']['fine_in_use']"
        )


def write_fit_extras(
    adata: ad.AnnData,
    key_added: str,
    fitted: FittedState,
    outcome: Outcome,
    coarse: np.ndarray,
    neighbour_coarse: np.ndarray | None,
) -> None:
    """What a training run adds to :func:`write_labels`: neighbour vote, history, guard, warm start, counts, params."""
    if neighbour_coarse is not None:  # also flag cells whose neighbours carry another coarse label
        adata.obs[f"{key_added}_neighbour_coarse"] = pd.Categorical.from_codes(neighbour_coarse, fitted.coarse_names)
        outside = adata.obs[f"{key_added}_outside_parent"].to_numpy(dtype=bool) | (neighbour_coarse != coarse)
        adata.obs[f"{key_added}_outside_parent"] = outside
    uns = adata.uns[key_added]
    history = outcome.result.history
    uns["history"] = pd.DataFrame([{k: v for k, v in r.items() if k != "children"} for r in history])
    uns["children_history"] = np.array([r["children"] for r in history], dtype=np.int64)
    if outcome.scores is not None:
        uns["partition_choice"] = choice_table(fitted, outcome.scores)
        if fitted.use_warm.any():
            kept = ", ".join(np.asarray(fitted.coarse_names)[fitted.use_warm])
            logg.info(f"    warm-start partition kept (better separated than the trained one) in: {kept}")
    if outcome.init_labels is not None:
        names = fine_class_names(outcome.initial.astype(bool), outcome.init_labels, outcome.group_names)
        warm_key = f"{key_added}_warm_start"
        if warm_key in adata.obs:
            logg.warning(f"overwriting adata.obs[{warm_key!r}]")
        adata.obs[warm_key] = pd.Categorical(names[outcome.init_labels])
    if outcome.estimate is not None:
        uns["n_fine_estimate"] = outcome.estimate["table"]
        uns["n_fine_evidence"] = outcome.estimate["evidence"]
        uns["n_fine_threshold"] = outcome.estimate["threshold"]
    uns["params"] = uns_params(fitted.params)


def write_fitted_labels(
    adata: ad.AnnData, key_added: str, fitted: FittedState, probs: np.ndarray, embedding: np.ndarray, coarse: np.ndarray
) -> None:
    """:func:`write_labels` with the relation and names of a fitted model."""
    write_labels(
        adata,
        key_added,
        probs=probs,
        embedding=embedding,
        coarse=coarse,
        relation=fitted.relation,
        fine_names=fitted.fine_names,
        coarse_names=fitted.coarse_names,
        schemes=fitted.schemes,
    )


def write_image_results(
    adata: ad.AnnData, key_added: str, problem: Problem, outcome: Outcome, params: dict[str, Any]
) -> None:
    """What :func:`falcon_sc.tl.refine_images` writes: the labels, the warm start, the history and ``params``."""
    result = outcome.result
    write_labels(
        adata,
        key_added,
        probs=result.probs,
        embedding=result.embedding,
        coarse=problem.coarse,
        relation=outcome.relation,
        fine_names=outcome.fine_names,
        coarse_names=problem.coarse_names,
        schemes=outcome.scheme_record,
    )
    assert outcome.init_labels is not None  # images always have a warm start (k-means or Leiden)
    warm_names = fine_class_names(outcome.initial.astype(bool), outcome.init_labels, problem.group_names)
    adata.obs[f"{key_added}_warm_start"] = pd.Categorical(warm_names[outcome.init_labels])
    history = [{k: v for k, v in r.items() if k != "children"} for r in result.history]
    adata.uns[key_added]["history"] = pd.DataFrame(history)
    adata.uns[key_added]["params"] = params
