"""Shared docstring fragments (as scanpy's ``_docs``), filled in with :func:`doc_params`."""

from __future__ import annotations

from collections.abc import Callable
from textwrap import dedent
from typing import TypeVar

F = TypeVar("F", bound=Callable)

_adata_coarse = """\
adata
    Cells x genes; counts or log-normalised expression in ``X``.
coarse_key
    Column of ``adata.obs`` with the coarse labels."""

_batch_key = """
batch_key
    Optional column of ``adata.obs`` with batches, passed to the preprocessing."""

baseline_inputs = (
    _adata_coarse
    + """
n_fine
    Total number of fine classes to find."""
    + _batch_key
)

baseline_inputs_counts = (
    _adata_coarse
    + """
n_fine
    Number of fine classes to find: an int, the total, shared among the coarse classes as described above; or a
    mapping coarse label -> number of fine classes (``{"T": 3, "B": 1, ...}``) with an entry for every coarse
    class, when the counts are known: each class then gets exactly that many. A missing or unknown coarse label, a
    count below 1 or above the cells of its class is a ``ValueError``."""
    + _batch_key
)

_image_shape_width = """\
image_shape
    Images: ``(channels, height, width)`` of the flattened images in the rows of ``X`` (default
    ``adata.uns["falcon_dataset"]["image_shape"]``). Giving any image option (``image_shape``, ``width``,
    ``checkpoint``, ``view``) runs the method on images: pixels scaled to [0, 1] and initial features (a
    ``checkpoint``'s backbone, else the pixels' principal components) as in :func:`falcon_sc.tl.refine_images`;
    ``batch_key`` is then refused.
width
    Images: channels of the first stage of the ResNet-18 (CIFAR stem up to 64 px); default 16. With a
    ``checkpoint``, the checkpoint's width (64 for the standard ResNet-18)."""

image_options = (
    _image_shape_width
    + """
checkpoint
    Images: local self-supervised checkpoint (:func:`falcon_sc.models.load_backbone`) for the initial features
    and for every backbone trained.
view
    Images: random view settings (:class:`falcon_sc.core.views.ViewConfig`) of the training views; default the
    strong view (crops of 8-100 % of the area, flips). Digits are not flip-invariant:
    ``ViewConfig(scale=(0.5, 1.0), flip=0.0)``.
n_steps
    Optimisation steps of each training run (``erm``: of each fold); default enough epochs for at least 400 steps
    (10 to 200 epochs)."""
)

kmeans_image_options = (
    _image_shape_width
    + """
checkpoint
    Images: local self-supervised checkpoint (:func:`falcon_sc.models.load_backbone`) for the initial features.
accelerator
    Device of the checkpoint's backbone: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``."""
)

image_example = """\
On images (digits: flattened 1 x 8 x 8 images, the shape in ``uns``; any image option selects the image path):

>>> import falcon_sc as fal
>>> from falcon_sc.core.views import ViewConfig
>>> digits = fal.datasets.digits()[:300].copy()
>>> crops = ViewConfig(scale=(0.5, 1.0), flip=0.0)"""

neural_options = """\
random_state
    Seed for numpy and torch (initialisation, minibatches, views, folds, k-means); the same seed on CPU gives the
    same labels.
accelerator
    ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``."""


def doc_params(**fragments: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of a docstring with fragments, indented like the placeholder's line."""

    def decorate(fn: F) -> F:
        doc = fn.__doc__ or ""
        for name, text in fragments.items():
            for line in doc.splitlines():
                if line.strip() == "{" + name + "}":
                    indent = line[: len(line) - len(line.lstrip())]
                    body = "\n".join(indent + t if t else t for t in dedent(text).splitlines())
                    doc = doc.replace(line, body)
        fn.__doc__ = doc
        return fn

    return decorate
