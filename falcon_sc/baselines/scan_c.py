"""SCAN-C: SCAN clustering (Van Gansbeke et al. 2020) with neighbours and clusters restricted to each coarse class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData

from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core import losses
from ..core.training import train_minibatches
from ..core.views import ViewConfig
from ._common import BaselineResult
from ._neural import check_range, children_logits, coarse_tensor, head_result, loop_config, neural_data, total_steps


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
    check_range("entropy_weight", entropy_weight, 0.0)
    check_range("self_label_fraction", self_label_fraction, 0.0, 1.0)
    check_range("confidence", confidence, 0.0, 1.0, closed_low=False)
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
    M = torch.as_tensor(data.relation(), device=data.device)
    y = coarse_tensor(data)
    views = data.views()
    model = data.network(M.shape[0])
    cfg = loop_config(data, desc="scan_c")
    cluster_steps = int(round((1.0 - self_label_fraction) * total_steps(data, cfg)))

    def step(idx: np.ndarray, x: torch.Tensor, n_step: int) -> dict[str, torch.Tensor]:
        mask = losses.children_mask(M, y[torch.as_tensor(idx, device=data.device)])
        logits = model(views.jitter(x)).masked_fill(~mask, -1e9)
        if n_step <= cluster_steps:
            p = torch.softmax(logits, dim=1)
            p_nb = torch.softmax(
                model(views.jitter(data.features.rows(views.neighbour(idx)))).masked_fill(~mask, -1e9), 1
            )
            consistency = losses.neighbour_consistency(p, p_nb[:, None, :])
            entropy = losses.within_coarse_entropy_gap(p, mask, y[torch.as_tensor(idx, device=data.device)], M)
            return {"loss": consistency + entropy_weight * entropy, "consistency": consistency, "entropy": entropy}
        with torch.no_grad():
            target = torch.softmax(model(x).masked_fill(~mask, -1e9), dim=1)
            keep = target.max(dim=1).values > confidence
        if not bool(keep.any()):
            return {"loss": logits.sum() * 0.0}
        return {"loss": F.cross_entropy(logits[keep], target[keep].argmax(dim=1))}

    train_minibatches(model, data.features, step, cfg, data.rng)
    fine = children_logits(data, model).argmax(axis=1)
    return head_result(data, fine, info={"allotment": data.alloc.tolist()})
