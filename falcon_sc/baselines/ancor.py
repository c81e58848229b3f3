"""ANCOR: coarse cross-entropy plus angular MoCo contrast inside the coarse class (Bukchin et al. 2021)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._checks import check_int, check_number
from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core.contrastive import angular_normalise, info_nce
from ..core.ema import EMATeacher
from ..core.queue import KeyQueue
from ..core.training import TrainingPlan, map_rows, train_minibatches
from ..core.views import ViewConfig
from ..models.mlp import projection_head
from ._common import BaselineResult
from ._neural import ViewSource, coarse_tensor, kmeans_result, loop_config, neural_data, unit_embedding


@doc_params(
    baseline_inputs=baseline_inputs,
    image_options=image_options,
    neural_options=neural_options,
    image_example=image_example,
)
def ancor(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None = None,
    dim: int = 32,
    temperature: float = 0.2,
    queue_size: int = 2048,
    momentum: float = 0.99,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> BaselineResult:
    """ANCOR: learn an embedding from coarse labels and in-class contrast, then k-means inside each coarse class.

    Query ``q`` = unit-length MLP embedding of a noisy cell, key ``k`` = the momentum encoder's embedding of a noisy
    within-class neighbour (MoCo v2 with neighbour positives instead of image augmentations). Loss = cross-entropy
    of a linear coarse classifier on ``q`` + InfoNCE on the *angular-normalised* ``q``, ``k`` and queue keys (the
    unit direction from the coarse class weight ``W_y`` to the embedding), with negatives drawn only from the
    queue entries of the same coarse class. Fine classes: k-means on ``q`` inside each coarse class, clusters
    allotted by class size. ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs}
    dim
        Embedding dimension.
    temperature
        InfoNCE temperature (MoCo v2 / ANCOR: 0.2).
    queue_size
        Keys kept as negatives (capped at the number of cells).
    momentum
        Momentum of the key encoder (MoCo: 0.999 over far longer training).
    {image_options}
    {neural_options}

    Returns
    -------
    Fine labels ``"<coarse>/<i>"`` and the fine -> coarse relation.

    Examples
    --------
    {image_example}
    >>> res = fal.baselines.ancor(digits, "coarse", 10, width=8, view=crops, n_steps=20)
    >>> sorted(set(res.relation.values()))
    ['curve', 'loop', 'stroke']
    """
    check_int("dim", dim, 1)
    check_number("temperature", temperature, low=0.0, open_low=True)
    check_int("queue_size", queue_size, 1)
    check_number("momentum", momentum, low=0.0, high=1.0, open_high=True)
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
    net = AncorNetwork(
        {
            "body": data.body(),
            "embed": projection_head(data.body_width, dim),
            "classifier": nn.Linear(dim, data.n_coarse),
        }
    ).to(data.device)
    key_encoder = EMATeacher(net, momentum)
    queue = KeyQueue(min(queue_size, data.n_obs), dim, data.device)
    plan = AncorPlan(net, key_encoder, queue, coarse_tensor(data), views, temperature=temperature)
    train_minibatches(net, data.features, plan, loop_config(data, desc="ancor"), data.rng)
    net.eval()
    embedding = map_rows(lambda x: unit_embedding(net, x), data.features)
    return kmeans_result(data, embedding, random_state)


class AncorNetwork(nn.ModuleDict):
    """ANCOR's modules (``body``, projection ``embed``, coarse ``classifier``) and its forward."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit-length query ``q`` and the coarse logits of ``q``."""
        q = unit_embedding(self, x)
        return q, self["classifier"](q)


class AncorPlan(TrainingPlan):
    """ANCOR's training: coarse cross-entropy + angular InfoNCE against the momentum encoder's queued keys.

    Parameters
    ----------
    net
        The network (the momentum encoder follows it).
    key_encoder
        Momentum copy of ``net`` that encodes the keys.
    queue
        Queued keys (negatives) and their coarse classes.
    coarse
        Coarse class per cell (tensor on the device).
    views
        Positive pairs.
    temperature
        InfoNCE temperature.
    """

    def __init__(
        self,
        net: nn.Module,
        key_encoder: EMATeacher,
        queue: KeyQueue,
        coarse: torch.Tensor,
        views: ViewSource,
        *,
        temperature: float,
    ) -> None:
        self.model = self.network = net
        self.key_encoder, self.queue, self.coarse, self.views = key_encoder, queue, coarse, views
        self.temperature = temperature

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Coarse cross-entropy of the query and InfoNCE inside each coarse class of the minibatch."""
        yb = self.coarse[torch.as_tensor(idx, device=self.coarse.device)]
        x_q, x_k = self.views.pair(idx, x)
        q, coarse_logits = self.network(x_q)
        with torch.no_grad():
            k = unit_embedding(self.key_encoder.model, x_k)
        W = self.model.get_parameter("classifier.weight")
        ce = F.cross_entropy(coarse_logits, yb)
        keys, labels = self.queue.contents()
        q_a, k_a, keys_a = angular_normalise(q, W, yb), angular_normalise(k, W, yb), angular_normalise(keys, W, labels)
        contrast = q.new_zeros(())
        for c in torch.unique(yb):  # negatives: queued keys of the same coarse class only
            rows = yb == c
            contrast = contrast + rows.float().mean() * info_nce(
                q_a[rows], k_a[rows], keys_a[labels == c], self.temperature
            )
        self.queue.push(k, yb)
        return {"loss": ce + contrast, "coarse": ce, "contrast": contrast}

    def on_train_batch_end(self, step: int) -> None:
        """Move the momentum encoder towards the network."""
        self.key_encoder.update(self.model)
