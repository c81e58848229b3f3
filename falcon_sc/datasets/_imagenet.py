"""ImageNet subsets with a class hierarchy: BREEDS (living17, nonliving26, entity30, entity13) and tieredImageNet.

Both read an ImageNet-style folder the user has (``root/train/<wnid>/*.JPEG``, ``root/val/<wnid>/*.JPEG``) and the
hierarchy files named below; nothing is downloaded. Images stay on disk: ``obs["path"]`` names each file and
:class:`falcon_sc.data.ImageFiles` reads them one minibatch at a time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import anndata as ad
import numpy as np

from .._checks import check_choice, check_int
from .._docs import doc_params
from ..errors import DatasetFileError
from ._folders import (
    SPLITS,
    check_size,
    check_val_fraction,
    doc_imagenet_root,
    doc_missing,
    doc_returns,
    doc_size,
    image_anndata,
    list_class_images,
    read_names,
    read_text_file,
    require_dir,
    require_file,
)

IMAGENET_WHERE = (
    "root must be an ImageNet (ILSVRC-2012) folder with train/<wnid>/ and val/<wnid>/ class subfolders (the "
    "validation images sorted into class folders, e.g. with the valprep.sh script); ImageNet is available, after "
    "registration, from https://image-net.org/download.php."
)

BREEDS_URL = "https://github.com/MadryLab/BREEDS-Benchmarks/tree/master/imagenet_class_hierarchy/modified"
BREEDS_FILES = ("dataset_class_info.json", "class_hierarchy.txt", "node_names.txt")
_BREEDS_WHERE = (
    f"The BREEDS hierarchy files ({', '.join(BREEDS_FILES)}) come from {BREEDS_URL} (the files "
    "robustness.tools.breeds_helpers.setup_breeds downloads); pass their folder as hierarchy_dir."
)
#: BREEDS datasets: ``(level, ancestor, subclasses per superclass)`` of ``make_<name>`` in the MadryLab
#: ``robustness`` package (robustness/tools/breeds_helpers.py), all with ``split=None, balanced=True, random_seed=2``
BREEDS_DATASETS: dict[str, tuple[int, str | None, int]] = {
    "living17": (5, "n00004258", 4),
    "nonliving26": (5, "n00021939", 4),
    "entity30": (4, None, 8),
    "entity13": (3, None, 20),
}
_BREEDS_ROOT = "n00001740"  # "entity", the root of the hierarchy
_BREEDS_SEED = 2  # robustness: get_superclasses(random_seed=2) draws the subclasses
_BREEDS_TRAVERSE_DEPTH = 20  # robustness: ClassHierarchy.traverse(depth=20) bounds the ancestor's subtree

TIERED_FILES = ("train.csv", "val.csv", "test.csv")
_TIERED_WHERE = (
    "The tieredImageNet hierarchy files train.csv, val.csv and test.csv (rows 'fine wnid,coarse wnid') come with "
    "the tieredImageNet release (github.com/renmengye/few-shot-ssl-public, fewshot/data/tiered_imagenet_split/); "
    "pass their folder as hierarchy_dir."
)
_WNID = re.compile(r"^n\d{8}$")


def _read_class_info(path: Path) -> set[str]:
    """The ImageNet class ids (second item of every entry) of BREEDS' ``dataset_class_info.json``."""
    try:
        class_info = json.loads(read_text_file(path, "a JSON list of [index, wnid, name] entries"))
    except json.JSONDecodeError as err:
        raise DatasetFileError(
            f"{path}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}). {_BREEDS_WHERE}"
        ) from None
    if not isinstance(class_info, list) or not class_info:
        raise DatasetFileError(
            f"{path} holds {type(class_info).__name__} {str(class_info)[:40]!r}, not a non-empty list of [index, "
            f"wnid, name] entries. {_BREEDS_WHERE}"
        )
    for number, entry in enumerate(class_info):
        if not isinstance(entry, list) or len(entry) < 2 or not _WNID.match(str(entry[1])):
            raise DatasetFileError(
                f"{path}, entry {number}: {str(entry)[:60]} is not [index, wnid, name] with a WordNet id "
                "(n + 8 digits)."
            )
    return {str(entry[1]) for entry in class_info}


def _read_edges(path: Path) -> list[tuple[str, str]]:
    """The ``parent child`` lines of BREEDS' ``class_hierarchy.txt``."""
    edges = []
    for number, line in enumerate(read_text_file(path, "'parent child' lines").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise DatasetFileError(
                f"{path}, line {number}: {line.strip()[:80]!r} has {len(tokens)} tokens; expected 'parent child' "
                "(two WordNet ids)."
            )
        edges.append((tokens[0], tokens[1]))
    return edges


class _Hierarchy:
    """The part of ``robustness.tools.breeds_helpers.ClassHierarchy`` that the four BREEDS datasets use."""

    def __init__(self, hierarchy_dir: Path) -> None:
        files = {name: require_file(hierarchy_dir / name, _BREEDS_WHERE) for name in BREEDS_FILES}
        self.leaves = _read_class_info(files["dataset_class_info.json"])
        edges = _read_edges(files["class_hierarchy.txt"])
        self.names = read_names(files["node_names.txt"])
        # only the ancestors of ImageNet classes count (robustness: _make_parent_graph's backward search)
        parents: dict[str, set[str]] = {}
        for parent, child in edges:
            parents.setdefault(child, set()).add(parent)
        relevant, todo = set(), [leaf for leaf in self.leaves if leaf in parents]
        while todo:
            node = todo.pop()
            if node not in relevant:
                relevant.add(node)
                todo.extend(parents.get(node, ()))
        self.children: dict[str, set[str]] = {}
        for parent, child in edges:
            if child in relevant:
                self.children.setdefault(parent, set()).add(child)
        # level: the longest path from the root (robustness: _make_level_dict)
        self.level: dict[str, int] = {}
        frontier, depth = {_BREEDS_ROOT}, 0
        while frontier:
            if depth > len(self.children) + 1:
                raise DatasetFileError(f"{files['class_hierarchy.txt']} has a cycle.")
            for node in frontier:
                self.level[node] = depth
            frontier = {c for node in frontier for c in self.children.get(node, ())}
            depth += 1

    def below(self, node: str, depth: int) -> set[str]:
        """Nodes at most ``depth`` edges below ``node``, itself included (robustness: ``traverse``)."""
        seen, frontier = {node}, {node}
        for _ in range(depth):
            frontier = {c for n in frontier for c in self.children.get(n, ())} - seen
            seen |= frontier
        return seen

    def leaves_below(self, node: str) -> list[str]:
        """Sorted ImageNet classes under ``node``, not looking below a class (robustness: ``leaves_reachable``)."""
        found, todo, seen = set(), [node], set()
        while todo:
            for child in self.children.get(todo.pop(), ()):
                if child in self.leaves:
                    found.add(child)
                elif child not in seen:
                    seen.add(child)
                    todo.append(child)
        if node in self.leaves:
            found.add(node)
        return sorted(found)

    def superclasses(self, level: int, ancestor: str | None, n_sub: int) -> dict[str, list[str]]:
        """Superclass -> its subclasses: ``get_superclasses(level, Nsubclasses, split=None, balanced=True)``."""
        nodes = {n for n, lev in self.level.items() if lev == level}
        if ancestor is not None:
            nodes &= self.below(ancestor, _BREEDS_TRAVERSE_DEPTH)
        rng = np.random.RandomState(_BREEDS_SEED)
        chosen: dict[str, list[str]] = {}
        for node in sorted(nodes):
            leaves = self.leaves_below(node)
            if len(leaves) >= n_sub:
                chosen[node] = [str(w) for w in rng.choice(leaves, n_sub, replace=False)]
        return chosen


def breeds_classes(hierarchy_dir: str | os.PathLike, name: str) -> dict[str, list[str]]:
    """The classes of a BREEDS dataset: superclass WordNet id -> its subclass (ImageNet class) ids.

    The construction of ``robustness.tools.breeds_helpers.make_<name>(hierarchy_dir, split=None)`` (MadryLab), on
    the BREEDS hierarchy files (:data:`BREEDS_FILES`) in ``hierarchy_dir``: the nodes at the dataset's level of
    the hierarchy (below its ancestor) with enough ImageNet classes below them, each with that many of them drawn
    at random (``numpy.random.RandomState(2)``, superclasses in sorted order).

    Raises
    ------
    FileNotFoundError
        ``hierarchy_dir`` or one of its files is missing.
    falcon_sc.errors.DatasetFileError
        A hierarchy file is empty, binary or malformed (bad JSON, a line that is not ``parent child``), or the
        hierarchy gives the dataset no superclass (the message names the file and the line or entry).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> classes = fal.datasets.breeds_classes("breeds_hierarchy", "living17")  # doctest: +SKIP
    >>> len(classes), sum(map(len, classes.values()))  # doctest: +SKIP
    (17, 68)
    """
    check_choice("name", name, tuple(BREEDS_DATASETS))
    folder = require_dir(hierarchy_dir, _BREEDS_WHERE)
    return _dataset_classes(_Hierarchy(folder), folder, name)


def _dataset_classes(hierarchy: _Hierarchy, folder: Path, name: str) -> dict[str, list[str]]:
    """``hierarchy.superclasses`` of the BREEDS dataset ``name``; none at all is a ``DatasetFileError``."""
    level, ancestor, n_sub = BREEDS_DATASETS[name]
    classes = hierarchy.superclasses(level, ancestor, n_sub)
    if not classes:
        below = "" if ancestor is None else f" below {ancestor}"
        raise DatasetFileError(
            f"the BREEDS hierarchy files in {folder} give {name} no superclass: no node at level {level}{below} has "
            f"{n_sub} ImageNet classes of dataset_class_info.json under it. {_BREEDS_WHERE}"
        )
    return classes


def _imagenet_anndata(
    root: str | os.PathLike,
    fine_to_coarse: dict[str, str],
    split: str,
    *,
    val: tuple[float, int] | None,
    name: str,
    source: str,
    size: int,
    names: dict[str, str] | None,
) -> ad.AnnData:
    """The images of the classes ``fine_to_coarse`` in ``root/train`` (``"train"``) and ``root/val`` (``"test"``).

    ``val = (val_fraction, seed)`` marks that fraction of the ``root/train`` images ``"val"`` after a shuffle with
    ``numpy.random.RandomState(seed)`` (the BREEDS reference: ``sklearn.utils.shuffle(random_state=1000)``, first
    90% train). Only the folders ``split`` needs are read.
    """
    root = Path(root).expanduser()
    paths, fine, parts = [], [], []
    for part, folder in (("train", "train"), ("test", "val")):
        if split not in ("all", part) and not (split == "val" and part == "train"):
            continue
        split_root = require_dir(root / folder, IMAGENET_WHERE)
        found, owner = list_class_images(split_root, list(fine_to_coarse), IMAGENET_WHERE)
        labels = np.full(len(found), part, dtype=object)
        if part == "train" and val is not None:
            order = np.arange(len(found))
            np.random.RandomState(val[1]).shuffle(order)
            labels[order[int(len(order) * (1 - val[0])) :]] = "val"
        keep = np.flatnonzero((labels == split) | (split == "all"))
        paths += [found[i] for i in keep]
        fine += list(owner[keep])
        parts += list(labels[keep])
    if not paths:
        raise DatasetFileError(
            f"no images found in {root} for split={split!r}: the {len(fine_to_coarse)} classes' folders hold no "
            f"image for it{'' if val is None else f' (val_fraction={val[0]})'}."
        )
    coarse = [fine_to_coarse[f] for f in fine]
    return image_anndata(
        paths, fine, coarse, parts, root=root.resolve(), name=name, source=source, size=size, names=names
    )


@doc_params(doc_imagenet_root=doc_imagenet_root, doc_size=doc_size, doc_returns=doc_returns, doc_missing=doc_missing)
def breeds(
    root: str | os.PathLike,
    name: str,
    *,
    hierarchy_dir: str | os.PathLike,
    split: str = "train",
    size: int = 224,
    val_fraction: float = 0.1,
    random_state: int = 1000,
) -> ad.AnnData:
    """A BREEDS dataset (living17, nonliving26, entity30, entity13) from a local ImageNet folder, as image paths.

    BREEDS (Santurkar et al., ICLR 2021) groups ImageNet classes (fine) into superclasses (coarse) of the WordNet
    hierarchy; the class lists are rebuilt from the BREEDS hierarchy files exactly as ``robustness``'s
    ``make_<name>(hierarchy_dir, split=None)`` builds them (see :func:`breeds_classes`), which is what the FALCON
    reference (github.com/mlbio-epfl/falcon, ``datasets/breeds/breeds.py``) trains on:

    ============= ====== ====
    name          coarse fine
    ============= ====== ====
    living17      17     68
    nonliving26   26     104
    entity30      30     240
    entity13      13     260
    ============= ====== ====

    Splits as in the reference: the images of ``root/train`` are shuffled with ``numpy.random.RandomState(1000)``
    (``sklearn.utils.shuffle(random_state=1000)``) and the first 90% are ``"train"``, the rest ``"val"``;
    ``root/val`` (ImageNet's validation images) is ``"test"``.

    ``X`` is empty (no variables): ``obs["path"]`` holds the absolute path of each image, read lazily with
    ``falcon_sc.data.ImageFiles.from_anndata(adata)``; ``uns["falcon_dataset"]["image_shape"]`` is
    ``[3, size, size]``. ``obs["fine"]`` / ``obs["coarse"]`` are WordNet ids (unique; ImageNet has two classes named
    "crane"), ``obs["fine_name"]`` / ``obs["coarse_name"]`` their names from ``node_names.txt``.

    Parameters
    ----------
    {doc_imagenet_root}
    name
        ``"living17"``, ``"nonliving26"``, ``"entity30"`` or ``"entity13"``.
    hierarchy_dir
        Folder with the BREEDS hierarchy files ``dataset_class_info.json``, ``class_hierarchy.txt`` and
        ``node_names.txt`` (from github.com/MadryLab/BREEDS-Benchmarks, ``imagenet_class_hierarchy/modified``).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    {doc_size}
    val_fraction
        Fraction of the shuffled ``root/train`` images that is ``"val"`` (the reference: 0.1).
    random_state
        Seed of the shuffle (the reference: 1000).

    Returns
    -------
    {doc_returns}

    Raises
    ------
    {doc_missing}
    falcon_sc.errors.DatasetFileError
        A hierarchy file is empty or binary, ``dataset_class_info.json`` is not valid JSON (the line and column are
        named) or not a list of ``[index, wnid, name]`` entries, a line of ``class_hierarchy.txt`` does not hold
        two ids, ``node_names.txt`` holds no ``id name`` line, the hierarchy gives the dataset no superclass, a
        class folder holds no image file, or no image is left for ``split`` (each message names the file and the
        line or entry).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.breeds("imagenet", "living17", hierarchy_dir="breeds_hierarchy")  # doctest: +SKIP
    >>> adata.obs["coarse"].nunique(), adata.obs["fine"].nunique()  # doctest: +SKIP
    (17, 68)
    >>> images = fal.data.ImageFiles.from_anndata(adata)  # doctest: +SKIP
    """
    check_choice("name", name, tuple(BREEDS_DATASETS))
    check_choice("split", split, (*SPLITS, "all"))
    check_size(size)
    check_val_fraction(val_fraction)
    check_int("random_state", random_state)
    folder = require_dir(hierarchy_dir, _BREEDS_WHERE)
    hierarchy = _Hierarchy(folder)
    classes = _dataset_classes(hierarchy, folder, name)
    fine_to_coarse = {fine: coarse for coarse, members in classes.items() for fine in members}
    return _imagenet_anndata(
        root,
        fine_to_coarse,
        split,
        val=(val_fraction, random_state),
        name=name,
        source=f"BREEDS {name} (MadryLab robustness breeds_helpers, hierarchy from {folder}) on ImageNet at {root}",
        size=size,
        names=hierarchy.names,
    )


def _read_tiered_csv(path: Path, fine_to_coarse: dict[str, str]) -> None:
    """Add the ``fine wnid,coarse wnid`` rows of a tieredImageNet CSV to ``fine_to_coarse``.

    An optional header line comes first. Every problem (an empty, binary or header-only file, a short row, an empty
    coarse class, a fine class with two coarse classes) is a ``DatasetFileError`` naming the file and line.
    """
    what = "'fine wnid,coarse wnid' rows"
    try:
        reader = csv.reader(io.StringIO(read_text_file(path, what), newline=""))
        lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise DatasetFileError(f"{path}: not a readable CSV file ({err}).") from None
    if lines and not _WNID.match(lines[0][1][0].strip()):
        lines = lines[1:]  # a header line
    if not lines:
        raise DatasetFileError(f"{path} holds no {what} (only a header). {_TIERED_WHERE}")
    for number, (line, row) in enumerate(lines, start=1):
        cells = [cell.strip() for cell in row]
        if len(cells) < 2 or not _WNID.match(cells[0]) or not cells[1]:
            raise DatasetFileError(
                f"{path}, line {line} (row {number}): {row!r} is not 'fine wnid,coarse wnid' (a WordNet id and a "
                "non-empty coarse class)."
            )
        fine, coarse = cells[0], cells[1]
        if fine_to_coarse.get(fine, coarse) != coarse:
            raise DatasetFileError(
                f"{path}, line {line}: fine class {fine} has two coarse classes, {fine_to_coarse[fine]} and {coarse}."
            )
        fine_to_coarse[fine] = coarse


@doc_params(doc_imagenet_root=doc_imagenet_root, doc_size=doc_size, doc_returns=doc_returns, doc_missing=doc_missing)
def tiered_imagenet(
    root: str | os.PathLike,
    *,
    hierarchy_dir: str | os.PathLike,
    split: str = "train",
    size: int = 224,
    node_names: str | os.PathLike | None = None,
) -> ad.AnnData:
    """The tieredImageNet hierarchy (34 coarse / 608 fine classes) over a local ImageNet folder, as image paths.

    As in the FALCON reference (github.com/mlbio-epfl/falcon, ``datasets/tiered_imagenet/tiered_imagenet.py``):
    the fine classes of all three tieredImageNet class splits (``train.csv``, ``val.csv``, ``test.csv``, rows
    ``fine wnid,coarse wnid``) are pooled, with every ImageNet image of those classes at full resolution (not
    tieredImageNet's 84x84 copies). ``root/train`` is ``"train"`` and ``root/val`` (ImageNet's validation images)
    is ``"test"``; the reference has no separate validation split (it evaluates on ``root/val``).

    ``X`` is empty: ``obs["path"]`` holds the absolute path of each image (read lazily with
    ``falcon_sc.data.ImageFiles.from_anndata(adata)``); ``obs["fine"]`` / ``obs["coarse"]`` are WordNet ids;
    ``uns["falcon_dataset"]["image_shape"]`` is ``[3, size, size]``.

    Parameters
    ----------
    {doc_imagenet_root}
    hierarchy_dir
        Folder with tieredImageNet's ``train.csv``, ``val.csv`` and ``test.csv``.
    split
        ``"train"``, ``"test"`` or ``"all"``.
    {doc_size}
    node_names
        Optional file of class names (BREEDS' ``node_names.txt`` or ImageNet's ``LOC_synset_mapping.txt``): adds
        ``obs["fine_name"]`` and ``obs["coarse_name"]``.

    Returns
    -------
    {doc_returns}

    Raises
    ------
    {doc_missing}
    falcon_sc.errors.DatasetFileError
        A CSV file is empty, binary or holds only a header, a row is not ``fine wnid,coarse wnid`` with a non-empty
        coarse class, a fine class has two coarse classes, ``node_names`` holds no ``id name`` line, or a class
        folder holds no image file (each message names the file and the line).

    Examples
    --------
    >>> import falcon_sc as fal
    >>> adata = fal.datasets.tiered_imagenet("imagenet", hierarchy_dir="tiered_split")  # doctest: +SKIP
    >>> adata.obs["coarse"].nunique(), adata.obs["fine"].nunique()  # doctest: +SKIP
    (34, 608)
    """
    if split == "val":
        raise ValueError(
            "split='val': tiered_imagenet has no validation split (the FALCON reference trains on ImageNet's train "
            "folder and evaluates on its val folder); use 'train', 'test' or 'all'."
        )
    check_choice("split", split, ("train", "test", "all"))
    check_size(size)
    folder = require_dir(hierarchy_dir, _TIERED_WHERE)
    names = (
        None
        if node_names is None
        else read_names(
            require_file(
                node_names, "node_names should name a file of class names (node_names.txt, LOC_synset_mapping.txt)."
            )
        )
    )
    fine_to_coarse: dict[str, str] = {}
    for csv_name in TIERED_FILES:
        _read_tiered_csv(require_file(folder / csv_name, _TIERED_WHERE), fine_to_coarse)
    return _imagenet_anndata(
        root,
        fine_to_coarse,
        split,
        val=None,
        name="tiered_imagenet",
        source=f"tieredImageNet hierarchy ({folder}) on ImageNet at {root}, as in the FALCON reference",
        size=size,
        names=names,
    )
