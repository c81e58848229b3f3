"""Scrublet doublet scores (:func:`scanpy.pp.scrublet`, run on a copy of the counts), summarised per fine class."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.util import find_spec
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse

from ..pp._input_kind import resolve_input_kind

#: columns this module adds to the per-fine-class table
DOUBLET_COLUMNS = ("doublet_score", "doublet_share")
#: ``obs`` columns written (after the results' key) when the scores are stored
DOUBLET_OBS_SUFFIXES = ("_doublet_score", "_predicted_doublet")


def check_doublet_options(
    adata: ad.AnnData, counts_layer: Any, threshold: Any, scrublet_kwargs: Any
) -> tuple[Any, str]:
    """Check the scrublet options before any work; return the counts matrix and its name in messages.

    Raises
    ------
    KeyError
        ``counts_layer`` not in ``adata.layers``, or ``scrublet_kwargs["batch_key"]`` not in ``adata.obs``.
    ValueError
        The matrix holds no counts (names ``counts_layer`` and the fix), ``threshold=None`` without scikit-image,
        or ``scrublet_kwargs`` setting an argument this function sets itself.
    """
    if counts_layer is not None and counts_layer not in adata.layers:
        raise KeyError(
            f"counts_layer={counts_layer!r} is not in adata.layers (layers: {list(adata.layers)}); name the layer "
            "holding raw UMI counts."
        )
    X, source = (
        (adata.X, "adata.X") if counts_layer is None else (adata.layers[counts_layer], f"layers[{counts_layer!r}]")
    )
    kind, _, why = resolve_input_kind(X, "auto", source=source)
    if kind != "counts":
        raise ValueError(
            f"doublets=True runs scanpy.pp.scrublet, which needs raw UMI counts, but {source} holds {kind} values "
            f"({why}). Pass counts_layer= naming a layer of raw counts, or doublets=False (e.g. scanpy's "
            "pbmc68k_reduced, fal.datasets.pbmc68k(), has no counts: its X and raw are log-normalised)."
        )
    if threshold is None and find_spec("skimage") is None:
        raise ValueError(
            "doublet_threshold=None asks scanpy.pp.scrublet for its automatic threshold, which needs scikit-image "
            "(not installed): pass a number (e.g. doublet_threshold=0.25) or install scikit-image."
        )
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)):
        raise TypeError(f"doublet_threshold={threshold!r} must be a number in [0, 1] or None.")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"doublet_threshold={threshold!r} must lie in [0, 1] (a scrublet doublet score).")
    if not isinstance(scrublet_kwargs, Mapping | None):
        raise TypeError(f"scrublet_kwargs must be a dict of scanpy.pp.scrublet arguments, got {scrublet_kwargs!r}.")
    kwargs = dict(scrublet_kwargs or {})
    taken = sorted(set(kwargs) & {"adata", "adata_sim", "threshold", "random_state", "copy", "verbose"})
    if taken:
        raise ValueError(
            f"scrublet_kwargs sets {taken}, which mixed_lineage sets itself; pass doublet_threshold= or "
            "random_state= instead."
        )
    batch_key = kwargs.get("batch_key")
    if batch_key is not None and batch_key not in adata.obs.columns:
        raise KeyError(f"scrublet_kwargs['batch_key']={batch_key!r} is not a column of adata.obs.")
    return X, source


def scrublet_scores(
    adata: ad.AnnData,
    X: Any,
    *,
    threshold: float | None,
    random_state: int,
    scrublet_kwargs: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Scrublet's ``doublet_score`` and ``predicted_doublet`` per cell (index: ``adata.obs_names``).

    :func:`scanpy.pp.scrublet` runs on a new AnnData holding a copy of the counts ``X`` (and the batch column, when
    ``scrublet_kwargs`` names one): ``adata`` is not touched. Cells scrublet filters out (fewer than 3 genes) get NaN.
    """
    kwargs = dict(scrublet_kwargs or {})
    counts = sparse.csr_matrix(X, dtype=np.float32, copy=True)
    obs = pd.DataFrame(index=adata.obs_names.copy())
    if kwargs.get("batch_key") is not None:
        obs[kwargs["batch_key"]] = adata.obs[kwargs["batch_key"]].to_numpy()
    tmp = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=adata.var_names.copy()))
    with sc.settings.verbosity.override(min(sc.settings.verbosity, sc.Verbosity.warning)):
        sc.pp.scrublet(tmp, threshold=threshold, random_state=random_state, verbose=False, **kwargs)
    score = pd.to_numeric(tmp.obs["doublet_score"], errors="coerce").astype(np.float64)
    predicted = tmp.obs["predicted_doublet"].astype("boolean").fillna(False).astype(bool)
    return pd.DataFrame(
        {"doublet_score": score.to_numpy(), "predicted_doublet": predicted.to_numpy()}, index=adata.obs_names
    )


def per_fine_class(cells: pd.DataFrame, labels: pd.Series, fine_names: list[str]) -> pd.DataFrame:
    """Mean doublet score and share of predicted doublets of each fine class (NaN for a class without cells)."""
    grouped = cells.assign(fine=labels.to_numpy()).groupby("fine", observed=False)
    table = pd.DataFrame(
        {
            "doublet_score": grouped["doublet_score"].mean(),
            "doublet_share": grouped["predicted_doublet"].mean().astype(np.float64),
        }
    )
    return table.reindex(fine_names)
