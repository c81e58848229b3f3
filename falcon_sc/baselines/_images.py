"""The image path of the baselines: which calls take it, their checks, the pixels and the initial features.

A baseline runs on images when any of its image options (``image_shape``, ``width``, ``view``, ``checkpoint``) is
given: the rows of ``X`` are then flattened images, read back as ``N x C x H x W`` in [0, 1] exactly as
:func:`falcon_sc.tl.refine_images` reads them, and the initial features (a local checkpoint's backbone, else the
pixels' principal components) are FALCON's for images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from anndata import AnnData

from .._checks import check_int, is_int
from ..core.views import ViewConfig
from ..data import ImageFiles
from ..models._images import image_array, initial_features

DEFAULT_WIDTH = 16
"""ResNet-18 width (channels of the first stage) of the image baselines when ``width`` is not given."""


def wants_images(**options: Any) -> bool:
    """Whether any image option (``image_shape=``, ``width=``, ``view=``, ``checkpoint=``) is given (not ``None``)."""
    return any(value is not None for value in options.values())


def check_image_options(
    *,
    image_shape: tuple[int, int, int] | None = None,
    width: int | None = None,
    view: ViewConfig | None = None,
    checkpoint: str | Path | None = None,
    batch_key: str | None = None,
) -> int:
    """Check the image options before any work; returns the ResNet width (:data:`DEFAULT_WIDTH` when ``None``).

    Raises
    ------
    TypeError, ValueError
        An ``image_shape`` that is not three positive ints, a ``width`` that is not an int >= 1, a ``view`` that
        is not a :class:`~falcon_sc.core.views.ViewConfig`, or a ``batch_key`` (batches are a cell notion; the
        image path has no batch correction).
    FileNotFoundError
        A ``checkpoint`` that is not a local file.
    """
    if image_shape is not None:
        shape = tuple(image_shape) if isinstance(image_shape, tuple | list) else ()
        if len(shape) != 3 or not all(is_int(v) and v >= 1 for v in shape):
            raise ValueError(
                f"image_shape={image_shape!r} must be (channels, height, width): three positive ints (or None to "
                "read adata.uns['falcon_dataset']['image_shape'])."
            )
    width = DEFAULT_WIDTH if width is None else width
    check_int("width", width, 1)
    if view is not None and not isinstance(view, ViewConfig):
        raise TypeError(f"view must be a falcon_sc.core.views.ViewConfig or None, got {type(view).__name__}.")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist; give the path of a local file.")
    if batch_key is not None:
        raise ValueError(
            f"batch_key={batch_key!r} applies to cells only: the image path (image_shape, width, view or checkpoint "
            "given) has no batch correction; drop batch_key or the image options."
        )
    return int(width)


def image_inputs(
    adata: AnnData,
    image_shape: tuple[int, int, int] | None,
    width: int,
    checkpoint: str | Path | None,
    device: torch.device,
    random_state: int,
) -> tuple[np.ndarray | ImageFiles, np.ndarray]:
    """``(images, initial)``: pixels (``N x C x H x W`` float32 in [0, 1]) or image files, and initial features.

    The files of a folder reader are an :class:`~falcon_sc.data.ImageFiles`, read on demand; the initial features
    have unit length.

    Raises
    ------
    ValueError
        ``image_shape`` unknown (neither given nor in ``adata.uns["falcon_dataset"]``) or not matching the number of
        columns of ``X``; pixels that are NaN or infinite.
    """
    images = image_array(adata, image_shape)
    initial = initial_features(images, checkpoint, "resnet18", width, device, random_state)
    return images, np.asarray(initial, dtype=np.float32)
