"""Exponential-moving-average teacher."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMATeacher:
    """Teacher whose weights track an exponential moving average of a student's.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` at update ``n`` so early teachers follow the student.

    Parameters
    ----------
    student
        The network being trained.
    decay
        Final decay (reference: 0.99).
    """

    def __init__(self, student: nn.Module, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay={decay} must be in [0, 1).")
        self.decay = decay
        self.model = copy.deepcopy(student).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.n_updates = 0

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Move the teacher one step towards ``student``."""
        d = min(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))
        for t, s in zip(self.model.parameters(), student.parameters(), strict=True):
            t.mul_(d).add_(s.detach(), alpha=1.0 - d)
        for buf, src in zip(self.model.buffers(), student.buffers(), strict=True):
            buf.copy_(src)
        self.n_updates += 1
