"""GML: Gaussian-mixture-likelihood loss with class-wise queues and logit adjustment (Suh & Seo 2023), coarse labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from anndata import AnnData
from torch import nn

from .._docs import baseline_inputs, doc_params, image_example, image_options, neural_options
from ..core.contrastive import class_kde_log_likelihood, logit_adjusted_cross_entropy
from ..core.ema import EMATeacher
from ..core.queue import KeyQueue
from ..core.training import map_rows, train_minibatches
from ..core.views import ViewConfig
from ..models.mlp import projection_head
from ._common import BaselineResult
from ._neural import check_range, coarse_tensor, kmeans_result, loop_config, neural_data, unit_embedding


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
    check_range("dim", dim, 1)
    check_range("temperature", temperature, 0.0, closed_low=False)
    check_range("classifier_scale", classifier_scale, 0.0, closed_low=False)
    check_range("queue_total", queue_total, 1)
    check_range("queue_min", queue_min, 1)
    check_range("momentum", momentum, 0.0, 1.0)
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
    counts = np.bincount(data.coarse, minlength=data.n_coarse)
    prior = counts / counts.sum()
    log_prior = torch.as_tensor(np.log(np.clip(prior, 1e-12, None)), dtype=torch.float32, device=data.device)
    lengths = np.minimum(counts, np.maximum(queue_min, np.round(prior * min(queue_total, data.n_obs)))).astype(int)
    queues = [KeyQueue(int(n), dim, data.device) for n in lengths]
    views = data.views()
    net = nn.ModuleDict({"body": data.body(), "embed": projection_head(data.body_width, dim)}).to(data.device)
    classes = nn.Parameter(torch.randn(data.n_coarse, dim, device=data.device) * 0.01)
    net.register_parameter("class_weights", classes)
    teacher = EMATeacher(net, momentum)

    def step(idx: np.ndarray, x: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
        yb = y[torch.as_tensor(idx, device=data.device)]
        x_q, x_k = views.pair(idx, x)
        z = unit_embedding(net, x_q)
        with torch.no_grad():
            k = unit_embedding(teacher.model, x_k)
        cosine = z @ F.normalize(net.get_parameter("class_weights"), dim=1).T
        cls = logit_adjusted_cross_entropy(classifier_scale * cosine, yb, log_prior)
        for c, queue in enumerate(queues):
            queue.push(k[yb == c])
        log_s = class_kde_log_likelihood(z, [q.contents()[0] for q in queues], temperature)
        likelihood = logit_adjusted_cross_entropy(log_s, yb, log_prior)
        return {"loss": cls + likelihood, "classifier": cls, "likelihood": likelihood}

    train_minibatches(
        net, data.features, step, loop_config(data, desc="gml"), data.rng, after_step=lambda _: teacher.update(net)
    )
    net.eval()
    embedding = map_rows(net["body"], data.features)
    return kmeans_result(data, embedding, random_state)
