"""``fal.tl.refine_images``: FALCON on images (a ResNet trained on random views), written into an AnnData."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import torch
from scanpy import logging as logg

from .._checks import check_bool, check_choice, check_int
from .._coarse import CoarseSchemes, as_keys, coarse_schemes
from .._layout import check_key_added, check_obs_key
from .._validate import check_adata, resolve_device
from ..core.trainer import FalconConfig
from ..core.views import ViewConfig, random_view
from ..errors import DegenerateInputError
from ..models._images import BACKBONES, image_array, image_network, image_problem, initial_features
from ..models._params import FitParams
from ..models._pipeline import Engine, fit_falcon
from ..models._write import write_image_results


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

    Raises
    ------
    falcon_sc.errors.DegenerateInputError
        Before any training or warm start: blank images or images that are all the same (no pixel varies), initial
        features that are the same for every image, or a coarse class asked for more fine classes than it has images.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> from falcon_sc.core.views import ViewConfig
    >>> adata = fal.datasets.digits()
    >>> crops = ViewConfig(scale=(0.5, 1.0), flip=0.0)
    >>> fal.tl.refine_images(adata, "coarse", 10, width=16, view=crops)  # doctest: +SKIP
    """
    check_adata(adata, what="refine_images")
    keys = as_keys(coarse_key)
    for key in keys:
        check_obs_key("coarse_key", key, adata.obs)
    check_choice("children_prior", children_prior, ("auto", "size", "variance", "uniform"))
    check_choice("init", init, ("kmeans", "leiden"))
    check_choice("teacher_view", teacher_view, ("strong", "centre"))
    if backbone not in BACKBONES:
        raise ValueError(f"backbone={backbone!r} must be one of {sorted(BACKBONES)}.")
    check_int("width", width, 1)
    check_key_added(key_added, coarse_keys=keys, batch_key=None)
    check_bool("copy", copy)
    fit = FitParams(
        n_neighbors=n_neighbors,
        children_prior=children_prior,
        init=init,
        guard_warm_start=guard_warm_start,
        accelerator=accelerator,
        random_state=random_state,
    )
    cfg = FalconConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        show_progress=True if show_progress is None else show_progress,
    )
    if view is not None and not isinstance(view, ViewConfig):
        raise TypeError(f"view must be a falcon_sc.core.views.ViewConfig or None, got {type(view).__name__}.")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist; give the path of a local file.")
    schemes = coarse_schemes(adata.obs, keys)  # the coarse labels, read and checked once
    n_fine = _check_n_fine(schemes, n_fine)
    device = resolve_device(accelerator)
    images = image_array(adata, image_shape)
    adata = adata.copy() if copy else adata
    space = initial_features(images, checkpoint, backbone, width, device, fit.random_state)
    problem = image_problem(schemes, images, space, n_fine)
    view = ViewConfig() if view is None else view
    views = partial(random_view, cfg=view, generator=torch.Generator().manual_seed(fit.random_state))
    engine = Engine(
        partial(image_network, backbone, images=images, width=int(width), checkpoint=checkpoint),
        device,
        student_view=views,
        teacher_view=views if teacher_view == "strong" else None,
    )
    outcome = fit_falcon(problem, n_fine, fit, cfg, engine)
    params = {
        "coarse_key": keys if len(keys) > 1 else keys[0],
        "n_fine": n_fine,
        "backbone": backbone,
        "width": int(width),
        "checkpoint": "" if checkpoint is None else str(checkpoint),
        "view_scale": np.asarray(view.scale),
        "view_flip": view.flip,
        "teacher_view": teacher_view,
        "random_state": fit.random_state,
        **{k: v for k, v in cfg.to_dict().items() if v is not None},
    }
    write_image_results(adata, key_added, problem, outcome, params)
    logg.info(f"    refine_images: {n_fine} fine classes under {len(problem.coarse_names)} coarse classes")
    return adata if copy else None


def _check_n_fine(schemes: CoarseSchemes, n_fine: int) -> int:
    """``n_fine`` must be an int above the number of coarse classes of every scheme, and at most one per image."""
    check_int("n_fine", n_fine)
    n_coarse = max(schemes.n_coarse)
    if n_fine <= n_coarse:
        raise ValueError(f"n_fine={n_fine!r} must be an int above the number of coarse classes ({n_coarse}).")
    n_images = int(schemes.codes.shape[0])
    if n_fine > n_images:
        raise DegenerateInputError(f"n_fine={n_fine} exceeds the number of images ({n_images}); ask for fewer.")
    return int(n_fine)
