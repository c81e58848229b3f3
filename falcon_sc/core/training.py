"""The one minibatch training loop every network in falcon_sc is trained with (FALCON and the neural baselines).

A method supplies a ``step`` function that turns a minibatch into losses; the loop owns the epochs, minibatch
order, densifying sparse rows, the optimiser and learning-rate schedule, the device, the progress bar and the
per-epoch history.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import sparse
from torch import nn
from tqdm import tqdm  # the text bar honours `delay` everywhere (the notebook widget fallback does not)

StepFn = Callable[[np.ndarray, torch.Tensor, int], dict[str, torch.Tensor]]
"""``step(idx, x, step_number) -> {"loss": tensor, other logged terms...}``."""


class Features:
    """Rows of a samples x features matrix, served as float32 tensors on ``device``.

    Dense input is moved to the device once; CSR input stays on the host and is densified one request at a time. A
    *sample source* (any object with ``shape`` and ``load(idx) -> np.ndarray``, e.g.
    :class:`falcon_sc.data.ImageFiles`) stays where it is and is read one request at a time; its arrays are copied
    to the device from pinned memory when the device is CUDA. Rows keep the input's shape beyond the first axis
    (images stored as ``N x C x H x W`` give ``C x H x W`` rows).
    """

    def __init__(self, X, device: torch.device | str = "cpu") -> None:
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
    def is_source(X) -> bool:
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
        if sparse.issparse(self.data):
            return torch.as_tensor(self.data[idx].toarray(), device=self.device)
        batch = torch.from_numpy(np.ascontiguousarray(self.data.load(idx), dtype=np.float32))
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def subset(self, idx: np.ndarray) -> Features:
        """The rows ``idx`` as a new :class:`Features` on the same device."""
        if isinstance(self.data, torch.Tensor):
            return Features(self.data[torch.as_tensor(idx, device=self.device)], self.device)
        if sparse.issparse(self.data):
            return Features(self.data[np.asarray(idx)], self.device)
        return Features(self.data.subset(np.asarray(idx)), self.device)

    def in_order(self, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """``(idx, rows)`` over all samples in order, ``batch_size`` at a time."""
        for start in range(0, self.n_obs, batch_size):
            idx = np.arange(start, min(start + batch_size, self.n_obs))
            yield idx, self.rows(idx)


@dataclass
class LoopConfig:
    """Optimisation settings of :func:`train_minibatches`.

    Attributes
    ----------
    n_epochs
        Passes over the data (each a fresh random order).
    batch_size
        Minibatch size (capped at the number of samples).
    optimizer
        ``"adam"`` or ``"sgd"`` (momentum ``momentum``).
    lr, momentum, weight_decay
        Optimiser settings.
    lr_milestones
        Fractions of ``n_epochs`` after which the learning rate is multiplied by ``lr_gamma``.
    lr_gamma
        Learning-rate decay factor at each milestone.
    max_steps
        Stop after this many minibatches (``None``: run all epochs).
    show_progress
        tqdm bar over minibatches.
    desc
        Label of the bar.
    n_threads
        CPU threads torch may use while training (``None``: :func:`cpu_threads` decides from the model size).
    precision
        Lightning precision, ``"32-true"`` or ``"bf16-mixed"`` (CUDA; ``"16-mixed"`` also works there).
    checkpoint_path
        File the loop state (network, optimiser, schedule, epoch, history, random state and the method's own
        state) is written to after every epoch, by rank 0; ``None``: no checkpoints.
    resume
        Continue from ``checkpoint_path`` when it exists (its epochs are not run again).
    progress_delay
        Seconds before the progress bar appears (short runs stay silent).
    """

    n_epochs: int
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = ()
    lr_gamma: float = 0.1
    max_steps: int | None = None
    show_progress: bool = False
    desc: str = "train"
    n_threads: int | None = None
    precision: str = "32-true"
    checkpoint_path: str | None = None
    resume: bool = False
    progress_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer={self.optimizer!r}: use 'adam' or 'sgd'")
        if self.n_epochs < 1 or self.batch_size < 1:
            raise ValueError(f"n_epochs={self.n_epochs} and batch_size={self.batch_size} must be at least 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}: use one of {', '.join(map(repr, PRECISIONS))}")
        if self.resume and self.checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path (the file to resume from).")


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite (the learning rate is usually too large)."""


def make_fabric(
    device: torch.device | str = "cpu", *, devices: int = 1, strategy: str = "auto", precision: str = "32-true"
):
    """A launched Lightning :class:`~lightning_fabric.Fabric` on ``device``'s accelerator.

    The training engine: device placement, precision, distributed strategies and checkpoint files are Lightning's;
    falcon_sc keeps only the method's steps. ``devices > 1`` with ``strategy="ddp"`` expects the processes to be
    started by ``torchrun`` (or :func:`falcon_sc.core.distributed.spawn`).
    """
    import logging

    from lightning_fabric import Fabric

    for name in ("lightning_fabric", "lightning.fabric"):  # "Seed set to ..." / GPU availability chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    device = torch.device(device)
    fabric = Fabric(accelerator=device.type, devices=devices, strategy=strategy, precision=precision)
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


def make_optimizer(params, cfg: LoopConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg`` names, over ``params``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_minibatches(
    model: nn.Module,
    features: Features,
    step: StepFn,
    cfg: LoopConfig,
    rng: np.random.Generator,
    *,
    after_step: Callable[[int], None] | None = None,
    end_epoch: Callable[[int], dict] | None = None,
    fabric=None,
    on_setup: Callable[[nn.Module], None] | None = None,
    extra_state: Callable[[], dict] | None = None,
    load_extra_state: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Minimise the losses ``step`` returns over random minibatches of ``features``, on Lightning Fabric.

    Parameters
    ----------
    model
        The network; all its parameters are optimised (it is put in train mode).
    features
        Input rows.
    step
        ``step(idx, x, n)``: losses of the minibatch ``idx`` (rows ``x``) at optimisation step ``n`` (from 1); the
        entry ``"loss"`` is minimised, every entry is averaged per epoch into the history.
    cfg
        Optimisation settings.
    rng
        Source of the minibatch order (methods draw their own randomness from the same generator). In a
        distributed run every rank must seed it alike: each takes its own share of the same order.
    after_step
        Called with the step number after each optimiser step (EMA updates, relation solves...).
    end_epoch
        Called with the epoch index after each epoch; its dict is merged into that epoch's history record.
    fabric
        A launched Fabric (default: one device, ``features``' device, ``cfg.precision``).
    on_setup
        Called with the Fabric-wrapped network: ``step`` must run the forward pass through it (distributed
        gradient synchronisation and mixed precision live in the wrapper).
    extra_state, load_extra_state
        The method's own state to checkpoint (modules, tensors, plain values) and how to restore it on resume.

    Returns
    -------
    One record per epoch: the mean of each loss term, ``epoch`` and ``lr``.
    """
    fabric = make_fabric(features.device, precision=cfg.precision) if fabric is None else fabric
    rank, world = fabric.global_rank, fabric.world_size
    n = features.n_obs
    batch_size = min(cfg.batch_size, n)
    per_rank = n // world  # equal shares: every rank takes the same number of steps
    opt = make_optimizer(model.parameters(), cfg)
    wrapped, opt = fabric.setup(model, opt)
    if on_setup is not None:
        on_setup(wrapped)
    milestones = sorted({int(f * cfg.n_epochs) for f in cfg.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.lr_gamma)
    steps_per_epoch = math.ceil(per_rank / batch_size)
    total = cfg.n_epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    history: list[dict] = []
    n_step, first_epoch = 0, 0
    checkpoint = {"model": wrapped, "optimizer": opt}
    if cfg.resume and cfg.checkpoint_path is not None and Path(cfg.checkpoint_path).is_file():
        state = {**checkpoint, **(extra_state() if extra_state is not None else {})}
        rest = fabric.load(cfg.checkpoint_path, state)
        sched.load_state_dict(rest.pop("scheduler"))
        rng.bit_generator.state = rest.pop("rng")
        history, n_step, first_epoch = rest.pop("history"), rest.pop("n_step"), rest.pop("epoch") + 1
        if load_extra_state is not None:
            load_extra_state({**state, **rest})
    with torch_threads(cpu_threads(model, cfg.n_threads)):
        bar = tqdm(
            total=total,
            initial=n_step,
            desc=cfg.desc,
            disable=not (cfg.show_progress and rank == 0),
            leave=False,
            delay=cfg.progress_delay,
        )
        for epoch in range(first_epoch, cfg.n_epochs):
            if n_step >= total:
                break
            wrapped.train()
            sums: dict[str, float] = {}
            seen = 0
            perm = rng.permutation(n)[rank * per_rank : (rank + 1) * per_rank]
            for start in range(0, per_rank, batch_size):
                if n_step >= total:
                    break
                idx = perm[start : start + batch_size]
                n_step += 1
                terms = step(idx, features.rows(idx), n_step)
                if not torch.isfinite(terms["loss"]).item():
                    raise TrainingDiverged(f"loss {float(terms['loss'].detach())} at step {n_step}")
                opt.zero_grad(set_to_none=True)
                fabric.backward(terms["loss"])
                opt.step()
                if after_step is not None:
                    after_step(n_step)
                for key, val in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(val.detach()) * len(idx)
                seen += len(idx)
                bar.update(1)
            sched.step()
            record = {k: v / max(seen, 1) for k, v in sums.items()}
            record.update(epoch=epoch, lr=opt.param_groups[0]["lr"])
            if end_epoch is not None:
                record.update(end_epoch(epoch))
            history.append(record)
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.3f}", refresh=False)  # keeps the delay
            if cfg.checkpoint_path is not None:
                fabric.save(
                    cfg.checkpoint_path,
                    {
                        **checkpoint,
                        **(extra_state() if extra_state is not None else {}),
                        "scheduler": sched.state_dict(),
                        "rng": rng.bit_generator.state,
                        "history": history,
                        "n_step": n_step,
                        "epoch": epoch,
                    },
                )
        bar.close()
    return history


@torch.no_grad()
def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], features: Features, batch_size: int = 4096) -> np.ndarray:
    """``fn`` applied to all rows of ``features``, ``batch_size`` at a time, as one numpy array."""
    return torch.cat([fn(xb).cpu() for _, xb in features.in_order(batch_size)]).numpy()


@torch.no_grad()
def predict(model: nn.Module, X, device: torch.device | str, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and penultimate embedding (``model.embed``) for every row of ``X``."""
    model.eval()
    feats = X if isinstance(X, Features) else Features(X, device)
    emb = map_rows(model.embed, feats, batch_size)
    probs = torch.softmax(model.head(torch.as_tensor(emb, device=feats.device)), dim=1).cpu().numpy()
    return probs, emb


def fit_cross_entropy(
    model: nn.Module,
    features: Features,
    labels: np.ndarray,
    cfg: LoopConfig,
    rng: np.random.Generator,
    *,
    balance: float = 0.0,
    fabric=None,
    view: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[dict]:
    """Fit ``model`` to integer ``labels`` with cross-entropy (warm starts, the supervised reference).

    ``balance`` weights each class by ``frequency ** -balance`` (0: plain cross-entropy, 1: every class counts as
    much as any other), so that a rare class is learned as well as a frequent one. ``view`` (e.g. a random image
    crop) is applied to every minibatch.
    """
    labels = np.asarray(labels)
    target = torch.as_tensor(labels, dtype=torch.long, device=features.device)
    weight = None
    if balance > 0:
        freq = np.bincount(labels, minlength=int(labels.max()) + 1).astype(np.float64)
        w = np.where(freq > 0, np.maximum(freq, 1.0) ** -balance, 0.0)
        weight = torch.as_tensor(w / (w * freq).sum() * freq.sum(), dtype=torch.float32, device=features.device)

    net = {"model": model}

    def step(idx: np.ndarray, xb: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
        yb = target[torch.as_tensor(idx, device=target.device)]
        xb = view(xb) if view is not None else xb
        return {"loss": nn.functional.cross_entropy(net["model"](xb).float(), yb, weight=weight)}

    return train_minibatches(
        model, features, step, cfg, rng, fabric=fabric, on_setup=lambda wrapped: net.update(model=wrapped)
    )
