"""``fal.tl.rename``: biological names for the fine classes, everywhere FALCON wrote them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anndata as ad
import pandas as pd
from scanpy import logging as logg

from .._layout import FalconResults, is_markers_of, read_results
from .._names import renamed
from ..models import FalconModel


def rename(
    adata: ad.AnnData,
    mapping: Mapping[str, str],
    key: str = "falcon",
    *,
    model: FalconModel | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Give the fine classes found by :func:`~falcon_sc.tl.refine` new names, e.g. biological ones.

    ``mapping`` maps current names (``"T cell/1"``) to new ones (``"CD4 naive"``); classes it does not name keep
    theirs. Everything that names the fine classes follows:

    - ``obs[key]``: the categories, in the same order (same cells, same codes);
    - ``uns[key]["relations"]`` and ``uns[key]["fine_classes"]``: the index; ``uns[key]["scheme_relations"]`` (several
      coarse schemes): the index of every table;
    - ``obsm[f"{key}_probs"]`` needs nothing: its columns follow the rows of ``uns[key]["relations"]``, whose order
      is kept;
    - marker genes of :func:`~falcon_sc.tl.fine_markers` for this ``key`` (any ``uns`` entry, default
      ``uns[f"{key}_markers"]``): the ``group`` column;
    - ``model`` (optional): its fine classes (:meth:`~falcon_sc.FalconModel.rename`), so that
      :meth:`~falcon_sc.FalconModel.predict` and a saved model use the new names.

    ``obs[f"{key}_warm_start"]`` is not renamed: it is another partition (the warm start before training), whose
    classes need not be the final ones even where they share a name. ``uns[key]["history"]``,
    ``children_history``, ``params`` and ``partition_choice`` name no fine class.

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`~falcon_sc.tl.refine` (or :meth:`~falcon_sc.FalconModel.predict`);
        modified in place.
    mapping
        Current name -> new name, both ``str``. Names may be swapped (``{"a": "b", "b": "a"}``).
    key
        ``key_added`` of :func:`~falcon_sc.tl.refine`.
    model
        The :class:`~falcon_sc.FalconModel` that found these classes, renamed too (in place, also with ``copy=True``).
        A model whose classes already carry the new names (renamed with another AnnData) is left as it is.
    copy
        Rename a copy of ``adata`` and return it, leaving ``adata`` as it is (as every function of
        :mod:`falcon_sc.tl` that writes annotations).

    Returns
    -------
    ``None`` (``adata`` renamed in place), or the renamed copy with ``copy=True``; ``model`` is renamed in place. A
    model predicts the classes in the order parent, then name: after renaming,
    :meth:`~falcon_sc.FalconModel.predict` may list the categories in another order than ``obs[key]`` here, with the
    same labels.

    Raises
    ------
    KeyError
        No FALCON results under ``key`` (run :func:`~falcon_sc.tl.refine` first), or names in ``mapping`` that are not
        fine classes (all listed).
    TypeError
        ``mapping`` not a mapping of ``str`` to ``str``; ``model`` not a fitted :class:`~falcon_sc.FalconModel`.
    ValueError
        Two classes that would end up with the same name (mapped onto one name, or onto the name of a class that keeps
        it), an empty name, a model with other fine classes than ``adata``, or results out of step with each other.

    Everything is checked before anything changes: after an error ``adata`` and ``model`` are as they were.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> model = fal.tl.refine(adata, "coarse", n_fine=10, return_model=True)  # doctest: +SKIP
    >>> fal.tl.fine_markers(adata)  # doctest: +SKIP
    >>> fal.tl.rename(adata, {"T cell/1": "CD4 T", "T cell/2": "CD8 T"}, model=model)  # doctest: +SKIP
    >>> adata.obs["falcon"].cat.categories  # doctest: +SKIP
    """
    if not isinstance(copy, bool):
        raise TypeError(f"copy must be a bool, got {type(copy).__name__}.")
    res = read_results(adata, key, need=("relations", "labels"))
    if copy:
        adata = adata.copy()
        res = read_results(adata, key, need=("relations", "labels"))
    names = res.fine_names
    what = f"fine classes of adata.uns[{key!r}]['relations']"
    new = dict(zip(names, renamed(names, mapping, what=what), strict=True))
    col = res.labels
    _check_subset(col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else col.dropna().unique(), new, key)
    tables = _tables(res)
    for where, table, _ in tables:
        _check_subset(table, new, key, where)
    rename_model = model is not None and _check_model(model, names, list(new.values()), mapping)

    # everything checked: rename
    if isinstance(col.dtype, pd.CategoricalDtype):
        adata.obs[key] = col.cat.rename_categories(lambda c: new[str(c)])
    else:
        adata.obs[key] = col.map(lambda c: new[str(c)] if pd.notna(c) else c)
    for _, table, setter in tables:
        setter(table.map(lambda v: new[str(v)]))
    if model is not None and rename_model:
        model.rename(mapping)
    changed = [f"{old!r} -> {nn!r}" for old, nn in new.items() if old != nn]
    logg.info(f"renamed {len(changed)} fine classes of {key!r}: " + ", ".join(changed))
    return adata if copy else None


def _tables(res: FalconResults) -> list[tuple[str, pd.Index | pd.Series, Callable[[pd.Index | pd.Series], None]]]:
    """Every other place naming the fine classes: (where, the names as an Index or Series, a setter of new names)."""
    out: list[tuple[str, pd.Index | pd.Series, Callable[[pd.Index | pd.Series], None]]] = []
    for where, container, name in res.fine_class_tables():

        def set_index(index: pd.Index | pd.Series, container: Any = container, name: str = name) -> None:
            container[name] = container[name].set_axis(index, axis=0)

        out.append((where, container[name].index, set_index))
    for entry_name, entry in res.adata.uns.items():
        if not is_markers_of(entry, res.key):
            continue

        def set_groups(groups: pd.Index | pd.Series, entry: Any = entry) -> None:
            entry["markers"] = entry["markers"].assign(group=groups.to_numpy())

        out.append((f"adata.uns[{entry_name!r}]['markers']['group']", entry["markers"]["group"], set_groups))
    return out


def _check_subset(values: Iterable[Any], new: dict[str, str], key: str, where: str | None = None) -> None:
    unknown = sorted({str(v) for v in values} - set(new))
    if unknown:
        where = where or f"adata.obs[{key!r}]"
        fix = "rerun fal.tl.fine_markers (or delete them)" if "markers" in where else "rerun fal.tl.refine"
        raise ValueError(
            f"{where} names classes that are not fine classes of adata.uns[{key!r}]['relations']: {unknown[:10]}; "
            f"the results are out of step: {fix}. Nothing was renamed."
        )


def _check_model(model: Any, names: list[str], new_names: list[str], mapping: Mapping[str, str]) -> bool:
    """Whether ``model`` is to be renamed: it holds the classes of ``adata`` (yes) or already the new names (no)."""
    if not isinstance(model, FalconModel):
        raise TypeError(f"model must be a FalconModel (or None), got {type(model).__name__}.")
    if not model.is_fitted:
        raise TypeError("model is not fitted: pass the FalconModel that found these fine classes.")
    model_names = [str(f) for f in model.relations.index]
    current = sorted(model_names)
    if current == sorted(names):
        renamed(model_names, mapping, what="fine classes of the model")
        return True
    if current == sorted(new_names):  # already renamed (with another AnnData holding these classes)
        return False
    raise ValueError(
        f"model has other fine classes than adata: {current[:10]} against {sorted(names)[:10]}; pass the model "
        "that found these classes (or rename it on its own with model.rename). Nothing was renamed."
    )
