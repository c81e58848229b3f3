"""Image files on disk as a lazy sample source: decoded, resized and centre-cropped one minibatch at a time."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


class ImageFiles:
    """Images in files, read when asked for: a sample source for :class:`falcon_sc.core.training.Features`.

    For image datasets too large to hold in memory (ImageNet-type folders). Nothing is read at construction;
    :meth:`load` decodes the requested files with PIL, converts them to RGB (``channels=3``) or grey
    (``channels=1``), resizes the shorter side to ``resize`` pixels (bilinear) and crops the centre
    ``size`` x ``size`` square, as torchvision's ``Resize(resize)`` + ``CenterCrop(size)``. Files are decoded in a
    thread pool (PIL releases the GIL while decoding).

    Parameters
    ----------
    paths
        One image file per sample.
    size
        Side of the square images :meth:`load` returns, in pixels.
    channels
        3 (RGB) or 1 (grey).
    resize
        Shorter side before the centre crop (``None``: ``size``, no border cut off the shorter side). The
        ImageNet evaluation convention is ``resize=256, size=224``.
    n_workers
        Decoding threads (``None``: ``min(8, os.cpu_count())``).

    Examples
    --------
    >>> import numpy as np
    >>> from falcon_sc.data import ImageFiles
    >>> source = ImageFiles(["a.jpg", "b.png"], size=224)
    >>> source.shape
    (2, 3, 224, 224)
    >>> batch = source.load(np.array([1, 0]))  # doctest: +SKIP
    >>> batch.dtype, batch.shape  # doctest: +SKIP
    (dtype('float32'), (2, 3, 224, 224))
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        size: int = 224,
        channels: int = 3,
        *,
        resize: int | None = None,
        n_workers: int | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels={channels!r}: use 3 (RGB) or 1 (grey).")
        if int(size) < 1:
            raise ValueError(f"size={size!r}: use a positive number of pixels.")
        resize = int(size) if resize is None else int(resize)
        if resize < int(size):
            raise ValueError(f"resize={resize} is smaller than size={size}: the centre crop would not fit.")
        n_workers = _default_workers() if n_workers is None else int(n_workers)
        if n_workers < 1:
            raise ValueError(f"n_workers={n_workers}: use at least 1 (or None for min(8, cpu count)).")
        self.paths = np.asarray([os.fspath(p) for p in paths], dtype=object)
        self.size, self.channels, self.resize, self.n_workers = int(size), int(channels), resize, n_workers

    @classmethod
    def from_anndata(cls, adata, *, path_key: str = "path", **kwargs) -> ImageFiles:
        """The images ``adata.obs[path_key]`` of an AnnData from a :mod:`falcon_sc.datasets` folder reader.

        ``size`` and ``channels`` default to ``adata.uns["falcon_dataset"]["image_shape"]``; keyword arguments
        (``size``, ``channels``, ``resize``, ``n_workers``) override them.
        """
        if path_key not in adata.obs:
            raise KeyError(f"path_key={path_key!r} is not a column of adata.obs; it should hold one file per sample.")
        shape = adata.uns.get("falcon_dataset", {}).get("image_shape")
        if shape is not None:
            kwargs.setdefault("channels", int(shape[0]))
            kwargs.setdefault("size", int(shape[-1]))
        return cls(adata.obs[path_key].astype(str).tolist(), **kwargs)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n, channels, size, size)``: the array :meth:`load` would give for all samples."""
        return (len(self.paths), self.channels, self.size, self.size)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, channels={self.channels}, size={self.size}, resize={self.resize})"

    def subset(self, idx: np.ndarray) -> ImageFiles:
        """The samples ``idx`` as a new :class:`ImageFiles` with the same settings."""
        return ImageFiles(
            self.paths[np.asarray(idx)], self.size, self.channels, resize=self.resize, n_workers=self.n_workers
        )

    def load(self, idx: np.ndarray) -> np.ndarray:
        """Images ``idx`` as float32 in [0, 1], shape ``(len(idx), channels, size, size)``.

        Raises
        ------
        FileNotFoundError
            A file does not exist (the message names it).
        OSError
            A file cannot be decoded as an image: not an image, truncated, or larger than PIL's decompression-bomb
            limit ``PIL.Image.MAX_IMAGE_PIXELS`` (the message names it).
        """
        idx = np.asarray(idx).reshape(-1)
        out = np.empty((len(idx), self.channels, self.size, self.size), dtype=np.float32)

        def fill(i: int) -> None:
            out[i] = self._read(self.paths[idx[i]])

        if self.n_workers == 1 or len(idx) <= 1:
            for i in range(len(idx)):
                fill(i)
        else:
            with ThreadPoolExecutor(max_workers=min(self.n_workers, len(idx))) as pool:
                list(pool.map(fill, range(len(idx))))  # list(): re-raises the first error
        return out

    def _read(self, path: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        if not Path(path).is_file():
            raise FileNotFoundError(f"image file {path} does not exist (or is not a file).")
        try:
            with Image.open(path) as img:
                img = img.convert("RGB" if self.channels == 3 else "L")
                img = _resize_centre_crop(img, self.resize, self.size)
                pixels = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise OSError(f"cannot read image file {path}: {err}") from err
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return pixels.astype(np.float32) / 255.0


def _resize_centre_crop(img, resize: int, size: int):
    """Shorter side to ``resize`` (bilinear), then the centre ``size`` square: torchvision's Resize + CenterCrop."""
    from PIL import Image

    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != resize:
        new_long = int(resize * long / short)
        new_w, new_h = (resize, new_long) if w <= h else (new_long, resize)
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
        w, h = new_w, new_h
    if (w, h) != (size, size):
        top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    return img
