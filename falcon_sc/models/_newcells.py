"""Checks of the cells :meth:`FalconModel.predict <falcon_sc.FalconModel.predict>` labels, run before any work.

Each error names the argument or key, what was found and what the model needs.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import DegenerateInputError
from ..pp import FeatureTransform, check_values
from ..pp._checks import matrix_source
from ..pp._chunks import is_out_of_core


def check_embedding(adata: ad.AnnData, use_rep: str, width: int) -> None:
    """``obsm[use_rep]`` of the new cells: present, a dense numeric cells x ``width`` table of finite values."""
    where = f"adata.obsm[{use_rep!r}]"
    if use_rep not in adata.obsm:
        raise KeyError(
            f"the model was fitted on obsm[{use_rep!r}]; the new cells need it too (adata.obsm has {list(adata.obsm)})."
        )
    rep = adata.obsm[use_rep]
    if sparse.issparse(rep):
        raise ValueError(f"{where} is sparse; the model reads a dense embedding (cells x {width}).")
    values = np.asarray(rep)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{where} holds {values.dtype} values; the model reads a numeric embedding.")
    if values.ndim != 2 or values.shape[1] != width:
        raise ValueError(
            f"use_rep={use_rep!r}: {where} has shape {values.shape}, {values.shape[1] if values.ndim == 2 else '?'} "
            f"dimensions per cell; the model was fitted on {width}. Compute the embedding of the new cells as for the "
            "fitted ones (same method and number of dimensions)."
        )
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise ValueError(
            f"use_rep={use_rep!r}: {where} holds {n_bad:,} NaN or infinite values; the embedding must be finite "
            "(recompute it, or drop the affected cells)."
        )


def check_layer(adata: ad.AnnData, layer: str | None) -> None:
    """``adata.layers`` holds the layer the model was fitted on (``None``: ``X``, nothing to check)."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"the model was fitted on layers[{layer!r}]; the new cells need it too (adata.layers has "
            f"{list(adata.layers)})."
        )


def check_genes(adata: ad.AnnData, layer: str | None) -> None:
    """Unique gene names and finite, non-negative expression values (``X`` or ``layers[layer]``) of the new cells."""
    names = pd.Index(adata.var_names.astype(str))
    if names.has_duplicates:
        twice = names[names.duplicated()].unique().tolist()
        raise ValueError(
            f"adata.var_names has {len(twice)} duplicated gene name(s), e.g. {twice[:5]}; genes are matched to the "
            "model's by name, so each must be unique: call adata.var_names_make_unique() first."
        )
    check_layer(adata, layer)
    if not adata.isbacked:
        X = adata.X if layer is None else adata.layers[layer]
        check_values(X, matrix_source(layer))
        stored = X.data if sparse.issparse(X) else np.asarray(X)
        if not np.any(stored):
            raise DegenerateInputError(
                f"{matrix_source(layer)} of the new cells is all zero: there is no expression to label them by. "
                "Pass the cells' counts or normalised values (or the layer that holds them)."
            )


def check_new_cells(adata: Any, transform: FeatureTransform, n_input: int) -> None:
    """The cells of ``adata`` against what ``transform`` reads: at least one cell, the embedding or the genes."""
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError("adata has 0 cells: there is nothing to label.")
    layer = transform.layer
    X = adata.X if layer is None else adata.layers[layer] if layer in adata.layers else None
    if transform.use_rep is None and is_out_of_core(X):
        raise ValueError(
            "the new cells' expression matrix is out of core (a backed AnnData or a dask array): labelling new "
            "cells reads them in memory; load them with adata.to_memory() (or in parts: adata[i:j].to_memory())."
        )
    if transform.use_rep is not None:
        check_embedding(adata, transform.use_rep, n_input)
    else:
        check_genes(adata, transform.layer)
