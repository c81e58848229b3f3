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
        "relation": {str(k): str(v) for k, v in relation.items()},
        "source": source,
    }
    return adata
