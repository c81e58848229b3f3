"""CIFAR-100 and the FALCON paper's two variants (CIFAR68, CIFAR-SI) from the local python-version pickles."""

from __future__ import annotations

import importlib
import io
import os
import pickle
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._checks import check_choice, check_int
from ..errors import DatasetFileError
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


#: the sizes of a fine and a coarse label set of CIFAR-100
N_FINE, N_COARSE = 100, 20
_PIXELS = 3 * 32 * 32


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _numpy_global(names: tuple[str, ...], attribute: str) -> object:
    """``attribute`` of the first importable module of ``names``.

    ``numpy._core`` from numpy 2, ``numpy.core`` before.
    """
    for name in names:
        try:
            return getattr(importlib.import_module(name), attribute)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {attribute} in {names}")  # pragma: no cover - every numpy >= 1.24 has one


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to latin1.

    Python 3 pickles ``bytes`` at protocols 0-2 as ``encode(text, "latin1")``; no other codec is allowed (a codec
    name can import modules).
    """
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with the codec {encoding!r}: only latin1 is allowed")
    return text.encode("latin1")


#: the only globals a CIFAR pickle may name: numpy arrays, dtypes and scalars (as numpy 1 and 2 pickle them) and
#: the latin1 encoding of ``bytes``; the builtin containers, str, bytes and numbers need no global
_ALLOWED_GLOBALS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    (module, name): (("numpy._core." + sub, "numpy.core." + sub), name)
    for core in ("numpy._core", "numpy.core")
    for sub, names in (("multiarray", ("_reconstruct", "scalar")), ("numeric", ("_frombuffer",)))
    for module in (f"{core}.{sub}",)
    for name in names
}
_ALLOWED_GLOBALS.update({("numpy", "ndarray"): (("numpy",), "ndarray"), ("numpy", "dtype"): (("numpy",), "dtype")})


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`_ALLOWED_GLOBALS` and the latin1 ``_codecs.encode``.

    A pickle naming any other global (``os.system``, ``builtins.exec``, ``subprocess.Popen``, a class of some
    package ...) is refused with :class:`~falcon_sc.errors.DatasetFileError` before anything is called.
    """

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        """The allowed global ``module.name``; :class:`~falcon_sc.errors.DatasetFileError` for any other."""
        if (module, name) in (("_codecs", "encode"), ("codecs", "encode")):
            return _latin1_encode
        if (module, name) in _ALLOWED_GLOBALS:
            return _numpy_global(*_ALLOWED_GLOBALS[(module, name)])
        raise DatasetFileError(
            f"{self.path} names the global {module}.{name}, which a CIFAR-100 pickle never needs; it was refused "
            "and nothing in the file was run (CIFAR pickles are read with a restricted unpickler that allows only "
            "builtin containers, strings, numbers and numpy arrays). Is it the file from "
            f"{CIFAR100_URL}?"
        )


def load_cifar_pickle(path: Path) -> dict[str, object]:
    """A CIFAR pickle as a dict with str keys, read with :class:`_RestrictedUnpickler` (no code can run).

    Files written with bytes keys (``b"data"``, Python 2) are read alike.

    Raises
    ------
    DatasetFileError
        The file is empty, truncated, not a pickle, names a global outside the allowed numpy ones, or does not
        hold a dict.
    """
    data = path.read_bytes()
    if not data:
        raise DatasetFileError(f"{path} is empty (0 bytes); download CIFAR-100 again from {CIFAR100_URL}.")
    try:
        raw = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except DatasetFileError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure inside the unpickler is a damaged file
        raise DatasetFileError(
            f"{path} is not a readable CIFAR-100 python pickle (truncated, damaged or another format: "
            f"{type(err).__name__}: {err}); download it again from {CIFAR100_URL}."
        ) from None
    if not isinstance(raw, dict):
        raise DatasetFileError(
            f"{path} holds a {type(raw).__name__}, not the dict of a CIFAR-100 python pickle; download it again from "
            f"{CIFAR100_URL}."
        )
    return {_text(k): v for k, v in raw.items()}


def _field(data: dict[str, object], key: str, path: Path) -> object:
    if key not in data:
        raise DatasetFileError(f"{path} has no entry {key!r} (found {sorted(data)}); is it a CIFAR-100 python pickle?")
    return data[key]


def _names(meta: dict[str, object], key: str, n: int, path: Path) -> list[str]:
    """The ``n`` distinct class names ``meta[key]``."""
    value = _field(meta, key, path)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str | bytes) for v in value):
        raise DatasetFileError(f"{path}: entry {key!r} is a {type(value).__name__}, not a list of class names.")
    names = [_text(v) for v in value]
    if len(names) != n or len(set(names)) != n:
        raise DatasetFileError(
            f"{path}: entry {key!r} holds {len(names)} names ({len(set(names))} distinct); CIFAR-100 has {n}."
        )
    return names


def _labels(data: dict[str, object], key: str, n: int, path: Path) -> np.ndarray:
    """The labels ``data[key]``: a flat sequence of ints in ``[0, n)``."""
    try:
        labels = np.asarray(_field(data, key, path))
    except ValueError as err:  # ragged nested lists
        raise DatasetFileError(f"{path}: entry {key!r} is not a flat list of labels ({err}).") from None
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DatasetFileError(
            f"{path}: entry {key!r} is not a flat list of integer labels (shape {labels.shape}, dtype {labels.dtype})."
        )
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= n))
    if bad.size:
        raise DatasetFileError(
            f"{path}: entry {key!r}, image {int(bad[0])}: label {int(labels[bad[0]])} is out of range (0 to {n - 1}); "
            f"{bad.size} label(s) out of range."
        )
    return labels


def _pixels(data: dict[str, object], path: Path) -> np.ndarray:
    """``data["data"]``: N x 3072 integers in ``[0, 255]``, as uint8."""
    pixels = _field(data, "data", path)
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.shape[1] != _PIXELS:
        shape = pixels.shape if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DatasetFileError(f"{path}: entry 'data' is {shape}; expected an N x {_PIXELS} array of uint8 pixels.")
    if pixels.dtype != np.uint8:
        if pixels.dtype.kind not in "iu" or (pixels.size and (pixels.min() < 0 or pixels.max() > 255)):
            raise DatasetFileError(
                f"{path}: entry 'data' has dtype {pixels.dtype}; expected uint8 pixels (integers 0 to 255)."
            )
        pixels = pixels.astype(np.uint8)
    return pixels


def _read_part(path: Path, relation: dict[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels, fine and coarse labels of the ``train`` or ``test`` file, checked.

    ``relation`` (fine -> coarse, shared by the files) is filled in and checked.
    """
    data = load_cifar_pickle(path)
    pixels = _pixels(data, path)
    fine = _labels(data, "fine_labels", N_FINE, path)
    coarse = _labels(data, "coarse_labels", N_COARSE, path)
    if not len(pixels) == len(fine) == len(coarse):
        raise DatasetFileError(
            f"{path}: {len(pixels)} images with {len(fine)} fine and {len(coarse)} coarse labels; expected one label "
            "of each kind per image."
        )
    for code in np.unique(fine * N_COARSE + coarse).tolist():
        f, c = divmod(code, N_COARSE)
        if relation.setdefault(f, c) != c:
            i = int(np.flatnonzero((fine == f) & (coarse == c))[0])
            raise DatasetFileError(
                f"{path}, image {i}: fine label {f} has the coarse label {c}, but {relation[f]} elsewhere; a fine "
                "class of CIFAR-100 has one coarse class."
            )
    return pixels, fine, coarse


def _select(
    name: str, fine: np.ndarray, *, variant: str, split: str, val_fraction: float, random_state: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the file ``name`` (``"train"`` or ``"test"``) that ``variant`` and ``split`` keep.

    Returned with the split of every row of the file.
    """
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
    return np.flatnonzero(keep), row_split


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
    falcon_sc.errors.DatasetFileError
        A file is empty, truncated, not a pickle or not a dict; ``meta`` lacks the 100 distinct fine or the 20
        distinct coarse class names; a data file lacks an entry, its ``data`` is not an N x 3072 array of integers
        0-255, its label lists are not N integers each, a label is out of range, or a fine label has two coarse
        labels (within or across the files); a pickle names any global but the numpy array ones (refused before
        anything runs); or no image is left for ``split`` (each message names the file and the entry or image).

    Notes
    -----
    The pickles are read with a restricted unpickler: the only globals it resolves are numpy's array, dtype and
    scalar reconstructors (as numpy 1 and 2 pickle them) and the latin1 encoding of ``bytes``, so no file can run
    code. The files need not hold the full 50000 / 10000 images: any consistent subset in the same format (e.g. a
    few images per class) is read, but a split left with no image is an error.

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

    meta = load_cifar_pickle(paths["meta"])
    fine_names = _names(meta, "fine_label_names", N_FINE, paths["meta"])
    coarse_names = _names(meta, "coarse_label_names", N_COARSE, paths["meta"])
    blocks, frames, sizes = [], [], []
    relation: dict[int, int] = {}
    for name in files:
        pixels, fine, coarse = _read_part(paths[name], relation)
        rows, row_split = _select(
            name, fine, variant=variant, split=split, val_fraction=val_fraction, random_state=random_state
        )
        sizes.append(f"{paths[name]}: {len(fine)} images, {len(rows)} kept")
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
    if not sum(len(b) for b in blocks):
        raise DatasetFileError(
            f"no images found in {folder} for split={split!r}, variant={variant!r}, val_fraction={val_fraction} "
            f"({'; '.join(sizes)}); the CIFAR-100 files hold 50000 (train) and 10000 (test) images, 500 and 100 "
            "per fine class."
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
