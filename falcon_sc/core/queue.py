"""MoCo-style first-in first-out store of embeddings (keys) with an integer label each."""

from __future__ import annotations

import torch


class KeyQueue:
    """The latest ``size`` keys pushed, oldest overwritten first.

    Parameters
    ----------
    size
        Capacity (at least 1).
    dim
        Key dimension.
    device
        Torch device.
    """

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        size = max(int(size), 1)
        self.keys = torch.zeros(size, dim, device=device)
        self.labels = torch.full((size,), -1, dtype=torch.long, device=device)
        self.ptr = 0
        self.filled = 0

    def push(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Enqueue ``keys`` (detached) with their ``labels`` (default ``-1``); beyond capacity the last ones win."""
        size = self.keys.shape[0]
        keys = keys.detach()[-size:]
        n = keys.shape[0]
        pos = (self.ptr + torch.arange(n, device=self.keys.device)) % size
        self.keys[pos] = keys
        self.labels[pos] = -1 if labels is None else labels[-size:]
        self.ptr = int((self.ptr + n) % size)
        self.filled = min(size, self.filled + n)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the stored keys and labels (safe to use in a graph while the queue keeps changing)."""
        return self.keys[: self.filled].clone(), self.labels[: self.filled].clone()
