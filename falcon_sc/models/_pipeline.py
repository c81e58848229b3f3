"""The one FALCON fitting pipeline, for cells and for images: neighbours, counts, warm start, training, guard, result.

It works on arrays (no AnnData): the caller turns its data into a :class:`Problem` (network inputs, the space where
neighbours are searched, coarse labels) and says how to build and train the network (:class:`Engine`).
:class:`~falcon_sc.FalconModel` builds the problem from cells (:class:`~falcon_sc.pp.FeatureTransform`),
:func:`falcon_sc.tl.refine_images` from images (a backbone's features).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg
from torch import nn

from .._coarse import CoarseSchemes, check_children_fit
from ..core.distributed import train_falcon_ddp
from ..core.graph_init import graph_clusters
from ..core.labels import fine_class_names, restricted_probs
from ..core.launch import active_launch
from ..core.n_fine import estimate_children
from ..core.neighbors import EXACT_MAX, RECALL_SAMPLE, neighbour_recall, within_class_neighbors
from ..core.prior import children_prior as size_prior
from ..core.prior import kmeans_within_relation
from ..core.progress import phase
from ..core.relation import solve_relation
from ..core.schemes import fill_missing, joint_groups, joint_relation, scheme_relations
from ..core.selection import choose_per_class
from ..core.trainer import FalconConfig, FalconResult, train_falcon
from ..core.training import TrainingDiverged, check_resumable
from ._params import FitParams

KMEANS_RESTARTS = 10
"""k-means restarts of ``init="kmeans"`` on cells (as :func:`falcon_sc.baselines.kmeans_within`); the image path keeps
the 3 its defaults were measured with."""


@dataclass
class Problem:
    """What the pipeline fits.

    Attributes
    ----------
    features
        Network inputs, samples first (array, CSR matrix or :class:`~falcon_sc.data.ImageFiles`).
    space
        Samples x dimensions where neighbours inside a coarse class are searched and the warm start clusters.
    coarse, coarse_names
        Coarse class per sample and the class names (with several schemes: the joint groups).
    groups, group_names
        Groups inside which neighbours, counts and the warm start work: the coarse classes, or with several schemes
        the joint groups after filling missing labels (:func:`filled_groups`).
    schemes
        Several coarse schemes (``None``: one).
    group_table
        With several schemes: ``groups x schemes`` coarse class of every group after filling (the rows of
        :func:`filled_groups`), which a saved model needs to choose the within-class inputs of new cells.
    shared
        The space common to all coarse classes where ``children_prior="variance"`` measures spread and
        ``init="kmeans"`` clusters (cells: the global principal components; default ``space``).
    """

    features: Any
    space: np.ndarray
    coarse: np.ndarray
    coarse_names: list[str]
    groups: np.ndarray
    group_names: list[str]
    schemes: CoarseSchemes | None = None
    shared: np.ndarray | None = None
    group_table: np.ndarray | None = None


@dataclass
class Engine:
    """How the network is built and trained: ``make_network(n_fine)``, device(s), views, k-means restarts."""

    make_network: Callable[[int], nn.Module]
    device: torch.device
    devices: int = 1
    kmeans_restarts: int = 3
    student_view: Callable[[torch.Tensor], torch.Tensor] | None = None
    teacher_view: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class Outcome:
    """What :func:`fit_falcon` returns: the training result and everything the writers and the saved model need.

    ``relation`` is the relation the labels are restricted by (with several schemes: joint groups x fine); ``labels``
    and ``fine_names`` follow it. ``use_warm`` and ``scores``: the guard's choice per coarse class and the two
    silhouettes (``None`` when the guard did not run). ``neighbour_recall``: the share of the exact within-class
    neighbours found where the search was approximate (:func:`~falcon_sc.core.neighbors.neighbour_recall`; ``None``
    when every class was searched exactly).
    """

    result: FalconResult
    network: nn.Module
    n_fine: int
    children_prior: Any
    targets: np.ndarray
    initial: np.ndarray
    init_labels: np.ndarray | None
    relation: np.ndarray
    labels: np.ndarray
    fine_names: list[str]
    use_warm: np.ndarray
    scores: np.ndarray | None = None
    estimate: dict[str, Any] | None = None
    scheme_record: dict[str, Any] | None = None
    group_names: list[str] = field(default_factory=list)
    neighbour_recall: float | None = None


def fit_falcon(
    problem: Problem, n_fine: int | str | Mapping[str, int], fit: FitParams, cfg: FalconConfig, engine: Engine
) -> Outcome:
    """Neighbours, children per coarse class, warm start, FALCON training, guard and fine labels.

    ``n_fine``: the total, ``"auto"`` (estimated per coarse class from the neighbour graph) or a mapping coarse
    label -> count for the classes whose number is known (the others estimated).
    """
    n_neighbors = usable_neighbors(fit.n_neighbors, len(problem.groups))
    warn_small_classes(problem.groups, problem.group_names, n_neighbors)
    with phase("neighbours searched") as found:
        on = engine.device if engine.device.type == "cuda" else None  # exact on the GPU; CPU: pynndescent when large
        neighbors = within_class_neighbors(
            problem.space, problem.groups, n_neighbors, random_state=fit.random_state, device=on
        )
        found.append(f"{n_neighbors} per cell inside {len(problem.group_names)} coarse classes, on {on or 'cpu'}")
    recall = (
        None
        if on is not None
        else neighbour_recall(problem.space, problem.groups, neighbors, random_state=fit.random_state)
    )
    if recall is not None:
        logg.info(
            f"    classes over {EXACT_MAX:,} cells: approximate neighbours (pynndescent), recall {recall:.3f} of the "
            f"exact search on {RECALL_SAMPLE:,} sampled cells per class"
        )
    prior, estimate, known = fit.children_prior, None, {}
    if not isinstance(n_fine, int):  # "auto" or known counts of some classes: estimate the rest
        with phase("number of fine classes estimated") as found:
            estimate = estimate_n_fine(n_fine, neighbors, problem.groups, problem.group_names, fit.random_state)
            found.append(f"{int(estimate['table']['used'].sum())} in all")
        log_estimate(estimate["table"], np.bincount(problem.groups, minlength=len(problem.group_names)))
        prior = dict(zip(problem.group_names, estimate["table"]["used"].tolist(), strict=True))
        if isinstance(n_fine, Mapping):
            known = {problem.group_names.index(str(k)): int(v) for k, v in n_fine.items()}
        n_fine = int(sum(prior.values()))
    # a checkpoint's fingerprint also holds the coarse names (the core knows codes only) and n_fine
    names = [problem.coarse_names] if problem.schemes is None else problem.schemes.names
    identity = {"coarse_names": names, "n_fine": n_fine}
    # a foreign or damaged checkpoint is said before the warm start
    check_resumable(cfg, problem.features, identity, network=lambda: engine.make_network(n_fine))
    with phase(f"warm start ({fit.init})") as found:
        initial, init_labels, targets = warm_start(
            problem.space,
            neighbors,
            problem.groups,
            problem.group_names,
            n_fine,
            prior,
            fit.init,
            fit.random_state,
            problem.shared,
            engine.kmeans_restarts,
        )
        found.append("children " + ", ".join(f"{n}={t:g}" for n, t in zip(problem.group_names, targets, strict=True)))
    torch.manual_seed(fit.random_state)
    network = engine.make_network(n_fine)
    options: dict[str, Any] = dict(relation=initial, target_counts=targets, init_labels=init_labels)
    if known:  # the children of classes with a known count keep their parent and their number
        options["pinned"] = {int(f): c for c in known for f in np.flatnonzero(initial[:, c])}
        options["fixed_counts"] = known
    coarse_arg: np.ndarray = problem.coarse
    n_coarse: int | list[int] = len(problem.coarse_names)
    if problem.schemes is not None:
        options.update(scheme_start(problem.schemes, init_labels, n_fine))
        coarse_arg, n_coarse = problem.schemes.codes, problem.schemes.n_coarse
    cfg = cfg.with_fingerprint(identity)
    with phase("trained") as found:
        result = train(
            network, problem.features, coarse_arg, neighbors, n_coarse, cfg, engine, fit.random_state, options
        )
        found.append(describe_training(result.history, n_fine))
    with phase("fine labels chosen"):
        outcome = _labels(problem, result, initial, fit)
    outcome.update(network=network, n_fine=n_fine, children_prior=prior, targets=targets, estimate=estimate)
    outcome["neighbour_recall"] = recall
    outcome["group_names"] = problem.group_names
    return Outcome(result=result, initial=initial, init_labels=init_labels, **outcome)


def _labels(problem: Problem, result: FalconResult, initial: np.ndarray, fit: FitParams) -> dict[str, Any]:
    """Final relation, the guard's choice (one scheme), labels and fine-class names."""
    use_warm, scores, record = np.zeros(len(problem.coarse_names), dtype=bool), None, None
    if problem.schemes is None:
        relation = result.relation.astype(bool)
        if fit.guard_warm_start and result.warm_probs is not None:
            use_warm, scores = guard(result, initial.astype(bool), problem.coarse, problem.space, fit.random_state)
        names = problem.coarse_names
    else:  # a fine class is allowed in a joint group when it is a child there in every labelled scheme
        relation = joint_relation(result.relations, problem.schemes.table).astype(bool)
        names = problem.schemes.names[0]
        record = scheme_record(problem.schemes, result.relations, problem.group_table)
    labels = restricted_probs(result.probs, relation, problem.coarse).argmax(axis=1)
    fine_names = list(fine_class_names(result.relation.astype(bool), labels, names))
    return {
        "relation": relation,
        "labels": labels,
        "fine_names": fine_names,
        "use_warm": use_warm,
        "scores": scores,
        "scheme_record": record,
    }


def usable_neighbors(n_neighbors: int, n_obs: int) -> int:
    """``n_neighbors``, or ``n_obs - 1`` (with a warning) when it is not smaller than the number of samples.

    Every coarse class then reuses all its samples as neighbours; a wider table only costs memory (cells x
    ``n_neighbors`` integers: 10**7 neighbours of 240 cells asked for 18 GiB).
    """
    if n_neighbors < n_obs:
        return n_neighbors
    usable = max(1, n_obs - 1)
    logg.warning(f"n_neighbors={n_neighbors} is not smaller than the number of samples ({n_obs:,}); using {usable}")
    return usable


def warn_small_classes(coarse: np.ndarray, coarse_names: list[str], n_neighbors: int) -> None:
    """Warn about coarse classes with at most ``n_neighbors`` samples (they reuse their few neighbours)."""
    counts = np.bincount(coarse, minlength=len(coarse_names))
    small = [f"{coarse_names[c]} ({counts[c]})" for c in np.flatnonzero(counts <= n_neighbors)]
    if small:
        logg.warning(
            f"coarse classes with at most n_neighbors={n_neighbors} cells reuse their few neighbours: "
            + ", ".join(small)
        )
    single = [coarse_names[c] for c in np.flatnonzero(counts == 1)]
    if single:
        logg.warning(
            "coarse classes of one cell are kept whole (one fine class each; nothing can be learned inside them): "
            + ", ".join(single[:20])
        )


def warm_start(
    space: np.ndarray,
    neighbors: np.ndarray,
    coarse: np.ndarray,
    coarse_names: list[str],
    n_fine: int,
    children_prior: Any,
    init: str,
    random_state: int,
    shared: np.ndarray | None = None,
    restarts: int = 3,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Initial relation, warm-start labels (``None`` for ``init="random"``) and children per coarse class.

    ``shared``: the space common to all coarse classes (cells: the global principal components; default ``space``),
    where ``children_prior="variance"`` measures spread and ``init="kmeans"`` clusters. The neighbour space of cells
    holds unit-length within-class components, which make every class look equally spread. ``restarts``: k-means
    restarts of ``init="kmeans"``.
    """
    shared = space if shared is None else shared
    n_coarse = len(coarse_names)
    sizes = np.bincount(coarse, minlength=n_coarse)
    fixed = (
        None
        if children_prior == "auto"
        else prior_targets(children_prior, coarse, coarse_names, n_fine, shared, random_state)
    )
    if fixed is not None:  # before any clustering or training
        what = "the children counts" if isinstance(children_prior, Mapping) else f"children_prior={children_prior!r}"
        check_children_fit(sizes, coarse_names, fixed, f"{what} with n_fine={n_fine}")
    if init == "leiden" or fixed is None:
        graph_labels, graph_relation = graph_clusters(
            space, neighbors, coarse, n_fine, targets=fixed, random_state=random_state
        )
    targets = graph_relation.sum(axis=0).astype(float) if fixed is None else fixed
    if fixed is None:
        check_children_fit(sizes, coarse_names, targets, f"the neighbour graph's allotment of n_fine={n_fine}")
    logg.debug("children prior: " + ", ".join(f"{n}={t:g}" for n, t in zip(coarse_names, targets, strict=True)))
    if init == "leiden":
        return graph_relation, graph_labels, targets
    rng = np.random.default_rng(random_state)
    initial = solve_relation(rng.uniform(size=(n_fine, n_coarse)) * 1e-3, balance=1.0, target_counts=targets)
    if init != "kmeans":
        return initial, None, targets
    return initial, kmeans_within_relation(shared, coarse, initial, random_state, n_init=restarts), targets


def prior_targets(
    prior: Any, coarse: np.ndarray, coarse_names: list[str], n_fine: int, space: np.ndarray, random_state: int
) -> np.ndarray:
    """Children per coarse class from a mapping or a named prior (:func:`falcon_sc.core.prior.children_prior`)."""
    if isinstance(prior, Mapping):
        by_name = {str(k): v for k, v in prior.items()}
        return np.array([float(by_name[c]) for c in coarse_names])
    return size_prior(coarse, n_fine, method=prior, X=space, random_state=random_state)


def train(
    network: nn.Module,
    features: Any,
    coarse: np.ndarray,
    neighbors: np.ndarray,
    n_coarse: int | list[int],
    cfg: FalconConfig,
    engine: Engine,
    seed: int,
    options: dict[str, Any],
) -> FalconResult:
    """FALCON training on one device, ``engine.devices`` DDP processes or a torchrun launch; divergence is an error.

    Inside ``with launch:`` (a :class:`~falcon_sc.core.launch.TorchrunLaunch`, on its rank 0) the training runs on
    every process torchrun started (``engine.devices`` is not used).
    """
    advice = f"with lr={cfg.lr:g} and optimizer={cfg.optimizer!r}; nothing was written. Retry with a smaller lr, "
    advice += f"e.g. lr={cfg.lr / 10:g} (default 3e-4)."
    result: FalconResult
    launch = active_launch()
    try:
        if launch is not None:
            result = launch.lead(
                network, features, coarse, neighbors, n_coarse, cfg, seed=seed,
                student_view=engine.student_view, teacher_view=engine.teacher_view, **options,
            )  # fmt: skip
        elif engine.devices > 1:
            result = train_falcon_ddp(
                engine.devices, network, features, coarse, neighbors, n_coarse, cfg,
                accelerator=engine.device.type, seed=seed, **options,
            )  # fmt: skip
        else:
            result = train_falcon(
                network, features, coarse, neighbors, n_coarse, cfg, device=engine.device, seed=seed,
                student_view=engine.student_view, teacher_view=engine.teacher_view, **options,
            )  # fmt: skip
    except TrainingDiverged as err:
        raise RuntimeError(f"FALCON training diverged ({err}) {advice}") from None
    bad_loss = not np.isfinite([float(r.get("loss", 0.0)) for r in result.history]).all()
    if bad_loss or not np.isfinite(result.probs).all():
        raise RuntimeError(f"FALCON training diverged (non-finite {'loss' if bad_loss else 'probabilities'}) {advice}")
    return result


def estimate_n_fine(
    requested: str | Mapping[str, int],
    neighbors: np.ndarray,
    coarse: np.ndarray,
    coarse_names: list[str],
    random_state: int,
) -> dict[str, Any]:
    """Children per coarse class: the user's known counts, the others estimated from the neighbour graph."""
    est = estimate_children(neighbors, coarse, random_state=random_state)
    given = {} if isinstance(requested, str) else {str(k): int(v) for k, v in requested.items()}
    used = [given.get(c, int(e)) for c, e in zip(coarse_names, est.counts, strict=True)]
    table = pd.DataFrame(
        {"estimated": est.counts.astype(int), "used": used, "given": [c in given for c in coarse_names]},
        index=pd.Index(coarse_names, name="coarse"),
    )
    evidence = est.evidence.assign(coarse=[coarse_names[g] for g in est.evidence["group"]])
    evidence = evidence[["coarse", "n_children", "seed", "connectivity"]]
    return {"table": table, "evidence": evidence, "threshold": est.threshold}


def log_estimate(table: pd.DataFrame, sizes: np.ndarray) -> None:
    """The per-class estimate as a small table, and how to set a count by hand."""
    shown = table.assign(cells=sizes)[["cells", "estimated", "used"]].rename_axis(None)
    logg.info("\n".join(f"        {row}" for row in shown.to_string().splitlines()))
    example = {str(table.index[0]): int(table["used"].iloc[0]) + 1}
    logg.info(
        f"    to set some classes' counts yourself, pass a mapping, e.g. n_fine={example} (the other classes are "
        "estimated); the evidence: falcon_sc.pl.n_fine(adata)"
    )


def filled_groups(schemes: CoarseSchemes, space: np.ndarray, n_fine: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Joint groups after filling missing labels from neighbours (:func:`~falcon_sc.core.schemes.fill_missing`).

    Returns the group of every sample, the group names and the ``groups x schemes`` table of their coarse classes.
    """
    groups, table = joint_groups(fill_missing(space, schemes.codes))
    names = ["|".join(schemes.names[s][c] for s, c in enumerate(row)) for row in table]
    if n_fine < len(names):
        raise ValueError(
            f"n_fine={n_fine} is below the {len(names)} combinations of coarse labels across the schemes "
            f"{schemes.keys} ({names[:6]}...); ask for at least {len(names)} fine classes."
        )
    return groups, names, table


def scheme_start(schemes: CoarseSchemes, init_labels: np.ndarray | None, n_fine: int) -> dict[str, Any]:
    """Initial relation and children targets per scheme, from the warm start's fine labels (random without)."""
    if init_labels is None:
        return {"relation": None, "target_counts": None}
    relations = scheme_relations(init_labels, schemes.codes, n_fine, schemes.n_coarse)
    return {"relation": relations, "target_counts": [r.sum(axis=0).astype(float) for r in relations]}


def scheme_record(
    schemes: CoarseSchemes, relations: list[np.ndarray], group_table: np.ndarray | None = None
) -> dict[str, Any]:
    """Keys, class names and learned relation of every scheme (what the writers and the saved model keep).

    Also the observed joint groups (``"joint"``: groups x schemes, ``-1`` where unlabelled; the model's coarse
    classes) and the groups after filling (``"groups"``: the within-class inputs' groups, ``group_table``).
    """
    record: dict[str, Any] = {
        "keys": schemes.keys,
        "names": schemes.names,
        "relations": [r.astype(np.int8) for r in relations],
        "joint": np.asarray(schemes.table, dtype=np.int64),
    }
    if group_table is not None:
        record["groups"] = np.asarray(group_table, dtype=np.int64)
    return record


def guard(
    result: FalconResult, initial: np.ndarray, coarse: np.ndarray, space: np.ndarray, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Swap in the warm-fitted network's predictions in the coarse classes where they separate the cells better."""
    assert result.warm_probs is not None
    final = result.relation.astype(bool)
    trained = restricted_probs(result.probs, final, coarse).argmax(axis=1)
    warm_labels = restricted_probs(result.warm_probs, initial, coarse).argmax(axis=1)
    same_children = (final == initial).all(axis=0)
    use_warm, scores = choose_per_class(
        space, coarse, trained, warm_labels, eligible=same_children, random_state=random_state
    )
    rows = use_warm[coarse]
    result.probs[rows] = result.warm_probs[rows]
    return use_warm, scores


def describe_training(history: list[dict[str, Any]], n_fine: int) -> str:
    """What training did, for its log line: epochs, relation solves and changes, fine classes in use at the end."""
    if not history:
        return "nothing left to train (resumed at the end)"
    table = pd.DataFrame(history)
    solves = int(table["relation_solves"].sum()) if "relation_solves" in table else 0
    changes = int(table["relation_changes"].sum()) if "relation_changes" in table else 0
    in_use = int(table["fine_in_use"].iloc[-1]) if "fine_in_use" in table else n_fine
    return (
        f"{len(table)} epochs, {solves} relation solves ({changes} changes), "
        f"{in_use} of {n_fine} fine classes in use, final loss {float(table['loss'].iloc[-1]):.3f}"
    )
