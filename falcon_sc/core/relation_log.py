"""A record of every relation solve, per rank, when the environment asks for one (checking distributed runs).

With :data:`RELATION_LOG_ENV` set to a folder, every rank of a FALCON run appends one JSON line per relation solve
to ``relations-rank{RANK}.jsonl`` in it: the step, the scheme, the children per coarse class and a digest of the
relation the rank holds after the broadcast. Comparing the files of the ranks shows whether they held the same
relation after every solve (``python -m falcon_sc.train --relation-log DIR`` sets the variable). Unset: nothing is
written and nothing is hashed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .checkpoints import array_digest

RELATION_LOG_ENV = "FALCON_SC_RELATION_LOG"
"""Environment variable naming the folder the per-rank solve records are written to."""


def log_file(folder: str | os.PathLike[str], rank: int) -> Path:
    """The record file of ``rank`` in ``folder``."""
    return Path(folder) / f"relations-rank{rank}.jsonl"


def record_solve(rank: int, step: int, scheme: int, relation: torch.Tensor) -> None:
    """Append the solve at ``step`` of ``scheme`` (the relation ``rank`` holds now) to its file, when asked."""
    folder = os.environ.get(RELATION_LOG_ENV)
    if not folder:
        return
    held = relation.detach().cpu()
    record = {
        "step": int(step),
        "scheme": int(scheme),
        "children": held.sum(0).to(torch.int64).tolist(),
        "digest": array_digest(held),
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    with log_file(folder, rank).open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def read_log(folder: str | os.PathLike[str], rank: int) -> list[dict]:
    """The records ``rank`` wrote in ``folder``, in order."""
    lines = log_file(folder, rank).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
