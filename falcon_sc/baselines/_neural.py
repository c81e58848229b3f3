"""What the neural baselines share with FALCON and with each other: inputs, neighbours, views, loop, read-outs.

Every neural baseline sees the cells exactly as :func:`falcon_sc.tl.refine` does (global + within-class principal
components, neighbours searched inside the coarse class), trains an MLP of the same shape with the same loop
(:func:`falcon_sc.core.training.train_minibatches`) on the same device logic, and reads fine classes out either from
a head whose children are allotted to coarse classes by size, or by k-means inside each coarse class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from anndata import AnnData

from .._validate import resolve_device
from ..core.neighbors import within_class_neighbors
from ..core.training import Features, LoopConfig, epochs_for_steps, map_rows
from ..pp import cell_features
from ._common import BaselineResult, allot_clusters, check_n_fine, coarse_labels, fine_names
from .kmeans_within import kmeans_per_class

HIDDEN: tuple[int, ...] = (64, 64, 64, 64)
"""Hidden widths of every baseline MLP (those of FALCON's)."""


@dataclass
class NeuralData:
    """One dataset as the neural baselines see it.

    Attributes
    ----------
    features
        Network inputs on the device.
    coarse
        Coarse class index per cell.
    classes
        Coarse class names.
    neighbors
        Cells x k neighbours inside the same coarse class (nearest first).
    alloc
        Fine classes per coarse class, in proportion to class sizes.
    device
        Torch device.
    rng
        Generator for minibatches and views (seeded with the method's seed).
    """

    features: Features
    coarse: np.ndarray
    classes: list[str]
    neighbors: np.ndarray
    alloc: np.ndarray
    device: torch.device
    rng: np.random.Generator

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return self.features.n_obs

    @property
    def n_coarse(self) -> int:
        """Number of coarse classes."""
        return len(self.classes)

    def relation(self) -> np.ndarray:
        """``n_fine x n_coarse`` 0/1 relation with ``alloc[c]`` consecutive children under coarse class ``c``."""
        parent = np.repeat(np.arange(self.n_coarse), self.alloc)
        return np.eye(self.n_coarse, dtype=np.float32)[parent]


def neural_data(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None,
    random_state: int,
    accelerator: str = "auto",
    n_neighbors: int = 20,
) -> NeuralData:
    """Validate the inputs and build :class:`NeuralData` (``adata`` is not modified); seeds numpy and torch.

    The inputs are FALCON's (:func:`falcon_sc.pp.cell_features`), standardised per feature: without FALCON's
    warm start, a randomly initialised MLP otherwise sees little beyond the first principal components.
    """
    coarse_cat = coarse_labels(adata, coarse_key)
    classes = [str(c) for c in coarse_cat.categories]
    codes = np.asarray(coarse_cat.codes, dtype=np.int64)
    n_fine = check_n_fine(n_fine, len(classes), adata.n_obs)
    device = resolve_device(accelerator)
    torch.manual_seed(random_state)
    inputs = cell_features(adata, codes, batch_key=batch_key, random_state=random_state)
    neighbors = within_class_neighbors(inputs.neighbour_space, codes, n_neighbors, random_state=random_state)
    features = np.asarray(inputs.features, dtype=np.float32)
    features = (features - features.mean(axis=0)) / np.clip(features.std(axis=0), 1e-6, None)
    return NeuralData(
        features=Features(features, device),
        coarse=codes,
        classes=classes,
        neighbors=neighbors,
        alloc=allot_clusters(np.bincount(codes, minlength=len(classes)), n_fine),
        device=device,
        rng=np.random.default_rng(random_state),
    )


def loop_config(
    data: NeuralData,
    *,
    min_steps: int = 400,
    batch_size: int = 256,
    lr: float = 1e-3,
    show_progress: bool = False,
    desc: str = "train",
) -> LoopConfig:
    """Adam, ``batch_size`` cells a step, enough epochs for ``min_steps`` steps (at least 10, at most 200)."""
    n_epochs = epochs_for_steps(data.n_obs, batch_size, min_steps, max_epochs=200)
    return LoopConfig(n_epochs=n_epochs, batch_size=batch_size, lr=lr, show_progress=show_progress, desc=desc)


class Views:
    """Two views of a cell for the contrastive baselines.

    Expression augmentations of single cells have no agreed recipe; we take as positive a random one of the
    ``n_positive`` nearest neighbours *inside the same coarse class* (as NNCLR / SCAN mine positives), and add
    Gaussian noise of ``noise`` times each input's standard deviation to both views.

    Parameters
    ----------
    data
        The dataset.
    n_positive
        Neighbours a positive is drawn from.
    noise
        Noise scale relative to each input's standard deviation.
    """

    def __init__(self, data: NeuralData, n_positive: int = 10, noise: float = 0.1) -> None:
        self.data = data
        self.n_positive = min(n_positive, data.neighbors.shape[1])
        self.scale = noise * map_rows(lambda x: x, data.features).std(axis=0)
        self.scale_t = torch.as_tensor(self.scale, dtype=torch.float32, device=data.device)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise."""
        return x + torch.randn_like(x) * self.scale_t

    def neighbour(self, idx: np.ndarray) -> np.ndarray:
        """A random near neighbour (same coarse class) of each cell in ``idx``."""
        cols = self.data.rng.integers(0, self.n_positive, size=len(idx))
        return self.data.neighbors[idx, cols]

    def pair(self, idx: np.ndarray, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(jittered cell, jittered neighbour)`` for the cells ``idx`` with rows ``x``."""
        return self.jitter(x), self.jitter(self.data.features.rows(self.neighbour(idx)))


def unit_embedding(net: torch.nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    """Unit-length output of ``net["embed"]`` on ``net["body"]``: the query/key space of the momentum methods."""
    return torch.nn.functional.normalize(net["embed"](net["body"](x)), dim=1)


def coarse_tensor(data: NeuralData) -> torch.Tensor:
    """Coarse class per cell as a long tensor on the device."""
    return torch.as_tensor(data.coarse, dtype=torch.long, device=data.device)


@torch.no_grad()
def children_logits(data: NeuralData, model: torch.nn.Module) -> np.ndarray:
    """Cells x fine logits of ``model`` with the children of other coarse classes set to ``-inf``."""
    model.eval()
    logits = map_rows(model, data.features)
    return np.where(data.relation()[:, data.coarse].T > 0, logits, -np.inf)


def head_result(data: NeuralData, fine: np.ndarray, info: dict | None = None) -> BaselineResult:
    """Fine labels from fine-class indices under :meth:`NeuralData.relation` (named by size inside each parent)."""
    parent = np.repeat(np.arange(data.n_coarse), data.alloc)
    labels = np.empty(data.n_obs, dtype=object)
    relation: dict[str, str] = {}
    for c, name in enumerate(data.classes):
        idx = np.flatnonzero(data.coarse == c)
        if idx.size == 0:
            continue
        if np.any(parent[fine[idx]] != c):
            raise RuntimeError("a cell was given a fine class outside its coarse class")
        cell_names, names = fine_names(name, fine[idx])
        labels[idx] = cell_names
        relation.update(dict.fromkeys(names, name))
    return BaselineResult(labels=labels.astype(str), relation=relation, info=info or {})


def kmeans_result(data: NeuralData, embedding: np.ndarray, seed: int, info: dict | None = None) -> BaselineResult:
    """Fine labels by k-means inside each coarse class on a learned ``embedding`` (``alloc`` clusters each)."""
    res = kmeans_per_class(embedding, data.coarse, data.classes, data.alloc, seed)
    res.info.update(info or {})
    res.embedding = embedding
    return res


def check_range(name: str, value: float, low: float, high: float = np.inf, *, closed_low: bool = True) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``low <= value < high`` (``low < value`` if not ``closed_low``)."""
    ok = (value >= low if closed_low else value > low) and value < high
    if not ok:
        bounds = f"{'[' if closed_low else '('}{low}, {high})"
        raise ValueError(f"{name}={value!r} must be in {bounds}")
