"""What the local image readers share: checked file access, per-class splits, folder listing, the AnnData build."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._checks import check_int, check_number
from ..errors import DatasetFileError
from ._utils import finalise

#: image file endings the folder readers list (case-insensitive): those of ``robustness.tools.folder`` (the BREEDS
#: reference) plus ``.tiff`` and ``.webp``; ImageNet's ``.JPEG`` files are among them
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: order of the ``obs["split"]`` categories
SPLITS = ("train", "val", "test")

# docstring fragments of the folder readers (filled in with falcon_sc._docs.doc_params)
doc_size = """\
size
    Side of the square images a model should see (recorded in ``image_shape``; 224 for ImageNet-type data)."""
doc_imagenet_root = """\
root
    ImageNet folder with ``train/<wnid>/`` and ``val/<wnid>/`` class subfolders (only the dataset's classes are
    read; other folders are ignored)."""
doc_returns = """\
AnnData
    Images x 0 variables with ``obs["path"]`` (absolute file paths), ``obs["coarse"]``, ``obs["fine"]``,
    ``obs["split"]`` (categoricals) and ``uns["falcon_dataset"]`` (``image_shape``: ``[3, size, size]``)."""
doc_missing = """\
FileNotFoundError
    A hierarchy file or an image folder is missing (the message names it and where to get it)."""


def require_file(path: str | os.PathLike, where: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`; ``FileNotFoundError`` naming it and ``where`` to get it if absent."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (not a file). {where}")
    return path


def require_dir(path: str | os.PathLike, where: str) -> Path:
    """``path`` as a :class:`~pathlib.Path`; ``FileNotFoundError`` naming it and ``where`` to get it if absent."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is missing (not a folder). {where}")
    return path.resolve()


def read_text_file(path: Path, what: str) -> str:
    """The text of ``path`` (UTF-8, a BOM dropped), refusing an empty or binary file.

    Parameters
    ----------
    path
        The file.
    what
        What the file should hold, for the messages (e.g. ``"'fine,coarse' rows"``).

    Returns
    -------
    str
        The decoded text.

    Raises
    ------
    falcon_sc.errors.DatasetFileError
        The file is empty (0 bytes, or white space only), holds NUL bytes or is not UTF-8 text (the message names
        the file, and the line of the first undecodable byte).
    """
    raw = path.read_bytes()
    if not raw.strip():
        raise DatasetFileError(f"{path} is empty; it should hold {what}.")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DatasetFileError(f"{path}, line {line}: a NUL byte; this is a binary file, not text with {what}.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetFileError(
            f"{path}, line {line}: the byte at offset {err.start} is not UTF-8 text ({err.reason}); expected text "
            f"with {what}."
        ) from None


def check_size(size: int) -> None:
    """``size``: the square side of the images, a positive int."""
    check_int("size", size, 1)


def check_val_fraction(val_fraction: float) -> None:
    """``val_fraction`` in [0, 1)."""
    check_number("val_fraction", val_fraction, low=0.0, high=1.0)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction={val_fraction!r} must be below 1 (some samples must stay in 'train').")


def val_per_class(labels: np.ndarray, val_fraction: float, random_state: int | None) -> np.ndarray:
    """Boolean mask of the validation samples: the last ``val_fraction`` of every class.

    Each class keeps its first ``int(n * (1 - val_fraction))`` samples for training, in the given order
    (``random_state=None``, as the FALCON reference does for CIFAR) or in a random order seeded by ``random_state``.
    """
    labels = np.asarray(labels)
    rng = None if random_state is None else np.random.default_rng(random_state)
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if rng is not None:
            members = rng.permutation(members)
        is_val[members[int(len(members) * (1 - val_fraction)) :]] = True
    return is_val


def list_class_images(split_root: Path, classes: Sequence[str], where: str) -> tuple[list[str], np.ndarray]:
    """Image files of ``split_root/<class>/`` (nested folders too) for every class, and the class of each.

    Classes in sorted order, files in sorted order within each (the order of ``robustness.tools.folder``, which
    the BREEDS reference uses). A missing class folder is a ``FileNotFoundError`` naming it and ``where``; a class
    folder with no image files is a :class:`~falcon_sc.errors.DatasetFileError`.
    """
    paths: list[str] = []
    owner: list[str] = []
    missing = [c for c in sorted(classes) if not (split_root / c).is_dir()]
    if missing:
        shown = ", ".join(str(split_root / c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} class folder(s) missing: {shown}. {where}")
    for cls in sorted(classes):
        found = [
            os.path.join(folder, name)
            for folder, _, names in sorted(os.walk(split_root / cls))
            for name in sorted(names)
            if name.lower().endswith(IMG_EXTENSIONS)
        ]
        if not found:
            raise DatasetFileError(
                f"class folder {split_root / cls} holds no image files (endings: {', '.join(IMG_EXTENSIONS)})."
            )
        paths += found
        owner += [cls] * len(found)
    return paths, np.asarray(owner, dtype=object)


def read_names(path: Path) -> dict[str, str]:
    """WordNet id -> name, from ``node_names.txt`` or ``LOC_synset_mapping.txt``.

    BREEDS' ``node_names.txt`` has ``id<TAB>name`` lines, ImageNet's ``LOC_synset_mapping.txt`` ``id name, other
    names``: the id is the text up to the first white space, the name the rest. Lines without a name are skipped;
    an empty or binary file, or one with no ``id name`` line, is a :class:`~falcon_sc.errors.DatasetFileError`.
    """
    names: dict[str, str] = {}
    for line in read_text_file(path, "'wnid name' lines").splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            names[parts[0]] = parts[1].strip()
    if not names:
        raise DatasetFileError(f"{path} holds no 'wnid name' line (a WordNet id, white space, a name).")
    return names


def image_anndata(
    paths: Sequence[str],
    fine: list[str] | np.ndarray,
    coarse: list[str] | np.ndarray,
    split: list[str] | np.ndarray,
    *,
    root: Path,
    name: str,
    source: str,
    size: int,
    names: Mapping[str, str] | None = None,
) -> ad.AnnData:
    """AnnData of image files: no variables, ``obs["path"]`` (absolute), ``coarse``, ``fine``, ``split``.

    ``names`` (id -> name) adds ``obs["fine_name"]`` and ``obs["coarse_name"]``. The index is each path relative to
    ``root``; ``uns["falcon_dataset"]["image_shape"]`` is ``[3, size, size]``. No paths at all is a
    :class:`~falcon_sc.errors.DatasetFileError` (a reader never returns zero images).
    """
    if not len(paths):
        raise DatasetFileError(f"no images found in {root} for {name}.")
    paths = [os.path.abspath(p) for p in paths]
    obs = pd.DataFrame(
        {
            "path": paths,
            "coarse": np.asarray(coarse, dtype=object),
            "fine": np.asarray(fine, dtype=object),
            "split": pd.Categorical(split, categories=[s for s in SPLITS if s in set(split)]),
        },
        index=[os.path.relpath(p, root) for p in paths],
    )
    if names is not None:
        for key in ("fine", "coarse"):
            obs[f"{key}_name"] = pd.Categorical([names.get(w, w) for w in obs[key]])
    adata = ad.AnnData(X=np.zeros((len(obs), 0), dtype=np.float32), obs=obs)
    finalise(adata, name, source)
    adata.uns["falcon_dataset"]["image_shape"] = np.array([3, size, size])
    return adata
