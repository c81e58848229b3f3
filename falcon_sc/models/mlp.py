"""Multi-layer perceptron for expression (or embedding) input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLPClassifier(nn.Module):
    """``in -> hidden... -> n_classes`` with ReLU; ``embed`` returns the penultimate layer.

    Parameters
    ----------
    n_input
        Number of input features.
    n_classes
        Number of output logits (fine classes).
    hidden
        Widths of the hidden layers (reference single-cell: four layers of 64).
    """

    def __init__(self, n_input: int, n_classes: int, hidden: Sequence[int] = (64, 64, 64, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_input
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer representation."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fine-class logits."""
        return self.head(self.body(x))
