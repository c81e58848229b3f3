"""``fal.tl.refine_images``: FALCON on images (a ResNet trained on random views), written into an AnnData."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg

from .._checks import check_bool, check_choice, check_int, check_number
from .._validate import resolve_device
from ..core.labels import fine_class_names, restricted_probs
from ..core.neighbors import within_class_neighbors
from ..core.schemes import joint_relation
from ..core.trainer import FalconConfig, train_falcon
from ..core.training import predict
from ..core.views import ViewConfig, random_view
from ..data import ImageFiles
from ..models._falcon import (
    _filled_groups,
    _guard,
    _scheme_record,
    _scheme_start,
    _warm_start,
    _write_labels,
)
from ..models._schemes import as_keys, coarse_schemes
from ..models.checkpoint import load_backbone
from ..models.resnet import resnet18, resnet50

BACKBONES = {"resnet18": resnet18, "resnet50": resnet50}


def _images(adata: ad.AnnData, image_shape: tuple[int, int, int] | None) -> np.ndarray | ImageFiles:
    """The images of ``adata``, as pixels or as files read on demand.

    Rows of ``X``: an ``N x C x H x W`` array scaled to [0, 1]. An AnnData of a folder reader (no ``X`` columns,
    ``obs["path"]``): an :class:`~falcon_sc.data.ImageFiles`.
    """
    if adata.n_vars == 0:
        if "path" not in adata.obs:
            raise ValueError(
                "adata has no pixel columns and no obs['path']: give images as flattened rows of X with image_shape=, "
                "or an AnnData from a falcon_sc.datasets folder reader (one file per row in obs['path'])."
            )
        kwargs = {} if image_shape is None else {"channels": int(image_shape[0]), "size": int(image_shape[-1])}
        return ImageFiles.from_anndata(adata, **kwargs)
    shape = image_shape
    if shape is None:
        meta = adata.uns.get("falcon_dataset", {})
        shape = meta.get("image_shape") if isinstance(meta, dict) else None
    if shape is None:
        raise ValueError(
            "image_shape is unknown: pass image_shape=(channels, height, width) (the rows of X are the flattened "
            "images), or store it in adata.uns['falcon_dataset']['image_shape']."
        )
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or int(np.prod(shape)) != adata.n_vars:
        raise ValueError(
            f"image_shape={shape} does not match the {adata.n_vars} values per row of X (channels x height x width)."
        )
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError("adata.X holds NaN or infinite pixel values; fix them before calling.")
    top = float(np.abs(X).max()) or 1.0
    return (X / top).reshape(-1, *shape)  # pixels scaled to [0, 1] (or [-1, 1])


def _thumbnails(images: np.ndarray | ImageFiles, side: int = 32, chunk: int = 4096):
    """Flattened images (files: read in chunks at ``side`` pixels), ``chunk`` rows at a time."""
    if isinstance(images, ImageFiles):
        small = ImageFiles(images.paths, size=min(side, images.size), channels=images.channels)
        for start in range(0, len(small), chunk):
            yield small.load(np.arange(start, min(start + chunk, len(small)))).reshape(
                -1, int(np.prod(small.shape[1:]))
            )
    else:
        yield images.reshape(len(images), -1)


def _initial_features(images, checkpoint, backbone: str, width: int, device, random_state: int) -> np.ndarray:
    """Unit-length features for the neighbour search: a checkpoint backbone's, else the pixels' principal components.

    Image files without a checkpoint: principal components of 32-pixel thumbnails (incremental, chunk by chunk).
    """
    if checkpoint is not None:
        net = BACKBONES[backbone](1, in_channels=images.shape[1], small_inputs=images.shape[2] <= 64, width=width)
        load_backbone(net, checkpoint)
        _, feats = predict(net.to(device), images, device, batch_size=512)
    elif isinstance(images, ImageFiles):
        from sklearn.decomposition import IncrementalPCA

        n_comps = min(50, len(images) - 1)
        pca = IncrementalPCA(n_comps)
        for block in _thumbnails(images):
            if len(block) >= n_comps:
                pca.partial_fit(block)
        feats = np.vstack([pca.transform(block) for block in _thumbnails(images)])
    else:
        from sklearn.decomposition import PCA

        flat = images.reshape(len(images), -1)
        n_comps = min(50, flat.shape[0] - 1, flat.shape[1])
        feats = PCA(n_comps, random_state=random_state).fit_transform(flat)
    return feats / np.clip(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12, None)


def refine_images(
    adata: ad.AnnData,
    coarse_key: str | Sequence[str],
    n_fine: int,
    *,
    image_shape: tuple[int, int, int] | None = None,
    backbone: Literal["resnet18", "resnet50"] = "resnet18",
    width: int = 64,
    checkpoint: str | Path | None = None,
    view: ViewConfig | None = None,
    teacher_view: Literal["strong", "centre"] = "strong",
    n_neighbors: int = 20,
    n_epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    guard_warm_start: bool = True,
    children_prior: Literal["auto", "size", "variance", "uniform"] = "variance",
    init: Literal["kmeans", "leiden"] = "kmeans",
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    random_state: int = 0,
    key_added: str = "falcon",
    show_progress: bool | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """FALCON fine classes of images inside their coarse labels, with a ResNet trained on random views.

    The rows of ``adata.X`` are flattened images (``image_shape``). Neighbours inside each coarse class are found on
    the initial features (a local self-supervised ``checkpoint``'s backbone, else the pixels' principal components);
    the warm start (Leiden inside each coarse class, over-cluster and merge) initialises the relation and the network;
    FALCON then trains the student on one random view of each image and takes the EMA teacher's targets and
    neighbour predictions on another (the reference's two strong views). Writes the keys of
    :func:`~falcon_sc.tl.refine`.

    Parameters
    ----------
    adata
        Images x pixels (``channels x height x width`` flattened, row-major).
    coarse_key
        Column of ``adata.obs`` with the coarse labels, or a list of columns (several coarse schemes; a label may be
        missing in some of them): one fine classifier, one relation per scheme (``uns[key_added]["scheme_relations"]``).
    n_fine, n_neighbors, n_epochs, batch_size, lr
        As in :func:`~falcon_sc.tl.refine`.
    children_prior
        Children per coarse class: ``"variance"`` (default; where one more k-means cluster explains the most
        variance of the initial features, :func:`~falcon_sc.core.prior.variance_counts`), ``"size"``, ``"uniform"``
        or ``"auto"`` (the neighbour graph decides, as for cells).
    init
        Warm start: ``"kmeans"`` (default; k-means inside each coarse class on the initial features) or ``"leiden"``
        (the cells' over-cluster-and-merge). On digits k-means with the variance prior starts at 0.955 accuracy and
        Leiden at 0.83 (:doc:`/images`).
    guard_warm_start, accelerator, random_state, key_added, show_progress, copy
        As in :func:`~falcon_sc.tl.refine`.
    image_shape
        ``(channels, height, width)``; default ``adata.uns["falcon_dataset"]["image_shape"]``.
    backbone
        ``"resnet18"`` (CIFAR stem for images up to 64 px) or ``"resnet50"``.
    width
        Channels of the first ResNet stage (64 standard; narrower for small images on a CPU).
    checkpoint
        Local self-supervised checkpoint for the backbone (:func:`~falcon_sc.models.load_backbone`).
    view
        Random view settings (:class:`~falcon_sc.core.views.ViewConfig`); default the reference's strong view
        (crop 0.08-1, flip). Digits are not flip-invariant: pass ``ViewConfig(scale=(0.5, 1.0), flip=0.0)``.
    teacher_view
        What the EMA teacher sees: ``"strong"`` another random view (the reference on CIFAR) or ``"centre"`` the
        image as loaded, resized and centre-cropped (the reference on BREEDS and tieredImageNet).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> from falcon_sc.core.views import ViewConfig
    >>> adata = fal.datasets.digits()
    >>> crops = ViewConfig(scale=(0.5, 1.0), flip=0.0)
    >>> fal.tl.refine_images(adata, "coarse", 10, width=16, view=crops)  # doctest: +SKIP
    """
    if not isinstance(adata, ad.AnnData):
        raise TypeError(f"adata must be an AnnData, got {type(adata).__name__}.")
    keys = as_keys(coarse_key) if isinstance(coarse_key, list | tuple) else [coarse_key]
    for key in keys:
        if key not in adata.obs:
            raise KeyError(f"coarse_key={key!r} is not a column of adata.obs.")
    check_choice("children_prior", children_prior, ("auto", "size", "variance", "uniform"))
    check_choice("init", init, ("kmeans", "leiden"))
    check_choice("teacher_view", teacher_view, ("strong", "centre"))
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r} must be one of {sorted(BACKBONES)}.")
    for name, value, minimum in (("width", width, 1), ("n_neighbors", n_neighbors, 1), ("batch_size", batch_size, 1)):
        check_int(name, value, minimum)
    check_int("n_epochs", n_epochs, 1, allow_none=True)
    check_int("random_state", random_state, 0)
    check_number("lr", lr, low=0.0, open_low=True)
    for name, value in (("guard_warm_start", guard_warm_start), ("copy", copy)):
        check_bool(name, value)
    check_bool("show_progress", show_progress, allow_none=True)
    if view is not None and not isinstance(view, ViewConfig):
        raise TypeError(f"view must be a falcon_sc.core.views.ViewConfig or None, got {type(view).__name__}.")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist; give the path of a local file.")
    schemes = coarse_schemes(adata.obs, keys)
    check_int("n_fine", n_fine)
    if n_fine <= max(schemes.n_coarse):
        raise ValueError(
            f"n_fine={n_fine!r} must be an int above the number of coarse classes ({max(schemes.n_coarse)})."
        )
    n_fine, width, random_state = int(n_fine), int(width), int(random_state)
    device = resolve_device(accelerator)
    images = _images(adata, image_shape)
    multi = len(keys) > 1
    coarse, coarse_names = (schemes.joint, schemes.joint_names) if multi else (schemes.codes[:, 0], schemes.names[0])
    adata = adata.copy() if copy else adata

    space = _initial_features(images, checkpoint, backbone, width, device, random_state)
    groups, group_names = _filled_groups(schemes, space, n_fine) if multi else (coarse, coarse_names)
    neighbors = within_class_neighbors(space, groups, n_neighbors, random_state=random_state)
    initial, init_labels, targets = _warm_start(
        space, neighbors, groups, group_names, n_fine, children_prior, init, random_state
    )
    start = {"relation": initial, "target_counts": targets}
    if multi:
        start = _scheme_start(schemes, init_labels, n_fine)
    torch.manual_seed(random_state)
    small = images.shape[2] <= 64
    network = BACKBONES[backbone](n_fine, in_channels=images.shape[1], small_inputs=small, width=width)
    if checkpoint is not None:
        load_backbone(network, checkpoint)
    view = ViewConfig() if view is None else view
    gen = torch.Generator().manual_seed(random_state)

    def random_views(x: torch.Tensor) -> torch.Tensor:
        return random_view(x, view, gen)

    cfg = FalconConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        lambda_reg=0.05,
        regulariser="prior",
        show_progress=True if show_progress is None else bool(show_progress),
    )
    result = train_falcon(
        network,
        images,
        schemes.codes if multi else coarse,
        neighbors,
        schemes.n_coarse if multi else len(coarse_names),
        cfg,
        **start,
        init_labels=init_labels,
        device=device,
        seed=random_state,
        student_view=random_views,
        teacher_view=random_views if teacher_view == "strong" else None,
    )
    relation = joint_relation(result.relations, schemes.table) if multi else result.relation
    relation = relation.astype(bool)
    if guard_warm_start and result.warm_probs is not None and not multi:
        _guard(result, initial.astype(bool), coarse, space, random_state)
    labels = restricted_probs(result.probs, relation, coarse).argmax(axis=1)
    classes = SimpleNamespace(
        relation=relation.astype(np.int8),
        fine_names=list(fine_class_names(result.relation, labels, schemes.names[0])),
        coarse_names=coarse_names,
        schemes=_scheme_record(schemes, result.relations) if multi else None,
    )
    _write_labels(adata, classes, result.probs, result.embedding, coarse, key_added)
    warm_names = fine_class_names(initial.astype(bool), init_labels, group_names)
    adata.obs[f"{key_added}_warm_start"] = pd.Categorical(warm_names[init_labels])
    adata.uns[key_added]["history"] = pd.DataFrame(
        [{k: v for k, v in r.items() if k != "children"} for r in result.history]
    )
    adata.uns[key_added]["params"] = {
        "coarse_key": keys if multi else keys[0],
        "n_fine": n_fine,
        "backbone": backbone,
        "width": width,
        "checkpoint": "" if checkpoint is None else str(checkpoint),
        "view_scale": np.asarray(view.scale),
        "view_flip": view.flip,
        "teacher_view": teacher_view,
        "random_state": random_state,
        **{k: v for k, v in cfg.to_dict().items() if v is not None},
    }
    logg.info(f"    refine_images: {n_fine} fine classes under {len(coarse_names)} coarse classes")
    return adata if copy else None
