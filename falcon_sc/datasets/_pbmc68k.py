"""scanpy's 700-cell ``pbmc68k_reduced`` (not the 68,579-cell PBMC data), with a coarse grouping of its bulk labels."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

from ._utils import finalise

#: Coarse grouping of scanpy's ``bulk_labels`` (fine -> coarse).
PBMC68K_RELATION: dict[str, str] = {
    "CD4+/CD25 T Reg": "T cell",
    "CD8+ Cytotoxic T": "T cell",
    "CD8+/CD45RA+ Naive Cytotoxic": "T cell",
    "CD4+/CD45RO+ Memory": "T cell",
    "CD4+/CD45RA+/CD25- Naive T": "T cell",
    "Dendritic": "myeloid",
    "CD14+ Monocyte": "myeloid",
    "CD19+ B": "B",
    "CD56+ NK": "NK",
    "CD34+": "progenitor",
}

_OBS_KEEP = ("n_genes", "percent_mito", "n_counts", "S_score", "G2M_score", "phase", "louvain")


def pbmc68k() -> ad.AnnData:
    """The ``pbmc68k_reduced`` of scanpy: 700 cells x 765 genes, 5 coarse and 10 fine classes (not the 68k cells).

    The name follows the source, but this is the small reduced set, not the 68,579-cell data set: it is
    ``scanpy.datasets.pbmc68k_reduced()`` (bundled with scanpy, works offline), a 700-cell subsample of the 10x
    Genomics fresh 68k PBMC data of Zheng et al. 2017 (Nat. Commun. 8:14049). The fine labels are its
    ``bulk_labels`` (assigned by correlation with bulk profiles of sorted populations, hence noisy); the coarse
    grouping is ours: "T cell" (5 T subsets), "myeloid" (Dendritic, CD14+ Monocyte), "B" (CD19+ B), "NK" (CD56+ NK)
    and "progenitor" (CD34+).

    ``X`` is scanpy's ``.raw`` (log-normalised expression of 765 genes, sparse CSR float32), not the scaled matrix.
    There are **no raw counts** in this dataset, so count-based models cannot be applied directly. ``obsm["X_umap"]``
    is kept for plotting.

    Returns
    -------
    AnnData
        With ``obs["coarse"]``, ``obs["fine"]`` (categoricals) and ``uns["falcon_dataset"]``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc68k()
    >>> adata.shape
    (700, 765)
    >>> adata.obs["coarse"].cat.categories.tolist()
    ['T cell', 'myeloid', 'B', 'NK', 'progenitor']
    >>> fal.datasets.true_relation(adata)["CD14+ Monocyte"]
    'myeloid'
    """
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    raw = src.raw
    X = sparse.csr_matrix(raw.X, dtype=np.float32)
    obs = src.obs[[c for c in _OBS_KEEP if c in src.obs.columns]].copy()
    fine = src.obs["bulk_labels"].astype(str)
    unknown = sorted(set(fine) - set(PBMC68K_RELATION))
    if unknown:  # pragma: no cover - guards against a changed scanpy dataset
        raise RuntimeError(f"unexpected bulk_labels in pbmc68k_reduced: {unknown}")
    fine_order = [f for f in PBMC68K_RELATION if f in set(fine)]
    obs["fine"] = pd.Categorical(fine, categories=fine_order)
    coarse_order = list(dict.fromkeys(PBMC68K_RELATION[f] for f in fine_order))
    obs["coarse"] = pd.Categorical(fine.map(PBMC68K_RELATION), categories=coarse_order)
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=raw.var_names.copy()))
    if "X_umap" in src.obsm:
        adata.obsm["X_umap"] = np.asarray(src.obsm["X_umap"])
    relation = {f: PBMC68K_RELATION[f] for f in fine_order}
    return finalise(adata, "pbmc68k", "scanpy.datasets.pbmc68k_reduced (Zheng et al. 2017, 10x PBMC 68k)", relation)
