"""``fal.tl.refine_images``: FALCON on images (a ResNet trained on random views), written into an AnnData."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scanpy import logging as logg

from .._validate import check_bool, check_coarse_labels, check_int, check_number, resolve_device
from ..core.neighbors import within_class_neighbors
from ..core.trainer import FalconConfig, train_falcon
from ..core.training import predict
from ..core.views import ViewConfig, random_view
from ..models._falcon import _guard, _warm_start, _write_labels, fine_class_names, restricted_probs
from ..models.checkpoint import load_backbone
from ..models.resnet import resnet18, resnet50

BACKBONES = {"resnet18": resnet18, "resnet50": resnet50}


def _images(adata: ad.AnnData, image_shape: tuple[int, int, int] | None) -> np.ndarray:
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


def _initial_features(images: np.ndarray, checkpoint, backbone: str, width: int, device, random_state: int):
    """Unit-length features for the neighbour search: a checkpoint backbone's, else the pixels' principal components."""
    if checkpoint is not None:
        net = BACKBONES[backbone](1, in_channels=images.shape[1], small_inputs=images.shape[2] <= 64, width=width)
        load_backbone(net, checkpoint)
        _, feats = predict(net.to(device), images, device, batch_size=512)
    else:
        from sklearn.decomposition import PCA

        flat = images.reshape(len(images), -1)
        n_comps = min(50, flat.shape[0] - 1, flat.shape[1])
        feats = PCA(n_comps, random_state=random_state).fit_transform(flat)
    return feats / np.clip(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12, None)


def refine_images(
    adata: ad.AnnData,
    coarse_key: str,
    n_fine: int,
    *,
    image_shape: tuple[int, int, int] | None = None,
    backbone: Literal["resnet18", "resnet50"] = "resnet18",
    width: int = 64,
    checkpoint: str | Path | None = None,
    view: ViewConfig | None = None,
    n_neighbors: int = 20,
    n_epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    guard_warm_start: bool = True,
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
    coarse_key, n_fine, n_neighbors, n_epochs, batch_size, lr
        As in :func:`~falcon_sc.tl.refine`.
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
    if coarse_key not in adata.obs:
        raise KeyError(f"coarse_key={coarse_key!r} is not a column of adata.obs.")
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
    coarse_cat = check_coarse_labels(adata.obs[coarse_key], coarse_key)
    coarse_names = [str(c) for c in coarse_cat.categories]
    check_int("n_fine", n_fine)
    if n_fine <= len(coarse_names):
        raise ValueError(f"n_fine={n_fine!r} must be an int above the number of coarse classes ({len(coarse_names)}).")
    n_fine, width, random_state = int(n_fine), int(width), int(random_state)
    device = resolve_device(accelerator)
    images = _images(adata, image_shape)
    coarse = coarse_cat.codes.astype(np.int64)
    adata = adata.copy() if copy else adata

    space = _initial_features(images, checkpoint, backbone, width, device, random_state)
    neighbors = within_class_neighbors(space, coarse, n_neighbors, random_state=random_state)
    initial, init_labels, targets = _warm_start(
        space, neighbors, coarse, coarse_names, n_fine, "auto", "leiden", random_state
    )
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
        coarse,
        neighbors,
        len(coarse_names),
        cfg,
        relation=initial,
        target_counts=targets,
        init_labels=init_labels,
        device=device,
        seed=random_state,
        student_view=random_views,
        teacher_view=random_views,
    )
    if guard_warm_start and result.warm_probs is not None:
        _guard(result, initial.astype(bool), coarse, space, random_state)
    relation = result.relation.astype(bool)
    labels = restricted_probs(result.probs, relation, coarse).argmax(axis=1)
    classes = SimpleNamespace(
        relation=relation.astype(np.int8),
        fine_names=list(fine_class_names(relation, labels, coarse_names)),
        coarse_names=coarse_names,
    )
    _write_labels(adata, classes, result.probs, result.embedding, coarse, key_added)
    warm_names = fine_class_names(initial.astype(bool), init_labels, coarse_names)
    adata.obs[f"{key_added}_warm_start"] = pd.Categorical(warm_names[init_labels])
    adata.uns[key_added]["history"] = pd.DataFrame(
        [{k: v for k, v in r.items() if k != "children"} for r in result.history]
    )
    adata.uns[key_added]["params"] = {
        "coarse_key": coarse_key,
        "n_fine": n_fine,
        "backbone": backbone,
        "width": width,
        "checkpoint": "" if checkpoint is None else str(checkpoint),
        "view_scale": np.asarray(view.scale),
        "view_flip": view.flip,
        "random_state": random_state,
        **{k: v for k, v in cfg.to_dict().items() if v is not None},
    }
    logg.info(f"    refine_images: {n_fine} fine classes under {len(coarse_names)} coarse classes")
    return adata if copy else None
