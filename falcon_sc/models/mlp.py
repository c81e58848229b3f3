"""Multi-layer perceptron for expression (or embedding) input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp_body(n_input: int, hidden: Sequence[int]) -> nn.Sequential:
    """``Linear -> ReLU`` blocks of widths ``hidden``; output width ``hidden[-1]`` (``n_input`` when empty)."""
    layers: list[nn.Module] = []
    width = n_input
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers)


def projection_head(n_input: int, n_output: int) -> nn.Sequential:
    """SimCLR-v2 projection head ``Linear -> BatchNorm -> ReLU -> Linear`` (hidden width ``n_input``).

    The batch normalisation spreads the outputs of a freshly initialised network, which would otherwise map all
    inputs to nearly one direction where momentum contrast (gradient through the query only) cannot start.
    """
    return nn.Sequential(nn.Linear(n_input, n_input), nn.BatchNorm1d(n_input), nn.ReLU(), nn.Linear(n_input, n_output))


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

    Examples
    --------
    >>> import torch
    >>> from falcon_sc.models import MLPClassifier
    >>> net = MLPClassifier(50, n_classes=10)
    >>> net(torch.zeros(3, 50)).shape, net.embed(torch.zeros(3, 50)).shape
    (torch.Size([3, 10]), torch.Size([3, 64]))
    """

    def __init__(self, n_input: int, n_classes: int, hidden: Sequence[int] = (64, 64, 64, 64)) -> None:
        super().__init__()
        self.n_input = n_input
        self.body = mlp_body(n_input, hidden)
        self.head = nn.Linear(hidden[-1] if len(hidden) else n_input, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer representation."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fine-class logits."""
        return self.head(self.body(x))
