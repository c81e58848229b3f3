"""``fal.tl.fine_markers``: marker genes of each fine class against its siblings in the same coarse class."""

from __future__ import annotations

from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scanpy import logging as logg
from scipy import sparse

from .._checks import check_bool, check_choice, check_int
from .._layout import markers_key, read_results, write_markers
from ..pp._checks import check_input_kind
from ..pp._input_kind import resolve_input_kind

#: tests of ``sc.tl.rank_genes_groups`` that give scores, log fold changes and p-values
METHODS = ("wilcoxon", "t-test", "t-test_overestim_var")
#: columns of the tidy marker table (``sc.get.rank_genes_groups_df``'s, plus the coarse class and the reference)
COLUMNS = ["coarse", "group", "names", "scores", "logfoldchanges", "pvals", "pvals_adj", "reference"]
SIBLINGS, OTHER_COARSE = "siblings", "other coarse classes"


def fine_markers(
    adata: ad.AnnData,
    key: str = "falcon",
    *,
    n_genes: int | None = 100,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var"] = "wilcoxon",
    layer: str | None = None,
    use_raw: bool | None = None,
    input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
    single_child: Literal["skip", "rest"] = "skip",
    key_added: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame:
    """Marker genes of each fine class against its siblings: the other fine classes of the same coarse class.

    For every coarse class, :func:`scanpy.tl.rank_genes_groups` runs on that class's cells only, grouped by the fine
    label ``obs[key]``, each fine class against the rest of its coarse class (``reference="rest"``). The markers
    therefore tell the fine classes of one coarse class apart, not the coarse class from the others (those genes
    are shared by the siblings and cancel out).

    Parameters
    ----------
    adata
        Annotated data matrix after :func:`falcon_sc.tl.refine` (or :meth:`falcon_sc.FalconModel.predict`); not
        modified except for ``uns[key_added]``.
    key
        ``key_added`` of :func:`~falcon_sc.tl.refine`: fine labels in ``obs[key]``, their parents in
        ``uns[key]["relations"]``.
    n_genes
        Genes kept per fine class (the top ranked); ``None`` keeps every gene.
    method
        Test of :func:`scanpy.tl.rank_genes_groups`: ``"wilcoxon"``, ``"t-test"`` or ``"t-test_overestim_var"``.
    layer
        Layer with the expression values; ``None`` uses ``X`` (or ``raw``, see ``use_raw``).
    use_raw
        Use ``adata.raw`` (its genes); ``None``, as in scanpy, uses it when ``adata.raw`` is set and ``layer`` is not
        given.
    input_kind
        What the matrix holds. Marker tests expect log-normalised values: ``"auto"`` detects the kind
        (:func:`~falcon_sc.pp.detect_input_kind`); raw counts and normalised, not logged values are normalised to
        1e4 per cell and ``log1p``-transformed in a copy, as :func:`~falcon_sc.tl.refine` does; log-normalised values
        are used as they are. ``"counts"``, ``"normalized"`` or ``"lognorm"`` override the detection.
    single_child
        What to do with a coarse class whose cells all carry one fine class (no sibling to compare with):
        ``"skip"`` leaves it out (a warning names it); ``"rest"`` compares it against the cells of every other
        coarse class, which gives the coarse class's own markers (column ``reference``: ``"other coarse classes"``).
    key_added
        Key of ``adata.uns`` for the results; default ``f"{key}_markers"``.
    inplace
        Write the results into ``adata.uns[key_added]``; ``False`` only returns the table. As for every function of
        :mod:`falcon_sc.tl` whose result is a table (scanpy's ``inplace``), the table is returned either way.

    Returns
    -------
    A tidy table, one row per fine class and gene, best first within each class, with the columns of
    :func:`scanpy.get.rank_genes_groups_df` (``group``: the fine class, ``names``, ``scores``, ``logfoldchanges``,
    ``pvals``, ``pvals_adj``) plus ``coarse`` (the parent) and ``reference`` (``"siblings"`` or
    ``"other coarse classes"``). Coarse classes come in the order of ``uns[key]["relations"]``'s columns, fine
    classes in the order of its rows. With ``inplace``, ``adata.uns[key_added]`` gets ``markers`` (this table) and
    ``params`` (the arguments, the kind of input found, the coarse classes ``skipped``); it is written to h5ad as
    is and :func:`falcon_sc.pl.fine_markers` plots it.

    Fine classes with a single cell cannot be tested and are left out (a warning names them); they still count among
    the siblings of the others. Fine classes without cells have no markers.

    Raises
    ------
    KeyError
        No FALCON results under ``key`` (run :func:`~falcon_sc.tl.refine` first), or ``layer`` not in
        ``adata.layers``.
    TypeError
        ``adata`` is not an AnnData, or an argument has the wrong type.
    ValueError
        A bad value: ``n_genes``, ``method``, ``input_kind``, ``single_child``; ``use_raw=True`` without
        ``adata.raw`` or together with ``layer``; ``key_added`` equal to ``key``; fine labels that are missing or not
        in ``uns[key]["relations"]``; a matrix with negative or non-finite values (e.g. scaled data: pass the
        ``layer`` holding counts or log-normalised values, or ``use_raw=True``). All raised before any test runs.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> fal.tl.refine(adata, "coarse", n_fine=10)  # doctest: +SKIP
    >>> markers = fal.tl.fine_markers(adata, n_genes=20)  # doctest: +SKIP
    >>> markers.groupby("group").head(3)  # doctest: +SKIP
    >>> fal.pl.fine_markers(adata, n_genes=5)  # doctest: +SKIP
    """
    start = logg.info(f"finding marker genes of the fine classes of {key!r} against their siblings")
    res = read_results(adata, key, need=("relations", "labels"))
    n_genes = _check_options(adata, key, n_genes, method, layer, use_raw, input_kind, single_child, key_added, inplace)
    use_raw = adata.raw is not None and layer is None if use_raw is None else bool(use_raw)
    labels = res.fine_labels()
    parent = res.parents()
    relations = res.relations
    unknown = sorted(set(labels) - set(parent))
    if unknown:
        raise ValueError(
            f"adata.obs[{key!r}] has labels that are not fine classes of adata.uns[{key!r}]['relations']: "
            f"{unknown[:10]}; the labels and the results are out of step: rerun fal.tl.refine (or fal.tl.rename)."
        )
    expr, kind = lognorm_expression(adata, layer=layer, use_raw=use_raw, input_kind=input_kind)

    counts = labels.value_counts()
    one_cell = [f for f in parent if counts.get(f, 0) == 1]
    if one_cell:
        logg.warning(f"fine classes with a single cell cannot be tested and have no markers: {', '.join(one_cell)}")
    tables, skipped, alone = [], [], []
    for coarse in relations.columns.astype(str):
        kids = [f for f in parent if parent[f] == coarse and counts.get(f, 0) > 0]
        if len(kids) == 1 and single_child == "rest" and counts[kids[0]] >= 2:
            alone.append(kids[0])
        elif len(kids) == 1:
            skipped.append(coarse)
        elif any(counts[f] >= 2 for f in kids):
            mask = labels.isin(kids).to_numpy()
            tables.append(rank_groups(expr[mask], labels[mask], kids, parent, method, n_genes, SIBLINGS))
    if alone:  # single children against every other coarse class's cells (their coarse class is all theirs)
        tables.append(rank_groups(expr, labels, alone, parent, method, n_genes, OTHER_COARSE))
    if skipped:
        logg.warning(
            "coarse classes with a single fine class have no siblings to compare with and were skipped: "
            + ", ".join(skipped)
            + ("" if single_child == "rest" else " (single_child='rest' compares them with the other coarse classes)")
        )
    table = _tidy(tables, relations)
    if inplace:
        key_added = markers_key(key) if key_added is None else key_added
        params = {
            "key": key,
            "method": method,
            "n_genes": -1 if n_genes is None else n_genes,
            "use_raw": use_raw,
            "input_kind": kind,
            "single_child": single_child,
            "skipped": np.asarray(skipped, dtype=str),
        }
        if layer is not None:
            params["layer"] = layer
        write_markers(adata, key_added, table, params)
        logg.info("    finished", time=start, deep=f"added\n    'uns[{key_added!r}]', marker genes (table and params)")
    else:
        logg.info("    finished", time=start)
    return table


# ---------------------------------------------------------------------- shared with pl
def lognorm_expression(
    adata: ad.AnnData, *, layer: str | None, use_raw: bool, input_kind: str = "auto"
) -> tuple[ad.AnnData, str]:
    """Cells x genes log-normalised expression as a new AnnData (``adata``'s matrix is never modified), and its kind.

    Counts and normalised values get ``normalize_total(1e4)`` + ``log1p`` (a copy); log-normalised values are
    referenced as they are (and the ``log1p`` base of ``adata.uns`` is carried over).
    """
    if layer is not None:
        X, var_names, source = adata.layers[layer], adata.var_names, f"layers[{layer!r}]"
    elif use_raw:
        X, var_names, source = adata.raw.X, adata.raw.var_names, "raw.X"
    else:
        X, var_names, source = adata.X, adata.var_names, "X"
    try:
        kind, detected, why = resolve_input_kind(X, input_kind, source=source)
    except ValueError as err:
        raise ValueError(
            f"{err} Marker genes need counts or log-normalised values: pass layer= (a layer holding them) or "
            "use_raw=True."
        ) from None
    obs = pd.DataFrame(index=adata.obs_names.copy())
    var = pd.DataFrame(index=pd.Index(var_names.astype(str)))
    if kind == "lognorm":
        logg.info(f"    {source} holds log-normalised values ({why}): used as they are")
        expr = ad.AnnData(X=X, obs=obs, var=var)
        if isinstance(adata.uns.get("log1p"), dict):
            expr.uns["log1p"] = dict(adata.uns["log1p"])
        return expr, kind
    how = f"{why}, detected" if kind == detected else f"input_kind={input_kind!r}"
    logg.info(f"    {source} holds {kind} ({how}): normalize_total(1e4) + log1p on a copy")
    X = sparse.csr_matrix(X, dtype=np.float32, copy=True) if sparse.issparse(X) else np.array(X, dtype=np.float32)
    expr = ad.AnnData(X=X, obs=obs, var=var)
    with _quiet():
        sc.pp.normalize_total(expr, target_sum=1e4)
        sc.pp.log1p(expr)
    return expr, kind


# ---------------------------------------------------------------------- internals
def _quiet():
    """Scanpy's own info lines off (its warnings stay) while its steps run inside this function's."""
    return sc.settings.verbosity.override(min(sc.settings.verbosity, sc.Verbosity.warning))


def _check_options(
    adata: ad.AnnData,
    key: str,
    n_genes: Any,
    method: Any,
    layer: Any,
    use_raw: Any,
    input_kind: Any,
    single_child: Any,
    key_added: Any,
    inplace: Any,
) -> int | None:
    """Check the options of :func:`fine_markers` (before any test runs); return ``n_genes`` as an int or ``None``."""
    check_int("n_genes", n_genes, 1, allow_none=True)
    check_choice("method", method, METHODS)
    check_input_kind(input_kind)
    check_choice("single_child", single_child, ("skip", "rest"))
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"layer={layer!r} is not in adata.layers (layers: {list(adata.layers)}).")
    check_bool("use_raw", use_raw, allow_none=True)
    if use_raw and adata.raw is None:
        raise ValueError("use_raw=True but adata.raw is not set; pass use_raw=False (adata.X) or layer=.")
    if use_raw and layer is not None:
        raise ValueError(f"use_raw=True and layer={layer!r} name two matrices; pass one of them.")
    if key_added is not None and (not isinstance(key_added, str) or not key_added):
        raise ValueError(f"key_added={key_added!r} must be a non-empty str (or None for f'{{key}}_markers').")
    if key_added == key:
        raise ValueError(f"key_added={key_added!r} would overwrite the FALCON results adata.uns[{key!r}].")
    check_bool("inplace", inplace)
    return None if n_genes is None else int(n_genes)


def rank_groups(
    expr: ad.AnnData,
    labels: pd.Series,
    groups: list[str],
    parent: dict[str, str],
    method: str,
    n_genes: int | None,
    reference: str,
) -> pd.DataFrame:
    """``rank_genes_groups`` of ``groups`` (those with 2 cells or more) against the rest of ``expr``'s cells, tidy.

    Also ranks the coarse classes against each other for :func:`~falcon_sc.tl.mixed_lineage` (``parent`` then maps
    each coarse class to itself).
    """
    sub = expr.copy()  # (a view's rows only) scanpy may drop explicit zeros of the matrix in place
    present = set(labels)
    sub.obs["fine"] = pd.Categorical(labels.to_numpy(), categories=[f for f in parent if f in present])
    counts = labels.value_counts()
    tested = [f for f in groups if counts.get(f, 0) >= 2]
    with _quiet():
        sc.tl.rank_genes_groups(
            sub, "fine", groups=tested, reference="rest", method=method, n_genes=n_genes, use_raw=False, key_added="rgg"
        )
    df = sc.get.rank_genes_groups_df(sub, group=tested, key="rgg")
    if "group" not in df:  # scanpy leaves the column out for a single group
        df.insert(0, "group", tested[0])
    df["group"] = df["group"].astype(str)
    df.insert(0, "coarse", df["group"].map(parent))
    df["reference"] = reference
    return df


def _tidy(tables: list[pd.DataFrame], relations: pd.DataFrame) -> pd.DataFrame:
    """One table: coarse classes in the order of the relation's columns, fine classes in the order of its rows."""
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=float if c in COLUMNS[3:7] else object) for c in COLUMNS})
    table = pd.concat(tables, ignore_index=True)
    coarse_rank = {str(c): i for i, c in enumerate(relations.columns)}
    fine_rank = {str(f): i for i, f in enumerate(relations.index)}
    order = np.lexsort((np.arange(len(table)), table["group"].map(fine_rank), table["coarse"].map(coarse_rank)))
    table = table.iloc[order].reset_index(drop=True)
    for col in ("coarse", "group", "names", "reference"):
        table[col] = table[col].astype(str).astype(object)
    return table[COLUMNS]
