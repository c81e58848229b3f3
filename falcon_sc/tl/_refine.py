"""``fal.tl.refine``: FALCON fine classes inside coarse labels, written into an AnnData."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg

from ..core.graph_init import graph_clusters
from ..core.neighbors import within_class_neighbors
from ..core.prior import children_prior as size_prior
from ..core.prior import kmeans_within_relation
from ..core.relation import solve_relation
from ..core.selection import choose_per_class
from ..core.trainer import FalconConfig, train_falcon
from ..models.mlp import MLPClassifier
from ..pp import cell_features
from ._validate import check_refine_args, resolve_device

Prior = Literal["auto", "uniform", "size"] | Mapping[str, int]


def refine(
    adata: ad.AnnData,
    coarse_key: str,
    n_fine: int,
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
) -> ad.AnnData | None:
    """Discover ``n_fine`` fine classes inside the coarse labels ``adata.obs[coarse_key]`` with FALCON.

    A classifier (MLP) is trained on every cell to predict fine classes whose coarse parent is learned jointly
    (relation ``M``): the coarse labels supervise the fine predictions through ``M``, neighbours inside the same
    coarse class must agree, confident teacher predictions among the coarse class's children become targets, and an
    entropy term keeps every fine class in use. ``M`` is re-solved exactly every ``relation_every`` steps.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes). Raw counts, normalised values (CPM/TPM) or log-normalised values in
        ``X`` or ``layer`` (detected, see ``input_kind``).
    coarse_key
        Column of ``adata.obs`` with the coarse labels.
    n_fine
        Number of fine classes to find, more than the number of coarse classes.
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
        reference (sparse data are densified one minibatch at a time).
    n_neighbors
        Neighbours per cell searched inside its coarse class (cosine on the PCs); 5 are sampled per step.
    children_prior
        Expected number of fine classes per coarse class, used for the initial relation and by the balance term of
        the relation solve: ``"auto"`` lets the neighbour graph decide (Leiden inside each coarse class with one
        shared resolution gives ``2 x n_fine`` clusters, the most inter-connected siblings are merged back to
        ``n_fine``; see :func:`~falcon_sc.core.graph_init.graph_clusters`), ``"size"``
        in proportion to class sizes, ``"uniform"`` ``n_fine / n_coarse`` each (reference), or a mapping coarse
        label -> count summing to ``n_fine``.
    init
        Warm start of the network before FALCON training: ``"leiden"`` fits it to Leiden clusters of the
        within-class neighbour graph (as many per coarse class as the prior gives), ``"kmeans"`` to k-means
        clusters inside each coarse class, ``"random"`` starts from random weights and a random relation
        (reference).
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
        Progress bar; default: when scanpy's verbosity is at least ``info``.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData when ``copy=True``. Writes:

    ``obs[key_added]``
        Fine label per cell (categorical, named ``<coarse>/<i>``), chosen among the children of the cell's own coarse
        label.
    ``obs[f"{key_added}_confidence"]``
        Probability of that label among its siblings.
    ``obs[f"{key_added}_outside_parent"]``
        True where the unrestricted prediction lies under another coarse class (possible coarse mislabel).
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
    """
    start = logg.info(f"running FALCON refine on {coarse_key!r}")
    check_refine_args(
        adata,
        coarse_key,
        n_fine,
        layer=layer,
        use_rep=use_rep,
        batch_key=batch_key,
        key_added=key_added,
        model_input=model_input,
        children_prior=children_prior,
        n_neighbors=n_neighbors,
        regulariser=regulariser,
        optimizer=optimizer,
        init=init,
        learn_relation=learn_relation,
        input_kind=input_kind,
    )
    device = resolve_device(accelerator)
    adata = adata.copy() if copy else adata
    coarse_cat = pd.Categorical(adata.obs[coarse_key]).remove_unused_categories()
    coarse_names = [str(c) for c in coarse_cat.categories]
    coarse = coarse_cat.codes.astype(np.int64)
    n_coarse = len(coarse_names)

    inputs = cell_features(
        adata,
        coarse,
        layer=layer,
        use_rep=use_rep,
        input_kind=input_kind,
        batch_key=batch_key,
        n_top_genes=n_top_genes,
        n_comps=n_comps,
        n_comps_within=n_comps_within,
        model_input=model_input,
        random_state=random_state,
    )
    features, neighbour_space = inputs.features, inputs.neighbour_space
    counts = np.bincount(coarse, minlength=n_coarse)
    small = [f"{coarse_names[c]} ({counts[c]})" for c in np.flatnonzero(counts <= n_neighbors)]
    if small:
        logg.warning(
            f"coarse classes with at most n_neighbors={n_neighbors} cells reuse their few neighbours: "
            + ", ".join(small)
        )
    neighbors = within_class_neighbors(neighbour_space, coarse, n_neighbors, random_state=random_state)
    fixed = None if children_prior == "auto" else _targets(children_prior, coarse, coarse_names, n_fine)
    if init == "leiden" or fixed is None:
        graph_labels, graph_relation = graph_clusters(
            neighbour_space, neighbors, coarse, n_fine, targets=fixed, random_state=random_state
        )
    targets = graph_relation.sum(axis=0).astype(float) if fixed is None else fixed
    logg.info("    children prior: " + ", ".join(f"{n}={t:g}" for n, t in zip(coarse_names, targets, strict=True)))
    if init == "leiden":
        initial, init_labels = graph_relation, graph_labels
    else:
        rng = np.random.default_rng(random_state)
        initial = solve_relation(rng.uniform(size=(n_fine, n_coarse)) * 1e-3, balance=1.0, target_counts=targets)
        init_labels = (
            kmeans_within_relation(neighbour_space, coarse, initial, random_state) if init == "kmeans" else None
        )
    cfg = FalconConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        lr=lr,
        lambda_coarse=lambda_coarse,
        lambda_fine=lambda_fine,
        lambda_reg=lambda_reg,
        regulariser=regulariser,
        lambda_relation=lambda_relation,
        temperature=temperature,
        relation_every=relation_every,
        learn_relation=learn_relation,
        soft_fraction=soft_fraction,
        show_progress=_progress(show_progress),
    )
    torch.manual_seed(random_state)
    model = MLPClassifier(features.shape[1], n_fine, hidden)
    result = train_falcon(
        model,
        features,
        coarse,
        neighbors,
        n_coarse,
        cfg,
        relation=initial,
        target_counts=targets,
        init_labels=init_labels,
        device=device,
        seed=random_state,
    )
    choice = None
    if guard_warm_start and result.warm_probs is not None:
        choice = _guard(result, initial, coarse, neighbour_space, random_state)
    _write(adata, result, coarse, coarse_names, key_added)
    if choice is not None:
        adata.uns[key_added]["partition_choice"] = pd.DataFrame(
            {
                "kept": np.where(choice[0], "warm start", "trained"),
                "silhouette_trained": choice[1][:, 0],
                "silhouette_warm_start": choice[1][:, 1],
            },
            index=coarse_names,
        )
        if choice[0].any():
            kept = ", ".join(np.asarray(coarse_names)[choice[0]])
            logg.info(f"    warm-start partition kept (better separated than the trained one) in: {kept}")
    if init_labels is not None:
        names, _ = _fine_names(initial.astype(bool), init_labels, coarse_names)
        warm_key = f"{key_added}_warm_start"
        if warm_key in adata.obs:
            logg.warning(f"overwriting adata.obs[{warm_key!r}]")
        adata.obs[warm_key] = pd.Categorical(names[init_labels].astype(str))
    adata.uns[key_added]["params"] = {
        "coarse_key": coarse_key,
        "n_fine": n_fine,
        "layer": layer,
        "use_rep": use_rep,
        "input_kind": input_kind,
        "input_kind_detected": None if inputs.prepared is None else inputs.prepared.input_kind_detected,
        "batch_key": batch_key,
        "n_top_genes": n_top_genes,
        "n_comps": n_comps,
        "n_comps_within": n_comps_within,
        "model_input": model_input,
        "n_neighbors": n_neighbors,
        "children_prior": children_prior if isinstance(children_prior, str) else dict(children_prior),
        "children_prior_counts": np.asarray(targets, dtype=float),
        "init": init,
        "hidden": list(hidden),
        "accelerator": str(device),
        "random_state": random_state,
        "guard_warm_start": guard_warm_start,
        **cfg.to_dict(),
    }
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    'obs[{key_added!r}]', fine labels\n    'uns[{key_added!r}]', relations and history",
    )
    return adata if copy else None


def _progress(show_progress: bool | None) -> bool:
    if show_progress is not None:
        return show_progress
    import scanpy as sc

    return sc.settings.verbosity >= 2


def _targets(prior, coarse: np.ndarray, coarse_names: list[str], n_fine: int) -> np.ndarray:
    if isinstance(prior, Mapping):
        by_name = {str(k): v for k, v in prior.items()}
        return np.array([float(by_name[c]) for c in coarse_names])
    return size_prior(coarse, n_fine, method=prior)


def _fine_names(relation: np.ndarray, labels: np.ndarray, coarse_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Name of every fine class, ``<coarse>/1, <coarse>/2, ...`` by decreasing size under its parent, and the sizes."""
    parent = relation.argmax(axis=1)
    sizes = np.bincount(labels, minlength=relation.shape[0])
    names = np.empty(relation.shape[0], dtype=object)
    for c, cname in enumerate(coarse_names):
        kids = np.flatnonzero(parent == c)
        for rank, f in enumerate(kids[np.argsort(-sizes[kids], kind="stable")]):
            names[f] = f"{cname}/{rank + 1}"
    return names, sizes


def _restricted(probs: np.ndarray, relation: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Probabilities renormalised over the children of each cell's coarse class."""
    restricted = probs * relation[:, coarse].T
    return restricted / np.clip(restricted.sum(axis=1, keepdims=True), 1e-12, None)


def _guard(result, initial: np.ndarray, coarse: np.ndarray, space: np.ndarray, random_state: int):
    """Swap in the warm-fitted network's predictions in the coarse classes where they separate the cells better."""
    final, warm = result.relation.astype(bool), initial.astype(bool)
    trained = _restricted(result.probs, final, coarse).argmax(axis=1)
    warm_labels = _restricted(result.warm_probs, warm, coarse).argmax(axis=1)
    same_children = (final == warm).all(axis=0)
    use_warm, scores = choose_per_class(
        space, coarse, trained, warm_labels, eligible=same_children, random_state=random_state
    )
    rows = use_warm[coarse]
    result.probs[rows] = result.warm_probs[rows]
    return use_warm, scores


def _write(adata: ad.AnnData, result, coarse: np.ndarray, coarse_names: list[str], key_added: str) -> None:
    relation = result.relation.astype(bool)
    parent = relation.argmax(axis=1)
    restricted = _restricted(result.probs, relation, coarse)
    label = restricted.argmax(axis=1)
    names, sizes = _fine_names(relation, label, coarse_names)
    order = np.lexsort((names.astype(str), parent))
    ordered_names = [str(n) for n in names[order]]
    for key in (key_added, f"{key_added}_confidence", f"{key_added}_outside_parent"):
        if key in adata.obs:
            logg.warning(f"overwriting adata.obs[{key!r}]")
    adata.obs[key_added] = pd.Categorical(names[label].astype(str), categories=ordered_names)
    adata.obs[f"{key_added}_confidence"] = restricted[np.arange(len(label)), label].astype(np.float32)
    adata.obs[f"{key_added}_outside_parent"] = parent[result.probs.argmax(axis=1)] != coarse
    adata.obsm[f"{key_added}_probs"] = result.probs[:, order].astype(np.float32)
    adata.obsm[f"{key_added}_embedding"] = result.embedding.astype(np.float32)
    relations = pd.DataFrame(relation[order].astype(np.int8), index=ordered_names, columns=coarse_names)
    conf = adata.obs[f"{key_added}_confidence"].to_numpy()
    fine_classes = pd.DataFrame(
        {
            "parent": [coarse_names[p] for p in parent[order]],
            "n_cells": sizes[order],
            "mean_confidence": [float(conf[label == f].mean()) if sizes[f] else np.nan for f in order],
        },
        index=ordered_names,
    )
    history = pd.DataFrame([{k: v for k, v in r.items() if k != "children"} for r in result.history])
    if key_added in adata.uns:
        logg.warning(f"overwriting adata.uns[{key_added!r}]")
    adata.uns[key_added] = {
        "relations": relations,
        "fine_classes": fine_classes,
        "history": history,
        "children_history": np.array([r["children"] for r in result.history], dtype=np.int64),
    }
    used = int((sizes > 0).sum())
    if used < relation.shape[0]:
        logg.warning(
            f"only {used} of {relation.shape[0]} fine classes hold cells (partial collapse); see "
            f"uns[{key_added!r}]['history']['fine_in_use']"
        )
