"""WCL: weakly supervised contrastive learning (Zheng et al. 2021), weak labels restricted to the coarse class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core.contrastive import nearest_neighbour_components, nt_xent, supervised_contrastive
from ..core.training import map_rows, train_minibatches
from ..core.views import ViewConfig
from ..models.mlp import projection_head
from ._common import BaselineResult
from ._neural import check_range, coarse_tensor, kmeans_result, loop_config, neural_data


@doc_params(
    baseline_inputs=baseline_inputs,
    image_options=image_options,
    neural_options=neural_options,
    image_example=image_example,
)
def wcl(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None = None,
    dim: int = 32,
    temperature: float = 0.1,
    weak_weight: float = 1.0,
    coarse_weight: float = 1.0,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> BaselineResult:
    """WCL with coarse labels: instance contrast plus weak labels from 1-nearest-neighbour graph components.

    Two views of each cell of a minibatch (a noisy copy and a noisy within-class neighbour) pass through the MLP
    body and two projection heads. Head ``g``: SimCLR instance discrimination (NT-Xent). Head ``phi``: the weak
    labels of each view are the connected components of the 1-nearest-neighbour graph of its ``phi`` embeddings, with
    edges only between cells of the same coarse class; they supervise a supervised contrastive loss on the *other*
    view (WCL's swap). A linear coarse classifier on the body adds the coarse supervision. Loss = NT-Xent +
    ``weak_weight`` x swapped SupCon + ``coarse_weight`` x coarse cross-entropy (WCL: lambda = 1). Fine classes:
    k-means on the body's output inside each coarse class, clusters allotted by class size. ``adata`` is not
    modified.

    Parameters
    ----------
    {baseline_inputs}
    dim
        Projection dimension of both heads.
    temperature
        Temperature of both contrastive losses (WCL: 0.1).
    weak_weight
        Weight of the weak-label loss.
    coarse_weight
        Weight of the coarse cross-entropy.
    {image_options}
    {neural_options}

    Returns
    -------
    Fine labels ``"<coarse>/<i>"`` and the fine -> coarse relation.

    Examples
    --------
    {image_example}
    >>> res = fal.baselines.wcl(digits, "coarse", 10, width=8, view=crops, n_steps=20)
    >>> sorted(set(res.relation.values()))
    ['curve', 'loop', 'stroke']
    """
    check_range("dim", dim, 1)
    check_range("temperature", temperature, 0.0, closed_low=False)
    check_range("weak_weight", weak_weight, 0.0)
    check_range("coarse_weight", coarse_weight, 0.0)
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
    y = coarse_tensor(data)
    views = data.views()
    net = nn.ModuleDict(
        {
            "body": data.body(),
            "instance": projection_head(data.body_width, dim),
            "weak": projection_head(data.body_width, dim),
            "classifier": nn.Linear(data.body_width, data.n_coarse),
        }
    ).to(data.device)

    def step(idx: np.ndarray, x: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
        yb = y[torch.as_tensor(idx, device=data.device)]
        x1, x2 = views.pair(idx, x)
        h1, h2 = net["body"](x1), net["body"](x2)
        instance = nt_xent(
            F.normalize(net["instance"](h1), dim=1), F.normalize(net["instance"](h2), dim=1), temperature
        )
        v1, v2 = F.normalize(net["weak"](h1), dim=1), F.normalize(net["weak"](h2), dim=1)
        groups = yb.cpu().numpy()
        same1, same2 = (_same_component(v.detach().cpu().numpy(), groups, v.device) for v in (v1, v2))
        weak = 0.5 * (
            supervised_contrastive(v1, v2, same2, temperature) + supervised_contrastive(v2, v1, same1, temperature)
        )
        coarse = F.cross_entropy(net["classifier"](h1), yb)
        loss = instance + weak_weight * weak + coarse_weight * coarse
        return {"loss": loss, "instance": instance, "weak": weak, "coarse": coarse}

    train_minibatches(net, data.features, step, loop_config(data, desc="wcl"), data.rng)
    net.eval()
    return kmeans_result(data, map_rows(net["body"], data.features), random_state)


def _same_component(v: np.ndarray, groups: np.ndarray, device: torch.device) -> torch.Tensor:
    comp = nearest_neighbour_components(v, groups)
    return torch.as_tensor(comp[:, None] == comp[None, :], device=device)
