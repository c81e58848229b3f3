"""Argument checks for ``tl`` functions, run before any heavy work."""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse

from ._checks import check_bool, check_choice, check_int, check_number, check_widths, is_int
from .pp._prepare import INPUT_KINDS, check_values

#: suffixes of the ``obs`` columns :func:`falcon_sc.tl.refine` writes (after ``key_added``)
WRITTEN_OBS_SUFFIXES = ("", "_confidence", "_outside_parent", "_warm_start", "_coarse", "_neighbour_coarse")


def resolve_device(accelerator: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; an explicit ``"cuda"`` without a GPU is an error."""
    if not isinstance(accelerator, str) or accelerator not in ("auto", "cpu", "cuda"):
        raise ValueError(f"accelerator={accelerator!r} must be 'auto', 'cpu' or 'cuda'.")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError("accelerator='cuda' but torch sees no CUDA device; use accelerator='cpu' or 'auto'.")
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(accelerator)


def _check_key(name: str, value: Any) -> None:
    if not isinstance(value, Hashable):
        raise TypeError(f"{name}={value!r} must be a column name (a string), got {type(value).__name__}.")


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


def _check_rep(adata: ad.AnnData, use_rep: str) -> None:
    rep = adata.obsm[use_rep]
    where = f"adata.obsm[{use_rep!r}]"
    if sparse.issparse(rep):
        raise ValueError(f"{where} is sparse; use_rep needs a dense embedding (cells x dimensions).")
    values = np.asarray(rep)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{where} holds {values.dtype} values; use_rep needs a numeric embedding.")
    if values.ndim != 2 or values.shape[1] < 1:
        raise ValueError(f"{where} has shape {values.shape}; use_rep needs cells x dimensions (at least one).")
    if values.dtype.kind == "f":
        n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        if n_nan or n_inf:
            what = " and ".join(f"{n:,} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
            raise ValueError(
                f"use_rep={use_rep!r}: {where} holds {what} values; the embedding must be finite (recompute it, or "
                "drop the affected cells)."
            )


def coarse_mapping(
    mapping: Mapping, names: list[str], arg: str, coarse_key: str, *, complete: bool, hint: str = ""
) -> dict[str, Any]:
    """A mapping coarse label -> value keyed by the labels as text, checked against the coarse classes ``names``.

    Keys are compared as text; a key given twice (``1`` and ``"1"``), a key that is not a coarse class of
    ``adata.obs[coarse_key]`` and, with ``complete``, a coarse class without a key are a ``ValueError`` naming ``arg``
    (``hint`` is appended to the message about missing classes).
    """
    by_name: dict[str, Any] = {}
    for key, value in mapping.items():
        if str(key) in by_name:
            raise ValueError(f"{arg} has the key {str(key)!r} twice (as {key!r} and as text); keep one.")
        by_name[str(key)] = value
    unknown = [k for k in mapping if str(k) not in names]
    if unknown:
        raise ValueError(
            f"{arg} has keys that are not coarse classes of adata.obs[{coarse_key!r}]: {unknown[:10]}; the coarse "
            f"classes are {names[:20]}."
        )
    missing = [n for n in names if n not in by_name]
    if complete and missing:
        raise ValueError(f"{arg} has no count for the coarse classes {missing[:20]}; give one for every class{hint}.")
    return by_name


def check_class_count(arg: str, name: str, value: Any, size: int) -> int:
    """A number of fine classes of the coarse class ``name`` (``size`` cells): an int from 1 to ``size``."""
    if not is_int(value) or value < 1:
        raise ValueError(
            f"{arg}[{name!r}]={value!r}: the number of fine classes of a coarse class must be an int >= 1 (1 keeps "
            "the class whole)."
        )
    if value > size:
        raise ValueError(
            f"{arg}[{name!r}]={value} exceeds the {size} cells of that coarse class; ask for at most {size} fine "
            "classes there."
        )
    return int(value)


def _check_children_prior(children_prior: Mapping, coarse: pd.Categorical, coarse_key: str, n_fine: int) -> None:
    names = [str(c) for c in coarse.categories]
    sizes = dict(zip(names, np.bincount(coarse.codes, minlength=len(names)).tolist(), strict=True))
    by_name = coarse_mapping(children_prior, names, "children_prior", coarse_key, complete=True)
    values = [by_name[n] for n in names]
    bad = [
        v
        for v in values
        if not isinstance(v, numbers.Real)
        or isinstance(v, bool | np.bool_)
        or not math.isfinite(v)
        or not float(v).is_integer()
    ]
    if bad or any(v < 1 for v in values) or sum(values) != n_fine:
        raise ValueError(
            f"children_prior counts must be whole numbers >= 1 summing to n_fine={n_fine}; got "
            f"{dict(zip(names, values, strict=True))}."
        )
    over = [n for n, v in zip(names, values, strict=True) if v > sizes[n]]
    if over:
        raise ValueError(f"children_prior asks more children than cells for coarse classes {over}.")


def _check_known_counts(n_fine: Mapping, coarse: pd.Categorical, coarse_key: str) -> None:
    """``n_fine`` as a mapping: known children counts of some coarse classes (the others are estimated)."""
    names = [str(c) for c in coarse.categories]
    given = coarse_mapping(n_fine, names, "n_fine", coarse_key, complete=False)
    sizes = dict(zip(names, np.bincount(coarse.codes, minlength=len(names)).tolist(), strict=True))
    for name, value in given.items():
        check_class_count("n_fine", name, value, sizes[name])


def check_refine_args(
    adata: ad.AnnData,
    coarse_key: str | list[str],
    n_fine: int,
    *,
    layer: str | None,
    use_rep: str | None,
    batch_key: str | None,
    key_added: str | None,
    model_input: str,
    children_prior: Any,
    n_neighbors: int,
    regulariser: str,
    optimizer: str,
    init: str = "leiden",
    learn_relation: bool = True,
    input_kind: str = "auto",
    n_top_genes: int = 2000,
    n_comps: int = 50,
    n_comps_within: int = 10,
    hidden: Sequence[int] = (64, 64, 64, 64),
    n_epochs: int | None = None,
    batch_size: int = 1024,
    lr: float = 3e-4,
    lambda_coarse: float = 0.5,
    lambda_fine: float = 0.5,
    lambda_reg: float = 0.05,
    lambda_relation: float = 5e-3,
    temperature: float = 0.9,
    relation_every: int = 30,
    soft_fraction: float = 0.3,
    guard_warm_start: bool = True,
    random_state: int = 0,
    show_progress: bool | None = None,
    copy: bool = False,
    return_model: bool = False,
    check_written: bool = False,
) -> None:
    """Raise a clear error for every bad argument of :func:`falcon_sc.tl.refine`, before any heavy work.

    Cheap checks come first (types and ranges of the scalar arguments, keys, coarse labels); the last one scans
    every value of the expression matrix (or of ``obsm[use_rep]``) for NaN, infinite and negative values.

    Parameters
    ----------
    adata, coarse_key, n_fine
        As in :func:`falcon_sc.tl.refine`.
    key_added
        Prefix of the keys that will be written (checked to be a non-empty string unless ``None``).
    layer, use_rep, batch_key, model_input, children_prior, n_neighbors, regulariser, optimizer, init
        As in :func:`falcon_sc.tl.refine`.
    learn_relation, input_kind, n_top_genes, n_comps, n_comps_within, hidden, n_epochs, batch_size, lr
        As in :func:`falcon_sc.tl.refine`.
    lambda_coarse, lambda_fine, lambda_reg, lambda_relation, temperature, relation_every, soft_fraction
        As in :func:`falcon_sc.tl.refine`.
    guard_warm_start, random_state, show_progress, copy, return_model
        As in :func:`falcon_sc.tl.refine`.
    check_written
        The caller writes the ``obs`` columns ``key_added``, ``f"{key_added}_confidence"``,
        ``f"{key_added}_outside_parent"``, ``f"{key_added}_warm_start"`` and ``f"{key_added}_coarse"``: refuse a
        ``coarse_key`` or ``batch_key`` among them (:func:`~falcon_sc.tl.refine`). ``False`` for callers that write
        nothing (:meth:`FalconModel.fit <falcon_sc.FalconModel.fit>`).

    Raises
    ------
    TypeError
        For an argument of the wrong type (a bool where an int is needed, a string where a bool is needed, ...).
    KeyError
        For a key missing from ``adata``.
    ValueError
        For a value out of range or inconsistent with ``adata``, or an expression matrix / embedding with NaN,
        infinite or negative values.
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if adata.isbacked:
        raise ValueError(
            "adata is backed (opened with backed='r'): refine needs it in memory; load it with adata.to_memory() "
            "(or read it without backed=)."
        )
    # ---- scalar arguments: types and ranges
    for name, value in (
        ("learn_relation", learn_relation),
        ("guard_warm_start", guard_warm_start),
        ("copy", copy),
        ("return_model", return_model),
    ):
        check_bool(name, value)
    check_bool("show_progress", show_progress, allow_none=True)
    estimated = isinstance(n_fine, str) or isinstance(n_fine, Mapping)
    if isinstance(n_fine, str) and n_fine != "auto":
        raise TypeError(f"n_fine={n_fine!r}: give an int, 'auto' or a mapping coarse label -> count.")
    if not estimated:
        check_int("n_fine", n_fine)
    elif not (isinstance(children_prior, str) and children_prior == "auto"):
        raise ValueError(
            f"n_fine={n_fine!r} estimates the children of each coarse class; children_prior={children_prior!r} cannot "
            "be combined with it (leave children_prior='auto', or give n_fine as an int)."
        )
    check_int("n_neighbors", n_neighbors, 1)
    check_int("n_top_genes", n_top_genes, 2)
    check_int("n_comps", n_comps, 2)
    check_int("n_comps_within", n_comps_within, 0)
    check_int("n_epochs", n_epochs, 1, allow_none=True)
    check_int("batch_size", batch_size, 1)
    check_int("relation_every", relation_every, 1)
    check_int("random_state", random_state, 0)
    check_widths("hidden", hidden)
    check_number("lr", lr, low=0, open_low=True)
    check_number("temperature", temperature, low=0, open_low=True)
    check_number("soft_fraction", soft_fraction, low=0, high=1)
    for name, weight in (
        ("lambda_coarse", lambda_coarse),
        ("lambda_fine", lambda_fine),
        ("lambda_reg", lambda_reg),
        ("lambda_relation", lambda_relation),
    ):
        check_number(name, weight, low=0)
    check_choice("model_input", model_input, ("pca", "hvg"))
    check_choice("input_kind", input_kind, INPUT_KINDS)
    check_choice("init", init, ("leiden", "kmeans", "random"))
    check_choice("regulariser", regulariser, ("prior", "global", "within", "both"))
    check_choice("optimizer", optimizer, ("adam", "sgd"))
    if not isinstance(children_prior, Mapping):
        check_choice("children_prior", children_prior, ("auto", "uniform", "size", "variance"))
    # ---- keys
    from .models._schemes import as_keys, coarse_schemes

    keys = as_keys(coarse_key) if isinstance(coarse_key, list | tuple) else [coarse_key]
    coarse_key = keys[0] if len(keys) == 1 else keys
    for key in keys:
        _check_key("coarse_key", key)
        if key not in adata.obs:
            raise KeyError(f"coarse_key={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}).")
    if layer is not None:
        if not isinstance(layer, str):
            raise TypeError(f"layer={layer!r} must be a key of adata.layers (a string) or None.")
        if layer not in adata.layers:
            raise KeyError(f"layer={layer!r} not found in adata.layers (available: {list(adata.layers)}).")
    if use_rep is not None:
        if not isinstance(use_rep, str):
            raise TypeError(f"use_rep={use_rep!r} must be a key of adata.obsm (a string) or None.")
        if use_rep not in adata.obsm:
            raise KeyError(f"use_rep={use_rep!r} not found in adata.obsm (available: {list(adata.obsm)}).")
        if layer is not None:
            raise ValueError("Pass either layer= or use_rep=, not both.")
    if batch_key is not None:
        _check_key("batch_key", batch_key)
        if batch_key not in adata.obs:
            raise KeyError(f"batch_key={batch_key!r} is not a column of adata.obs.")
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ValueError(f"key_added={key_added!r} must be a non-empty string.")
    if check_written and key_added is not None:
        written = [f"{key_added}{suffix}" for suffix in WRITTEN_OBS_SUFFIXES]
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
    if use_rep is not None and input_kind != "auto":
        raise ValueError(
            f"input_kind={input_kind!r} describes the expression matrix; it cannot be combined with use_rep= "
            "(leave input_kind='auto')."
        )
    if use_rep is not None and model_input == "hvg":
        raise ValueError("model_input='hvg' needs the expression matrix; it cannot be combined with use_rep=.")
    # ---- coarse labels and what depends on them
    if len(keys) > 1:
        if estimated:
            raise ValueError(f"n_fine={n_fine!r} takes one coarse scheme; give n_fine as an int with several schemes.")
        schemes = coarse_schemes(adata.obs, keys)
        per_scheme = dict(zip(keys, schemes.n_coarse, strict=True))
        if n_fine <= max(schemes.n_coarse):
            raise ValueError(f"n_fine={n_fine} must exceed the coarse classes of every scheme ({per_scheme}).")
        if isinstance(children_prior, Mapping):
            raise ValueError("children_prior as a mapping takes one coarse scheme; use 'auto', 'size' or 'variance'.")
        if regulariser in ("within", "both"):
            raise ValueError(f"regulariser={regulariser!r} takes one coarse scheme; use 'prior' or 'global'.")
        coarse = None
    else:
        coarse = check_coarse_labels(adata.obs[keys[0]], keys[0])
        n_coarse = len(coarse.categories)
        if isinstance(n_fine, Mapping):
            _check_known_counts(n_fine, coarse, keys[0])
        elif estimated:
            pass
        elif n_fine <= n_coarse:
            raise ValueError(
                f"n_fine={n_fine} must exceed the number of coarse classes in {coarse_key!r} ({n_coarse}); "
                "with n_fine <= n_coarse there is nothing to refine."
            )
    if not estimated and n_fine > adata.n_obs:
        raise ValueError(f"n_fine={n_fine} exceeds the number of cells ({adata.n_obs}).")
    if isinstance(children_prior, Mapping) and coarse is not None:
        _check_children_prior(children_prior, coarse, keys[0], n_fine)
    # ---- the data: every value
    if use_rep is not None:
        _check_rep(adata, use_rep)
        return
    if adata.n_vars < 2:
        raise ValueError(
            f"adata has {adata.n_vars} gene(s); refine needs at least 2 genes (or an embedding via use_rep=...)."
        )
    check_values(adata.X if layer is None else adata.layers[layer], "X" if layer is None else f"layers[{layer!r}]")
