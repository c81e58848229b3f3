"""The FALCON training loop: alternate network updates (M fixed) and re-inference of the relation M.

:class:`FalconPlan` is FALCON as a :class:`~falcon_sc.core.training.TrainingPlan`: the loss of a minibatch
(:meth:`~FalconPlan.training_step`), the EMA teacher update and the relation solve after each step
(:meth:`~FalconPlan.on_train_batch_end`), the per-epoch record and its part of a checkpoint (teacher and relations).
:func:`train_falcon` prepares the inputs, runs the optional warm fit and hands the plan to
:func:`~falcon_sc.core.training.train_minibatches`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping  # noqa: F401 - Mapping: the docs resolve the inherited fingerprint_extra
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .._checks import Bool, Choice, Int, Real, param
from . import losses
from .checkpoints import array_digest
from .ema import EMATeacher
from .relation import random_relation, solve_relation
from .relation_log import record_solve
from .schemes import joint_groups, joint_relation
from .training import (
    Features,
    LoopConfig,
    OptimSettings,
    TrainingPlan,
    epochs_for_steps,
    fit_cross_entropy,
    make_fabric,
    predict,
    redefault,
    train_minibatches,
)

if TYPE_CHECKING:
    from lightning_fabric import Fabric

__all__ = ["FalconConfig", "FalconPlan", "FalconResult", "predict", "train_falcon"]

View = Callable[[torch.Tensor], torch.Tensor]
REGULARISERS = ("prior", "global", "within", "both")
PLAN_SETTINGS = (
    "lambda_coarse",
    "lambda_fine",
    "lambda_reg",
    "regulariser",
    "lambda_relation",
    "temperature",
    "relation_every",
    "learn_relation",
    "soft_fraction",
    "n_sampled_neighbors",
    "ema_decay",
    "init_steps",
    "init_balance",
)
"""The :class:`FalconConfig` fields a checkpoint's fingerprint holds (beside the loop's): those that change the result.
The epoch bounds (``min_steps``, ``min_epochs``, ``max_epochs``) count through the number of epochs."""


@dataclass(kw_only=True)
class FalconConfig(OptimSettings):
    """Hyperparameters of FALCON training, each default declared once (see ``docs/method.md`` for where they come from).

    The defaults are those of :func:`falcon_sc.tl.refine` and :meth:`falcon_sc.FalconModel.fit`. The optimisation
    settings shared with :class:`~falcon_sc.core.training.LoopConfig` (``batch_size``, ``optimizer``, ``lr``,
    ``momentum``, ``weight_decay``, ``lr_milestones``, ``lr_gamma``, ``show_progress``, ``precision``,
    ``checkpoint_path``, ``resume``) are declared in :class:`~falcon_sc.core.training.OptimSettings`; FALCON changes
    four of their defaults. Every field is checked on construction.

    Attributes
    ----------
    n_epochs
        Passes over the data (``None``: enough for ``min_steps`` steps, within ``min_epochs``..``max_epochs``).
    lambda_coarse, lambda_fine, lambda_reg
        Weights of the coarse likelihood, the fine terms (confident targets + neighbour consistency) and the
        regulariser.
    regulariser
        ``"prior"`` (KL to the warm start's fine-class shares), ``"global"`` (entropy of the batch mean),
        ``"within"`` (per coarse class) or ``"both"``.
    lambda_relation
        Balance weight of the relation solves during the soft phase.
    temperature
        Sharpening temperature of the confident targets.
    relation_every
        Optimisation steps between relation solves.
    learn_relation
        Re-solve the relation during training (``False``: keep the initial one).
    soft_fraction
        Fraction of the steps over which the targets go from soft to hard (and the relation is balanced).
    n_sampled_neighbors
        Neighbours drawn per sample and step for the consistency term.
    ema_decay
        Final decay of the EMA teacher.
    init_steps, init_balance
        Steps and class balance of the warm fit to ``init_labels``.
    """

    n_epochs: int | None = param(None, Int(1, allow_none=True))
    min_steps: int = param(300, Int(1))
    min_epochs: int = param(3, Int(1))
    max_epochs: int = param(300, Int(1))
    batch_size: int = redefault(OptimSettings, "batch_size", 1024)
    lr: float = redefault(OptimSettings, "lr", 3e-4)
    lr_milestones: tuple[float, ...] = redefault(OptimSettings, "lr_milestones", (0.6, 0.8))
    show_progress: bool = redefault(OptimSettings, "show_progress", True)
    lambda_coarse: float = param(0.5, Real(0.0))
    lambda_fine: float = param(0.5, Real(0.0))
    lambda_reg: float = param(0.05, Real(0.0))
    regulariser: str = param("prior", Choice(REGULARISERS))
    lambda_relation: float = param(5e-3, Real(0.0))
    temperature: float = param(0.9, Real(0.0, open_low=True))
    relation_every: int = param(30, Int(1))
    learn_relation: bool = param(True, Bool())
    soft_fraction: float = param(0.3, Real(0.0, 1.0))
    n_sampled_neighbors: int = param(5, Int(1))
    ema_decay: float = param(0.99, Real(0.0, 1.0))
    init_steps: int = param(200, Int(1))
    init_balance: float = param(1.0, Real(0.0))

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict copy (for ``uns``); ``fingerprint_extra`` (not a setting) is left out."""
        items = asdict(self).items()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items if k != "fingerprint_extra"}

    def loop_config(self, n_epochs: int, batch_size: int) -> LoopConfig:
        """The loop's settings: the shared optimisation fields, ``n_epochs`` and the ``batch_size`` used."""
        return LoopConfig(n_epochs, **{**self.optim_settings(), "batch_size": batch_size}, desc="falcon")


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


@dataclass
class Schemes:
    """The coarse labels FALCON trains on, one scheme or several, with what each scheme's relation starts from.

    Attributes
    ----------
    codes
        Samples x schemes coarse class indices (``-1``: unlabelled in that scheme).
    n_coarse
        Coarse classes per scheme.
    initial
        Initial relation per scheme (``None``: a random one).
    targets
        Expected children per coarse class, per scheme (``None``: ``K_F / K_C`` each).
    multi
        Whether the coarse labels came as several schemes (a samples x schemes array).
    """

    codes: np.ndarray
    n_coarse: list[int]
    initial: list[np.ndarray | None]
    targets: list[np.ndarray | None]
    multi: bool

    @classmethod
    def from_args(
        cls,
        coarse: np.ndarray,
        n_coarse: int | list[int],
        relation: np.ndarray | list[np.ndarray] | None,
        target_counts: np.ndarray | list[np.ndarray] | None,
        cfg: FalconConfig,
        *,
        pinned: dict[int, int] | None,
        fixed_counts: dict[int, int] | None,
    ) -> Schemes:
        """The schemes of :func:`train_falcon`'s arguments; refuses what takes one scheme only."""
        multi = np.ndim(coarse) == 2
        if multi and (pinned or fixed_counts):
            raise ValueError("pinned parents take one coarse scheme.")
        if multi and cfg.regulariser in ("within", "both"):
            raise ValueError(
                "regulariser='within'/'both' takes one coarse scheme; use 'prior' or 'global' with several."
            )
        if multi != isinstance(n_coarse, Iterable):
            raise TypeError(
                f"n_coarse={n_coarse!r}: an int for one coarse scheme, a list (one per scheme) for several."
            )
        counts = [int(k) for k in n_coarse] if isinstance(n_coarse, Iterable) else [int(n_coarse)]
        codes = np.asarray(coarse).reshape(len(coarse), -1)
        return cls(
            codes,
            counts,
            _per_scheme(relation, multi, len(counts)),
            _per_scheme(target_counts, multi, len(counts)),
            multi,
        )


def _per_scheme(value: np.ndarray | list[np.ndarray] | None, multi: bool, n: int) -> list[np.ndarray | None]:
    """One entry per scheme: ``value``'s items with several schemes, ``value`` itself with one."""
    if value is None:
        return [None] * n
    return [np.asarray(v) for v in value] if multi else [np.asarray(value)]


@dataclass
class EpochStats:
    """What :class:`FalconPlan` counts during an epoch for its history record."""

    pred: torch.Tensor
    solver_seconds: float = 0.0
    changes: int = 0
    solves: int = 0


class FalconPlan(TrainingPlan):
    """FALCON as a training plan: the minibatch loss, the EMA teacher and the relation solves.

    Parameters
    ----------
    model
        The student network (``embed`` and ``head``), already on the device; the teacher starts as its copy.
    features
        Input rows.
    schemes
        Coarse labels and per-scheme settings.
    relations
        Initial relation per scheme.
    neighbors
        Samples x k neighbours inside the same coarse class.
    cfg
        Hyperparameters.
    fabric
        The launched Fabric (relation costs are summed over its ranks, rank 0 solves, the relation is broadcast).
    draw
        Generator of the neighbour draws.
    prior
        Fine-class shares the ``"prior"`` regulariser keeps.
    soft_steps
        Steps of the soft phase.
    student_view, teacher_view
        Views of a minibatch for the student and the teacher (``None``: the rows as they are).
    pinned, fixed_counts
        Parents and children counts every solve of the first scheme keeps.

    Attributes
    ----------
    teacher
        The EMA teacher; its predictions are the result.
    relations
        Current relation per scheme (float tensors on the device).
    stats
        The current epoch's counts.
    """

    def __init__(
        self,
        model: nn.Module,
        features: Features,
        schemes: Schemes,
        relations: list[np.ndarray],
        neighbors: np.ndarray,
        cfg: FalconConfig,
        *,
        fabric: Fabric,
        draw: np.random.Generator,
        prior: torch.Tensor,
        soft_steps: int,
        student_view: View | None = None,
        teacher_view: View | None = None,
        pinned: dict[int, int] | None = None,
        fixed_counts: dict[int, int] | None = None,
    ) -> None:
        self.model = self.network = model  # the bare student (EMA source); network: the wrapped one after setup
        self.features, self.schemes, self.cfg, self.fabric, self.draw = features, schemes, cfg, fabric, draw
        self.device = fabric.device
        self.n_fine = _n_outputs(model)
        self.teacher = EMATeacher(model, cfg.ema_decay)
        self.coarse = torch.as_tensor(schemes.codes, dtype=torch.long, device=self.device)  # samples x schemes
        self.neighbors = torch.as_tensor(neighbors, dtype=torch.long, device=self.device)
        self.k_sample = min(cfg.n_sampled_neighbors, neighbors.shape[1])
        self.relations = [torch.as_tensor(np.asarray(r), dtype=torch.float32, device=self.device) for r in relations]
        self.initial_digest = array_digest(*self.relations)  # tiny: fine x coarse per scheme
        self.prior, self.soft_steps = prior, soft_steps
        self.student_view = student_view if student_view is not None else _same
        self.teacher_view = teacher_view if teacher_view is not None else _same
        self.pinned, self.fixed_counts = pinned, fixed_counts
        self.recent_p: list[torch.Tensor] = []
        self.recent_y: list[torch.Tensor] = []
        self.stats = EpochStats(pred=torch.zeros(self.n_fine, device=self.device))
        self.allowed: torch.Tensor | None = None
        if schemes.multi:  # a sample's fine classes: children of its class in every scheme labelling it
            sample_group, self.group_table = joint_groups(schemes.codes)
            self.groups = torch.as_tensor(sample_group, dtype=torch.long, device=self.device)
        self._update_allowed()

    # ------------------------------------------------------------------ the step
    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """FALCON's loss of the minibatch ``idx``: coarse likelihood, confident targets, neighbours, regulariser."""
        cfg, n_fine = self.cfg, self.n_fine
        tidx = torch.as_tensor(idx, device=self.device)
        yb = self.coarse[tidx]
        t_logits, t_nb = self._teacher_outputs(idx, tidx, x)
        logits = self.network(self.student_view(x)).float()
        probs = torch.softmax(logits, dim=1)
        mask = self._children_mask(tidx, yb)
        tau = 0.5 * (1.0 + math.cos(math.pi * min((step - 1) / self.soft_steps, 1.0)))
        l_coarse = losses.coarse_nll(logits, mask)
        l_nn = losses.neighbour_consistency(probs, t_nb)
        l_conf = losses.soft_cross_entropy(logits, losses.confident_targets(t_logits, mask, cfg.temperature, tau))
        l_reg = self._regulariser(probs, mask, yb)
        loss = cfg.lambda_coarse * l_coarse + cfg.lambda_fine * (l_conf + l_nn) + cfg.lambda_reg * l_reg
        t_probs = torch.softmax(t_logits, dim=1)
        self.stats.pred += torch.bincount(t_probs.argmax(dim=1), minlength=n_fine)
        if cfg.learn_relation:
            self.recent_p.append(t_probs)
            self.recent_y.append(yb)
        return {"loss": loss, "coarse": l_coarse, "neighbour": l_nn, "confident": l_conf, "regulariser": l_reg}

    @torch.no_grad()
    def _teacher_outputs(
        self, idx: np.ndarray, tidx: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's logits of the minibatch and its probabilities of ``k_sample`` drawn neighbours of each."""
        k = self.k_sample
        cols = torch.as_tensor(self.draw.integers(0, self.neighbors.shape[1], size=(len(idx), k)), device=self.device)
        nb_idx = self.neighbors[tidx].gather(1, cols).reshape(-1)
        teacher = self.teacher.model
        t_logits = teacher(self.teacher_view(x))
        t_nb = torch.softmax(teacher(self.teacher_view(self.features.rows(nb_idx))), dim=1)
        return t_logits, t_nb.reshape(len(idx), k, self.n_fine)

    def _children_mask(self, tidx: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Batch x fine: the fine classes each sample may take (children of its coarse class in every scheme)."""
        if self.allowed is not None:
            return losses.children_mask(self.allowed, self.groups[tidx])
        return losses.children_mask(self.relations[0], yb[:, 0])

    def _regulariser(self, probs: torch.Tensor, mask: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The regulariser ``cfg.regulariser`` names."""
        kind = self.cfg.regulariser
        l_reg = probs.new_zeros(())
        if kind in ("global", "both"):
            l_reg = l_reg + losses.marginal_entropy_gap(probs)
        if kind in ("within", "both"):
            l_reg = l_reg + losses.within_coarse_entropy_gap(probs, mask, yb[:, 0], self.relations[0])
        if kind == "prior":
            l_reg = l_reg + losses.marginal_prior_kl(probs, self.prior)
        return l_reg

    # ------------------------------------------------------------------ the hooks
    def on_train_batch_end(self, step: int) -> None:
        """Move the teacher towards the student; every ``relation_every`` steps re-solve each scheme's relation."""
        self.teacher.update(self.model)
        if not self.cfg.learn_relation or step % self.cfg.relation_every:
            return
        P = torch.cat(self.recent_p).float()
        labels = torch.cat(self.recent_y)
        balance = self.cfg.lambda_relation if step <= self.soft_steps else 0.0
        for s, k in enumerate(self.schemes.n_coarse):  # each scheme's relation from the samples it labels
            self._solve(s, P, labels[:, s], k, balance, step)
        self._update_allowed()
        self.stats.solves += 1
        self.recent_p.clear()
        self.recent_y.clear()

    def _solve(self, s: int, P: torch.Tensor, labels: torch.Tensor, n_coarse: int, balance: float, step: int) -> None:
        """Re-solve the relation of scheme ``s`` from the teacher probabilities ``P`` of the samples it labels.

        The relation each rank holds after the broadcast is recorded when the environment asks
        (:func:`~falcon_sc.core.relation_log.record_solve`).
        """
        fabric = self.fabric
        known = labels >= 0
        Y = torch.nn.functional.one_hot(labels.clamp(min=0), n_coarse).float() * known[:, None]
        # summed over the ranks' teacher predictions; rank 0 solves and broadcasts M
        cost_sum = _sum_over_ranks(fabric, P.T @ Y)
        count = _sum_over_ranks(fabric, known.sum().float())
        cost = (cost_sum / count.clamp(min=1.0)).double().cpu().numpy()
        t0 = time.perf_counter()
        new = self.relations[s].clone()
        if fabric.global_rank == 0:
            solved = solve_relation(
                cost,
                balance=balance,
                target_counts=self.schemes.targets[s],
                pinned=self.pinned if s == 0 else None,
                fixed_counts=self.fixed_counts if s == 0 else None,
            )
            new = torch.as_tensor(solved, dtype=torch.float32, device=self.device)
        new = fabric.broadcast(new, src=0)
        record_solve(fabric.global_rank, step, s, new)
        self.stats.solver_seconds += time.perf_counter() - t0
        self.stats.changes += int((new.argmax(1) != self.relations[s].argmax(1)).sum())
        self.relations[s] = new

    def _update_allowed(self) -> None:
        """With several schemes: each joint group's allowed fine classes under the current relations."""
        if self.schemes.multi:
            joint = joint_relation([M.cpu().numpy() for M in self.relations], self.group_table)
            self.allowed = torch.as_tensor(joint, dtype=torch.float32, device=self.device)

    def on_train_epoch_end(self, epoch: int) -> dict[str, Any]:
        """The epoch's record: fine classes in use, the largest share, relation changes, solves, children."""
        pred = self.stats.pred
        record = {
            "fine_in_use": int((pred > 0).sum()),
            "largest_fine_share": float(pred.max() / self.features.n_obs),
            "relation_changes": self.stats.changes,
            "relation_solves": self.stats.solves,
            "solver_seconds": self.stats.solver_seconds,
            # children per coarse class (schemes one after the other)
            "children": torch.cat([M.sum(0) for M in self.relations]).cpu().numpy().astype(int).tolist(),
        }
        self.stats = EpochStats(pred=torch.zeros(self.n_fine, device=self.device))
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights and number of updates, the relations, the predictions gathered for the next solve.

        The teacher predictions and coarse labels gathered since the last relation solve are kept so that a resumed run
        solves from the same minibatches as an uninterrupted one.
        """
        return {
            "teacher": self.teacher.model.state_dict(),
            "teacher_updates": self.teacher.n_updates,
            "relations": self.relations,
            "recent": {"probs": list(self.recent_p), "coarse": list(self.recent_y)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, after checking it.

        The update count, the relations' shapes and values and the gathered predictions' shapes are checked first
        (``ValueError``: the loop reports the checkpoint as not valid for this model).
        """
        self._check_state(state)
        self.teacher.model.load_state_dict(state["teacher"])
        self.teacher.n_updates = int(state["teacher_updates"])
        self.relations = [M.to(self.device) for M in state["relations"]]
        self.recent_p = [P.to(self.device) for P in state["recent"]["probs"]]
        self.recent_y = [y.to(self.device) for y in state["recent"]["coarse"]]
        self._update_allowed()

    def _check_state(self, state: dict[str, Any]) -> None:
        """``ValueError`` unless ``state`` has the shapes and values of this plan's :meth:`state_dict`."""
        updates, relations, recent = state["teacher_updates"], state["relations"], state["recent"]
        if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
            raise ValueError(f"teacher_updates={updates!r} is not a count")
        shapes = [(self.n_fine, k) for k in self.schemes.n_coarse]
        if not isinstance(relations, list) or len(relations) != len(shapes):
            raise ValueError(f"relations: not a list of {len(shapes)} relations")
        for M, shape in zip(relations, shapes, strict=True):
            if not isinstance(M, torch.Tensor) or tuple(M.shape) != shape or not bool(((M == 0) | (M == 1)).all()):
                raise ValueError(f"relations: not 0/1 tensors of shapes {shapes}")
        probs, coarse = recent["probs"], recent["coarse"]
        if not isinstance(probs, list) or not isinstance(coarse, list) or len(probs) != len(coarse):
            raise ValueError("recent: not two lists of the same length")
        for P, y in zip(probs, coarse, strict=True):
            fits = isinstance(P, torch.Tensor) and isinstance(y, torch.Tensor) and P.dim() == 2 and y.dim() == 2
            if not fits or P.shape[1] != self.n_fine or tuple(y.shape) != (P.shape[0], len(shapes)):
                raise ValueError("recent: predictions of other shapes")
            if y.dtype != torch.long or not bool(((y >= -1) & (y < max(self.schemes.n_coarse))).all()):
                raise ValueError("recent: coarse labels out of range")

    def fingerprint(self) -> dict[str, Any]:
        """FALCON's identity in a checkpoint (compared on resume).

        The class counts, hashes of the coarse labels, the neighbours, the initial relations, the prior and the
        children targets, the pinned parents and the loss settings (:data:`PLAN_SETTINGS`).
        """
        targets = [np.zeros(0) if t is None else np.asarray(t, dtype=np.float64) for t in self.schemes.targets]
        return {
            "n_fine": self.n_fine,
            "n_coarse": list(self.schemes.n_coarse),
            "coarse labels (hash)": array_digest(self.schemes.codes, as_int64=True),
            "neighbours (hash)": array_digest(self.neighbors, as_int64=True),
            "initial relations (hash)": self.initial_digest,
            "prior (hash)": array_digest(self.prior.float()),
            "children targets (hash)": array_digest(*targets),
            "soft_steps": self.soft_steps,
            "pinned": {str(k): int(v) for k, v in sorted((self.pinned or {}).items())},
            "fixed_counts": {str(k): int(v) for k, v in sorted((self.fixed_counts or {}).items())},
            **{name: getattr(self.cfg, name) for name in PLAN_SETTINGS},
        }

    def result(
        self,
        history: list[dict],
        warm_probs: np.ndarray | None = None,
        warm_state: dict[str, torch.Tensor] | None = None,
    ) -> FalconResult:
        """The teacher's predictions and the relations after training."""
        probs, emb = predict(self.teacher.model, self.features, self.device)
        return FalconResult(
            probs=probs,
            embedding=emb,
            relation=self.relations[0].cpu().numpy().astype(np.int8),
            relations=[M.cpu().numpy().astype(np.int8) for M in self.relations],
            history=history,
            model=self.teacher.model,
            warm_probs=warm_probs,
            warm_state=warm_state,
        )


def _sum_over_ranks(fabric: Fabric, value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the ranks of ``fabric`` (itself with one process)."""
    total = fabric.all_reduce(value, reduce_op="sum")
    if not isinstance(total, torch.Tensor):
        raise TypeError(f"all_reduce of a tensor gave {type(total).__name__}")
    return total


def _n_outputs(model: nn.Module) -> int:
    """Width of ``model.head`` (a linear layer): the number of fine classes."""
    head = model.get_submodule("head")
    if not isinstance(head, nn.Linear):
        raise TypeError(f"model.head must be a torch.nn.Linear (its width is the number of fine classes), got {head}.")
    return head.out_features


def _warm_start(
    model: nn.Module,
    features: Features,
    init_labels: np.ndarray,
    cfg: FalconConfig,
    batch_size: int,
    rng: np.random.Generator,
    fabric: Fabric,
    view: View | None,
) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """Fit ``model`` to ``init_labels`` for ``cfg.init_steps`` steps; its predictions and weights (CPU) after."""
    steps = cfg.init_steps
    warm = LoopConfig(n_epochs=steps, batch_size=batch_size, lr=1e-3, max_steps=steps, precision=cfg.precision)
    fit_cross_entropy(model, features, init_labels, warm, rng, balance=cfg.init_balance, fabric=fabric, view=view)
    warm_probs, _ = predict(model, features, features.device)
    return warm_probs, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_falcon(
    model: nn.Module,
    X: Any,
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
    fabric: Fabric | None = None,
    student_view: View | None = None,
    teacher_view: View | None = None,
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
    fabric
        A launched Lightning Fabric; default one device. With several processes (``torchrun`` or
        :func:`falcon_sc.core.distributed.spawn`) each rank trains on its share of every epoch's minibatches, the
        relation cost is summed over the ranks' teacher predictions, rank 0 solves it and broadcasts ``M``.
    student_view, teacher_view
        Random views of a minibatch (images: :func:`falcon_sc.core.views.random_view`): the student trains on
        ``student_view(x)`` (also during the warm fit), the teacher's targets and neighbour predictions come from
        ``teacher_view(x)``. ``None``: the rows as they are (cells).
    pinned
        ``{fine index: coarse index}`` parents every relation solve keeps (one scheme; e.g. the children of coarse
        classes whose number of fine classes the user knows).
    fixed_counts
        ``{coarse index: number of children}`` every relation solve keeps (one scheme).

    Returns
    -------
    :class:`FalconResult`.
    """
    schemes = Schemes.from_args(
        coarse, n_coarse, relation, target_counts, cfg, pinned=pinned, fixed_counts=fixed_counts
    )
    if fabric is None:
        fabric = make_fabric(device, precision=cfg.precision)
    rng = np.random.default_rng(seed)  # minibatch order: the same on every rank, each takes its share
    # neighbour draws: per rank (rank 0 of a single process shares the order's stream, as before)
    draw = rng if fabric.world_size == 1 else np.random.default_rng([seed, fabric.global_rank])
    torch.manual_seed(seed)
    n = X.shape[0]
    n_fine = _n_outputs(model)
    model = model.to(fabric.device)
    feats = Features(X, fabric.device)
    batch_size = min(cfg.batch_size, n)
    warm_probs, warm_state = None, None
    if init_labels is not None:
        warm_probs, warm_state = _warm_start(model, feats, init_labels, cfg, batch_size, rng, fabric, student_view)
    initial = [
        random_relation(n_fine, k, rng) if r is None else r
        for r, k in zip(schemes.initial, schemes.n_coarse, strict=True)
    ]
    # fine-class proportions the "prior" regulariser keeps: the warm start's, else uniform
    shares = np.bincount(init_labels, minlength=n_fine) if init_labels is not None else np.ones(n_fine)
    n_epochs = _n_epochs(cfg, n, batch_size)
    total_steps = n_epochs * math.ceil(n / batch_size)
    plan = FalconPlan(
        model,
        feats,
        schemes,
        initial,
        neighbors,
        cfg,
        fabric=fabric,
        draw=draw,
        prior=torch.as_tensor(shares / shares.sum(), dtype=torch.float32, device=fabric.device),
        soft_steps=max(1, int(cfg.soft_fraction * total_steps)),
        student_view=student_view,
        teacher_view=teacher_view,
        pinned=pinned,
        fixed_counts=fixed_counts,
    )
    history = train_minibatches(model, feats, plan, cfg.loop_config(n_epochs, batch_size), rng, fabric=fabric)
    return plan.result(history, warm_probs, warm_state)
