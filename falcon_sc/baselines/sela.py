"""SeLa: self-labelling with Sinkhorn-Knopp pseudo-labels (Asano et al. 2020), run inside each coarse class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._checks import check_choice, check_int, check_number
from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core import losses
from ..core.contrastive import sinkhorn_labels
from ..core.prior import kmeans_within_relation
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
def sela(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None = None,
    lam: float = 25.0,
    n_label_updates: int = 20,
    marginals: str = "kmeans",
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> BaselineResult:
    """SeLa inside each coarse class: alternate cross-entropy on pseudo-labels and Sinkhorn-Knopp label updates.

    Each coarse class gets children in proportion to its size and the network's softmax runs over the children of
    a cell's own coarse class. Pseudo-labels of a coarse class are the optimal transport of its cells onto its
    children, ``Q = diag(a) P^lam diag(b)`` (SeLa eq. 8), re-solved ``n_label_updates`` times during training; the
    network is trained with cross-entropy on a noisy view. SeLa's equipartition assumes equal class sizes, which
    cell types are not: with ``marginals="kmeans"`` the pseudo-labels start from k-means inside each coarse class
    and the child sizes found there are the transport marginals; ``"uniform"`` is the paper's equipartition (and
    random initial labels). ``adata`` is not modified.

    Parameters
    ----------
    {baseline_inputs}
    lam
        Sharpness of the transport (SeLa: 25).
    n_label_updates
        Label re-assignments over training (SeLa: about 80 over 400 epochs).
    marginals
        ``"kmeans"`` (non-uniform, from k-means within coarse classes) or ``"uniform"``.
    {image_options}
    {neural_options}

    Returns
    -------
    Fine labels ``"<coarse>/<i>"`` and the fine -> coarse relation.

    Examples
    --------
    {image_example}
    >>> res = fal.baselines.sela(digits, "coarse", 10, width=8, view=crops, n_steps=20)
    >>> sorted(set(res.relation.values()))
    ['curve', 'loop', 'stroke']
    """
    check_choice("marginals", marginals, ("kmeans", "uniform"))
    check_int("n_label_updates", n_label_updates, 1)
    check_number("lam", lam, low=0.0, open_low=True)
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
    relation = data.relation()
    parent = relation.argmax(axis=1)
    if marginals == "kmeans":
        labels = kmeans_within_relation(data.initial, data.coarse, relation, random_state)
        shares = np.bincount(labels, minlength=len(parent)).astype(float) + 1.0
    else:
        labels = np.array([data.rng.choice(np.flatnonzero(parent == c)) for c in data.coarse])
        shares = np.ones(len(parent))
    views = data.views()
    model = data.network(len(parent))
    cfg = loop_config(data, desc="sela")
    every = max(1, total_steps(data, cfg) // n_label_updates)
    plan = SeLaPlan(data, model, views, labels, shares, lam=lam, every=every)
    train_minibatches(model, data.features, plan, cfg, data.rng)
    fine = children_logits(data, model).argmax(axis=1)
    return head_result(data, fine, info={"allotment": data.alloc.tolist(), "marginals": marginals})


class SeLaPlan(TrainingPlan):
    """SeLa's training: cross-entropy on a noisy view against pseudo-labels, re-solved every ``every`` steps.

    Parameters
    ----------
    data
        The dataset.
    model
        The classifier (one output per fine class of :meth:`NeuralData.relation`).
    views
        The views the student trains on.
    labels
        Initial pseudo-label (fine class) per cell.
    shares
        Transport marginal of each fine class (relative sizes).
    lam
        Sharpness of the transport.
    every
        Steps between label updates.
    """

    def __init__(
        self,
        data: NeuralData,
        model: nn.Module,
        views: ViewSource,
        labels: np.ndarray,
        shares: np.ndarray,
        *,
        lam: float,
        every: int,
    ) -> None:
        self.data, self.model, self.network, self.views = data, model, model, views
        relation = data.relation()
        self.parent = relation.argmax(axis=1)
        self.relation = torch.as_tensor(relation, device=data.device)
        self.coarse = coarse_tensor(data)
        self.target = torch.as_tensor(labels, device=data.device)
        self.shares, self.lam, self.every = shares, lam, every

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Cross-entropy of the view's logits, restricted to the cell's coarse class, against its pseudo-label."""
        tidx = torch.as_tensor(idx, device=self.data.device)
        mask = losses.children_mask(self.relation, self.coarse[tidx])
        logits = self.network(self.views.jitter(x)).masked_fill(~mask, -1e9)
        return {"loss": F.cross_entropy(logits, self.target[tidx])}

    def on_train_batch_end(self, step: int) -> None:
        """Every ``every`` steps: new pseudo-labels, the optimal transport of each coarse class onto its children."""
        if step % self.every:
            return
        data = self.data
        logits = children_logits(data, self.model)
        self.model.train()
        new = self.target.cpu().numpy().copy()
        for c in range(data.n_coarse):
            cells, kids = np.flatnonzero(data.coarse == c), np.flatnonzero(self.parent == c)
            if len(kids) > 1 and cells.size:
                log_p = torch.log_softmax(torch.as_tensor(logits[np.ix_(cells, kids)]), dim=1).numpy()
                new[cells] = kids[sinkhorn_labels(log_p, self.shares[kids], lam=self.lam)]
        self.target.copy_(torch.as_tensor(new, device=data.device))
