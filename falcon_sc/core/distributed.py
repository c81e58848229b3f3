"""Several processes (distributed data parallel) through Lightning Fabric: launch and the FALCON worker."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .trainer import FalconConfig, FalconResult, train_falcon

if TYPE_CHECKING:
    from lightning_fabric import Fabric


def spawn(fn: Callable[..., Any], n_processes: int, *args: Any, accelerator: str = "cpu", **kwargs: Any) -> Any:
    """Run ``fn(fabric, *args, **kwargs)`` in ``n_processes`` DDP processes and return rank 0's result.

    Lightning's ``ddp_spawn`` strategy: gloo on CPU, NCCL on CUDA (one GPU per process). ``fn`` must be importable
    (a module-level function). Under ``torchrun`` use :func:`falcon_sc.core.training.make_fabric` with
    ``strategy="ddp"`` instead (the processes already exist).
    """
    from lightning_fabric import Fabric

    if n_processes < 1:
        raise ValueError(f"n_processes={n_processes} must be at least 1.")
    fabric = Fabric(accelerator=accelerator, devices=n_processes, strategy="ddp_spawn")
    return fabric.launch(fn, *args, **kwargs)


def falcon_worker(
    fabric: Fabric,
    out_path: str,
    model: nn.Module,
    X: Any,
    coarse: np.ndarray,
    neighbors: np.ndarray,
    n_coarse: int | list[int],
    cfg: FalconConfig,
    **kwargs: Any,
) -> None:
    """One rank of a distributed :func:`~falcon_sc.core.trainer.train_falcon` run (see :func:`train_falcon_ddp`).

    Rank 0 writes the result to ``out_path`` (tensors and plain values, read back with ``weights_only=True``):
    results sent through the launcher's queue either block its pipe (pickled arrays) or vanish with the worker
    (shared-memory tensors).
    """
    result = train_falcon(model, X, coarse, neighbors, n_coarse, cfg, fabric=fabric, **kwargs)
    agree = ranks_agree(fabric, result)
    if fabric.global_rank == 0:
        torch.save(_payload(result, agree), out_path)
    fabric.barrier()
    # close the process group here: gloo threads left running at interpreter exit could abort a rank
    # ("terminate called without an active exception", about 1 run in 10 before)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def ranks_agree(fabric: Fabric, result: FalconResult) -> bool:
    """Whether every rank holds the same relations at the end and had the same children after every epoch."""
    children = np.array([r["children"] for r in result.history], dtype=np.float32)
    parts = [torch.as_tensor(r, dtype=torch.float32).ravel() for r in result.relations]
    mine = torch.cat([*parts, torch.as_tensor(children).ravel()]).to(fabric.device)
    every = fabric.all_gather(mine)
    if not isinstance(every, torch.Tensor):
        raise TypeError(f"all_gather of a tensor gave {type(every).__name__}")
    return bool((every == every[0]).all())


def _payload(result: FalconResult, ranks_agree: bool) -> dict[str, Any]:
    """What rank 0 writes: the result's arrays as tensors, the teacher's weights and plain values."""
    return {
        "probs": _tensor(result.probs),
        "embedding": _tensor(result.embedding),
        "relation": _tensor(result.relation),
        "relations": [_tensor(r) for r in result.relations],
        "warm_probs": None if result.warm_probs is None else _tensor(result.warm_probs),
        "warm_state": result.warm_state,
        "teacher": None if result.model is None else {k: v.cpu() for k, v in result.model.state_dict().items()},
        "history": result.history,
        "ranks_agree": ranks_agree,
    }


@dataclass
class DistributedResult(FalconResult):
    """A :class:`~falcon_sc.core.trainer.FalconResult` of several processes.

    ``ranks_agree``: whether every rank held the same relations at the end and the same children counts after every
    epoch.
    """

    ranks_agree: bool = False


def train_falcon_ddp(
    n_processes: int, model: nn.Module, *args: Any, accelerator: str = "cpu", **kwargs: Any
) -> DistributedResult:
    """:func:`~falcon_sc.core.trainer.train_falcon` in ``n_processes`` DDP processes; rank 0's result.

    Each rank trains on its share of every epoch's minibatches (its own neighbour draws), the relation cost is summed
    over the ranks' teacher predictions, rank 0 solves it and broadcasts ``M``. Returns a :class:`DistributedResult`
    (a :class:`~falcon_sc.core.trainer.FalconResult` with one relation per coarse scheme and ``ranks_agree``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "result.pt")
        spawn(falcon_worker, n_processes, path, model, *args, accelerator=accelerator, **kwargs)
        out = torch.load(path, map_location="cpu", weights_only=True)
    teacher = copy.deepcopy(model).cpu()
    if out["teacher"] is not None:
        teacher.load_state_dict(out["teacher"])
    return DistributedResult(
        probs=out["probs"].numpy(),
        embedding=out["embedding"].numpy(),
        relation=out["relation"].numpy(),
        relations=[r.numpy() for r in out["relations"]],
        history=out["history"],
        model=teacher.eval(),
        warm_probs=None if out["warm_probs"] is None else out["warm_probs"].numpy(),
        warm_state=out["warm_state"],
        ranks_agree=out["ranks_agree"],
    )
