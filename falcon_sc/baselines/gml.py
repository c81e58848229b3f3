"""GML: Gaussian-mixture-likelihood loss with class-wise queues and logit adjustment (Suh & Seo 2023), coarse labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._checks import check_int, check_number
from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core.contrastive import class_kde_log_likelihood, logit_adjusted_cross_entropy
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
def gml(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None = None,
    dim: int = 32,
    temperature: float = 0.1,
    classifier_scale: float = 16.0,
    queue_total: int = 4096,
    queue_min: int = 16,
    momentum: float = 0.99,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
) -> BaselineResult:
    """GML with coarse labels: learn an embedding by mutual information with the coarse labels, then k-means.

    Loss = logit-adjusted cross-entropy of a cosine classifier over coarse classes + the Gaussian mixture likelihood
    loss ``-log softmax_c(log s(z|c) + log p(c))[y]``, where ``s(z|c)`` is the Gaussian-kernel density of the unit
    embedding ``z`` of a noisy cell among the contrast samples of coarse class ``c``: teacher embeddings of noisy
    within-class neighbours kept in one queue per class (length proportional to class frequency, at least
    ``queue_min``). A kernel density keeps the within-class spread that a single class centre would erase. The
    paper's pre-trained teacher is replaced by a momentum (EMA) copy of the network. Fine classes: k-means on the
    MLP body's output (the backbone features) inside each coarse class, clusters allotted by class size. ``adata``
    is not modified.

    Parameters
    ----------
    {baseline_inputs}
    dim
        Embedding dimension.
    temperature
        Kernel bandwidth ``tau_g`` of the likelihood (GML: 0.1).
    classifier_scale
        Scale of the cosine classifier's logits.
    queue_total
        Total length of the class-wise queues (capped at the number of cells).
    queue_min
        Shortest queue (capped at the class size).
    momentum
        Momentum of the teacher that fills the queues.
    {image_options}
    {neural_options}

    Returns
    -------
    Fine labels ``"<coarse>/<i>"`` and the fine -> coarse relation.

    Examples
    --------
    {image_example}
    >>> res = fal.baselines.gml(digits, "coarse", 10, width=8, view=crops, n_steps=20)
    >>> sorted(set(res.relation.values()))
    ['curve', 'loop', 'stroke']
    """
    check_int("dim", dim, 1)
    check_number("temperature", temperature, low=0.0, open_low=True)
    check_number("classifier_scale", classifier_scale, low=0.0, open_low=True)
    check_int("queue_total", queue_total, 1)
    check_int("queue_min", queue_min, 1)
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
    counts = np.bincount(data.coarse, minlength=data.n_coarse)
    prior = counts / counts.sum()
    log_prior = torch.as_tensor(np.log(np.clip(prior, 1e-12, None)), dtype=torch.float32, device=data.device)
    lengths = np.minimum(counts, np.maximum(queue_min, np.round(prior * min(queue_total, data.n_obs)))).astype(int)
    queues = [KeyQueue(int(n), dim, data.device) for n in lengths]
    views = data.views()
    net = GMLNetwork({"body": data.body(), "embed": projection_head(data.body_width, dim)}).to(data.device)
    classes = nn.Parameter(torch.randn(data.n_coarse, dim, device=data.device) * 0.01)
    net.register_parameter("class_weights", classes)
    teacher = EMATeacher(net, momentum)
    plan = GMLPlan(
        net, teacher, queues, coarse_tensor(data), views, log_prior, temperature=temperature, scale=classifier_scale
    )
    train_minibatches(net, data.features, plan, loop_config(data, desc="gml"), data.rng)
    net.eval()
    embedding = map_rows(net["body"], data.features)
    return kmeans_result(data, embedding, random_state)


class GMLNetwork(nn.ModuleDict):
    """GML's modules (``body``, projection ``embed``) and coarse class weights ``class_weights``, and its forward."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit-length embedding ``z`` and its cosine to each coarse class weight."""
        z = unit_embedding(self, x)
        return z, z @ F.normalize(self.get_parameter("class_weights"), dim=1).T


class GMLPlan(TrainingPlan):
    """GML's training: logit-adjusted cosine classifier + Gaussian mixture likelihood against class-wise queues.

    Parameters
    ----------
    net
        The network (the teacher follows it).
    teacher
        Momentum copy of ``net`` whose embeddings fill the queues.
    queues
        One queue of teacher embeddings per coarse class.
    coarse
        Coarse class per cell (tensor on the device).
    views
        Positive pairs.
    log_prior
        Log coarse class frequencies (the logit adjustment).
    temperature
        Kernel bandwidth of the likelihood.
    scale
        Scale of the cosine classifier's logits.
    """

    def __init__(
        self,
        net: nn.Module,
        teacher: EMATeacher,
        queues: list[KeyQueue],
        coarse: torch.Tensor,
        views: ViewSource,
        log_prior: torch.Tensor,
        *,
        temperature: float,
        scale: float,
    ) -> None:
        self.model = self.network = net
        self.teacher, self.queues, self.coarse, self.views, self.log_prior = teacher, queues, coarse, views, log_prior
        self.temperature, self.scale = temperature, scale

    def training_step(self, idx: np.ndarray, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """Classifier and likelihood terms of the minibatch ``idx``."""
        yb = self.coarse[torch.as_tensor(idx, device=self.coarse.device)]
        x_q, x_k = self.views.pair(idx, x)
        z, cosine = self.network(x_q)
        with torch.no_grad():
            k = unit_embedding(self.teacher.model, x_k)
        cls = logit_adjusted_cross_entropy(self.scale * cosine, yb, self.log_prior)
        for c, queue in enumerate(self.queues):
            queue.push(k[yb == c])
        log_s = class_kde_log_likelihood(z, [q.contents()[0] for q in self.queues], self.temperature)
        likelihood = logit_adjusted_cross_entropy(log_s, yb, self.log_prior)
        return {"loss": cls + likelihood, "classifier": cls, "likelihood": likelihood}

    def on_train_batch_end(self, step: int) -> None:
        """Move the teacher towards the network."""
        self.teacher.update(self.model)
