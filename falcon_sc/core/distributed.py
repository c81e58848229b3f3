"""Several processes (distributed data parallel) through Lightning Fabric: launch and the FALCON worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


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


def falcon_worker(fabric, out_path: str, model: torch.nn.Module, X, coarse, neighbors, n_coarse, cfg, **kwargs):
    """One rank of a distributed :func:`~falcon_sc.core.trainer.train_falcon` run (see :func:`train_falcon_ddp`).

    Rank 0 writes the result to ``out_path`` (tensors and plain values, read back with ``weights_only=True``):
    results sent through the launcher's queue either block its pipe (pickled arrays) or vanish with the worker
    (shared-memory tensors).
    """
    from .trainer import train_falcon

    result = train_falcon(model, X, coarse, neighbors, n_coarse, cfg, fabric=fabric, **kwargs)
    children = np.array([r["children"] for r in result.history], dtype=np.float32)
    mine = torch.cat([torch.as_tensor(result.relation, dtype=torch.float32).ravel(), torch.as_tensor(children).ravel()])
    every = fabric.all_gather(mine.to(fabric.device)).cpu()
    if fabric.global_rank == 0:
        arrays = {k: torch.from_numpy(np.ascontiguousarray(getattr(result, k))) for k in _ARRAYS}
        warm = getattr(result, "warm_probs", None)
        torch.save(
            {
                **arrays,
                "warm_probs": None if warm is None else torch.from_numpy(np.ascontiguousarray(warm)),
                "warm_state": result.warm_state,
                "teacher": {k: v.cpu() for k, v in result.model.state_dict().items()},
                "history": result.history,
                "ranks_agree": bool((every == every[0]).all()),
            },
            out_path,
        )
    fabric.barrier()
    # close the process group here: gloo threads left running at interpreter exit could abort a rank
    # ("terminate called without an active exception", about 1 run in 10 before)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


_ARRAYS = ("probs", "embedding", "relation")


def train_falcon_ddp(n_processes: int, model: torch.nn.Module, *args: Any, accelerator: str = "cpu", **kwargs: Any):
    """:func:`~falcon_sc.core.trainer.train_falcon` in ``n_processes`` DDP processes; rank 0's result.

    Each rank trains on its share of every epoch's minibatches (its own neighbour draws), the relation cost is summed
    over the ranks' teacher predictions, rank 0 solves it and broadcasts ``M``. Returns a
    :class:`~falcon_sc.core.trainer.FalconResult` with an extra attribute ``ranks_agree``: whether every rank held
    the same relation at the end and the same children counts after every epoch.
    """
    import copy
    import tempfile
    from pathlib import Path

    from .trainer import FalconResult

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "result.pt")
        spawn(falcon_worker, n_processes, path, model, *args, accelerator=accelerator, **kwargs)
        out = torch.load(path, map_location="cpu", weights_only=True)
    teacher = copy.deepcopy(model).cpu()
    teacher.load_state_dict(out["teacher"])
    result = FalconResult(
        probs=out["probs"].numpy(),
        embedding=out["embedding"].numpy(),
        relation=out["relation"].numpy(),
        history=out["history"],
        model=teacher.eval(),
        warm_probs=None if out["warm_probs"] is None else out["warm_probs"].numpy(),
        warm_state=out["warm_state"],
    )
    result.ranks_agree = out["ranks_agree"]  # type: ignore[attr-defined]
    return result
