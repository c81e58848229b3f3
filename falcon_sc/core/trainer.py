"""The FALCON training loop: alternate network updates (M fixed) and re-inference of the relation M."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import losses
from .ema import EMATeacher
from .relation import random_relation, solve_relation
from .schemes import joint_groups, joint_relation
from .training import (
    Features,
    LoopConfig,
    epochs_for_steps,
    fit_cross_entropy,
    make_fabric,
    predict,
    train_minibatches,
)

__all__ = ["FalconConfig", "FalconResult", "predict", "train_falcon"]


@dataclass
class FalconConfig:
    """Hyperparameters of FALCON training (see ``docs/method.md`` for where each default comes from)."""

    n_epochs: int | None = None
    min_steps: int = 300
    min_epochs: int = 3
    max_epochs: int = 300
    batch_size: int = 1024
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.6, 0.8)
    lr_gamma: float = 0.1
    lambda_coarse: float = 0.5
    lambda_fine: float = 0.5
    lambda_reg: float = 0.5
    regulariser: str = "global"
    lambda_relation: float = 5e-3
    temperature: float = 0.9
    relation_every: int = 30
    soft_fraction: float = 0.3
    n_sampled_neighbors: int = 5
    ema_decay: float = 0.99
    learn_relation: bool = True
    init_steps: int = 200
    init_balance: float = 1.0
    show_progress: bool = True
    precision: str = "32-true"
    checkpoint_path: str | None = None
    resume: bool = False

    def to_dict(self) -> dict:
        """Plain-dict copy (for ``uns``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class FalconResult:
    """What training returns: teacher predictions, relation and history.

    ``warm_probs`` and ``warm_state``: predictions and weights (CPU) of the network fitted to ``init_labels``,
    before FALCON training (``None`` without them). ``relations``: one relation per coarse scheme (``relation`` is
    the first).
    """

    probs: np.ndarray
    embedding: np.ndarray
    relation: np.ndarray
    relations: list[np.ndarray] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    warm_probs: np.ndarray | None = None
    warm_state: dict[str, torch.Tensor] | None = None


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _n_epochs(cfg: FalconConfig, n: int, batch_size: int) -> int:
    if cfg.n_epochs is not None:
        return cfg.n_epochs
    return epochs_for_steps(n, batch_size, cfg.min_steps, min_epochs=cfg.min_epochs, max_epochs=cfg.max_epochs)


def train_falcon(
    model: nn.Module,
    X,
    coarse: np.ndarray,
    neighbors: np.ndarray,
    n_coarse: int | list[int],
    cfg: FalconConfig,
    *,
    relation: np.ndarray | list[np.ndarray] | None = None,
    target_counts: np.ndarray | list[np.ndarray] | None = None,
    init_labels: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    fabric=None,
    student_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    teacher_view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    pinned: dict[int, int] | None = None,
    fixed_counts: dict[int, int] | None = None,
) -> FalconResult:
    """Train ``model`` with FALCON and return teacher predictions.

    Parameters
    ----------
    model
        Network with ``embed(x)`` and ``head``; its output width is the number of fine classes ``K_F``.
    X
        Samples x features (dense array/tensor or CSR; CSR is densified one minibatch at a time).
    coarse
        Coarse class index per sample, in ``0..n_coarse-1``; with several coarse schemes a samples x schemes array
        (``-1`` where a sample has no label in a scheme, at least one label per sample).
    neighbors
        Samples x k indices of neighbours inside the same coarse class.
    n_coarse
        Number of coarse classes ``K_C`` (a list, one per scheme, with several schemes). One relation is learned
        per scheme, each solved on its own labelled samples; a sample's fine classes are the children of its coarse
        class in every scheme that labels it.
    cfg
        Hyperparameters.
    relation
        Initial ``K_F x K_C`` relation (a list, one per scheme); default a solve on a random cost. Kept fixed when
        ``cfg.learn_relation`` is False.
    target_counts
        Expected children per coarse class used by the balance term (default ``K_F / K_C`` each; a list per scheme).
    init_labels
        Optional fine label per sample (consistent with ``relation``); the network is first fitted to them for
        ``cfg.init_steps`` steps of cross-entropy, and the teacher starts from that network.
    device
        Torch device (ignored with ``fabric``: its device).
    seed
        Seed for initialisation, minibatches and neighbour sampling (per rank in a distributed run).
    student_view, teacher_view
        Random views of a minibatch (images: :func:`falcon_sc.core.views.random_view`): the student trains on
        ``student_view(x)`` (also during the warm fit), the teacher's targets and neighbour predictions come from
        ``teacher_view(x)``. ``None``: the rows as they are (cells).
    pinned
        ``{fine index: coarse index}`` parents every relation solve keeps (one scheme; e.g. the children of coarse
        classes whose number of fine classes the user knows).
    fixed_counts
        ``{coarse index: number of children}`` every relation solve keeps (one scheme).
    fabric
        A launched Lightning Fabric; default one device. With several processes (``torchrun`` or
        :func:`falcon_sc.core.distributed.spawn`) each rank trains on its share of every epoch's minibatches, the
        relation cost is summed over the ranks' teacher predictions, rank 0 solves it and broadcasts ``M``.

    Returns
    -------
    :class:`FalconResult`.
    """
    if fabric is None:
        fabric = make_fabric(device, precision=cfg.precision)
    device = fabric.device
    rng = np.random.default_rng(seed)  # minibatch order: the same on every rank, each takes its share
    # neighbour draws: per rank (rank 0 of a single process shares the order's stream, as before)
    draw = rng if fabric.world_size == 1 else np.random.default_rng([seed, fabric.global_rank])
    torch.manual_seed(seed)
    n = X.shape[0]
    n_fine = model.head.out_features
    model = model.to(device)
    feats = Features(X, device)
    batch_size = min(cfg.batch_size, n)
    if init_labels is not None:
        warm = LoopConfig(
            n_epochs=cfg.init_steps, batch_size=batch_size, lr=1e-3, max_steps=cfg.init_steps, precision=cfg.precision
        )
        fit_cross_entropy(
            model, feats, init_labels, warm, rng, balance=cfg.init_balance, fabric=fabric, view=student_view
        )
        warm_probs, _ = predict(model, feats, device)
        warm_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        warm_probs, warm_state = None, None
    teacher = EMATeacher(model, cfg.ema_decay)
    multi = np.ndim(coarse) == 2
    if multi and (pinned or fixed_counts):
        raise ValueError("pinned parents take one coarse scheme.")
    n_coarses = [int(k) for k in n_coarse] if multi else [int(n_coarse)]
    n_schemes = len(n_coarses)
    if multi and cfg.regulariser in ("within", "both"):
        raise ValueError("regulariser='within'/'both' takes one coarse scheme; use 'prior' or 'global' with several.")
    relations = list(relation) if multi and relation is not None else [relation] * n_schemes
    targets = list(target_counts) if multi and target_counts is not None else [target_counts] * n_schemes
    y = torch.as_tensor(np.asarray(coarse).reshape(n, -1), dtype=torch.long, device=device)  # samples x schemes
    nbrs = torch.as_tensor(neighbors, dtype=torch.long, device=device)
    relations = [random_relation(n_fine, k, rng) if r is None else r for r, k in zip(relations, n_coarses, strict=True)]
    state = {"Ms": [torch.as_tensor(np.asarray(r), dtype=torch.float32, device=device) for r in relations]}
    if multi:  # a sample's fine classes: children of its class in every scheme labelling it (per joint group)
        sample_group, group_table = joint_groups(np.asarray(coarse))
        groups_t = torch.as_tensor(sample_group, dtype=torch.long, device=device)

    def update_allowed() -> None:
        if multi:
            joint = joint_relation([M.cpu().numpy() for M in state["Ms"]], group_table)
            state["allowed"] = torch.as_tensor(joint, dtype=torch.float32, device=device)

    update_allowed()
    # fine-class proportions the "prior" regulariser keeps: the warm start's, else uniform
    shares = np.bincount(init_labels, minlength=n_fine) if init_labels is not None else np.ones(n_fine)
    prior = torch.as_tensor(shares / shares.sum(), dtype=torch.float32, device=device)
    n_epochs = _n_epochs(cfg, n, batch_size)
    total_steps = n_epochs * math.ceil(n / batch_size)
    soft_steps = max(1, int(cfg.soft_fraction * total_steps))
    k_sample = min(cfg.n_sampled_neighbors, neighbors.shape[1])
    recent_p: list[torch.Tensor] = []
    recent_y: list[torch.Tensor] = []
    epoch_stats = {"pred": torch.zeros(n_fine, device=device), "solver_seconds": 0.0, "changes": 0, "solves": 0}
    student = {"net": model}  # the Fabric-wrapped network once the loop has set it up
    s_view = student_view if student_view is not None else _same
    t_view = teacher_view if teacher_view is not None else _same

    def step(idx: np.ndarray, xb: torch.Tensor, n_step: int) -> dict[str, torch.Tensor]:
        Ms = state["Ms"]
        tidx = torch.as_tensor(idx, device=device)
        yb = y[tidx]
        cols = torch.as_tensor(draw.integers(0, neighbors.shape[1], size=(len(idx), k_sample)), device=device)
        nb_idx = nbrs[tidx].gather(1, cols).reshape(-1)
        with torch.no_grad():
            t_logits = teacher.model(t_view(xb))
            t_nb = torch.softmax(teacher.model(t_view(feats.rows(nb_idx))), dim=1).reshape(len(idx), k_sample, n_fine)
        logits = student["net"](s_view(xb)).float()
        probs = torch.softmax(logits, dim=1)
        mask = (
            losses.children_mask(state["allowed"], groups_t[tidx]) if multi else losses.children_mask(Ms[0], yb[:, 0])
        )
        tau = 0.5 * (1.0 + math.cos(math.pi * min((n_step - 1) / soft_steps, 1.0)))
        l_coarse = losses.coarse_nll(logits, mask)
        l_nn = losses.neighbour_consistency(probs, t_nb)
        l_conf = losses.soft_cross_entropy(logits, losses.confident_targets(t_logits, mask, cfg.temperature, tau))
        l_reg = probs.new_zeros(())
        if cfg.regulariser in ("global", "both"):
            l_reg = l_reg + losses.marginal_entropy_gap(probs)
        if cfg.regulariser in ("within", "both"):
            l_reg = l_reg + losses.within_coarse_entropy_gap(probs, mask, yb[:, 0], Ms[0])
        if cfg.regulariser == "prior":
            l_reg = l_reg + losses.marginal_prior_kl(probs, prior)
        loss = cfg.lambda_coarse * l_coarse + cfg.lambda_fine * (l_conf + l_nn) + cfg.lambda_reg * l_reg
        t_probs = torch.softmax(t_logits, dim=1)
        epoch_stats["pred"] += torch.bincount(t_probs.argmax(dim=1), minlength=n_fine)
        if cfg.learn_relation:
            recent_p.append(t_probs)
            recent_y.append(yb)
        return {"loss": loss, "coarse": l_coarse, "neighbour": l_nn, "confident": l_conf, "regulariser": l_reg}

    def after_step(n_step: int) -> None:
        teacher.update(model)
        if not cfg.learn_relation or n_step % cfg.relation_every:
            return
        P = torch.cat(recent_p).float()
        labels = torch.cat(recent_y)
        balance = cfg.lambda_relation if n_step <= soft_steps else 0.0
        for s, k in enumerate(n_coarses):  # each scheme's relation from the samples it labels
            known = labels[:, s] >= 0
            Y = torch.nn.functional.one_hot(labels[:, s].clamp(min=0), k).float() * known[:, None]
            # summed over the ranks' teacher predictions; rank 0 solves and broadcasts M
            cost_sum = fabric.all_reduce(P.T @ Y, reduce_op="sum")
            count = fabric.all_reduce(known.sum().float(), reduce_op="sum")
            cost = (cost_sum / count.clamp(min=1.0)).double().cpu().numpy()
            t0 = time.perf_counter()
            new = state["Ms"][s].clone()
            if fabric.global_rank == 0:
                solved = solve_relation(
                    cost,
                    balance=balance,
                    target_counts=targets[s],
                    pinned=pinned if s == 0 else None,
                    fixed_counts=fixed_counts if s == 0 else None,
                )
                new = torch.as_tensor(solved, dtype=torch.float32, device=device)
            new = fabric.broadcast(new, src=0)
            epoch_stats["solver_seconds"] += time.perf_counter() - t0
            epoch_stats["changes"] += int((new.argmax(1) != state["Ms"][s].argmax(1)).sum())
            state["Ms"][s] = new
        update_allowed()
        epoch_stats["solves"] += 1
        recent_p.clear()
        recent_y.clear()

    def end_epoch(_: int) -> dict:
        pred = epoch_stats["pred"]
        record = {
            "fine_in_use": int((pred > 0).sum()),
            "largest_fine_share": float(pred.max() / n),
            "relation_changes": epoch_stats["changes"],
            "relation_solves": epoch_stats["solves"],
            "solver_seconds": epoch_stats["solver_seconds"],
            # children per coarse class (schemes one after the other)
            "children": torch.cat([M.sum(0) for M in state["Ms"]]).cpu().numpy().astype(int).tolist(),
        }
        epoch_stats.update(pred=torch.zeros(n_fine, device=device), solver_seconds=0.0, changes=0, solves=0)
        return record

    loop = LoopConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        lr_milestones=cfg.lr_milestones,
        lr_gamma=cfg.lr_gamma,
        show_progress=cfg.show_progress,
        desc="falcon",
        precision=cfg.precision,
        checkpoint_path=cfg.checkpoint_path,
        resume=cfg.resume,
    )

    def extra_state() -> dict:
        return {"teacher": teacher.model, "teacher_updates": teacher.n_updates, "relations": state["Ms"]}

    def load_extra_state(saved: dict) -> None:
        teacher.n_updates = int(saved["teacher_updates"])
        state["Ms"] = [M.to(device) for M in saved["relations"]]
        update_allowed()

    history = train_minibatches(
        model,
        feats,
        step,
        loop,
        rng,
        after_step=after_step,
        end_epoch=end_epoch,
        fabric=fabric,
        on_setup=lambda wrapped: student.update(net=wrapped),
        extra_state=extra_state,
        load_extra_state=load_extra_state,
    )
    probs, emb = predict(teacher.model, feats, device)
    return FalconResult(
        probs=probs,
        embedding=emb,
        relation=state["Ms"][0].cpu().numpy().astype(np.int8),
        relations=[M.cpu().numpy().astype(np.int8) for M in state["Ms"]],
        history=history,
        model=teacher.model,
        warm_probs=warm_probs,
        warm_state=warm_state,
    )
