"""Argument checks for ``tl`` functions, run before any heavy work."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg
from scipy import sparse

from ._checks import check_int, is_int
from ._coarse import as_keys, check_children_fit, check_coarse_labels, coarse_schemes
from ._layout import check_obs_key
from .errors import DegenerateInputError
from .pp import check_values, check_variation
from .pp._checks import matrix_source
from .pp._chunks import is_out_of_core

#: a batch with at most this many cells is standardised on too few cells to keep its cells' expression
TINY_BATCH = 2


def resolve_device(accelerator: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; an explicit ``"cuda"`` without a GPU is an error."""
    if not isinstance(accelerator, str) or accelerator not in ("auto", "cpu", "cuda"):
        raise ValueError(f"accelerator={accelerator!r} must be 'auto', 'cpu' or 'cuda'.")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ValueError("accelerator='cuda' but torch sees no CUDA device; use accelerator='cpu' or 'auto'.")
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(accelerator)


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
    if values.shape[0] and not (values != values[:1]).any():
        zero = " all zero" if not values[:1].any() else " the same for every cell"
        raise DegenerateInputError(
            f"use_rep={use_rep!r}: {where} is{zero} ({values.shape[0]:,} cells x {values.shape[1]} dimensions): there "
            "is nothing to learn from; recompute the embedding, or pass the expression matrix (use_rep=None)."
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
        raise DegenerateInputError(
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
    check_children_fit([sizes[n] for n in names], names, values, "children_prior")


def _check_known_counts(n_fine: Mapping, coarse: pd.Categorical, coarse_key: str) -> None:
    """``n_fine`` as a mapping: known children counts of some coarse classes (the others are estimated)."""
    names = [str(c) for c in coarse.categories]
    given = coarse_mapping(n_fine, names, "n_fine", coarse_key, complete=False)
    sizes = dict(zip(names, np.bincount(coarse.codes, minlength=len(names)).tolist(), strict=True))
    for name, value in given.items():
        check_class_count("n_fine", name, value, sizes[name])


def check_adata(adata: Any, *, out_of_core: bool = False, what: str = "refine") -> None:
    """An AnnData; with ``out_of_core=False`` an in-memory one (a backed one is refused with the fix).

    ``out_of_core=True`` (:func:`falcon_sc.tl.refine`, :class:`~falcon_sc.FalconModel`) accepts a backed AnnData
    (``backed="r"``), whose expression matrix is read in row chunks (:mod:`falcon_sc.pp._streamed`); ``what`` names
    the caller in the message.
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    if adata.isbacked and not out_of_core:
        raise ValueError(
            f"adata is backed (opened with backed='r'): {what} needs it in memory; load it with adata.to_memory() "
            "(or read it without backed=)."
        )


def check_out_of_core(adata: ad.AnnData, setup: Any) -> None:
    """What the streamed preprocessing of an out-of-core matrix (backed AnnData, dask) cannot do is refused here."""
    X = adata.X if setup.layer is None else adata.layers[setup.layer]
    if setup.use_rep is not None or not is_out_of_core(X):
        return
    where = "adata is backed" if adata.isbacked else f"{matrix_source(setup.layer)} is a dask array"
    if setup.model_input == "hvg":
        raise ValueError(
            f"model_input='hvg' trains on the cells x HVG matrix, which is not kept in memory when {where} (it is "
            "read in chunks); use model_input='pca' (default), or load the data with adata.to_memory()."
        )


def check_batches(adata: ad.AnnData, batch_key: str) -> None:
    """Refuse a ``batch_key`` whose batches are mostly of 1-2 cells (e.g. a per-cell number such as ``"n_counts"``).

    Genes are centred and scaled within each batch: a batch of one cell loses its whole expression (every value
    becomes 0), one of two cells keeps only a sign per gene. A :class:`~falcon_sc.errors.DegenerateInputError` when
    more than half of the batches, or batches holding more than half of the cells, have at most :data:`TINY_BATCH`
    cells; a warning naming them when fewer do. A column with a single value is harmless (one batch: the same as
    no ``batch_key`` up to the HVG selection) and accepted. Missing values are refused.
    """
    col = adata.obs[batch_key]
    if col.isna().any():
        raise ValueError(
            f"batch_key={batch_key!r} has {int(col.isna().sum())} missing values; fill them before calling."
        )
    sizes = col.value_counts(sort=False)
    sizes = sizes[sizes > 0]
    tiny = sizes[sizes <= TINY_BATCH]
    if tiny.empty:
        return
    n_batches, n_cells = len(sizes), int(sizes.sum())
    if 2 * len(tiny) > n_batches or 2 * int(tiny.sum()) > n_cells:
        numeric = pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)
        what = (
            f" it is a numeric column ({col.dtype}) and looks like a per-cell measurement, not a batch;"
            if numeric
            else ""
        )
        raise DegenerateInputError(
            f"batch_key={batch_key!r} gives {n_batches:,} batches for {n_cells:,} cells, {len(tiny):,} of them with "
            f"at most {TINY_BATCH} cells ({int(tiny.sum()):,} cells):{what} genes are scaled within each batch, so "
            "those cells would lose their expression. Pass the column that holds the batch, donor or sample of each "
            "cell, or batch_key=None."
        )
    names = ", ".join(f"{b} ({n})" for b, n in tiny.items())
    logg.warning(
        f"batch_key={batch_key!r}: {len(tiny)} batch(es) hold at most {TINY_BATCH} cells and their cells lose "
        f"most of their expression when genes are scaled within each batch; merge them into larger batches: "
        + names[:300]
    )


def _check_layer_or_rep(adata: ad.AnnData, layer: Any, use_rep: Any) -> None:
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


def check_setup(adata: ad.AnnData, setup: Any) -> list[str]:
    """Check the keys of a model's setup (:class:`~falcon_sc.models.SetupParams`) against ``adata``.

    The scalar fields were checked when ``setup`` was made; here: the coarse, layer, embedding and batch keys exist,
    the batches are not degenerate (:func:`check_batches`), and the options that need the expression matrix are not
    combined with ``use_rep``. Returns the coarse keys (one per scheme).
    """
    check_adata(adata, out_of_core=True)
    keys = as_keys(setup.coarse_key)
    for key in keys:
        check_obs_key("coarse_key", key, adata.obs)
    _check_layer_or_rep(adata, setup.layer, setup.use_rep)
    if setup.batch_key is not None:
        check_batches(adata, check_obs_key("batch_key", setup.batch_key, adata.obs))
    if setup.use_rep is not None and setup.input_kind != "auto":
        raise ValueError(
            f"input_kind={setup.input_kind!r} describes the expression matrix; it cannot be combined with use_rep= "
            "(leave input_kind='auto')."
        )
    if setup.use_rep is not None and setup.model_input == "hvg":
        raise ValueError("model_input='hvg' needs the expression matrix; it cannot be combined with use_rep=.")
    check_out_of_core(adata, setup)
    return keys


def check_n_fine(n_fine: Any, children_prior: Any) -> bool:
    """The type of ``n_fine``; returns whether the counts are estimated (``"auto"`` or a mapping)."""
    estimated = isinstance(n_fine, str | Mapping)
    if isinstance(n_fine, str) and n_fine != "auto":
        raise TypeError(f"n_fine={n_fine!r}: give an int, 'auto' or a mapping coarse label -> count.")
    if not estimated:
        check_int("n_fine", n_fine)
    elif not (isinstance(children_prior, str) and children_prior == "auto"):
        raise ValueError(
            f"n_fine={n_fine!r} estimates the children of each coarse class; children_prior={children_prior!r} cannot "
            "be combined with it (leave children_prior='auto', or give n_fine as an int)."
        )
    return estimated


def _check_schemes(adata: ad.AnnData, keys: list[str], n_fine: Any, estimated: bool, prior: Any, reg: str) -> None:
    if estimated:
        raise ValueError(f"n_fine={n_fine!r} takes one coarse scheme; give n_fine as an int with several schemes.")
    schemes = coarse_schemes(adata.obs, keys)
    per_scheme = dict(zip(keys, schemes.n_coarse, strict=True))
    if n_fine <= max(schemes.n_coarse):
        raise ValueError(f"n_fine={n_fine} must exceed the coarse classes of every scheme ({per_scheme}).")
    if isinstance(prior, Mapping):
        raise ValueError("children_prior as a mapping takes one coarse scheme; use 'auto', 'size' or 'variance'.")
    if reg in ("within", "both"):
        raise ValueError(f"regulariser={reg!r} takes one coarse scheme; use 'prior' or 'global'.")


def check_data(adata: ad.AnnData, layer: str | None, use_rep: str | None) -> None:
    """Every value of the expression matrix (or of ``obsm[use_rep]``): finite, and not negative for expression.

    Degenerate data are refused (:class:`~falcon_sc.errors.DegenerateInputError`): an all-zero or constant matrix
    or embedding, or fewer than 2 genes that vary across the cells (:func:`~falcon_sc.pp.check_variation`; sparse
    input is neither densified nor modified).
    """
    if use_rep is not None:
        _check_rep(adata, use_rep)
        return
    if adata.n_vars < 2:
        raise ValueError(
            f"adata has {adata.n_vars} gene(s); refine needs at least 2 genes (or an embedding via use_rep=...)."
        )
    X = adata.X if layer is None else adata.layers[layer]
    source = "X" if layer is None else f"layers[{layer!r}]"
    check_values(X, source)
    check_variation(X, source, names=adata.var_names)


def check_fit(adata: ad.AnnData, keys: list[str], n_fine: Any, children_prior: Any, regulariser: str) -> None:
    """Check what depends on the coarse labels: ``n_fine`` and a mapping ``children_prior``, before any heavy work.

    ``keys``: the coarse keys (:func:`check_setup`). The scalar arguments were checked when the parameter objects
    were made; the expression values are checked by :func:`check_data`.
    """
    estimated = check_n_fine(n_fine, children_prior)
    if len(keys) > 1:
        _check_schemes(adata, keys, n_fine, estimated, children_prior, regulariser)
    else:
        coarse = check_coarse_labels(adata.obs[keys[0]], keys[0])
        n_coarse = len(coarse.categories)
        if isinstance(n_fine, Mapping):
            _check_known_counts(n_fine, coarse, keys[0])
        elif not estimated and n_fine <= n_coarse:
            raise ValueError(
                f"n_fine={n_fine} must exceed the number of coarse classes in {keys[0]!r} ({n_coarse}); "
                "with n_fine <= n_coarse there is nothing to refine."
            )
        if isinstance(children_prior, Mapping):
            _check_children_prior(children_prior, coarse, keys[0], n_fine)
        elif isinstance(children_prior, str) and children_prior == "uniform" and not estimated:
            sizes = np.bincount(coarse.codes, minlength=n_coarse)
            why = f"children_prior='uniform' (n_fine={n_fine} / {n_coarse} coarse classes = {n_fine / n_coarse:g} each)"
            check_children_fit(sizes, [str(c) for c in coarse.categories], [n_fine / n_coarse] * n_coarse, why)
    if not estimated and n_fine > adata.n_obs:
        raise ValueError(f"n_fine={n_fine} exceeds the number of cells ({adata.n_obs}).")
