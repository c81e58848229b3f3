"""Shared helpers for the dataset loaders."""

from __future__ import annotations

from collections.abc import Mapping

import anndata as ad
import pandas as pd


def finalise(adata: ad.AnnData, name: str, source: str, relation: Mapping[str, str] | None = None) -> ad.AnnData:
    """Make ``obs["coarse"]``/``obs["fine"]`` categorical and store ``uns["falcon_dataset"]``.

    Parameters
    ----------
    adata
        Data with ``obs["coarse"]`` and ``obs["fine"]``; modified in place.
    name
        Dataset name.
    source
        Human-readable provenance.
    relation
        Fine -> coarse mapping (category order of ``fine``); derived from ``obs`` when omitted.

    Returns
    -------
    AnnData
        ``adata`` itself.
    """
    for key in ("coarse", "fine"):
        col = adata.obs[key]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(str).astype("category")
        adata.obs[key] = col.cat.remove_unused_categories()
    if relation is None:
        pairs = adata.obs[["fine", "coarse"]].drop_duplicates()
        if pairs["fine"].duplicated().any():
            bad = sorted(pairs.loc[pairs["fine"].duplicated(), "fine"].astype(str))
            raise ValueError(f"fine classes with more than one coarse parent: {bad}")
        lookup = dict(zip(pairs["fine"].astype(str), pairs["coarse"].astype(str), strict=True))
        relation = {str(f): lookup[str(f)] for f in adata.obs["fine"].cat.categories}
    adata.uns["falcon_dataset"] = {
        "name": name,
        # a table, not a dict: fine names such as "CD4+/CD25 T Reg" hold "/", which h5ad keys cannot
        "relation": pd.DataFrame({"fine": [str(k) for k in relation], "coarse": [str(v) for v in relation.values()]}),
        "source": source,
    }
    return adata


def true_relation(adata: ad.AnnData) -> dict[str, str]:
    """The dataset's fine -> coarse relation, ``uns["falcon_dataset"]["relation"]``, as a dict.

    Stored as a two-column table (``fine``, ``coarse``); a dict (older files) is accepted too.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> fal.datasets.true_relation(fal.datasets.pbmc68k())["CD14+ Monocyte"]
    'myeloid'
    """
    meta = adata.uns.get("falcon_dataset")
    stored = meta.get("relation") if isinstance(meta, Mapping) else None
    if isinstance(stored, pd.DataFrame):
        return dict(zip(stored["fine"].astype(str), stored["coarse"].astype(str), strict=True))
    if isinstance(stored, Mapping):
        return {str(k): str(v) for k, v in stored.items()}
    raise KeyError(
        "adata.uns['falcon_dataset']['relation'] is missing: this AnnData does not come from a falcon_sc.datasets "
        "loader."
    )
