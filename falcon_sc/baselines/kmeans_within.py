"""K-means inside each coarse class, on a shared PCA embedding (cells) or on the initial features (images)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from anndata import AnnData
from sklearn.cluster import KMeans

from .._docs import baseline_inputs_counts, doc_params, kmeans_image_options
from .._validate import resolve_device
from ._common import BaselineResult, allot_clusters, coarse_labels, embed, fine_names, resolve_n_fine
from ._images import check_image_options, image_inputs, wants_images


@doc_params(baseline_inputs_counts=baseline_inputs_counts, kmeans_image_options=kmeans_image_options)
def kmeans_within(
    adata: AnnData,
    coarse_key: str,
    n_fine: int | Mapping[str, int],
    *,
    batch_key: str | None = None,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    checkpoint: str | Path | None = None,
    accelerator: str = "auto",
    random_state: int = 0,
) -> BaselineResult:
    """Split each coarse class with k-means.

    The ``n_fine`` clusters are shared among coarse classes in proportion to their sizes (largest remainder,
    at least one per class, at most one per cell), or, with ``n_fine`` a mapping, each class gets its given count;
    each class is then clustered with
    :class:`sklearn.cluster.KMeans` (``n_init=10``) on a PCA embedding computed once for all cells, or, on images,
    on the initial features FALCON's image path starts from (the pixels' principal components, or a
    ``checkpoint``'s backbone). ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs_counts}
    {kmeans_image_options}
    random_state
        Seed for PCA and k-means.

    Returns
    -------
    Fine labels ``"<coarse>/<i>"``, the fine -> coarse relation and in ``info`` the ``allotment`` (clusters per
    coarse class).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> from falcon_sc.baselines import kmeans_within
    >>> adata = fal.datasets.digits()
    >>> res = kmeans_within(adata, "coarse", 10, image_shape=(1, 8, 8))  # images: k-means on the pixels' PCA
    >>> res.n_fine, res.info["allotment"]
    (10, {'curve': 3, 'loop': 4, 'stroke': 3})

    Cells, with the number of fine classes of every coarse class known:

    >>> cells = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> res = kmeans_within(cells, "coarse", {"C0": 1, "C1": 2, "C2": 3})
    >>> res.info["allotment"]
    {'C0': 1, 'C1': 2, 'C2': 3}
    """
    images = wants_images(image_shape=image_shape, width=width, checkpoint=checkpoint)
    image_width = 0
    if images:
        image_width = check_image_options(
            image_shape=image_shape, width=width, checkpoint=checkpoint, batch_key=batch_key
        )
    coarse = coarse_labels(adata, coarse_key)
    classes = list(coarse.categories)
    codes = np.asarray(coarse.codes)
    sizes = np.bincount(codes, minlength=len(classes))
    total, counts = resolve_n_fine(n_fine, coarse, coarse_key)
    alloc = allot_clusters(sizes, total) if counts is None else counts
    if images:
        device = resolve_device(accelerator)
        _, emb = image_inputs(adata, image_shape, image_width, checkpoint, device, random_state)
    else:
        emb = embed(adata, batch_key=batch_key, random_state=random_state)
    return kmeans_per_class(emb, codes, classes, alloc, random_state)


def kmeans_per_class(
    emb: np.ndarray, codes: np.ndarray, classes: list[str], alloc: np.ndarray, random_state: int = 0
) -> BaselineResult:
    """K-means (``n_init=10``) with ``alloc[c]`` clusters on the rows of ``emb`` in coarse class ``c``.

    Parameters
    ----------
    emb
        Cells x dimensions.
    codes
        Coarse class index per cell.
    classes
        Coarse class names.
    alloc
        Clusters per coarse class.
    random_state
        Seed for k-means.
    """
    labels = np.empty(emb.shape[0], dtype=object)
    relation: dict[str, str] = {}
    for c, (name, k) in enumerate(zip(classes, alloc, strict=True)):
        idx = np.flatnonzero(codes == c)
        if k == 1:
            ids = np.zeros(len(idx), dtype=np.int64)
        else:
            ids = KMeans(n_clusters=int(k), n_init=10, random_state=random_state).fit_predict(emb[idx])
        cell_names, names = fine_names(name, ids)
        labels[idx] = cell_names
        relation.update(dict.fromkeys(names, name))
    return BaselineResult(
        labels=labels.astype(str),
        relation=relation,
        info={"allotment": dict(zip(classes, np.asarray(alloc).tolist(), strict=True))},
    )
