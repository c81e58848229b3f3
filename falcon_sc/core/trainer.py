"""The FALCON training loop: alternate network updates (M fixed) and re-inference of the relation M."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy import sparse
from torch import nn
from tqdm.auto import tqdm

from . import losses
from .ema import EMATeacher
from .relation import random_relation, solve_relation


@dataclass
class FalconConfig:
    """Hyperparameters of FALCON training (see ``docs/method.md`` for where each default comes from)."""

    n_epochs: int | None = None
    min_steps: int = 300
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
    show_progress: bool = True

    def to_dict(self) -> dict:
        """Plain-dict copy (for ``uns``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass
class FalconResult:
    """What training returns: teacher predictions, relation and history."""

    probs: np.ndarray
    embedding: np.ndarray
    relation: np.ndarray
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None


def _to_tensor(X, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    rows = X[idx]
    if isinstance(X, torch.Tensor):
        return rows
    if sparse.issparse(rows):
        rows = rows.toarray()
    return torch.as_tensor(np.asarray(rows, dtype=np.float32), device=device)


def _features_on_device(X, device: torch.device):
    """Dense inputs go to the device once; sparse inputs stay sparse and are densified per minibatch."""
    if sparse.issparse(X):
        return sparse.csr_matrix(X, dtype=np.float32)
    return torch.as_tensor(np.asarray(X, dtype=np.float32), device=device)


@torch.no_grad()
def predict(model: nn.Module, X, device: torch.device, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and penultimate embedding of ``model`` for every row of ``X``."""
    model.eval()
    X = _features_on_device(X, device)
    probs, embs = [], []
    for start in range(0, X.shape[0], batch_size):
        xb = _to_tensor(X, np.arange(start, min(start + batch_size, X.shape[0])), device)
        h = model.embed(xb)
        probs.append(torch.softmax(model.head(h), dim=1).cpu())
        embs.append(h.cpu())
    return torch.cat(probs).numpy(), torch.cat(embs).numpy()


def _fit_initial(
    model: nn.Module, X, labels: np.ndarray, cfg: FalconConfig, rng: np.random.Generator, device: torch.device
) -> None:
    """Fit ``model`` to initial fine labels with plain cross-entropy (Adam, ``cfg.init_steps`` minibatches)."""
    target = torch.as_tensor(labels, dtype=torch.long, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch_size = min(cfg.batch_size, X.shape[0])
    model.train()
    for _ in range(cfg.init_steps):
        idx = rng.choice(X.shape[0], size=batch_size, replace=False)
        loss = torch.nn.functional.cross_entropy(model(_to_tensor(X, idx, device)), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _n_epochs(cfg: FalconConfig, n: int, batch_size: int) -> int:
    if cfg.n_epochs is not None:
        return cfg.n_epochs
    steps = math.ceil(n / batch_size)
    return int(min(cfg.max_epochs, max(10, math.ceil(cfg.min_steps / steps))))


def train_falcon(
    model: nn.Module,
    X,
    coarse: np.ndarray,
    neighbors: np.ndarray,
    n_coarse: int,
    cfg: FalconConfig,
    *,
    relation: np.ndarray | None = None,
    target_counts: np.ndarray | None = None,
    init_labels: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> FalconResult:
    """Train ``model`` with FALCON and return teacher predictions.

    Parameters
    ----------
    model
        Network with ``embed(x)`` and ``head``; its output width is the number of fine classes ``K_F``.
    X
        Samples x features (dense array/tensor or CSR; CSR is densified one minibatch at a time).
    coarse
        Coarse class index per sample, in ``0..n_coarse-1``.
    neighbors
        Samples x k indices of neighbours inside the same coarse class.
    n_coarse
        Number of coarse classes ``K_C``.
    cfg
        Hyperparameters.
    relation
        Initial ``K_F x K_C`` relation; default a solve on a random cost. Kept fixed when
        ``cfg.learn_relation`` is False.
    target_counts
        Expected children per coarse class used by the balance term (default ``K_F / K_C`` each).
    init_labels
        Optional fine label per sample (consistent with ``relation``); the network is first fitted to them for
        ``cfg.init_steps`` steps of cross-entropy, and the teacher starts from that network.
    device
        Torch device.
    seed
        Seed for initialisation, minibatches and neighbour sampling.

    Returns
    -------
    :class:`FalconResult`.
    """
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n = X.shape[0]
    n_fine = model.head.out_features
    model = model.to(device)
    Xd = _features_on_device(X, device)
    if init_labels is not None:
        _fit_initial(model, Xd, init_labels, cfg, rng, device)
    teacher = EMATeacher(model, cfg.ema_decay)
    y = torch.as_tensor(coarse, dtype=torch.long, device=device)
    nbrs = torch.as_tensor(neighbors, dtype=torch.long, device=device)
    if relation is None:
        relation = random_relation(n_fine, n_coarse, rng)
    M = torch.as_tensor(np.asarray(relation), dtype=torch.float32, device=device)
    batch_size = min(cfg.batch_size, n)
    n_epochs = _n_epochs(cfg, n, batch_size)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = n_epochs * steps_per_epoch
    soft_steps = max(1, int(cfg.soft_fraction * total_steps))
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    milestones = [int(f * n_epochs) for f in cfg.lr_milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=cfg.lr_gamma)
    k_sample = min(cfg.n_sampled_neighbors, neighbors.shape[1])
    history: list[dict] = []
    step = 0
    recent_p: list[torch.Tensor] = []
    recent_y: list[torch.Tensor] = []
    bar = tqdm(total=total_steps, desc="falcon", disable=not cfg.show_progress, leave=False)
    for epoch in range(n_epochs):
        model.train()
        sums = {"loss": 0.0, "coarse": 0.0, "neighbour": 0.0, "confident": 0.0, "regulariser": 0.0}
        epoch_pred = torch.zeros(n_fine, device=device)
        solver_seconds, relation_changes, n_solves = 0.0, 0, 0
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb = _to_tensor(Xd, idx, device)
            yb = y[idx]
            cols = torch.as_tensor(rng.integers(0, neighbors.shape[1], size=(len(idx), k_sample)), device=device)
            nb_idx = nbrs[torch.as_tensor(idx, device=device)].gather(1, cols).reshape(-1)
            with torch.no_grad():
                t_logits = teacher.model(xb)
                t_nb = torch.softmax(teacher.model(_to_tensor(Xd, nb_idx.cpu().numpy(), device)), dim=1)
                t_nb = t_nb.reshape(len(idx), k_sample, n_fine)
            logits = model(xb)
            probs = torch.softmax(logits, dim=1)
            mask = losses.children_mask(M, yb)
            tau = 0.5 * (1.0 + math.cos(math.pi * min(step / soft_steps, 1.0)))
            l_coarse = losses.coarse_nll(logits, mask)
            l_nn = losses.neighbour_consistency(probs, t_nb)
            l_conf = losses.soft_cross_entropy(logits, losses.confident_targets(t_logits, mask, cfg.temperature, tau))
            l_reg = probs.new_zeros(())
            if cfg.regulariser in ("global", "both"):
                l_reg = l_reg + losses.marginal_entropy_gap(probs)
            if cfg.regulariser in ("within", "both"):
                l_reg = l_reg + losses.within_coarse_entropy_gap(probs, mask, yb, M)
            loss = cfg.lambda_coarse * l_coarse + cfg.lambda_fine * (l_conf + l_nn) + cfg.lambda_reg * l_reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            teacher.update(model)
            step += 1
            bar.update(1)
            t_probs = torch.softmax(t_logits, dim=1)
            epoch_pred += torch.bincount(t_probs.argmax(dim=1), minlength=n_fine)
            for key, val in zip(sums, (loss, l_coarse, l_nn, l_conf, l_reg), strict=True):
                sums[key] += float(val.detach()) * len(idx)
            if cfg.learn_relation:
                recent_p.append(t_probs)
                recent_y.append(yb)
                if step % cfg.relation_every == 0:
                    P = torch.cat(recent_p)
                    Y = torch.nn.functional.one_hot(torch.cat(recent_y), n_coarse).float()
                    cost = (P.T @ Y / P.shape[0]).double().cpu().numpy()
                    balance = cfg.lambda_relation if step <= soft_steps else 0.0
                    t0 = time.perf_counter()
                    new = solve_relation(cost, balance=balance, target_counts=target_counts)
                    solver_seconds += time.perf_counter() - t0
                    n_solves += 1
                    new_t = torch.as_tensor(new, dtype=torch.float32, device=device)
                    relation_changes += int((new_t.argmax(1) != M.argmax(1)).sum())
                    M = new_t
                    recent_p, recent_y = [], []
        sched.step()
        used = int((epoch_pred > 0).sum())
        record = {k: v / n for k, v in sums.items()}
        record.update(
            epoch=epoch,
            lr=opt.param_groups[0]["lr"],
            fine_in_use=used,
            largest_fine_share=float(epoch_pred.max() / n),
            relation_changes=relation_changes,
            relation_solves=n_solves,
            solver_seconds=solver_seconds,
            children=M.sum(0).cpu().numpy().astype(int).tolist(),
        )
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", used=used)
    bar.close()
    probs, emb = predict(teacher.model, X, device)
    return FalconResult(
        probs=probs, embedding=emb, relation=M.cpu().numpy().astype(np.int8), history=history, model=teacher.model
    )
