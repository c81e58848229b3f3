"""Small real datasets shipped with the package (``falcon_sc/datasets/data``)."""

from __future__ import annotations

from importlib import resources

import anndata as ad

from ._utils import finalise


def _read_packaged(filename: str) -> ad.AnnData:
    ref = resources.files("falcon_sc.datasets") / "data" / filename
    with resources.as_file(ref) as path:
        return ad.read_h5ad(path)


def pbmc3k() -> ad.AnnData:
    """PBMC 3k with the Seurat tutorial labels: 2638 cells x 2000 HVGs, 5 coarse (+ 2 tiny) and 9 fine classes.

    Source: 10x Genomics PBMC 3k with the cell-type labels of the Seurat guided-clustering tutorial, as stored in the
    R package clustifyr (``data/pbmc_matrix_small.rda``, ``data/pbmc_meta.rda``), converted to h5ad and shipped with
    this package. Coarse -> fine: T -> Naive CD4 T (697), Memory CD4 T (483), CD8 T (271); Mono -> CD14+ Mono (480),
    FCGR3A+ Mono (162); B (344); NK (155); DC (32); Platelet (14).

    ``X`` is Seurat log-normalised expression (sparse CSR float32); the exact UMI counts are in
    ``layers["counts"]``. Caveat: the labels were obtained by clustering, so they favour clustering-like methods.

    Returns
    -------
    AnnData
        With ``obs["coarse"]``, ``obs["fine"]`` (categoricals) and ``uns["falcon_dataset"]``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.pbmc3k()
    >>> adata.shape, list(adata.layers)
    ((2638, 2000), ['counts'])
    >>> fal.datasets.true_relation(adata)["CD8 T"]
    'T'
    """
    adata = _read_packaged("pbmc3k_seurat_labels.h5ad")
    return finalise(adata, "pbmc3k", "10x PBMC 3k, Seurat tutorial labels via the R package clustifyr")


def zeisel() -> ad.AnnData:
    """Zeisel et al. 2015 mouse cortex/hippocampus subset: 1449 cells x 1000 genes, 3 coarse and 25 fine classes.

    Source: Zeisel et al. 2015 (Science 347:1138), author level-1 class -> level-2 class. UMI counts from the R
    package descend (``data/zeisel.rda``, a 3-class subset), labels from EWCE (``data/cortex_mrna.rda``); converted
    to h5ad and shipped with this package. Coarse -> fine: pyramidal CA1 -> 5 subclasses; interneurons ->
    Int1..Int16; endothelial-mural -> 4 subclasses.

    ``X`` is UMI counts (sparse CSR float32). Caveat: the interneuron subclasses have only 10-26 cells each, which
    makes them hard.

    Returns
    -------
    AnnData
        With ``obs["coarse"]``, ``obs["fine"]`` (categoricals) and ``uns["falcon_dataset"]``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.zeisel()
    >>> adata.shape
    (1449, 1000)
    >>> adata.obs.groupby("coarse", observed=True)["fine"].nunique().to_dict()  # fine classes per coarse class
    {'endothelial-mural': 4, 'interneurons': 16, 'pyramidal CA1': 5}
    """
    adata = _read_packaged("zeisel2015_cortex_l1_l2.h5ad")
    return finalise(adata, "zeisel", "Zeisel et al. 2015 via the R packages descend (counts) and EWCE (labels)")
