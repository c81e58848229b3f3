"""What a saved :class:`~falcon_sc.FalconModel` folder must hold, declared once and checked before anything is built.

Three tables describe the folder:

- :data:`SETTINGS`: every field of ``model.json`` with its check (type and range; nested objects are tables too);
- :data:`RULES`: the fields that must agree with each other (relation x names, transform x setup, ...), and the
  optional ``schemes`` object of a model fitted on several coarse schemes (:data:`SCHEMES`);
- :func:`array_specs` / :func:`network_shapes`: the arrays of ``preprocessing.npz`` and the tensors of
  ``weights.pt`` with the dtype and shape the settings imply.

A check returns ``None`` when the value is right, else what is wrong (a phrase for the message); :func:`broken`
makes the one :class:`~falcon_sc.errors.SavedModelError` that names the file, the field or entry, and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import is_int
from ..core.schemes import joint_relation
from ..errors import SavedModelError
from ..pp import INPUT_KINDS

Check = Callable[[Any], "str | None"]
#: what to do with a refused folder (every message ends with it)
ADVICE = (
    "The folder is damaged, was edited, or was not written by FalconModel.save: save the fitted model again with "
    "falcon_sc (model.save(path, overwrite=True)), or refit it."
)
_JSON_TYPES = {str: "a string", bool: "true/false", int: "an integer", float: "a number", list: "a list"}
_DETECTED_KINDS = tuple(k for k in INPUT_KINDS if k != "auto")


def broken(file: Path, where: str, problem: str) -> SavedModelError:
    """The error for a saved-model file whose ``where`` (field, entry or tensor) is wrong as ``problem`` says."""
    return SavedModelError(f"saved model {str(file)!r}: {where} {problem}. {ADVICE}")


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    return _JSON_TYPES.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------- field checks
def text(value: Any) -> str | None:
    """A string."""
    return None if isinstance(value, str) else f"must be a string, found {json_type(value)}"


def optional(check: Check) -> Check:
    """``null`` or a value ``check`` accepts."""
    return lambda value: None if value is None else check(value)


def integer(minimum: int) -> Check:
    """An integer ``>= minimum`` (true/false is not an integer)."""

    def check(value: Any) -> str | None:
        if not is_int(value):
            return f"must be an integer, found {json_type(value)}"
        return None if value >= minimum else f"must be >= {minimum}, found {value}"

    return check


def choice(options: tuple[str, ...]) -> Check:
    """One of the strings ``options``."""
    return lambda value: None if isinstance(value, str) and value in options else f"must be one of {list(options)}"


def list_of(item: Check, *, min_len: int = 0, unique: bool = False) -> Check:
    """A list of at least ``min_len`` items, each accepted by ``item`` (all different with ``unique``)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a list, found {json_type(value)}"
        if len(value) < min_len:
            return f"must hold at least {min_len} item(s), found {len(value)}"
        for i, v in enumerate(value):
            problem = item(v)
            if problem is not None:
                return f"item {i} {problem}"
        if unique and len(set(value)) < len(value):
            twice = sorted({v for v in value if value.count(v) > 1})
            return f"must hold different names, found {twice[:5]} more than once"
        return None

    return check


def flag(value: Any) -> str | None:
    """``true`` or ``false``."""
    return None if isinstance(value, bool) else f"must be true or false, found {json_type(value)}"


def zero_one(value: Any) -> str | None:
    """The integer 0 or 1."""
    return None if is_int(value) and value in (0, 1) else f"must be 0 or 1, found {value!r}"


def record(value: Any) -> str | None:
    """A JSON object (string keys, any values)."""
    return None if isinstance(value, dict) else f"must be an object, found {json_type(value)}"


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


def params_record(value: Any) -> str | None:
    """The run's parameters: an object of plain values, flat lists of numbers or strings, or objects of plain values.

    These are the shapes :func:`falcon_sc._layout.uns_params` writes into ``uns`` at predict time.
    """
    if not isinstance(value, dict):
        return f"must be an object, found {json_type(value)}"
    for key, v in value.items():
        ok = (
            _plain(v)
            or (isinstance(v, list) and all(isinstance(x, str | int | float) for x in v))
            or (isinstance(v, dict) and all(_plain(x) for x in v.values()))
        )
        if not ok:
            return f"entry {key!r} must be a plain value, a flat list or an object of plain values"
    return None


def coarse_keys(value: Any) -> str | None:
    """One ``obs`` column, or a list of at least two different ones (several coarse schemes)."""
    if isinstance(value, list):
        return list_of(text, min_len=2, unique=True)(value)
    return text(value)


#: the fields of ``model.json``; a nested table is a nested object
SETUP: dict[str, Any] = {
    "coarse_key": coarse_keys,
    "layer": optional(text),
    "use_rep": optional(text),
    "input_kind": choice(INPUT_KINDS),
    "batch_key": optional(text),
    "n_top_genes": integer(2),
    "n_comps": integer(2),
    "n_comps_within": integer(0),
    "model_input": choice(("pca", "hvg")),
}
TRANSFORM: dict[str, Any] = {
    "use_rep": optional(text),
    "layer": optional(text),
    "batch_key": optional(text),
    "model_input": choice(("pca", "hvg")),
    "n_comps_within": integer(0),
    "input_kind": optional(choice(_DETECTED_KINDS)),
    "batch_names": list_of(text, unique=True),  # at least one unless the model reads an embedding (RULES)
    "within": list_of(flag),
}
SETTINGS: dict[str, Any] = {
    "model_class": text,
    "format_version": integer(1),
    "falcon_sc_version": text,
    "setup": SETUP,
    "params": params_record,
    "coarse_names": list_of(text, min_len=1, unique=True),
    "fine_names": list_of(text, min_len=1, unique=True),
    "relation": list_of(list_of(zero_one, min_len=1), min_len=1),
    "use_warm": list_of(flag, min_len=1),
    "hidden": list_of(integer(1)),
    "n_input": integer(1),
    "history": list_of(record),
    "transform": TRANSFORM,
}


def check_fields(value: Mapping[str, Any], table: Mapping[str, Any], prefix: str = "") -> tuple[str, str] | None:
    """The first field of ``value`` that ``table`` refuses, as ``(dotted name, problem)``; ``None`` when all pass.

    Fields of ``value`` that ``table`` does not list are ignored.
    """
    for name, check in table.items():
        where = f"{prefix}{name}"
        if name not in value:
            return where, "is missing"
        if isinstance(check, Mapping):
            if not isinstance(value[name], dict):
                return where, f"must be an object, found {json_type(value[name])}"
            found = check_fields(value[name], check, f"{where}.")
        else:
            problem = check(value[name])
            found = None if problem is None else (where, problem)
        if found is not None:
            return found
    return None


#: the ``schemes`` object of a model fitted on several coarse schemes (absent with one scheme)
SCHEMES: dict[str, Any] = {
    "keys": list_of(text, min_len=2, unique=True),
    "names": list_of(list_of(text, min_len=1, unique=True), min_len=2),
    "relations": list_of(list_of(list_of(zero_one, min_len=1), min_len=1), min_len=2),
    "joint": list_of(list_of(integer(-1), min_len=2), min_len=1),
    "groups": list_of(list_of(integer(0), min_len=2), min_len=1),
}


# ---------------------------------------------------------------------- fields that must agree
def parent_table(table: list[list[int]], fine_names: list[str], coarse_names: list[str], of: str) -> str | None:
    """A fine x coarse 0/1 table giving every fine class one parent and every coarse class a child (``of``: names)."""
    relation = np.asarray(table) if len({len(r) for r in table}) == 1 else None
    n_fine, n_coarse = len(fine_names), len(coarse_names)
    if relation is None or relation.shape != (n_fine, n_coarse):
        return f"must be a fine x coarse table of {n_fine} rows (fine_names) of {n_coarse} ({of}) each"
    parents = relation.sum(axis=1)
    if (parents != 1).any():
        fine = fine_names[int(np.flatnonzero(parents != 1)[0])]
        return f"must give every fine class exactly one coarse class; {fine!r} has {int(parents[parents != 1][0])}"
    if (relation.sum(axis=0) == 0).any():
        coarse = coarse_names[int(np.flatnonzero(relation.sum(axis=0) == 0)[0])]
        return f"must give every coarse class at least one fine class; {coarse!r} has none"
    return None


def _relation(s: dict[str, Any]) -> str | None:
    if s.get("schemes") is None:
        return parent_table(s["relation"], s["fine_names"], s["coarse_names"], "coarse_names")
    schemes = s["schemes"]  # checked before (RULES order): the joint groups' table follows from the schemes'
    relations = [np.asarray(r) for r in schemes["relations"]]
    expected = joint_relation(relations, np.asarray(schemes["joint"], dtype=np.int64))
    found = np.asarray(s["relation"]) if len({len(r) for r in s["relation"]}) == 1 else None
    if found is None or found.shape != expected.shape or (found != expected).any():
        return (
            "must be the joint groups' table (fine x coarse_names) the schemes' relations give: a fine class is "
            "allowed in a joint group when it is a child there in every labelled scheme"
        )
    return None


def _code_rows(rows: list[list[int]], names: list[list[str]], missing: bool) -> str | None:
    """Rows of coarse codes, one per scheme (``-1`` allowed with ``missing``), all different."""
    for i, row in enumerate(rows):
        if len(row) != len(names):
            return f"item {i} must hold one coarse class per scheme ({len(names)}), found {len(row)}"
        bad = [c for c, n in zip(row, names, strict=True) if c >= len(n) or (c < 0 and not missing)]
        if bad or (missing and all(c < 0 for c in row)):
            return f"item {i} must hold coarse class codes of each scheme's names{' (-1: no label)' if missing else ''}"
    if len({tuple(r) for r in rows}) < len(rows):
        return "must hold different rows"
    return None


def _schemes(s: dict[str, Any]) -> tuple[str, str] | str | None:
    key = s["setup"]["coarse_key"]
    if isinstance(key, str):
        return None if s.get("schemes") is None else "must be absent for a model fitted on one coarse scheme"
    if "schemes" not in s or not isinstance(s["schemes"], dict):
        return "must be an object (keys, names, relations, joint, groups) for a model fitted on several schemes"
    schemes = s["schemes"]
    found = check_fields(schemes, SCHEMES, "schemes.")
    if found is not None:
        return found
    if schemes["keys"] != key:
        return "schemes.keys", f"must be setup.coarse_key {key}"
    names = schemes["names"]
    for field in ("names", "relations"):
        if len(schemes[field]) != len(key):
            return f"schemes.{field}", f"must hold one item per scheme ({len(key)}), found {len(schemes[field])}"
    for i, (table, coarse) in enumerate(zip(schemes["relations"], names, strict=True)):
        problem = parent_table(table, s["fine_names"], coarse, f"schemes.names item {i}")
        if problem is not None:
            return "schemes.relations", f"item {i} {problem}"
    for field, missing in (("joint", True), ("groups", False)):
        problem = _code_rows(schemes[field], names, missing)
        if problem is not None:
            return f"schemes.{field}", problem
    joint = ["|".join("NA" if c < 0 else names[j][c] for j, c in enumerate(row)) for row in schemes["joint"]]
    if joint != s["coarse_names"]:
        return "coarse_names", "must be the names of the joint groups of schemes.joint (labels joined by '|')"
    return None


def _use_warm(s: dict[str, Any]) -> str | None:
    n = len(s["coarse_names"])
    return (
        None if len(s["use_warm"]) == n else f"must hold one value per coarse class ({n}), found {len(s['use_warm'])}"
    )


def _transform(s: dict[str, Any]) -> str | None:
    t, setup = s["transform"], s["setup"]
    same = ["use_rep", "layer", "batch_key"] + (["model_input", "n_comps_within"] if setup["use_rep"] is None else [])
    differ = [k for k in same if t[k] != setup[k]]
    if differ:
        return f"must agree with setup on {differ}"
    if (t["input_kind"] is None) != (t["use_rep"] is not None):
        return "input_kind must be null exactly when the model reads an embedding (use_rep)"
    if t["use_rep"] is None and not t["batch_names"]:
        return "batch_names must hold at least one batch name when the model reads genes"
    n_groups = len(s["coarse_names"]) if s.get("schemes") is None else len(s["schemes"]["groups"])
    n_within = n_groups if t["n_comps_within"] > 0 and t["use_rep"] is None else 0
    if len(t["within"]) != n_within:
        found = len(t["within"])
        return (
            f"within must hold {n_within} values (one per coarse class, or per group of schemes.groups, with "
            f"n_comps_within > 0), found {found}"
        )
    return None


#: cross-field rules: the field named in the message, and its check on the whole (type-checked) settings (a rule
#: may name a field itself: ``(field, problem)``)
RULES: tuple[tuple[str, Callable[[dict[str, Any]], tuple[str, str] | str | None]], ...] = (
    ("schemes", _schemes),
    ("relation", _relation),
    ("use_warm", _use_warm),
    ("transform", _transform),
)


# ---------------------------------------------------------------------- arrays and tensors the settings imply
def array_specs(settings: Mapping[str, Any], n_genes: int) -> dict[str, tuple[str, tuple[int | None, ...]]]:
    """Entry of ``preprocessing.npz`` -> (allowed dtype kinds, shape; ``None``: any size >= 1)."""
    t = settings["transform"]
    if t["use_rep"] is not None:
        return {"genes": ("U", (0,))}
    specs: dict[str, tuple[str, tuple[int | None, ...]]] = {
        "genes": ("U", (n_genes,)),
        "pca_mean": ("f", (None, n_genes)),
        "pca_scale": ("f", (None, n_genes)),
        "pca_loadings": ("f", (n_genes, None)),
    }
    for g, has in enumerate(t["within"]):
        if has:
            specs[f"within{g}_mean"] = ("f", (None, n_genes))
            specs[f"within{g}_scale"] = ("f", (None, n_genes))
            specs[f"within{g}_loadings"] = ("f", (n_genes, None))
            specs[f"within{g}_batches"] = ("iu", (None,))
    return specs


def array_problem(name: str, array: np.ndarray, spec: tuple[str, tuple[int | None, ...]]) -> str | None:
    """What is wrong with the npz entry ``name`` against its spec (dtype, shape, finite values), or ``None``."""
    kinds, shape = spec
    if array.dtype.kind not in kinds:
        return (
            f"has dtype {array.dtype}, expected {'text' if kinds == 'U' else 'integers' if 'i' in kinds else 'floats'}"
        )
    if array.ndim != len(shape) or any(
        (n is None and m < 1) or (n is not None and m != n) for m, n in zip(array.shape, shape, strict=True)
    ):
        want = "x".join("n" if n is None else str(n) for n in shape) or "scalar"
        return f"has shape {array.shape}, expected {want}"
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if name.endswith("_mean") and array.ndim == 2:
            bad &= ~np.isnan(array).all(axis=1, keepdims=True)  # a batch without cells at fit time: a row of NaN
        if bad.any():
            return f"holds {int(bad.sum())} NaN or infinite value(s)"
    return None


def arrays_agree(settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> tuple[str, str] | None:
    """The npz entries (already shaped as :func:`array_specs` says) against each other and the settings."""
    t = settings["transform"]
    if t["use_rep"] is not None:
        return None
    if len(set(arrays["genes"].tolist())) < len(arrays["genes"]):
        return "genes", "holds a gene name more than once"
    n_batches = len(t["batch_names"])
    if arrays["pca_scale"].shape != arrays["pca_mean"].shape or arrays["pca_mean"].shape[0] > n_batches:
        return "pca_mean", f"must have as many rows as pca_scale, and at most one per batch ({n_batches})"
    for g, has in enumerate(t["within"]):
        if not has:
            continue
        mean, batches = arrays[f"within{g}_mean"], arrays[f"within{g}_batches"]
        if arrays[f"within{g}_scale"].shape != mean.shape or len(batches) != mean.shape[0]:
            return f"within{g}_mean", f"must have one row per entry of within{g}_batches, as within{g}_scale"
        if len(np.unique(batches)) < len(batches) or batches.min() < 0 or batches.max() >= n_batches:
            return f"within{g}_batches", f"must hold different batch codes from 0 to {n_batches - 1}"
        if arrays[f"within{g}_loadings"].shape[1] > t["n_comps_within"]:
            return f"within{g}_loadings", f"has more than n_comps_within={t['n_comps_within']} components"
    n_genes, n_comps = arrays["pca_loadings"].shape
    expected = n_genes if t["model_input"] == "hvg" else n_comps + t["n_comps_within"]
    if settings["n_input"] != expected:
        return "n_input", f"is {settings['n_input']}, but the preprocessing gives {expected} network inputs"
    return None


def network_shapes(n_input: int, hidden: list[int], n_fine: int) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape of :class:`~falcon_sc.models.MLPClassifier` (computed, nothing is allocated)."""
    shapes: dict[str, tuple[int, ...]] = {}
    width = n_input
    for i, h in enumerate(hidden):
        shapes[f"body.{2 * i}.weight"], shapes[f"body.{2 * i}.bias"] = (h, width), (h,)
        width = h
    shapes["head.weight"], shapes["head.bias"] = (n_fine, width), (n_fine,)
    return shapes


def weights_problem(settings: Mapping[str, Any], weights: Any) -> tuple[str, str] | None:
    """What is wrong with the loaded ``weights.pt`` (``network.*`` and optional ``warm.*`` tensors), or ``None``."""
    if not isinstance(weights, Mapping) or not all(isinstance(k, str) for k in weights):
        return "the file", "must hold a dictionary of named tensors"
    shapes = network_shapes(settings["n_input"], settings["hidden"], len(settings["fine_names"]))
    has_warm = any(k.startswith("warm.") for k in weights) or any(settings["use_warm"])
    expected = {f"{p}.{k}": v for p in ("network", "warm")[: 1 + has_warm] for k, v in shapes.items()}
    missing, extra = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    if missing or extra:
        what = "; ".join(f"{w} {names[:4]}" for w, names in (("lacks", missing), ("has unexpected", extra)) if names)
        return "the file", f"does not hold the tensors the settings (n_input, hidden, fine_names) imply: {what}"
    for name, shape in expected.items():
        t = weights[name]
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or not t.is_floating_point():
            return f"tensor {name!r}", f"must be a dense float tensor, found {type(t).__name__}"
        if tuple(t.shape) != shape:
            return f"tensor {name!r}", f"has shape {tuple(t.shape)}, expected {shape}"
        if not bool(torch.isfinite(t).all()):
            return f"tensor {name!r}", "holds NaN or infinite values"
    return None
