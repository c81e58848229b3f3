"""The user's own images: one folder per fine class and a table naming each fine class's coarse class."""

from __future__ import annotations

import io
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._checks import check_int
from .._docs import doc_params
from ..errors import DatasetFileError
from ._folders import (
    check_size,
    check_val_fraction,
    doc_returns,
    doc_size,
    image_anndata,
    list_class_images,
    read_text_file,
    require_dir,
    require_file,
    val_per_class,
)

_WHERE = "image_folder reads the user's own files: root/<fine class>/<images> and a CSV with columns fine,coarse."


def _read_relation(coarse_csv: Path) -> dict[str, str]:
    """Fine -> coarse class from the CSV (values stripped of surrounding white space), checked."""
    what = "a header 'fine,coarse' and one row per fine folder"
    try:
        table = pd.read_csv(io.StringIO(read_text_file(coarse_csv, what)), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise DatasetFileError(f"{coarse_csv}: not a readable CSV file ({err}).") from None
    table.columns = [str(c).strip() for c in table.columns]
    if not {"fine", "coarse"} <= set(table.columns):
        raise DatasetFileError(
            f"{coarse_csv} has the columns {list(table.columns)}; it needs a header with the columns 'fine' (a "
            "folder name under root) and 'coarse' (its coarse class)."
        )
    table = table[["fine", "coarse"]].apply(lambda col: col.str.strip())
    if table.empty:
        raise DatasetFileError(f"no images found: {coarse_csv} holds only a header, no fine class; it needs {what}.")
    blank = table.index[(table["fine"] == "") | (table["coarse"] == "")]
    if len(blank):
        raise DatasetFileError(
            f"{coarse_csv}: rows {[int(i) + 2 for i in blank[:5]]} (file lines) have an empty entry."
        )
    pairs = table.drop_duplicates()
    clashes = sorted(pairs.loc[pairs["fine"].duplicated(), "fine"])
    if clashes:
        raise DatasetFileError(f"{coarse_csv}: fine classes with more than one coarse class: {clashes}.")
    return dict(zip(pairs["fine"], pairs["coarse"], strict=True))


def _class_folders(folder: Path) -> dict[str, str]:
    """Fine class (the folder name stripped of surrounding white space, as the CSV values are) -> folder name.

    Hidden folders (``.name``) are skipped; no folder at all, or two folders with one stripped name (``cat`` and
    ``cat ``), is a ``DatasetFileError``.
    """
    found: dict[str, list[str]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            found.setdefault(path.name.strip(), []).append(path.name)
    if not found:
        raise DatasetFileError(
            f"no images found in {folder}: it holds no class subfolder (expected root/<fine class>/<images>)."
        )
    clashes = [names for names in found.values() if len(names) > 1]
    if clashes:
        raise DatasetFileError(
            f"{folder}: the folders {clashes[0]!r} differ only by white space around the name, so they are one fine "
            "class for the CSV; rename or merge them."
        )
    return {fine: names[0] for fine, names in found.items()}


@doc_params(doc_size=doc_size, doc_returns=doc_returns)
def image_folder(
    root: str | os.PathLike,
    coarse_csv: str | os.PathLike,
    *,
    size: int = 224,
    val_fraction: float = 0.0,
    random_state: int = 0,
) -> ad.AnnData:
    """The user's own images, one subfolder per fine class, with a CSV naming each fine class's coarse class.

    Layout: ``root/<fine>/<image files>`` (nested folders are read too; files with the endings of
    ``falcon_sc.datasets._folders.IMG_EXTENSIONS``, e.g. ``.jpg``, ``.png``, ``.tif``) and a CSV file with a header
    and the columns ``fine`` (a folder name) and ``coarse`` (its coarse class); other columns are ignored. Every
    fine folder needs a row and every row a folder. White space around a name is ignored on both sides (the folder
    ``cat `` matches the row ``cat``; ``obs["fine"]`` is ``cat``); two folders that differ only by it are refused.

    ``X`` is empty: ``obs["path"]`` holds the absolute path of each image (read lazily with
    ``falcon_sc.data.ImageFiles.from_anndata(adata)``); ``uns["falcon_dataset"]["image_shape"]`` is
    ``[3, size, size]``.

    Parameters
    ----------
    root
        Folder with one subfolder of images per fine class.
    coarse_csv
        CSV file with the columns ``fine`` and ``coarse``.
    {doc_size}
    val_fraction
        Fraction of each fine class marked ``"val"`` in ``obs["split"]`` (drawn at random); the rest is
        ``"train"``.
    random_state
        Seed of that draw.

    Returns
    -------
    {doc_returns}

    Raises
    ------
    FileNotFoundError
        ``root`` or ``coarse_csv`` is missing.
    falcon_sc.errors.DatasetFileError
        The CSV is empty, binary, holds only a header, lacks a column, has an empty entry, gives a fine class two
        coarse classes, names a folder that does not exist, or a fine folder has no row; ``root`` holds no class
        folder, two folders differ only by white space, or a class folder holds no image file (the message names
        the file and lists the rows or folders). A ``ValueError`` too.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.image_folder("my_images", "my_images_coarse.csv", size=128)  # doctest: +SKIP
    >>> adata.obs[["fine", "coarse"]].drop_duplicates()  # doctest: +SKIP
    """
    check_size(size)
    check_val_fraction(val_fraction)
    check_int("random_state", random_state)
    folder = require_dir(root, _WHERE)
    relation = _read_relation(require_file(coarse_csv, _WHERE))
    folders = _class_folders(folder)
    no_row = sorted(repr(folders[f]) for f in folders if f not in relation)
    no_folder = sorted(f for f in relation if f not in folders)
    problems = [f"fine folders missing from the CSV: [{', '.join(no_row)}]"] if no_row else []
    problems += [f"CSV rows with no folder under root: {no_folder}"] if no_folder else []
    if problems:
        raise DatasetFileError(f"{coarse_csv} and the folders of {folder} disagree: {'; '.join(problems)}.")
    paths, owner = list_class_images(folder, sorted(folders.values()), _WHERE)
    fine = np.asarray([name.strip() for name in owner], dtype=object)
    is_val = val_per_class(fine, val_fraction, random_state)
    return image_anndata(
        paths,
        fine,
        [relation[f] for f in fine],
        np.where(is_val, "val", "train"),
        root=folder,
        name=folder.name,
        source=f"image folder {folder} with coarse classes from {coarse_csv}",
        size=size,
    )
