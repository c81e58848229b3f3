"""CIFAR-100 and the FALCON paper's two variants (CIFAR68, CIFAR-SI) from the local python-version pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._checks import check_choice, check_int
from ._folders import SPLITS, check_val_fraction, require_dir, require_file, val_per_class
from ._utils import finalise

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_WHERE = (
    f"Download the CIFAR-100 python version (cifar-100-python.tar.gz) from {CIFAR100_URL}, extract it and pass the "
    "cifar-100-python folder (with the files train, test and meta) as root."
)

# Both constants are copied from the FALCON reference implementation, github.com/mlbio-epfl/falcon,
# datasets/cifar100/cifar100_coarse2fine.py (commit 89cf5dbbf693ae861fd63ef040c8684f48b5aaa8):
# CIFAR68_REMOVED is `CIFAR68Coarse2Fine._classes_for_removal()`, CIFAR_SI_FRACTIONS is `portion_keep`.

#: the 32 CIFAR-100 fine classes (label indices) CIFAR68 leaves out, so that the 20 coarse classes have 1 to 5 fine
#: classes instead of 5 each
CIFAR68_REMOVED: tuple[int, ...] = (
    0, 2, 7, 9, 11, 15, 16, 21, 22, 25, 27, 26, 30, 40, 42, 45,
    47, 49, 50, 51, 57, 61, 70, 72, 81, 85, 88, 89, 90, 93, 94, 95,
)  # fmt: skip

#: CIFAR-SI: the fraction of each fine class (by label index) kept, in both the train and the test file; a class
#: keeps its first ``int(n * fraction)`` images in file order
CIFAR_SI_FRACTIONS: tuple[float, ...] = (
    0.57375399, 0.61887877, 0.49827284, 0.61363604, 0.70610113,
    0.84783802, 0.68711689, 0.9519748, 0.88483212, 0.85602336,
    0.73676322, 0.5784213, 0.34717017, 0.47788748, 0.42177804,
    0.61173724, 0.65665981, 0.5644105, 0.79943416, 0.69019384,
    0.85861546, 0.84061074, 0.5655741, 0.52854164, 0.87284635,
    0.44738893, 0.38830181, 0.63654859, 0.84592266, 0.45378019,
    0.59191851, 0.37450617, 0.97042908, 0.40045453, 0.50140883,
    0.82288002, 0.76198367, 0.65541795, 0.52453847, 0.47314545,
    0.96185752, 0.91658886, 0.49564212, 0.84868512, 0.91926797,
    0.70796942, 0.83786135, 0.33228417, 0.32755937, 0.75536667,
    0.3939889, 0.72539474, 0.74988883, 0.40057496, 0.77408639,
    0.89928709, 0.3173045, 0.63207938, 0.52763706, 0.4150968,
    0.97584858, 0.33739184, 0.88057277, 0.33795859, 0.93550844,
    0.69919175, 0.69305501, 0.33304447, 0.83976966, 0.48514858,
    0.49979666, 0.3912749, 0.68442045, 0.43216038, 0.4289422,
    0.63583394, 0.59675707, 0.80642398, 0.42701694, 0.69398926,
    0.45437665, 0.98812622, 0.98534736, 0.54456234, 0.97894244,
    0.86929247, 0.7191352, 0.70135236, 0.65428483, 0.82100301,
    0.89086774, 0.72972202, 0.64628091, 0.32348358, 0.76580364,
    0.80736886, 0.50139469, 0.65188098, 0.59059803, 0.36106552,
)  # fmt: skip

CIFAR_VARIANTS = ("cifar100", "cifar68", "cifar_si")


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _unpickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (files written with bytes keys, ``b"data"``, are read alike)."""
    with open(path, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    return {_text(k): v for k, v in raw.items()}


def _field(data: dict, key: str, path: Path):
    if key not in data:
        raise KeyError(f"{path} has no entry {key!r} (found {sorted(data)}); is it a CIFAR-100 python pickle?")
    return data[key]


def cifar100(
    root: str | os.PathLike,
    *,
    split: str = "train",
    variant: str = "cifar100",
    val_fraction: float = 0.1,
    random_state: int | None = None,
) -> ad.AnnData:
    """CIFAR-100 (20 coarse / 100 fine classes) or the FALCON paper's variants, from the local python pickles.

    Reads ``root/train``, ``root/test`` and ``root/meta`` of the CIFAR-100 python version (nothing is downloaded).
    ``X`` holds the 32x32 colour images as 3072 uint8 pixels per row, channel-major (all red, then green, then blue
    values, each row-major), as in the files; ``uns["falcon_dataset"]["image_shape"]`` is ``[3, 32, 32]`` to turn
    rows back into images. ``obs["fine"]`` / ``obs["coarse"]`` are the CIFAR-100 class and superclass names,
    ``obs["label"]`` the original fine label index (0-99), ``obs["split"]`` the split of each image.

    The train file is split per fine class as the FALCON reference does: the first 90% of each class (in file
    order) is ``"train"``, the rest ``"val"``; the test file is ``"test"``. The variants (constants copied from the
    reference implementation, github.com/mlbio-epfl/falcon, ``datasets/cifar100/cifar100_coarse2fine.py``):

    - ``"cifar100"``: all 100 fine classes, 5 per coarse class.
    - ``"cifar68"``: without the 32 fine classes :data:`CIFAR68_REMOVED` (68 fine classes, 1-5 per coarse class).
    - ``"cifar_si"`` (sample imbalance): each fine class keeps the fraction :data:`CIFAR_SI_FRACTIONS` (0.32-0.99)
      of its images, the first ones in file order, in the train and the test file alike, before the split.

    Parameters
    ----------
    root
        Folder with the files ``train``, ``test`` and ``meta`` (the extracted ``cifar-100-python``).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every image, with its split in ``obs["split"]``).
    variant
        ``"cifar100"``, ``"cifar68"`` or ``"cifar_si"``.
    val_fraction
        Fraction of each fine class of the train file held out as ``"val"`` (the reference: 0.1).
    random_state
        ``None``: the validation images are the last of each class in file order (the reference's split); an int:
        a random draw per class with this seed.

    Returns
    -------
    AnnData
        Images x 3072 uint8 pixels, with ``obs["coarse"]``, ``obs["fine"]``, ``obs["split"]`` (categoricals) and
        ``uns["falcon_dataset"]``.

    Raises
    ------
    FileNotFoundError
        A file is missing (the message names it and where to download CIFAR-100).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.cifar100("data/cifar-100-python", split="train", variant="cifar68")  # doctest: +SKIP
    >>> adata.shape, adata.obs["fine"].nunique(), adata.obs["coarse"].nunique()  # doctest: +SKIP
    ((30600, 3072), 68, 20)
    """
    check_choice("split", split, (*SPLITS, "all"))
    check_choice("variant", variant, CIFAR_VARIANTS)
    check_val_fraction(val_fraction)
    check_int("random_state", random_state, allow_none=True)
    folder = require_dir(root, _WHERE)
    files = {"train": ("train",), "val": ("train",), "test": ("test",), "all": ("train", "test")}[split]
    paths = {name: require_file(folder / name, _WHERE) for name in (*files, "meta")}

    meta = _unpickle(paths["meta"])
    fine_names = [_text(n) for n in _field(meta, "fine_label_names", paths["meta"])]
    coarse_names = [_text(n) for n in _field(meta, "coarse_label_names", paths["meta"])]
    blocks, frames = [], []
    for name in files:
        data = _unpickle(paths[name])
        pixels = np.asarray(_field(data, "data", paths[name]), dtype=np.uint8)
        fine = np.asarray(_field(data, "fine_labels", paths[name]), dtype=np.int64)
        coarse = np.asarray(_field(data, "coarse_labels", paths[name]), dtype=np.int64)
        if pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32 or not len(pixels) == len(fine) == len(coarse):
            raise ValueError(
                f"{paths[name]}: data of shape {pixels.shape} with {len(fine)} fine and {len(coarse)} coarse labels; "
                "expected N x 3072 pixels and N labels of each kind."
            )
        keep = np.ones(len(fine), dtype=bool)
        if variant == "cifar_si":
            keep[:] = False
            for label in np.unique(fine):
                members = np.flatnonzero(fine == label)
                keep[members[: int(len(members) * CIFAR_SI_FRACTIONS[label])]] = True
        row_split = np.full(len(fine), "test", dtype=object)
        if name == "train":
            is_val = np.zeros(len(fine), dtype=bool)
            is_val[keep] = val_per_class(fine[keep], val_fraction, random_state)
            row_split[:] = np.where(is_val, "val", "train")
        if variant == "cifar68":
            keep &= ~np.isin(fine, CIFAR68_REMOVED)
        if split in ("train", "val"):
            keep &= row_split == split
        rows = np.flatnonzero(keep)
        blocks.append(pixels[rows])
        frames.append(
            pd.DataFrame(
                {
                    "coarse": [coarse_names[c] for c in coarse[rows]],
                    "fine": [fine_names[f] for f in fine[rows]],
                    "label": fine[rows],
                    "split": row_split[rows],
                },
                index=[f"{name}{i}" for i in rows],
            )
        )
    obs = pd.concat(frames)
    obs["split"] = pd.Categorical(obs["split"], categories=[s for s in SPLITS if s in set(obs["split"])])
    var = pd.DataFrame(index=[f"{ch}{r}_{c}" for ch in "rgb" for r in range(32) for c in range(32)])
    adata = ad.AnnData(X=np.concatenate(blocks), obs=obs, var=var)
    source = f"CIFAR-100 python version ({CIFAR100_URL}), read from {folder}"
    if variant != "cifar100":
        source += f"; {variant} as in the FALCON reference (github.com/mlbio-epfl/falcon)"
    finalise(adata, variant, source)
    adata.uns["falcon_dataset"]["image_shape"] = np.array([3, 32, 32])
    return adata
