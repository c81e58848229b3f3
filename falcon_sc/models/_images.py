"""Images as a FALCON problem: the pixels or files of an AnnData, a ResNet, and the initial features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch

from .._coarse import CoarseSchemes
from ..core.training import predict
from ..data import ImageFiles
from ..errors import DegenerateInputError
from ._pipeline import Problem, filled_groups
from .checkpoint import load_backbone
from .resnet import resnet18, resnet50

BACKBONES = {"resnet18": resnet18, "resnet50": resnet50}


def image_array(adata: ad.AnnData, image_shape: tuple[int, int, int] | None) -> np.ndarray | ImageFiles:
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
        if image_shape is None:
            return ImageFiles.from_anndata(adata)
        return ImageFiles.from_anndata(adata, channels=int(image_shape[0]), size=int(image_shape[-1]))
    given: Any = image_shape
    if given is None:
        meta = adata.uns.get("falcon_dataset", {})
        given = meta.get("image_shape") if isinstance(meta, dict) else None
    if given is None:
        raise ValueError(
            "image_shape is unknown: pass image_shape=(channels, height, width) (the rows of X are the flattened "
            "images), or store it in adata.uns['falcon_dataset']['image_shape']."
        )
    shape = tuple(int(v) for v in given)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"image_shape={tuple(given)} must be three positive sizes (channels, height, width), e.g. (3, 32, 32)."
        )
    if int(np.prod(shape)) != adata.n_vars:
        raise ValueError(
            f"image_shape={shape} does not match the {adata.n_vars} values per row of X (channels x height x width)."
        )
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    X = X.astype(np.float32)
    if not np.isfinite(X).all():
        raise ValueError("adata.X holds NaN or infinite pixel values; fix them before calling.")
    if X.shape[0] and not (X != X[:1]).any():
        what = "blank (every pixel is 0)" if not X[:1].any() else "the same image (no pixel varies across images)"
        raise DegenerateInputError(
            f"the {X.shape[0]:,} images in adata.X are all {what}: there is nothing to learn from; check how the "
            "images were read (e.g. a wrong dtype or scaling, or an empty folder of placeholders)."
        )
    top = float(np.abs(X).max()) or 1.0
    return (X / top).reshape(-1, *shape)  # pixels scaled to [0, 1] (or [-1, 1])


def thumbnails(images: np.ndarray | ImageFiles, side: int = 32, chunk: int = 4096) -> Iterator[np.ndarray]:
    """Flattened images (files: read in chunks at ``side`` pixels), ``chunk`` rows at a time."""
    if isinstance(images, ImageFiles):
        small = ImageFiles(list(images.paths), size=min(side, images.size), channels=images.channels)
        for start in range(0, len(small), chunk):
            yield small.load(np.arange(start, min(start + chunk, len(small)))).reshape(
                -1, int(np.prod(small.shape[1:]))
            )
    else:
        yield images.reshape(len(images), -1)


def initial_features(images, checkpoint, backbone: str, width: int, device, random_state: int) -> np.ndarray:
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
        for block in thumbnails(images):
            if len(block) >= n_comps:
                pca.partial_fit(block)
        feats = np.vstack([pca.transform(block) for block in thumbnails(images)])
    else:
        from sklearn.decomposition import PCA

        flat = images.reshape(len(images), -1)
        n_comps = min(50, flat.shape[0] - 1, flat.shape[1])
        feats = PCA(n_comps, random_state=random_state).fit_transform(flat)
    check_features_vary(
        feats, "the initial features of the images" + (" (the checkpoint's backbone)" if checkpoint else "")
    )
    return feats / np.clip(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12, None)


def check_features_vary(feats: np.ndarray, what: str) -> None:
    """Refuse features that are the same for every image (or not finite): the neighbour search would be arbitrary."""
    feats = np.asarray(feats)
    if not np.isfinite(feats).all() or (
        feats.shape[0] and not (np.ptp(feats, axis=0) > 1e-8 * (1.0 + np.abs(feats).max())).any()
    ):
        raise DegenerateInputError(
            f"{what} are the same for every image (or not finite): the images hold nothing to learn from (blank or "
            "identical images?); check how the images were read."
        )


def image_network(
    backbone: str, n_fine: int, images: np.ndarray | ImageFiles, width: int, checkpoint: str | Path | None
) -> torch.nn.Module:
    """A ResNet with ``n_fine`` outputs for ``images`` (CIFAR stem up to 64 px), from ``checkpoint`` when given."""
    network = BACKBONES[backbone](n_fine, in_channels=images.shape[1], small_inputs=images.shape[2] <= 64, width=width)
    if checkpoint is not None:
        load_backbone(network, checkpoint)
    return network


def image_problem(schemes: CoarseSchemes, images: np.ndarray | ImageFiles, space: np.ndarray, n_fine: int) -> Problem:
    """The FALCON problem of ``images``: their coarse labels and the neighbour space ``space`` (initial features)."""
    multi = len(schemes.keys) > 1
    coarse, coarse_names = (schemes.joint, schemes.joint_names) if multi else (schemes.codes[:, 0], schemes.names[0])
    groups, group_names, table = filled_groups(schemes, space, n_fine) if multi else (coarse, coarse_names, None)
    return Problem(
        features=images,
        space=space,
        coarse=coarse,
        coarse_names=coarse_names,
        groups=groups,
        group_names=group_names,
        schemes=schemes if multi else None,
        group_table=table,
    )
