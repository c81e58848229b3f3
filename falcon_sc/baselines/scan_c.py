"""SCAN-C: SCAN clustering (Van Gansbeke et al. 2020) with neighbours and clusters restricted to each coarse class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._checks import check_number
from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core import losses
from ..core.training import TrainingPlan, train_minibatches
from ..core.views import ViewConfig
from ._common import BaselineResult
from ._neural import (
    NeuralData,
    ViewSource,
    children_logits,
    coarse_tensor,
    head_result,
    loop_config,
    neural_data,
    total_steps,
)


@doc_params(
    baseline_inputs=baseline_inputs,
    image_options=image_options,
    neural_options=neural_options,
    image_example=image_example,
)
def scan_c(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None = None,
    entropy_weight: float = 5.0,
    self_label_fraction: float = 0.3,
    confidence: float = 0.99,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> BaselineResult:
    """SCAN with coarse labels: neighbour-consistent clustering inside each coarse class, then self-labelling.

    Each coarse class gets children in proportion to its size; the network's softmax runs over the children of a
    cell's own coarse class. Clustering step (SCAN eq. 2): ``-log <p(x), p(n)>`` for a random within-class neighbour
    ``n`` (both through the network) minus ``entropy_weight`` times the entropy of the mean prediction of each
    coarse class. Self-labelling step (the last ``self_label_fraction`` of training): cross-entropy of a noisy view
    on the predictions above ``confidence``. Neighbours come from FALCON's within-class neighbour graph instead of
    a SimCLR pretext model. ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs}
    entropy_weight
        Weight of the entropy term (SCAN: 5).
    self_label_fraction
        Share of the training steps spent self-labelling.
    confidence
        Threshold of the self-labels (SCAN: 0.99).
    {image_options}
    {neural_options}

    Returns
    -------
    Fine labels ``"<coarse>/<i>"`` and the fine -> coarse relation.

    Examples
    --------
    {image_example}
    >>> res = fal.baselines.scan_c(digits, "coarse", 10, width=8, view=crops, n_steps=20)
    >>> sorted(set(res.relation.values()))
    ['curve', 'loop', 'stroke']
    """
    check_number("entropy_weight", entropy_weight, low=0.0)
    check_number("self_label_fraction", self_label_fraction, low=0.0, high=1.0, open_high=True)
    check_number("confidence", confidence, low=0.0, high=1.0, open_low=True, open_high=True)
    data = neural_data(
        adata,
        coarse_key,
        n_fine,
        batch_key=batch_key,
        random_state=random_state,
        accelerator=accelerator,
        image_shape=image_shape,
        width=width,
        view=view,
        checkpoint=checkpoint,
        n_steps=n_steps,
    )
    views = data.views()
    model = data.network(data.relation().shape[0])
    cfg = loop_config(data, desc="scan_c")
    cluster_steps = int(round((1.0 - self_label_fraction) * total_steps(data, cfg)))
    plan = SCANPlan(data, model, views, cluster_steps, entropy_weight=entropy_weight, confidence=confidence)
    train_minibatches(model, data.features, plan, cfg, data.rng)
    fine = children_logits(data, model).argmax(axis=1)
    return head_result(data, fine, info={"allotment": data.alloc.tolist()})


class SCANPlan(TrainingPlan):
    """SCAN-C's training: neighbour consistency + entropy for ``cluster_steps`` steps, then confident self-labels.

    Parameters
    ----------
    data
        The dataset.
    model
        The classifier (one output per fine class of :meth:`NeuralData.relation`).
    views
        Noisy views and within-class neighbours.
    cluster_steps
        Steps of the clustering phase (the rest self-label).
    entropy_weight
        Weight of the within-class entropy term.
    confidence
        Threshold of the self-labels.
    """

    def __init__(
        self,
        data: NeuralData,
        model: nn.Module,
        views: ViewSource,
        cluster_steps: int,
        *,
        entropy_weight: float,
        confidence: float,
    ) -> None:
        self.data, self.network, self.views, self.cluster_steps = data, model, views, cluster_steps
        self.relation = torch.as_tensor(data.relation(), device=data.device)
        self.coarse = coarse_tensor(data)
        self.entropy_weight, self.confidence = entropy_weight, confidence

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """The SCAN loss while clustering, cross-entropy on the confident self-labels after."""
        yb = self.coarse[torch.as_tensor(idx, device=self.data.device)]
        mask = losses.children_mask(self.relation, yb)
        net = self.network
        logits = net(self.views.jitter(x)).masked_fill(~mask, -1e9)
        if step <= self.cluster_steps:
            p = torch.softmax(logits, dim=1)
            rows = self.data.features.rows(self.views.neighbour(idx))
            p_nb = torch.softmax(net(self.views.jitter(rows)).masked_fill(~mask, -1e9), 1)
            consistency = losses.neighbour_consistency(p, p_nb[:, None, :])
            entropy = losses.within_coarse_entropy_gap(p, mask, yb, self.relation)
            return {"loss": consistency + self.entropy_weight * entropy, "consistency": consistency, "entropy": entropy}
        with torch.no_grad():
            target = torch.softmax(net(x).masked_fill(~mask, -1e9), dim=1)
            keep = target.max(dim=1).values > self.confidence
        if not bool(keep.any()):
            return {"loss": logits.sum() * 0.0}
        return {"loss": F.cross_entropy(logits[keep], target[keep].argmax(dim=1))}
