"""A fit's, a prediction's and an image run's results written into an AnnData, through :mod:`falcon_sc._layout`."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from .._layout import partition_choice, write_fit_extras, write_labels
from ..core.labels import fine_class_names
from ._inference import Inference
from ._pipeline import Outcome, Problem
from ._state import FittedState


def warm_start_labels(outcome: Outcome) -> pd.Categorical | None:
    """The warm start's fine label per cell, named as the final labels by the initial relation (``None``: none)."""
    if outcome.init_labels is None:
        return None
    names = fine_class_names(outcome.initial.astype(bool), outcome.init_labels, outcome.group_names)
    return pd.Categorical(names[outcome.init_labels])


def _labels_of(fitted: FittedState) -> dict[str, Any]:
    return {
        "relation": fitted.relation,
        "fine_names": fitted.fine_names,
        "coarse_names": fitted.coarse_names,
        "schemes": fitted.schemes,
    }


def write_fit(
    adata: ad.AnnData,
    key_added: str,
    fitted: FittedState,
    outcome: Outcome,
    coarse: np.ndarray,
    neighbour_coarse: np.ndarray | None,
) -> None:
    """Everything :func:`falcon_sc.tl.refine` writes for the cells a model was fitted on."""
    result = outcome.result
    write_labels(
        adata,
        key_added,
        probs=result.probs,
        embedding=result.embedding,
        coarse=coarse,
        neighbour_coarse=neighbour_coarse,
        warm_start=warm_start_labels(outcome),
        **_labels_of(fitted),
    )
    choice = None if outcome.scores is None else partition_choice(fitted.use_warm, outcome.scores, fitted.coarse_names)
    write_fit_extras(
        adata,
        key_added,
        params=fitted.params,
        history=result.history,
        partition_choice=choice,
        n_fine_estimate=outcome.estimate,
    )


def write_prediction(adata: ad.AnnData, key_added: str, fitted: FittedState, inference: Inference) -> None:
    """What :meth:`FalconModel.predict <falcon_sc.FalconModel.predict>` writes for new cells."""
    write_labels(
        adata,
        key_added,
        probs=inference.probs,
        embedding=inference.embedding,
        coarse=inference.coarse,
        relation=inference.relation,
        fine_names=fitted.fine_names,
        coarse_names=inference.coarse_names,
        schemes=fitted.schemes,
        coarse_predicted=inference.predicted is not None,
    )
    if inference.predicted is not None:  # the predicted coarse class (several schemes: the completed group)
        adata.obs[f"{key_added}_coarse"] = inference.predicted
    write_fit_extras(adata, key_added, params=fitted.params)


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
        warm_start=warm_start_labels(outcome),
    )
    write_fit_extras(adata, key_added, params=params, history=result.history)
