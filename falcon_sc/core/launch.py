"""FALCON training on processes started outside Python (``torchrun``, several machines): the launch and its ranks.

``torchrun`` starts every process and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``. Lightning Fabric's ``TorchElasticEnvironment`` reads them, and its ``"ddp"``
strategy (not ``"ddp_spawn"``: the processes exist already) joins the process group (gloo on CPU, NCCL on CUDA):
:meth:`TorchrunLaunch.from_environment` only tells Fabric how many devices per node and how many nodes.

Rank 0 runs the whole pipeline (reading, preprocessing, neighbours, warm start, labels, writing). Inside
``with launch:`` its training call (:func:`falcon_sc.models._pipeline.train`) goes to :meth:`TorchrunLaunch.lead`,
which broadcasts the call's inputs (network, network inputs, coarse labels, neighbours, settings) to the other ranks,
waiting in :meth:`TorchrunLaunch.follow`. Then every rank runs :func:`~falcon_sc.core.trainer.train_falcon` on the
launched Fabric, as :func:`~falcon_sc.core.distributed.train_falcon_ddp`'s workers do: each rank its share of every
epoch's minibatches, relation costs summed over the ranks, rank 0 solves and broadcasts ``M``.
"""

from __future__ import annotations

import os
from contextvars import ContextVar, Token
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .distributed import DistributedResult, ranks_agree
from .trainer import FalconConfig, train_falcon
from .training import make_fabric

if TYPE_CHECKING:
    from lightning_fabric import Fabric

_ACTIVE: ContextVar[TorchrunLaunch | None] = ContextVar("falcon_sc_torchrun_launch", default=None)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` sets in every process it starts (Fabric's ``TorchElasticEnvironment`` reads them)."""


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (``python -m torch.distributed.run``)."""
    return torch.distributed.is_available() and torch.distributed.is_torchelastic_launched()


def active_launch() -> TorchrunLaunch | None:
    """The launch of the enclosing ``with launch:`` block (``None`` outside one)."""
    return _ACTIVE.get()


@dataclass
class TorchrunLaunch:
    """A launched Fabric on the processes ``torchrun`` started, and the training call rank 0 hands the others.

    Attributes
    ----------
    fabric
        The launched Fabric (``"ddp"`` strategy, ``devices`` per node x ``num_nodes`` from torchrun's environment).
    sent
        Whether rank 0 has sent the training call (or told the other ranks that none comes).
    """

    fabric: Fabric
    sent: bool = False
    _tokens: list[Token] = field(default_factory=list, repr=False)

    @classmethod
    def from_environment(cls, device: torch.device | str = "cpu", *, precision: str = "32-true") -> TorchrunLaunch:
        """Join the process group torchrun set up the environment for, on ``device``'s accelerator.

        Raises
        ------
        RuntimeError
            This process was not started by ``torchrun``, or its nodes run different numbers of processes.
        """
        if not launched_by_torchrun():
            raise RuntimeError(
                "not started by torchrun (no TORCHELASTIC_RUN_ID / RANK in the environment); launch with "
                "`torchrun --nproc-per-node P ... -m falcon_sc.train ...`, or call falcon_sc.tl.refine / "
                "FalconModel.fit(devices=P) from Python instead."
            )
        world, per_node = int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_WORLD_SIZE"])
        if world % per_node:
            raise RuntimeError(
                f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={per_node}: every node must run the same "
                "number of processes (the same --nproc-per-node on every node)."
            )
        fabric = make_fabric(device, devices=per_node, num_nodes=world // per_node, strategy="ddp", precision=precision)
        return cls(fabric)

    @property
    def rank(self) -> int:
        """The global rank of this process."""
        return int(self.fabric.global_rank)

    @property
    def world_size(self) -> int:
        """Number of processes over all nodes."""
        return int(self.fabric.world_size)

    def __enter__(self) -> TorchrunLaunch:
        self._tokens.append(_ACTIVE.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.reset(self._tokens.pop())

    # ------------------------------------------------------------------ the training call
    def lead(
        self,
        model: nn.Module,
        X: Any,
        coarse: np.ndarray,
        neighbors: np.ndarray,
        n_coarse: int | list[int],
        cfg: FalconConfig,
        **kwargs: Any,
    ) -> DistributedResult:
        """Rank 0: send the training call to the other ranks, train with them, return rank 0's result.

        The arguments are :func:`~falcon_sc.core.trainer.train_falcon`'s (without ``fabric``); they are pickled to
        the other ranks (the views of images must be module-level functions).
        """
        if self.rank != 0:
            raise RuntimeError(f"lead() runs on rank 0; rank {self.rank} must call follow().")
        call = (model, X, coarse, neighbors, n_coarse, cfg, kwargs)
        self.fabric.broadcast(call, src=0)
        self.sent = True
        return self._train(*call)

    def follow(self) -> bool:
        """Ranks other than 0: wait for rank 0's training call and train; ``False`` when rank 0 sent none."""
        if self.rank == 0:
            raise RuntimeError("follow() runs on the ranks other than 0; rank 0 calls lead() (or cancel()).")
        call = self.fabric.broadcast(None, src=0)
        if call is None:
            return False
        self._train(*call)
        return True

    def cancel(self) -> None:
        """Rank 0, before :meth:`lead`: tell the waiting ranks that no training call comes (they leave cleanly)."""
        if self.rank == 0 and not self.sent:
            self.fabric.broadcast(None, src=0)
            self.sent = True

    def _train(
        self,
        model: nn.Module,
        X: Any,
        coarse: np.ndarray,
        neighbors: np.ndarray,
        n_coarse: int | list[int],
        cfg: FalconConfig,
        kwargs: dict[str, Any],
    ) -> DistributedResult:
        """Every rank: :func:`~falcon_sc.core.trainer.train_falcon` on the launched Fabric, then compare relations."""
        result = train_falcon(model, X, coarse, neighbors, n_coarse, cfg, fabric=self.fabric, **kwargs)
        agree = ranks_agree(self.fabric, result)
        self.fabric.barrier()
        return DistributedResult(**{f.name: getattr(result, f.name) for f in fields(result)}, ranks_agree=agree)

    def close(self) -> None:
        """Leave the process group (gloo threads left running at interpreter exit can abort a rank)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
