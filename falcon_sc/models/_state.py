"""What a fitted :class:`~falcon_sc.FalconModel` keeps: everything :meth:`~falcon_sc.FalconModel.save` writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..pp import FeatureTransform


@dataclass
class FittedState:
    """The fitted preprocessing, networks, relation and records of a model.

    ``schemes``: with several coarse schemes, their keys, class names and relations (``coarse_names`` and
    ``relation`` are then those of the joint groups).
    """

    transform: FeatureTransform
    coarse_names: list[str]
    fine_names: list[str]  # per network output
    relation: np.ndarray  # fine x coarse, 0/1
    use_warm: np.ndarray  # per coarse class: predictions of the warm-fitted network
    network: nn.Module
    warm_network: nn.Module | None
    hidden: list[int]
    params: dict[str, Any]
    history: list[dict]
    schemes: dict[str, Any] | None = None


def warm_copy(make_network: Any, state: dict[str, torch.Tensor] | None, n_fine: int) -> nn.Module | None:
    """The network fitted to the warm start, rebuilt from its weights (``None`` without a warm start)."""
    if state is None:
        return None
    warm = make_network(n_fine)
    warm.load_state_dict(state)
    return warm.eval()
