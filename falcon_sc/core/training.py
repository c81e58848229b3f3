"""The one minibatch training loop every network in falcon_sc is trained with (FALCON and the neural baselines).

A method supplies a :class:`TrainingPlan` in the manner of Lightning's ``LightningModule`` and scvi-tools' training
plans: :meth:`~TrainingPlan.training_step` turns a minibatch into losses, hooks run after each optimiser step and
after each epoch, and :meth:`~TrainingPlan.state_dict` / :meth:`~TrainingPlan.load_state_dict` are the method's part
of a checkpoint. The loop owns the epochs, minibatch order, densifying sparse rows, the optimiser and learning-rate
schedule, the device, the progress bar and the per-epoch history.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

import numpy as np
import torch
from scipy import sparse
from torch import nn
from tqdm import tqdm  # the text bar honours `delay` everywhere (the notebook widget fallback does not)

from .._checks import Anything, Bool, Choice, Int, Real, check_choice, check_int, param, validate
from .checkpoints import (
    FORMAT,
    check_before_training,
    data_fingerprint,
    error_reason,
    fingerprint_differences,
    invalid,
    loop_state_problem,
    mismatch,
    plain,
    read_checkpoint,
    state_digest,
)

if TYPE_CHECKING:
    from lightning_fabric import Fabric

Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
PRECISIONS: tuple[Precision, ...] = ("32-true", "bf16-mixed", "16-mixed")
OPTIMIZERS = ("adam", "sgd")
RESULT_SETTINGS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "lr_milestones",
    "lr_gamma",
    "n_epochs",
    "max_steps",
    "precision",
)
"""The loop settings a checkpoint's fingerprint holds (with the minibatch size used and the number of processes):
those that change the result. The progress bar, threads and the checkpoint settings themselves are left out."""
Settings = TypeVar("Settings", bound="OptimSettings")


class SampleSource(Protocol):
    """A lazy source of samples (e.g. :class:`falcon_sc.data.ImageFiles`): read one request at a time."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Samples x the shape of one sample."""

    def load(self, idx: np.ndarray) -> np.ndarray:
        """The samples ``idx`` as one array."""

    def subset(self, idx: np.ndarray) -> SampleSource:
        """A source of the samples ``idx`` only."""


class Features:
    """Rows of a samples x features matrix, served as float32 tensors on ``device``.

    Dense input is moved to the device once; CSR input stays on the host and is densified one request at a time. A
    *sample source* (any object with ``shape`` and ``load(idx) -> np.ndarray``, e.g.
    :class:`falcon_sc.data.ImageFiles`) stays where it is and is read one request at a time; its arrays are copied
    to the device from pinned memory when the device is CUDA. Rows keep the input's shape beyond the first axis
    (images stored as ``N x C x H x W`` give ``C x H x W`` rows).
    """

    data: torch.Tensor | sparse.csr_matrix | SampleSource

    def __init__(self, X: Any, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        if isinstance(X, Features):
            X = X.data
        if sparse.issparse(X):
            self.data = sparse.csr_matrix(X, dtype=np.float32)
        elif isinstance(X, torch.Tensor):
            self.data = X.to(device=self.device, dtype=torch.float32)
        elif self.is_source(X):
            self.data = X
        else:
            self.data = torch.as_tensor(np.asarray(X, dtype=np.float32), device=self.device)

    @staticmethod
    def is_source(X: Any) -> bool:
        """Whether ``X`` is a lazy sample source: ``shape`` and a callable ``load(idx)`` (not an array)."""
        return callable(getattr(X, "load", None)) and hasattr(X, "shape") and not isinstance(X, np.ndarray)

    @property
    def n_obs(self) -> int:
        """Number of samples."""
        return int(self.data.shape[0])

    @property
    def n_features(self) -> int:
        """Number of input features per sample (the product of the shape beyond the first axis)."""
        return int(math.prod(int(d) for d in self.data.shape[1:]))

    def rows(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Dense float32 tensor of the rows ``idx`` on the device."""
        if isinstance(self.data, torch.Tensor):
            return self.data[torch.as_tensor(idx, device=self.device)]
        idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        if isinstance(self.data, sparse.csr_matrix):
            return torch.as_tensor(self.data[idx].toarray(), device=self.device)
        batch = torch.from_numpy(np.ascontiguousarray(self.data.load(idx), dtype=np.float32))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def subset(self, idx: np.ndarray) -> Features:
        """The rows ``idx`` as a new :class:`Features` on the same device."""
        if isinstance(self.data, torch.Tensor):
            return Features(self.data[torch.as_tensor(idx, device=self.device)], self.device)
        if isinstance(self.data, sparse.csr_matrix):
            return Features(self.data[np.asarray(idx)], self.device)
        return Features(self.data.subset(np.asarray(idx)), self.device)

    def in_order(self, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(idx, rows)`` over all samples in order, ``batch_size`` at a time."""
        for start in range(0, self.n_obs, batch_size):
            idx = np.arange(start, min(start + batch_size, self.n_obs))
            yield idx, self.rows(idx)


def redefault(base: type, name: str, default: Any) -> Any:
    """The field ``name`` of the parameter class ``base`` with another default; its declared constraint is kept.

    For a subclass whose default differs (:class:`~falcon_sc.core.trainer.FalconConfig`'s ``lr`` and
    ``batch_size``): the field and its constraint stay declared once, in ``base``.
    """
    declared = {f.name: f for f in fields(base)}
    if name not in declared:
        raise AttributeError(f"{base.__name__} declares no field {name!r}.")
    return field(default=default, metadata=declared[name].metadata)


@dataclass(kw_only=True)
class OptimSettings:
    """Optimisation settings of the training loop, each declared once with its constraint.

    :class:`LoopConfig` (the loop of every network) and :class:`~falcon_sc.core.trainer.FalconConfig` (FALCON's
    training) both extend it; FalconConfig changes some defaults (:func:`redefault`) but no declaration. Checked on
    construction.

    Attributes
    ----------
    batch_size
        Minibatch size (capped at the number of samples).
    optimizer
        ``"adam"`` or ``"sgd"`` (momentum ``momentum``).
    lr, momentum, weight_decay
        Optimiser settings.
    lr_milestones
        Fractions of the epochs after which the learning rate is multiplied by ``lr_gamma``.
    lr_gamma
        Learning-rate decay factor at each milestone.
    show_progress
        tqdm bar over minibatches.
    precision
        Lightning precision, ``"32-true"`` or ``"bf16-mixed"`` (CUDA; ``"16-mixed"`` also works there).
    checkpoint_path
        File the loop state (network, optimiser, schedule, epoch, history, random state and the plan's state) is
        written to after every epoch, by rank 0, atomically (a file beside it, then a rename), with a fingerprint of
        the run and a digest of its content; ``None``: no checkpoints. An existing file is overwritten after the
        first epoch unless ``resume`` is set.
    resume
        Continue from ``checkpoint_path`` when it exists (its epochs are not run again); when it does not exist the
        run starts afresh. The file is read with ``weights_only=True`` (tensors and plain values only: nothing that
        could run code is unpickled) and checked before anything is restored: its digest, its fingerprint (the data's
        shape and hash, the network's parameter names and shapes, the settings that change the result, the plan's
        :meth:`~TrainingPlan.fingerprint` and ``fingerprint_extra``) and its structure. A file that fails any check
        raises :class:`~falcon_sc.errors.CheckpointError` (naming the file and what differs or is wrong) before any
        training.
    fingerprint_extra
        Plain values the caller adds to the checkpoint's fingerprint (the model layer: the coarse class names per
        scheme and ``n_fine``); not a training setting.
    """

    batch_size: int = param(256, Int(1))
    optimizer: str = param("adam", Choice(OPTIMIZERS))
    lr: float = param(1e-3, Real(0.0, open_low=True))
    momentum: float = param(0.9, Real(0.0))
    weight_decay: float = param(0.0, Real(0.0))
    lr_milestones: tuple[float, ...] = param((), Anything())
    lr_gamma: float = param(0.1, Real(0.0))
    show_progress: bool = param(False, Bool())
    precision: str = param("32-true", Choice(PRECISIONS))
    checkpoint_path: str | None = param(None, Anything())
    resume: bool = param(False, Bool())
    fingerprint_extra: Mapping[str, Any] | None = param(None, Anything())

    def __post_init__(self) -> None:
        validate(self)
        if self.resume and self.checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path (the file to resume from).")
        if self.checkpoint_path is not None:
            check_checkpoint_path(self.checkpoint_path)

    def optim_settings(self) -> dict[str, Any]:
        """The fields of :class:`OptimSettings` and their values (to build a :class:`LoopConfig` from a subclass)."""
        return {f.name: getattr(self, f.name) for f in fields(OptimSettings)}

    def with_fingerprint(self: Settings, extra: Mapping[str, Any]) -> Settings:
        """A copy whose checkpoints' fingerprint also holds ``extra`` (plain values, e.g. the coarse class names)."""
        return replace(self, fingerprint_extra=plain(extra))


@dataclass
class LoopConfig(OptimSettings):
    """Settings of :func:`train_minibatches`: the :class:`OptimSettings` (keyword-only) plus the loop's own.

    Attributes
    ----------
    n_epochs
        Passes over the data (each a fresh random order).
    max_steps
        Stop after this many minibatches (``None``: run all epochs).
    desc
        Label of the bar.
    n_threads
        CPU threads torch may use while training (``None``: :func:`cpu_threads` decides from the model size).
    progress_delay
        Seconds before the progress bar appears (short runs stay silent).
    """

    n_epochs: int
    max_steps: int | None = param(None, Int(1, allow_none=True))
    desc: str = param("train", Anything())
    n_threads: int | None = param(None, Int(1, allow_none=True))
    progress_delay: float = param(2.0, Real(0.0))

    def __post_init__(self) -> None:
        check_int("n_epochs", self.n_epochs, 1)
        super().__post_init__()


def check_checkpoint_path(path: Any) -> None:
    """A checkpoint file to write: a path (str or os.PathLike), not a folder, in a folder that exists.

    Checked when the settings are made, before any training.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"checkpoint_path={path!r} must be a file path (str or os.PathLike), got {type(path).__name__}."
        )
    target = Path(path)
    if target.is_dir():
        raise ValueError(
            f"checkpoint_path={str(path)!r} is a folder; give the path of a file inside it, e.g. "
            f"{str(target / 'falcon.ckpt')!r}."
        )
    if not target.parent.is_dir():
        raise ValueError(
            f"checkpoint_path={str(path)!r}: its folder {str(target.parent)!r} does not exist or is not a folder; "
            "create it first or choose another path."
        )


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite (the learning rate is usually too large)."""


class TrainingPlan:
    """What a method gives :func:`train_minibatches`: its step, its hooks and its part of a checkpoint.

    The shape of Lightning's ``LightningModule`` hooks and scvi-tools' training plans, reduced to what falcon_sc's
    methods use. A subclass implements :meth:`training_step` and overrides the hooks it needs; the defaults do
    nothing. The loop calls, in order: :meth:`setup` once, then for every minibatch :meth:`training_step`, the
    optimiser step and :meth:`on_train_batch_end`, and after every epoch :meth:`on_train_epoch_end`. A checkpoint
    holds :meth:`state_dict` whole; resuming restores it with :meth:`load_state_dict`.

    Attributes
    ----------
    network
        The Fabric-wrapped network (set by :meth:`setup`): forward passes that train must go through it, since
        distributed gradient synchronisation and mixed precision live in the wrapper.
    """

    network: nn.Module

    def setup(self, network: nn.Module) -> None:
        """Receive the Fabric-wrapped network (before the first step)."""
        self.network = network

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Losses of the minibatch ``idx`` (rows ``x``) at optimisation step ``step`` (from 1).

        The entry ``"loss"`` is minimised; every entry is averaged per epoch into the history.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement training_step.")

    def on_train_batch_end(self, step: int) -> None:
        """After the optimiser step ``step`` (EMA updates, relation solves...)."""

    def on_train_epoch_end(self, epoch: int) -> dict[str, Any]:
        """After the epoch ``epoch``: entries merged into that epoch's history record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The plan's own state for a checkpoint (modules' state dicts, tensors, plain values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on resume).

        Raise ``ValueError`` / ``TypeError`` / ``KeyError`` for a state that does not fit the plan, before changing
        anything: the loop turns it into a :class:`~falcon_sc.errors.CheckpointError`.
        """

    def fingerprint(self) -> dict[str, Any]:
        """The plan's identity in a checkpoint's fingerprint (plain values; hashes for arrays), compared on resume.

        What, beside the data, the network and the loop's settings, changes the result (FALCON: the number of fine and
        coarse classes, a hash of the coarse labels, its loss settings...). Called once, before the first step, only
        when checkpoints are written; it must draw no random numbers.
        """
        return {}


def make_fabric(
    device: torch.device | str = "cpu",
    *,
    devices: int = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str = "32-true",
) -> Fabric:
    """A launched Lightning :class:`~lightning_fabric.Fabric` on ``device``'s accelerator.

    The training engine: device placement, precision, distributed strategies and checkpoint files are Lightning's;
    falcon_sc keeps only the method's steps. ``strategy="ddp"`` expects the processes to be started by ``torchrun``
    (``devices`` per node on ``num_nodes`` nodes; :class:`~falcon_sc.core.launch.TorchrunLaunch`), whose environment
    Fabric reads; :func:`falcon_sc.core.distributed.spawn` starts them itself.
    """
    import logging

    from lightning_fabric import Fabric

    check_choice("precision", precision, PRECISIONS)
    for name in ("lightning_fabric", "lightning.fabric"):  # "Seed set to ..." / GPU availability chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    device = torch.device(device)
    fabric = Fabric(
        accelerator=device.type,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=cast(Precision, precision),
    )
    fabric.launch()
    return fabric


SMALL_MODEL_PARAMS = 2_000_000
"""Networks below this many parameters train on one CPU thread by default."""


def cpu_threads(model: nn.Module, n_threads: int | None = None) -> int:
    """CPU threads to train ``model`` with: ``n_threads`` if given, else 1 for small networks, else torch's setting.

    A minibatch step of a small network (the cell MLPs: a few hundred thousand weights) is too short to gain from
    several threads, while torch's OpenMP workers spin-wait between steps: on a loaded machine, or beside another
    OpenMP runtime in the same process (scikit-learn's), a step then waits on descheduled workers. Measured on this
    2-core machine with one busy core: 300 steps of a 50-256-20 MLP took 0.15 s on one thread and 0.4-0.8 s on two.
    """
    if n_threads is not None:
        if n_threads < 1:
            raise ValueError(f"n_threads={n_threads}: use at least 1 (or None to decide from the model size).")
        return int(n_threads)
    n_params = sum(p.numel() for p in model.parameters())
    return 1 if n_params < SMALL_MODEL_PARAMS else torch.get_num_threads()


@contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the block with torch limited to ``n_threads`` CPU threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def epochs_for_steps(n_obs: int, batch_size: int, min_steps: int, min_epochs: int = 10, max_epochs: int = 300) -> int:
    """Epochs giving at least ``min_steps`` minibatches and at least ``min_epochs`` passes (at most ``max_epochs``)."""
    per_epoch = math.ceil(n_obs / max(1, min(batch_size, n_obs)))
    return int(min(max_epochs, max(min_epochs, math.ceil(min_steps / per_epoch))))


def make_optimizer(params: Iterator[nn.Parameter], cfg: OptimSettings) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names, over ``params``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_minibatches(
    model: nn.Module,
    features: Features,
    plan: TrainingPlan,
    cfg: LoopConfig,
    rng: np.random.Generator,
    *,
    fabric: Fabric | None = None,
) -> list[dict[str, Any]]:
    """Minimise the losses ``plan`` returns over random minibatches of ``features``, on Lightning Fabric.

    Parameters
    ----------
    model
        The network; all its parameters are optimised (it is put in train mode). The plan receives it wrapped by
        Fabric (:meth:`TrainingPlan.setup`) and must run its training forward passes through the wrapper.
    features
        Input rows.
    plan
        The method: :meth:`~TrainingPlan.training_step` and the hooks of :class:`TrainingPlan`.
    cfg
        Optimisation settings.
    rng
        Source of the minibatch order (methods draw their own randomness from the same generator). In a
        distributed run every rank must seed it alike: each takes its own share of the same order.
    fabric
        A launched Fabric (default: one device, ``features``' device, ``cfg.precision``).

    Returns
    -------
    One record per epoch: the mean of each loss term, ``epoch``, ``lr`` and what
    :meth:`~TrainingPlan.on_train_epoch_end` adds.

    Raises
    ------
    CheckpointError
        With ``cfg.resume``, before any training: the file at ``cfg.checkpoint_path`` is not a valid checkpoint of
        this run (unreadable, damaged, objects that would need code to rebuild, no fingerprint, another structure) or
        was written for other data or settings (the message says what differs).
    """
    fabric = make_fabric(features.device, precision=cfg.precision) if fabric is None else fabric
    opt = make_optimizer(model.parameters(), cfg)
    wrapped, opt = fabric.setup(model, opt)
    plan.setup(wrapped)
    milestones = sorted({int(f * cfg.n_epochs) for f in cfg.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.lr_gamma)
    loop = _Loop(fabric, wrapped, opt, sched, features, plan, cfg, rng)
    if cfg.resume and cfg.checkpoint_path is not None and Path(cfg.checkpoint_path).is_file():
        loop.resume(cfg.checkpoint_path)
    with torch_threads(cpu_threads(model, cfg.n_threads)):
        loop.run()
    return loop.history


def check_resumable(
    cfg: OptimSettings, data: Any, extra: Mapping[str, Any], network: Callable[[], nn.Module] | None = None
) -> None:
    """With ``cfg.resume`` and an existing checkpoint: refuse it now if it cannot be resumed on ``data``.

    For callers with work before the training loop (FALCON's warm start): the checkpoint is read and its digest,
    data hash, ``extra`` (``fingerprint_extra`` to be), the settings known now and, given ``network`` (a function
    that builds the network to train), the network's shapes are compared
    (:func:`~falcon_sc.core.checkpoints.check_before_training`), so that a foreign or damaged checkpoint is said
    before any work rather than after it. The network is built on torch's ``meta`` device (no memory, no random
    numbers drawn). Does nothing without ``resume`` or without the file.
    """
    path = cfg.checkpoint_path
    if not cfg.resume or path is None or not Path(path).is_file():
        return
    late = ("n_epochs", "max_steps")  # FALCON decides them from the data; the loop compares them
    settings = {key: getattr(cfg, key) for key in RESULT_SETTINGS if key not in late and hasattr(cfg, key)}
    current: dict[str, Any] = {"data": data_fingerprint(Features(data).data), "settings": settings}
    if network is not None:
        with torch.device("meta"):
            current["network"] = {name: list(t.shape) for name, t in network().state_dict().items()}
    current["extra"] = dict(extra)
    check_before_training(path, current)


class _Loop:
    """The state of one :func:`train_minibatches` run: its epochs, the step count, the history and checkpoints."""

    def __init__(
        self,
        fabric: Fabric,
        network: nn.Module,
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.MultiStepLR,
        features: Features,
        plan: TrainingPlan,
        cfg: LoopConfig,
        rng: np.random.Generator,
    ) -> None:
        self.fabric, self.network, self.opt, self.sched = fabric, network, opt, sched
        self.features, self.plan, self.cfg, self.rng = features, plan, cfg, rng
        self.rank, world = fabric.global_rank, fabric.world_size
        self.per_rank = features.n_obs // world  # equal shares: every rank takes the same number of steps
        self.batch_size = min(cfg.batch_size, features.n_obs)
        total = cfg.n_epochs * math.ceil(self.per_rank / self.batch_size)
        self.total = total if cfg.max_steps is None else min(total, cfg.max_steps)
        self.history: list[dict[str, Any]] = []
        self.n_step, self.first_epoch = 0, 0
        # computed only when checkpoints are written: hashing the data costs a pass over it
        self.fingerprint: dict[str, Any] = {} if cfg.checkpoint_path is None else self.run_fingerprint()

    def steps_after(self, epoch: int) -> int:
        """Optimisation steps taken when ``epoch`` (from 0) has ended."""
        return min(self.total, (epoch + 1) * math.ceil(self.per_rank / self.batch_size))

    def run_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of this run is checked against on resume (plain values; see :class:`OptimSettings`).

        The data's kind, shape and hash, the network's parameter names and shapes, the settings that change the
        result (:data:`RESULT_SETTINGS`, the minibatch size used, the processes), the random state before the first
        epoch, the plan's :meth:`~TrainingPlan.fingerprint` and ``cfg.fingerprint_extra``. Draws no random numbers.
        """
        cfg = self.cfg
        settings = {"batch_size": self.batch_size, **{k: getattr(cfg, k) for k in RESULT_SETTINGS}}
        settings["processes"] = self.fabric.world_size
        start = repr(self.rng.bit_generator.state).encode()
        settings["random state before training"] = hashlib.blake2b(start, digest_size=8).hexdigest()
        return plain(
            {
                "format": FORMAT,
                "data": data_fingerprint(self.features.data),
                "network": {name: list(t.shape) for name, t in self.network.state_dict().items()},
                "settings": settings,
                "plan": self.plan.fingerprint(),
                "extra": dict(cfg.fingerprint_extra or {}),
            }
        )

    def resume(self, path: str) -> None:
        """Restore a checkpoint written by :meth:`save` (its epochs are not run again), after checking it.

        Raises
        ------
        CheckpointError
            The file is not a falcon_sc checkpoint (unreadable, damaged, code in it, no fingerprint, another
            structure) or was written for other data or settings; raised before anything is restored.
        """
        content = read_checkpoint(self.fabric, path)
        differences = fingerprint_differences(content["fingerprint"], self.fingerprint)
        if differences:
            raise mismatch(path, differences)
        params = [p for group in self.opt.param_groups for p in group["params"]]
        problem = loop_state_problem(
            content,
            network=self.network.state_dict(),
            optimizer=self.opt.state_dict(),
            param_shapes={i: tuple(p.shape) for i, p in enumerate(params)},
            scheduler=self.sched.state_dict(),
            rng_kind=str(self.rng.bit_generator.state["bit_generator"]),
            n_epochs=self.cfg.n_epochs,
            steps_after=self.steps_after,
        )
        if problem is not None:
            raise invalid(path, problem)
        try:
            self.network.load_state_dict(content["model"])
            self.opt.load_state_dict(content["optimizer"])
            self.plan.load_state_dict(content["plan"])
            self.sched.load_state_dict(content["scheduler"])
            self.rng.bit_generator.state = content["rng"]
        except Exception as err:
            raise invalid(path, f"it does not fit this model ({error_reason(err)})") from None
        self.history, self.n_step, self.first_epoch = content["history"], content["n_step"], content["epoch"] + 1

    def save(self, path: str, epoch: int) -> None:
        """Write the loop state after ``epoch`` (rank 0 writes), atomically: a file beside ``path``, then a rename.

        The state holds the run's fingerprint and a digest of everything in it
        (:func:`~falcon_sc.core.checkpoints.read_checkpoint` checks both).
        An interrupted save leaves the previous checkpoint as it was and no temporary file.
        """
        state: dict[str, Any] = {
            "model": self.network.state_dict(),
            "optimizer": self.opt.state_dict(),
            "plan": self.plan.state_dict(),
            "scheduler": self.sched.state_dict(),
            "rng": self.rng.bit_generator.state,
            "history": self.history,
            "n_step": self.n_step,
            "epoch": epoch,
            "fingerprint": self.fingerprint,
        }
        state["digest"] = state_digest(state)
        partial = Path(path).with_name(f".{Path(path).name}.partial")
        try:
            self.fabric.save(partial, state)
            if self.rank == 0:
                os.replace(partial, path)
        finally:
            if self.rank == 0 and partial.exists():
                partial.unlink()

    def run(self) -> None:
        """The remaining epochs, with a progress bar on rank 0."""
        cfg = self.cfg
        show = cfg.show_progress and self.rank == 0
        bar = tqdm(
            total=self.total,
            initial=self.n_step,
            desc=cfg.desc,
            disable=not show,
            leave=False,
            delay=cfg.progress_delay,
        )
        for epoch in range(self.first_epoch, cfg.n_epochs):
            if self.n_step >= self.total:
                break
            record = self.epoch(bar)
            record.update(epoch=epoch, lr=self.opt.param_groups[0]["lr"])
            record.update(self.plan.on_train_epoch_end(epoch))
            self.history.append(record)
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.3f}", refresh=False)  # keeps the delay
            if cfg.checkpoint_path is not None:
                self.save(cfg.checkpoint_path, epoch)
        bar.close()

    def epoch(self, bar: tqdm) -> dict[str, Any]:
        """One pass over this rank's share of a fresh random order; the mean of each loss term."""
        self.network.train()
        sums: dict[str, float] = {}
        seen = 0
        perm = self.rng.permutation(self.features.n_obs)[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        for start in range(0, self.per_rank, self.batch_size):
            if self.n_step >= self.total:
                break
            idx = perm[start : start + self.batch_size]
            self.n_step += 1
            terms = self.plan.training_step(idx, self.features.rows(idx), self.n_step)
            if not torch.isfinite(terms["loss"]).item():
                raise TrainingDiverged(f"loss {float(terms['loss'].detach())} at step {self.n_step}")
            self.opt.zero_grad(set_to_none=True)
            self.fabric.backward(terms["loss"])
            self.opt.step()
            self.plan.on_train_batch_end(self.n_step)
            for key, val in terms.items():
                sums[key] = sums.get(key, 0.0) + float(val.detach()) * len(idx)
            seen += len(idx)
            bar.update(1)
        self.sched.step()
        return {k: v / max(seen, 1) for k, v in sums.items()}


@torch.no_grad()
def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], features: Features, batch_size: int = 4096) -> np.ndarray:
    """``fn`` applied to all rows of ``features``, ``batch_size`` at a time, as one numpy array."""
    return torch.cat([fn(xb).cpu() for _, xb in features.in_order(batch_size)]).numpy()


@torch.no_grad()
def predict(
    model: nn.Module, X: Any, device: torch.device | str, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and penultimate embedding (``model.embed``) for every row of ``X``."""
    model.eval()
    embed, head = model.embed, model.get_submodule("head")
    if not callable(embed):
        raise TypeError(f"{type(model).__name__}.embed must be a method (inputs -> penultimate embedding).")
    feats = X if isinstance(X, Features) else Features(X, device)
    emb = map_rows(embed, feats, batch_size)
    probs = torch.softmax(head(torch.as_tensor(emb, device=feats.device)), dim=1).cpu().numpy()
    return probs, emb


class CrossEntropyPlan(TrainingPlan):
    """Cross-entropy on integer ``labels``, with class weights ``frequency ** -balance`` and an optional ``view``.

    The plan of :func:`fit_cross_entropy` (see there).
    """

    def __init__(
        self,
        labels: np.ndarray,
        device: torch.device,
        *,
        balance: float = 0.0,
        view: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        labels = np.asarray(labels)
        self.target = torch.as_tensor(labels, dtype=torch.long, device=device)
        self.weight: torch.Tensor | None = None
        if balance > 0:
            freq = np.bincount(labels, minlength=int(labels.max()) + 1).astype(np.float64)
            w = np.where(freq > 0, np.maximum(freq, 1.0) ** -balance, 0.0)
            self.weight = torch.as_tensor(w / (w * freq).sum() * freq.sum(), dtype=torch.float32, device=device)
        self.view = view

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Cross-entropy of the (viewed) minibatch against its labels."""
        yb = self.target[torch.as_tensor(idx, device=self.target.device)]
        x = self.view(x) if self.view is not None else x
        return {"loss": nn.functional.cross_entropy(self.network(x).float(), yb, weight=self.weight)}


def fit_cross_entropy(
    model: nn.Module,
    features: Features,
    labels: np.ndarray,
    cfg: LoopConfig,
    rng: np.random.Generator,
    *,
    balance: float = 0.0,
    fabric: Fabric | None = None,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[dict[str, Any]]:
    """Fit ``model`` to integer ``labels`` with cross-entropy (warm starts, the supervised reference).

    ``balance`` weights each class by ``frequency ** -balance`` (0: plain cross-entropy, 1: every class counts as
    much as any other), so that a rare class is learned as well as a frequent one. ``view`` (e.g. a random image
    crop) is applied to every minibatch.
    """
    plan = CrossEntropyPlan(labels, features.device, balance=balance, view=view)
    return train_minibatches(model, features, plan, cfg, rng, fabric=fabric)
