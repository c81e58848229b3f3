"""What the neural baselines share with FALCON and each other: inputs, networks, neighbours, views, loop, read-outs.

Every neural baseline sees the cells exactly as :func:`falcon_sc.tl.refine` does (global + within-class principal
components, neighbours searched inside the coarse class), trains an MLP of the same shape with the same loop
(:func:`falcon_sc.core.training.train_minibatches`) on the same device logic, and reads fine classes out either from
a head whose children are allotted to coarse classes by size, or by k-means inside each coarse class.

On images (:func:`image_neural_data`) the same method code runs unchanged on what :class:`NeuralData` carries
instead: the pixels as ``N x C x H x W``, the ResNet-18 of :func:`falcon_sc.tl.refine_images` (:class:`ResNetNetworks`
in place of :class:`MLPNetworks`), random views (:class:`ImageViews` in place of :class:`Views`) and neighbours on
FALCON's initial image features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from anndata import AnnData
from torch import nn

from .._checks import check_int
from .._validate import resolve_device
from ..core.neighbors import within_class_neighbors
from ..core.training import Features, LoopConfig, epochs_for_steps, map_rows
from ..core.views import STRONG, ViewConfig, random_view
from ..data import ImageFiles
from ..models.checkpoint import load_backbone
from ..models.mlp import MLPClassifier, mlp_body
from ..models.resnet import ResNet, resnet18
from ..pp import cell_features
from ._common import BaselineResult, allot_clusters, check_n_fine, coarse_labels, fine_names
from ._images import check_image_options, image_inputs, wants_images
from .kmeans_within import kmeans_per_class

HIDDEN: tuple[int, ...] = (64, 64, 64, 64)
"""Hidden widths of every baseline MLP (those of FALCON's)."""


@dataclass(frozen=True)
class MLPNetworks:
    """The networks of the cell baselines: FALCON's MLP on ``n_input`` features.

    Attributes
    ----------
    n_input
        Input features per cell.
    hidden
        Hidden widths (:data:`HIDDEN`).
    """

    n_input: int
    hidden: tuple[int, ...] = HIDDEN

    @property
    def body_width(self) -> int:
        """Output width of :meth:`body`."""
        return self.hidden[-1]

    def classifier(self, n_out: int) -> nn.Module:
        """``MLPClassifier(n_input, n_out, hidden)``: ``n_out`` logits, ``.embed`` the last hidden layer."""
        return MLPClassifier(self.n_input, n_out, self.hidden)

    def body(self) -> nn.Module:
        """The hidden layers alone (inputs -> :attr:`body_width` features)."""
        return mlp_body(self.n_input, self.hidden)


@dataclass(frozen=True)
class ResNetNetworks:
    """The networks of the image baselines: the ResNet-18 of :func:`falcon_sc.tl.refine_images`.

    Attributes
    ----------
    in_channels
        Image channels.
    small_inputs
        CIFAR stem (images up to 64 px), as ``refine_images``.
    width
        Channels of the first stage.
    checkpoint
        Local self-supervised checkpoint loaded into every backbone (:func:`~falcon_sc.models.load_backbone`).
    """

    in_channels: int
    small_inputs: bool
    width: int
    checkpoint: str | Path | None = None

    @property
    def body_width(self) -> int:
        """Output width of :meth:`body` (the pooled features: 8 x ``width``)."""
        return 8 * self.width

    def classifier(self, n_out: int) -> ResNet:
        """ResNet-18 with ``n_out`` logits (``.embed``: the pooled features, ``.head``: the linear layer)."""
        net = resnet18(n_out, small_inputs=self.small_inputs, in_channels=self.in_channels, width=self.width)
        if self.checkpoint is not None:
            load_backbone(net, self.checkpoint)
        return net

    def body(self) -> nn.Module:
        """The backbone alone (images -> :attr:`body_width` pooled features): the classifier with no head."""
        net = self.classifier(1)
        net.head = nn.Identity()  # type: ignore[assignment]  # ResNet.head is typed Linear
        return net


class Networks(Protocol):
    """What the baselines build their networks from (:class:`MLPNetworks` for cells, :class:`ResNetNetworks`)."""

    @property
    def body_width(self) -> int:
        """Output width of :meth:`body`."""

    def classifier(self, n_out: int) -> nn.Module:
        """A network with ``n_out`` logits."""

    def body(self) -> nn.Module:
        """A feature network with :attr:`body_width` outputs."""


class ViewSource(Protocol):
    """The views the baselines train on (:class:`Views` for cells, :class:`ImageViews` for images)."""

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """One random view of each row of ``x``."""

    def neighbour(self, idx: np.ndarray) -> np.ndarray:
        """A random near neighbour (same coarse class) of each sample in ``idx``."""

    def pair(self, idx: np.ndarray, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views (a positive pair) of the samples ``idx`` with rows ``x``."""


@dataclass
class NeuralData:
    """One dataset as the neural baselines see it.

    Attributes
    ----------
    features
        Network inputs on the device (cells x features, or images ``N x C x H x W``).
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
    initial
        Cells x dimensions that k-means initialisations read (the standardised inputs for cells, the initial
        features for images).
    networks
        How the method's networks are built (:class:`MLPNetworks` or :class:`ResNetNetworks`).
    make_views
        ``make_views(data)``: the view source of :meth:`views` (:class:`Views` or :class:`ImageViews`).
    image_shape
        ``(channels, height, width)`` on the image path, ``None`` for cells.
    n_steps
        Optimisation steps of every training loop (``None``: :func:`loop_config`'s default).
    """

    features: Features
    coarse: np.ndarray
    classes: list[str]
    neighbors: np.ndarray
    alloc: np.ndarray
    device: torch.device
    rng: np.random.Generator
    initial: np.ndarray
    networks: Networks
    make_views: Callable[[NeuralData], ViewSource]
    image_shape: tuple[int, int, int] | None = None
    n_steps: int | None = None

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return self.features.n_obs

    @property
    def n_coarse(self) -> int:
        """Number of coarse classes."""
        return len(self.classes)

    @property
    def images(self) -> bool:
        """Whether the samples are images (the image path)."""
        return self.image_shape is not None

    def relation(self) -> np.ndarray:
        """``n_fine x n_coarse`` 0/1 relation with ``alloc[c]`` consecutive children under coarse class ``c``."""
        parent = np.repeat(np.arange(self.n_coarse), self.alloc)
        return np.eye(self.n_coarse, dtype=np.float32)[parent]

    def network(self, n_out: int) -> nn.Module:
        """A fresh classifier with ``n_out`` logits on the device (the MLP for cells, the ResNet for images)."""
        return self.networks.classifier(n_out).to(self.device)

    def body(self) -> nn.Module:
        """A fresh feature network with :attr:`body_width` outputs (not moved: it goes into a larger module)."""
        return self.networks.body()

    @property
    def body_width(self) -> int:
        """Output width of :meth:`body`."""
        return self.networks.body_width

    def views(self) -> ViewSource:
        """The views the contrastive and self-labelling methods train on."""
        return self.make_views(self)


def neural_data(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    batch_key: str | None,
    random_state: int,
    accelerator: str = "auto",
    n_neighbors: int = 20,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    n_steps: int | None = None,
) -> NeuralData:
    """Validate the inputs and build :class:`NeuralData` (``adata`` is not modified); seeds numpy and torch.

    The inputs are FALCON's (:func:`falcon_sc.pp.cell_features`), standardised per feature: without FALCON's
    warm start, a randomly initialised MLP otherwise sees little beyond the first principal components. When any
    image option (``image_shape``, ``width``, ``view``, ``checkpoint``) is given, the images of
    :func:`image_neural_data` instead.
    """
    check_int("n_steps", n_steps, 1, allow_none=True)
    if wants_images(image_shape=image_shape, width=width, view=view, checkpoint=checkpoint):
        check_image_options(image_shape=image_shape, width=width, view=view, checkpoint=checkpoint, batch_key=batch_key)
        return image_neural_data(
            adata,
            coarse_key,
            n_fine,
            image_shape=image_shape,
            width=width,
            view=view,
            checkpoint=checkpoint,
            random_state=random_state,
            accelerator=accelerator,
            n_neighbors=n_neighbors,
            n_steps=n_steps,
        )
    classes, codes, n_fine, device = _coarse_inputs(adata, coarse_key, n_fine, accelerator)
    torch.manual_seed(random_state)
    inputs = cell_features(adata, codes, batch_key=batch_key, random_state=random_state)
    neighbors = within_class_neighbors(inputs.neighbour_space, codes, n_neighbors, random_state=random_state)
    features = np.asarray(inputs.features, dtype=np.float32)
    features = (features - features.mean(axis=0)) / np.clip(features.std(axis=0), 1e-6, None)
    return _assemble(
        features,
        codes,
        classes,
        neighbors,
        n_fine,
        device,
        random_state,
        initial=features,
        networks=MLPNetworks(features.shape[1]),
        make_views=Views,
        n_steps=n_steps,
    )


def image_neural_data(
    adata: AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    random_state: int = 0,
    accelerator: str = "auto",
    n_neighbors: int = 20,
    n_steps: int | None = None,
) -> NeuralData:
    """:class:`NeuralData` of images: pixels, ResNet-18, random views, neighbours on the initial features.

    The rows of ``adata.X`` are flattened images (``image_shape``, default
    ``adata.uns["falcon_dataset"]["image_shape"]``), scaled to [0, 1] as :func:`falcon_sc.tl.refine_images` does.
    Neighbours inside each coarse class are searched on the unit-length initial features (a local ``checkpoint``'s
    backbone, else the pixels' principal components), which are also :attr:`NeuralData.initial`. Networks are
    ResNet-18s of ``width`` (default 16; CIFAR stem up to 64 px), loaded from ``checkpoint`` when given; views are
    :func:`~falcon_sc.core.views.random_view` with ``view`` (default: the strong view, crops of 8-100 % of the area
    and flips). ``adata`` is not modified; seeds numpy and torch.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> from falcon_sc.baselines._neural import image_neural_data
    >>> from falcon_sc.core.views import ViewConfig
    >>> adata = fal.datasets.digits()
    >>> data = image_neural_data(adata, "coarse", 10, width=8, view=ViewConfig(scale=(0.5, 1.0), flip=0.0))
    >>> tuple(data.features.rows([0, 1]).shape), data.body_width
    ((2, 1, 8, 8), 64)
    """
    width = check_image_options(image_shape=image_shape, width=width, view=view, checkpoint=checkpoint)
    check_int("n_neighbors", n_neighbors, 1)
    check_int("n_steps", n_steps, 1, allow_none=True)
    classes, codes, n_fine, device = _coarse_inputs(adata, coarse_key, n_fine, accelerator)
    torch.manual_seed(random_state)
    images, initial = image_inputs(adata, image_shape, width, checkpoint, device, random_state)
    neighbors = within_class_neighbors(initial, codes, n_neighbors, random_state=random_state)
    return _assemble(
        images,
        codes,
        classes,
        neighbors,
        n_fine,
        device,
        random_state,
        initial=initial,
        networks=ResNetNetworks(images.shape[1], images.shape[2] <= 64, width, checkpoint),
        make_views=partial(ImageViews, view=STRONG if view is None else view, seed=random_state),
        image_shape=tuple(images.shape[1:]),
        n_steps=n_steps,
    )


def _coarse_inputs(
    adata: AnnData, coarse_key: str, n_fine: int, accelerator: str
) -> tuple[list[str], np.ndarray, int, torch.device]:
    """Coarse class names, class index per sample, the checked ``n_fine`` and the device."""
    coarse_cat = coarse_labels(adata, coarse_key)
    classes = [str(c) for c in coarse_cat.categories]
    codes = np.asarray(coarse_cat.codes, dtype=np.int64)
    n_fine = check_n_fine(n_fine, len(classes), adata.n_obs)
    return classes, codes, n_fine, resolve_device(accelerator)


def _assemble(
    inputs: np.ndarray | ImageFiles,
    codes: np.ndarray,
    classes: list[str],
    neighbors: np.ndarray,
    n_fine: int,
    device: torch.device,
    random_state: int,
    **rest,
) -> NeuralData:
    """:class:`NeuralData` with the fine classes allotted by coarse class size and a generator seeded alike."""
    return NeuralData(
        features=Features(inputs, device),
        coarse=codes,
        classes=classes,
        neighbors=neighbors,
        alloc=allot_clusters(np.bincount(codes, minlength=len(classes)), n_fine),
        device=device,
        rng=np.random.default_rng(random_state),
        **rest,
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
    """Adam, ``batch_size`` cells a step, enough epochs for ``min_steps`` steps (at least 10, at most 200).

    With :attr:`NeuralData.n_steps` set, exactly that many steps instead (whatever the number of samples trained on).
    """
    if data.n_steps is not None:
        n = int(data.n_steps)
        return LoopConfig(n_epochs=n, max_steps=n, batch_size=batch_size, lr=lr, show_progress=show_progress, desc=desc)
    n_epochs = epochs_for_steps(data.n_obs, batch_size, min_steps, max_epochs=200)
    return LoopConfig(n_epochs=n_epochs, batch_size=batch_size, lr=lr, show_progress=show_progress, desc=desc)


def total_steps(data: NeuralData, cfg: LoopConfig) -> int:
    """Optimisation steps of a loop over all of ``data`` with ``cfg``."""
    total = cfg.n_epochs * -(-data.n_obs // min(cfg.batch_size, data.n_obs))
    return total if cfg.max_steps is None else min(total, cfg.max_steps)


class _Positives:
    """Within-coarse neighbours as positives: the part every view source shares."""

    def __init__(self, data: NeuralData, n_positive: int) -> None:
        self.data = data
        self.n_positive = min(n_positive, data.neighbors.shape[1])

    def neighbour(self, idx: np.ndarray) -> np.ndarray:
        """A random near neighbour (same coarse class) of each sample in ``idx``."""
        cols = self.data.rng.integers(0, self.n_positive, size=len(idx))
        return self.data.neighbors[idx, cols]


class Views(_Positives):
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
        super().__init__(data, n_positive)
        self.scale = noise * map_rows(lambda x: x, data.features).std(axis=0)
        self.scale_t = torch.as_tensor(self.scale, dtype=torch.float32, device=data.device)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` plus Gaussian noise."""
        return x + torch.randn_like(x) * self.scale_t

    def pair(self, idx: np.ndarray, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(jittered cell, jittered neighbour)`` for the cells ``idx`` with rows ``x``."""
        return self.jitter(x), self.jitter(self.data.features.rows(self.neighbour(idx)))


class ImageViews(_Positives):
    """Random views of images for the baselines, as FALCON's student view on images.

    ``jitter`` is one :func:`~falcon_sc.core.views.random_view` (resized crop and flip) of each image; the positive
    pair of the contrastive methods is two independent random views of the same image (SimCLR / MoCo), and
    ``neighbour`` (SCAN-C) draws one of the ``n_positive`` nearest neighbours on the initial features inside the
    coarse class. The views draw from their own torch generator, seeded with ``seed``.

    Parameters
    ----------
    data
        The dataset (images).
    view
        Random view settings.
    seed
        Seed of the views' generator.
    n_positive
        Neighbours a neighbour is drawn from.

    Examples
    --------
    >>> import numpy as np
    >>> import falcon_sc as fal
    >>> from falcon_sc.baselines._neural import image_neural_data
    >>> data = image_neural_data(fal.datasets.digits(), "coarse", 10, width=8)
    >>> idx = np.arange(4)
    >>> a, b = data.views().pair(idx, data.features.rows(idx))
    >>> tuple(a.shape), bool((a != b).any())
    ((4, 1, 8, 8), True)
    """

    def __init__(self, data: NeuralData, view: ViewConfig = STRONG, seed: int = 0, n_positive: int = 10) -> None:
        super().__init__(data, n_positive)
        self.view = view
        self.generator = torch.Generator().manual_seed(seed)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        """A random view of every image of ``x``."""
        return random_view(x, self.view, self.generator)

    def pair(self, idx: np.ndarray, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent random views of the images ``idx`` (rows ``x``)."""
        return self.jitter(x), self.jitter(x)


def unit_embedding(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Unit-length output of ``net["embed"]`` on ``net["body"]``: the query/key space of the momentum methods."""
    return torch.nn.functional.normalize(net.get_submodule("embed")(net.get_submodule("body")(x)), dim=1)


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
