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


def _drop_file_notes(adata: ad.AnnData) -> str:
    """Remove the converter's notes (``uns["X_kind"]``, ``uns["source"]``) and return the source note."""
    adata.uns.pop("X_kind", None)
    return str(adata.uns.pop("source", ""))


def moncada() -> ad.AnnData:
    """Moncada et al. 2020 human pancreatic tumour (PDAC-A): 1926 cells x 7000 genes, 10 coarse and 20 fine classes.

    Source: Moncada et al. 2020 (Nat. Biotechnol. 38:333), patient PDAC-A, inDrop (GEO GSE111672), as stored in the
    R package CARDspa (``data/sc_count.rda``, ``data/sc_meta.rda``), converted to h5ad and shipped with this package.
    Fine = the authors' 20 cell types; coarse = our grouping by name family and lineage. Coarse -> fine: Ductal ->
    CRISP3-high centroacinar-like (529), terminal ductal-like (350), MHC class II (287), APOL1-high hypoxic (215);
    Cancer clone -> A (126), B (170); Myeloid -> mDCs B (33), macrophages A (21), macrophages B (19), monocytes (18),
    mast cells (14), pDCs (13), mDCs A (12); T/NK (40); Tuft (32); RBC (15); Acinar (13); Endothelial (11);
    Fibroblast (5); Endocrine (3). The fine labels keep the authors' spelling (``"Ductal_MHC_Class_II"``).

    ``X`` is raw inDrop counts (sparse CSR float32) of the 7000 genes kept by CARD. Caveats: one patient; the gene
    subset lacks several standard markers; the myeloid subtypes have only 12-33 cells each; seven coarse classes have
    a single fine class (and Endocrine only 3 cells).

    Returns
    -------
    AnnData
        With ``obs["coarse"]``, ``obs["fine"]`` (categoricals) and ``uns["falcon_dataset"]``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.moncada()
    >>> adata.shape
    (1926, 7000)
    >>> fine_per_coarse = adata.obs.groupby("coarse", observed=True)["fine"].nunique()
    >>> fine_per_coarse[["Ductal", "Cancer clone", "Myeloid"]].to_dict()
    {'Ductal': 4, 'Cancer clone': 2, 'Myeloid': 7}
    >>> fal.datasets.true_relation(adata)["Cancer_clone_A"]
    'Cancer clone'
    """
    adata = _read_packaged("moncada2020_pdac.h5ad")
    source = _drop_file_notes(adata) or "Moncada et al. 2020 PDAC-A via the R package CARDspa"
    return finalise(adata, "moncada", source)


def kang() -> ad.AnnData:
    """Kang et al. 2018 human PBMC, control and IFN-beta stimulated: 1556 cells x 1267 genes, 2 coarse and 5 fine.

    Source: Kang et al. 2018 (Nat. Biotechnol. 36:89), lupus PBMC, 10x (GEO GSE96583), as stored in the R package
    muscat (``data/example_sce.rda``), converted to h5ad and shipped with this package. Fine = the authors' labels;
    coarse = lymphoid/myeloid (ours). Coarse -> fine: Lymphoid -> CD4 T cells (400), B cells (298), CD8 T cells (209);
    Myeloid -> CD14+ Monocytes (400), FCGR3A+ Monocytes (249). About half the cells were stimulated with
    interferon-beta: ``obs["group_id"]`` is the condition (``"ctrl"``, ``"stim"``) and ``obs["sample_id"]`` the
    donor and condition (``"ctrl101"``, ``"stim101"``, ``"ctrl107"``, ``"stim107"``); both categorical.

    ``X`` is raw UMI counts (sparse CSR float32) at low depth. Caveat: the stimulation is a strong effect across every
    cell type, orthogonal to the fine classes; a method that does not account for it (``batch_key="group_id"``)
    may split cells by condition instead of by type.

    Returns
    -------
    AnnData
        With ``obs["coarse"]``, ``obs["fine"]``, ``obs["group_id"]``, ``obs["sample_id"]`` (categoricals) and
        ``uns["falcon_dataset"]``.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.kang()
    >>> adata.shape
    (1556, 1267)
    >>> adata.obs.groupby("coarse", observed=True)["fine"].nunique().to_dict()
    {'Lymphoid': 3, 'Myeloid': 2}
    >>> adata.obs["group_id"].value_counts().sort_index().to_dict()
    {'ctrl': 750, 'stim': 806}
    """
    adata = _read_packaged("kang2018_pbmc.h5ad")
    source = _drop_file_notes(adata) or "Kang et al. 2018 PBMC (ctrl/IFN-beta) via the R package muscat"
    for key in ("group_id", "sample_id"):
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
    return finalise(adata, "kang", source)
