"""WCL: weakly supervised contrastive learning (Zheng et al. 2021), weak labels restricted to the coarse class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._checks import check_int, check_number
from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core.contrastive import nearest_neighbour_components, nt_xent, supervised_contrastive
from ..core.training import TrainingPlan, map_rows, train_minibatches
from ..core.views import ViewConfig
from ..models.mlp import projection_head
from ._common import BaselineResult
from ._neural import ViewSource, coarse_tensor, kmeans_result, loop_config, neural_data


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
    check_int("dim", dim, 1)
    check_number("temperature", temperature, low=0.0, open_low=True)
    check_number("weak_weight", weak_weight, low=0.0)
    check_number("coarse_weight", coarse_weight, low=0.0)
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
    net = WCLNetwork(
        {
            "body": data.body(),
            "instance": projection_head(data.body_width, dim),
            "weak": projection_head(data.body_width, dim),
            "classifier": nn.Linear(data.body_width, data.n_coarse),
        }
    ).to(data.device)
    plan = WCLPlan(
        coarse_tensor(data), views, temperature=temperature, weak_weight=weak_weight, coarse_weight=coarse_weight
    )
    train_minibatches(net, data.features, plan, loop_config(data, desc="wcl"), data.rng)
    net.eval()
    return kmeans_result(data, map_rows(net["body"], data.features), random_state)


class WCLNetwork(nn.ModuleDict):
    """WCL's modules (``body``, projection heads ``instance`` and ``weak``, coarse ``classifier``) and its forward."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Unit-length instance and weak projections of both views, and the coarse logits of the first."""
        h1, h2 = self["body"](x1), self["body"](x2)
        z1, z2 = F.normalize(self["instance"](h1), dim=1), F.normalize(self["instance"](h2), dim=1)
        v1, v2 = F.normalize(self["weak"](h1), dim=1), F.normalize(self["weak"](h2), dim=1)
        return z1, z2, v1, v2, self["classifier"](h1)


class WCLPlan(TrainingPlan):
    """WCL's training: NT-Xent + swapped weak-label SupCon + coarse cross-entropy on two views of each cell."""

    def __init__(
        self, coarse: torch.Tensor, views: ViewSource, *, temperature: float, weak_weight: float, coarse_weight: float
    ) -> None:
        self.coarse, self.views = coarse, views
        self.temperature, self.weak_weight, self.coarse_weight = temperature, weak_weight, coarse_weight

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """The three WCL terms of the minibatch ``idx``."""
        yb = self.coarse[torch.as_tensor(idx, device=self.coarse.device)]
        z1, z2, v1, v2, logits = self.network(*self.views.pair(idx, x))
        instance = nt_xent(z1, z2, self.temperature)
        groups = yb.cpu().numpy()
        same1, same2 = (_same_component(v.detach().cpu().numpy(), groups, v.device) for v in (v1, v2))
        weak = 0.5 * (
            supervised_contrastive(v1, v2, same2, self.temperature)
            + supervised_contrastive(v2, v1, same1, self.temperature)
        )
        coarse = F.cross_entropy(logits, yb)
        loss = instance + self.weak_weight * weak + self.coarse_weight * coarse
        return {"loss": loss, "instance": instance, "weak": weak, "coarse": coarse}


def _same_component(v: np.ndarray, groups: np.ndarray, device: torch.device) -> torch.Tensor:
    comp = nearest_neighbour_components(v, groups)
    return torch.as_tensor(comp[:, None] == comp[None, :], device=device)
