"""``fal.tl.refine``: FALCON fine classes inside coarse labels, written into an AnnData."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
from scanpy import logging as logg

from .._checks import check_bool
from .._coarse import as_keys
from .._layout import added_keys, check_key_added
from .._validate import check_adata
from ..models._falcon import FalconModel
from ..models._params import Prior


def refine(
    adata: ad.AnnData,
    coarse_key: str,
    n_fine: int | Literal["auto"] | Mapping[str, int],
    *,
    layer: str | None = None,
    use_rep: str | None = None,
    input_kind: Literal["auto", "counts", "normalized", "lognorm"] = "auto",
    batch_key: str | None = None,
    n_top_genes: int = 2000,
    n_comps: int = 50,
    n_comps_within: int = 10,
    model_input: Literal["pca", "hvg"] = "pca",
    n_neighbors: int = 20,
    children_prior: Prior = "auto",
    init: Literal["leiden", "kmeans", "random"] = "leiden",
    hidden: Sequence[int] = (64, 64, 64, 64),
    n_epochs: int | None = None,
    batch_size: int = 1024,
    lr: float = 3e-4,
    optimizer: Literal["adam", "sgd"] = "adam",
    lambda_coarse: float = 0.5,
    lambda_fine: float = 0.5,
    lambda_reg: float = 0.05,
    regulariser: Literal["prior", "global", "within", "both"] = "prior",
    lambda_relation: float = 5e-3,
    temperature: float = 0.9,
    relation_every: int = 30,
    learn_relation: bool = True,
    soft_fraction: float = 0.3,
    guard_warm_start: bool = True,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    random_state: int = 0,
    key_added: str = "falcon",
    show_progress: bool | None = None,
    copy: bool = False,
    return_model: bool = False,
) -> ad.AnnData | FalconModel | None:
    """Discover ``n_fine`` fine classes inside the coarse labels ``adata.obs[coarse_key]`` with FALCON.

    A classifier (MLP) is trained on every cell to predict fine classes whose coarse parent is learned jointly
    (relation ``M``): the coarse labels supervise the fine predictions through ``M``, neighbours inside the same
    coarse class must agree, confident teacher predictions among the coarse class's children become targets, and an
    entropy term keeps every fine class in use. ``M`` is re-solved exactly every ``relation_every`` steps.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes). Raw counts, normalised values (CPM/TPM) or log-normalised values in
        ``X`` or ``layer`` (detected, see ``input_kind``). May be backed (``anndata.read_h5ad(path, backed="r")``)
        or hold a dask array: the matrix is then read in chunks of 20,000 cells, never whole, and the results go to
        the in-memory ``obs``, ``obsm`` and ``uns`` (the file is not written; see the documentation's *Large data*
        page).
    coarse_key
        Column of ``adata.obs`` with the coarse labels, or a list of columns (several coarse schemes, a label may be
        missing in some; see the documentation's *Several coarse schemes* page).
    n_fine
        Number of fine classes to find, more than the number of coarse classes; ``"auto"`` to estimate the number
        of fine classes of every coarse class from its neighbour graph
        (:func:`~falcon_sc.core.n_fine.estimate_children`; evidence in ``uns[key_added]["n_fine_estimate"]`` and
        ``["n_fine_evidence"]``, plotted by :func:`falcon_sc.pl.n_fine`); or a mapping coarse label -> number of fine
        classes for the classes you know (the others are estimated; the children of the given classes keep their
        parent and their number in every relation solve).
    layer
        Layer with the expression values; ``None`` uses ``X``.
    use_rep
        Key of ``adata.obsm`` holding an embedding (e.g. a batch-corrected ``X_scVI``) to use instead of the
        built-in preprocessing.
    input_kind
        What ``X``/``layer`` holds: ``"auto"`` detects it (:func:`~falcon_sc.pp.detect_input_kind`); ``"counts"``
        (raw counts: ``normalize_total(1e4)`` + ``log1p``), ``"normalized"`` (normalised, not logged, e.g. CPM/TPM:
        rescaled to 1e4 per cell + ``log1p``) or ``"lognorm"`` (``log1p`` of normalised values: used as they are)
        override the detection. Not used with ``use_rep``.
    batch_key
        Column of ``adata.obs`` with batches/donors: HVGs are selected per batch and genes centred and scaled within
        each batch, so a batch shift does not become a fine class.
    n_top_genes
        Number of highly variable genes.
    n_comps
        Principal components of the scaled HVGs (model input and neighbour space).
    n_comps_within
        Principal components computed inside each coarse class: the space where neighbours are searched and the
        warm-start clusters are found (0 searches the global components instead).
    model_input
        ``"pca"`` trains on the principal components (default), ``"hvg"`` on the log-normalised HVGs as in the
        reference (sparse data are densified one minibatch at a time; not with a backed or dask matrix).
    n_neighbors
        Neighbours per cell searched inside its coarse class (cosine on the PCs); 5 are sampled per step.
    children_prior
        Expected number of fine classes per coarse class, used for the initial relation and by the balance term of
        the relation solve: ``"auto"`` lets the neighbour graph decide (Leiden inside each coarse class with one
        shared resolution gives ``2 x n_fine`` clusters, the most inter-connected siblings are merged back to
        ``n_fine``; see :func:`~falcon_sc.core.graph_init.graph_clusters`), ``"size"``
        in proportion to class sizes, ``"variance"`` where one more k-means cluster explains the most variance
        in the global principal components (:func:`~falcon_sc.core.prior.variance_counts`), ``"uniform"``
        ``n_fine / n_coarse`` each (reference), or a mapping coarse label -> count summing to ``n_fine``.
    init
        Warm start of the network before FALCON training: ``"leiden"`` fits it to Leiden clusters of the
        within-class neighbour graph (as many per coarse class as the prior gives), ``"kmeans"`` to k-means
        clusters inside each coarse class (on the global principal components, 10 restarts: the better start when
        subtypes are graded rather than separate groups, see the documentation's *Real cells* page), ``"random"``
        starts from random weights and a random relation (reference).
    hidden
        Hidden layer widths of the MLP.
    n_epochs
        Training epochs; ``None`` picks enough for at least 300 optimisation steps and 3 passes over the data.
    batch_size
        Minibatch size.
    lr
        Learning rate.
    optimizer
        ``"adam"`` (default) or ``"sgd"`` with momentum 0.9 (reference).
    lambda_coarse
        Weight of the coarse negative log-likelihood.
    lambda_fine
        Weight of the neighbour-consistency and confident-target losses.
    lambda_reg
        Weight of the regulariser that keeps every fine class in use.
    regulariser
        ``"prior"`` (default) keeps the batch's fine-class proportions near the warm start's,
        ``KL(prior || mean p)``: no class can empty, and none is pulled towards equal sizes, so a dominant subtype
        is not split to feed a rare one; ``"global"`` is the reference's entropy of the batch mean (favours equal
        sizes over all cells), ``"within"`` equal sizes inside each coarse class, ``"both"`` adds the last two.
    lambda_relation
        Weight of the balance term in the relation solve (set to 0 after the soft-label phase).
    temperature
        Temperature of the teacher's confident targets.
    relation_every
        Steps between two relation solves.
    learn_relation
        ``False`` keeps the initial relation fixed: with a mapping ``children_prior`` that is the number of children
        of each coarse class, known in advance (the paper's oracle-relation ablation); FALCON then only learns which
        cell goes to which child.
    soft_fraction
        Share of training during which targets anneal from soft to hard and the balance term is on.
    guard_warm_start
        Per coarse class, keep the partition of the network fitted to the warm start instead of the trained one
        where it separates the class's cells better (higher silhouette in the within-class neighbour space, same
        cells for both) and training did not change the class's children. The choice and both silhouettes are in
        ``uns[key_added]["partition_choice"]``. ``False``: always the trained partition (reference).
    accelerator
        ``"auto"`` uses CUDA when available, else CPU.
    random_state
        Seed for numpy and torch; the same seed on CPU gives identical labels.
    key_added
        Prefix of every key written.
    show_progress
        Progress bar; default on, shown only once a run has taken 2 s (``False`` hides it).
    copy
        Return a modified copy instead of writing into ``adata`` (refused for a backed ``adata``, whose copy would
        read ``X`` whole).
    return_model
        Return the fitted :class:`~falcon_sc.FalconModel` (to label new cells, save, share); the keys are written
        all the same (into the copy with ``copy=True``, which is then ``model.adata``).

    Returns
    -------
    ``None``, a new AnnData when ``copy=True``, or the model with ``return_model=True``. Writes:

    ``obs[key_added]``
        Fine label per cell (categorical, named ``<coarse>/<i>``), chosen among the children of the cell's own coarse
        label.
    ``obs[f"{key_added}_confidence"]``
        Probability of that label among its siblings.
    ``obs[f"{key_added}_outside_parent"]``
        True where the cell's coarse label looks wrong: its unrestricted prediction lies under another coarse class,
        or most of its 15 nearest neighbours in the label-free global principal components carry another coarse
        label (:func:`falcon_sc.tl.coarse_conflicts` summarises them).
    ``obs[f"{key_added}_neighbour_coarse"]``
        The coarse label most of those neighbours carry (the cell's own where there is no majority); one coarse
        scheme only.
    ``obs[f"{key_added}_warm_start"]``
        The warm start's label per cell (before FALCON training; named as ``obs[key_added]`` by the initial
        relation), to compare with the final labels; absent with ``init="random"``.
    ``obsm[f"{key_added}_probs"]``
        Cells x fine classes probabilities (columns in the order of ``uns[key_added]["relations"].index``).
    ``obsm[f"{key_added}_embedding"]``
        Penultimate-layer representation.
    ``uns[key_added]``
        ``params``, ``relations`` (fine x coarse 0/1 table), ``fine_classes`` (parent, cells, mean confidence),
        ``history`` (per-epoch losses, fine classes in use, relation changes, solver seconds),
        ``children_history`` (children per coarse class after each epoch).

    Raises
    ------
    TypeError
        An argument of the wrong type (numpy integers count as ints; bools do not).
    KeyError
        ``coarse_key``, ``batch_key``, ``layer`` or ``use_rep`` not in ``adata``.
    ValueError
        A value out of range or inconsistent with ``adata``: ``copy=True`` or ``model_input="hvg"`` with a backed
        ``adata`` (or a dask matrix for ``model_input="hvg"``; the message gives the fix), fewer than 2 genes,
        NaN/infinite/negative expression values anywhere in ``X`` or ``layer`` (all values are checked, in chunks
        for a backed or dask matrix), NaN/infinite values in ``obsm[use_rep]``, coarse labels that clash once written
        as text (``1`` and ``"1"``), a ``coarse_key`` or ``batch_key`` that refine would overwrite, a bad
        ``children_prior`` mapping.
        These are raised before any heavy work.
    falcon_sc.errors.DegenerateInputError
        (a ``ValueError``) Data that hold nothing to learn from, before any training or warm start: an all-zero or
        constant ``X``/``layer``/``obsm[use_rep]``, fewer than 2 genes that vary across cells (as given, or once
        normalised: rows proportional to each other), a ``batch_key`` whose batches mostly hold 1-2 cells (e.g. a
        numeric per-cell column such as ``"n_counts"``), or a coarse class asked for more fine classes than it has
        cells (e.g. ``children_prior="uniform"`` with a large ``n_fine``).
    RuntimeError
        Training diverged (non-finite loss or probabilities): retry with a smaller ``lr``.

    ``adata`` is left unchanged whenever an error is raised, and its matrices are never modified in place (a sparse
    matrix with duplicate entries or unsorted indices stays byte-identical).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=200, children=(1, 2, 3), random_state=0)
    >>> fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, show_progress=False)
    >>> adata.obs["falcon"].dtype.name, adata.obsm["falcon_probs"].shape
    ('category', (300, 6))
    >>> adata.uns["falcon"]["relations"].shape  # fine x coarse
    (6, 3)
    >>> scores = fal.metrics.evaluate(adata.obs["fine"], adata.obs["falcon"], adata.obs["coarse"])
    >>> bdata = fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, key_added="run2", show_progress=False, copy=True)
    >>> "run2" in adata.obs, "run2" in bdata.obs
    (False, True)
    >>> model = fal.tl.refine(adata, "coarse", n_fine=6, n_epochs=3, show_progress=False, return_model=True)
    >>> model.save("falcon_model")  # doctest: +SKIP

    Real data, with the default number of epochs:

    >>> pbmc = fal.datasets.pbmc68k()
    >>> fal.tl.refine(pbmc, "coarse", n_fine=10)  # doctest: +SKIP
    """
    start = logg.info(f"running FALCON refine on {coarse_key!r}")
    check_bool("copy", copy)
    check_bool("return_model", return_model)
    check_adata(adata, out_of_core=True)
    if copy and adata.isbacked:
        raise ValueError(
            "copy=True with a backed adata would read its whole X into memory: call refine on the backed adata "
            "without copy= (the results go to its in-memory obs, obsm and uns; the file is not modified), or load "
            "it first with adata.to_memory()."
        )
    check_key_added(key_added, coarse_keys=as_keys(coarse_key), batch_key=batch_key)
    adata = adata.copy() if copy else adata
    model = FalconModel(
        adata,
        coarse_key,
        layer=layer,
        use_rep=use_rep,
        input_kind=input_kind,
        batch_key=batch_key,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        n_comps_within=n_comps_within,
        model_input=model_input,
    )
    model.fit(
        n_fine,
        n_neighbors=n_neighbors,
        children_prior=children_prior,
        init=init,
        hidden=hidden,
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        lambda_coarse=lambda_coarse,
        lambda_fine=lambda_fine,
        lambda_reg=lambda_reg,
        regulariser=regulariser,
        lambda_relation=lambda_relation,
        temperature=temperature,
        relation_every=relation_every,
        learn_relation=learn_relation,
        soft_fraction=soft_fraction,
        guard_warm_start=guard_warm_start,
        accelerator=accelerator,
        random_state=random_state,
        show_progress=show_progress,
    )
    model.write_fit_results(adata, key_added)
    logg.info("    finished", time=start, deep="added\n" + added_keys(adata, key_added))
    if return_model:
        return model
    return adata if copy else None
