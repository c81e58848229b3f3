"""Argument checks for ``tl`` functions, run before any heavy work."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import pandas as pd
import torch

from ..pp._prepare import INPUT_KINDS


def resolve_device(accelerator: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; an explicit ``"cuda"`` without a GPU is an error."""
    if accelerator not in ("auto", "cpu", "cuda"):
        raise ValueError(f"accelerator={accelerator!r} must be 'auto', 'cpu' or 'cuda'.")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError("accelerator='cuda' but torch sees no CUDA device; use accelerator='cpu' or 'auto'.")
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(accelerator)


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(map(repr, allowed))}.")


def check_refine_args(
    adata: ad.AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    layer,
    use_rep,
    batch_key,
    key_added: str,
    model_input: str,
    children_prior,
    n_neighbors: int,
    regulariser: str,
    optimizer: str,
    init: str = "leiden",
    learn_relation: bool = True,
    input_kind: str = "auto",
) -> None:
    """Raise a clear error for every bad argument of :func:`falcon_sc.tl.refine`."""
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if not isinstance(learn_relation, bool):
        raise TypeError(f"learn_relation={learn_relation!r} must be True or False.")
    if coarse_key not in adata.obs:
        raise KeyError(f"coarse_key={coarse_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}).")
    col = adata.obs[coarse_key]
    if col.isna().any():
        raise ValueError(f"adata.obs[{coarse_key!r}] has {int(col.isna().sum())} missing labels; fill or drop them.")
    coarse = pd.Categorical(col).remove_unused_categories()
    n_coarse = len(coarse.categories)
    if isinstance(n_fine, bool) or not isinstance(n_fine, int):
        raise TypeError(f"n_fine must be an int, got {type(n_fine).__name__}.")
    if n_fine <= n_coarse:
        raise ValueError(
            f"n_fine={n_fine} must exceed the number of coarse classes in {coarse_key!r} ({n_coarse}); "
            "with n_fine <= n_coarse there is nothing to refine."
        )
    if n_fine > adata.n_obs:
        raise ValueError(f"n_fine={n_fine} exceeds the number of cells ({adata.n_obs}).")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer={layer!r} not found in adata.layers (available: {list(adata.layers)}).")
    if use_rep is not None:
        if use_rep not in adata.obsm:
            raise KeyError(f"use_rep={use_rep!r} not found in adata.obsm (available: {list(adata.obsm)}).")
        if layer is not None:
            raise ValueError("Pass either layer= or use_rep=, not both.")
    if batch_key is not None and batch_key not in adata.obs:
        raise KeyError(f"batch_key={batch_key!r} is not a column of adata.obs.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
    if key_added == coarse_key:
        raise ValueError(f"key_added={key_added!r} would overwrite the coarse labels; choose another key_added.")
    _choice("model_input", model_input, ("pca", "hvg"))
    _choice("input_kind", input_kind, INPUT_KINDS)
    if use_rep is not None and input_kind != "auto":
        raise ValueError(
            f"input_kind={input_kind!r} describes the expression matrix; it cannot be combined with use_rep= "
            "(leave input_kind='auto')."
        )
    if use_rep is not None and model_input == "hvg":
        raise ValueError("model_input='hvg' needs the expression matrix; it cannot be combined with use_rep=.")
    _choice("init", init, ("leiden", "kmeans", "random"))
    _choice("regulariser", regulariser, ("prior", "global", "within", "both"))
    _choice("optimizer", optimizer, ("adam", "sgd"))
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or n_neighbors < 1:
        raise ValueError(f"n_neighbors={n_neighbors!r} must be a positive int.")
    if isinstance(children_prior, Mapping):
        names = {str(c) for c in coarse.categories}
        missing = names - {str(k) for k in children_prior}
        if missing:
            raise ValueError(f"children_prior is missing coarse classes {sorted(missing)}.")
        values = [children_prior[k] for k in children_prior if str(k) in names]
        if any(int(v) != v or v < 1 for v in values) or sum(values) != n_fine:
            raise ValueError(
                f"children_prior counts must be whole numbers >= 1 summing to n_fine={n_fine}; got {values}."
            )
        sizes = pd.Series(coarse.astype(str)).value_counts()
        over = [k for k in children_prior if str(k) in names and children_prior[k] > sizes[str(k)]]
        if over:
            raise ValueError(f"children_prior asks more children than cells for coarse classes {over}.")
    else:
        _choice("children_prior", children_prior, ("auto", "uniform", "size"))
