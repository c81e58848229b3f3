"""Real-cell benchmark cases: the labelled real datasets and *regrouped* real cases, with a fixed tuning split.

A regrouped case keeps a real dataset's cells and its authors' fine labels, and replaces the coarse labels by a random
grouping of the fine classes (1 to ``max_children`` children per coarse class, group sizes drawn so that both
single-child and large classes occur). That gives real expression noise with a known answer, and many cases to tell
methods apart. The split is fixed before any tuning: the datasets in :data:`TUNING_DATASETS` (and their regroupings)
may inform a choice of default; those in :data:`HELD_OUT_DATASETS` (and theirs) never do, and are reported apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

REAL_DATASETS: tuple[str, ...] = ("pbmc3k", "zeisel", "kang", "pbmc68k", "moncada")
"""Every labelled real dataset the bench knows (see :mod:`falcon_sc.datasets`)."""

TUNING_DATASETS: tuple[str, ...] = ("pbmc3k", "zeisel", "kang")
"""Real datasets (and their regroupings) that defaults may be tuned on."""

HELD_OUT_DATASETS: tuple[str, ...] = ("pbmc68k", "moncada")
"""Real datasets (and their regroupings) that no tuning decision sees: reported apart."""


@dataclass(frozen=True)
class RealCase:
    """One real benchmark case: a dataset's cells with a coarse grouping of its fine labels.

    Attributes
    ----------
    name
        ``<dataset>`` for the authors' own coarse labels, ``<dataset>~<k>`` for regrouping ``k``.
    dataset
        Name of the source dataset.
    coarse
        Coarse label per cell.
    fine
        True fine label per cell (the authors').
    held_out
        Whether the case belongs to the held-out split.
    """

    name: str
    dataset: str
    coarse: np.ndarray
    fine: np.ndarray
    held_out: bool

    @property
    def children(self) -> dict[str, int]:
        """True number of fine classes per coarse class."""
        table = pd.crosstab(self.coarse, self.fine) > 0
        return {str(c): int(n) for c, n in table.sum(axis=1).items()}

    def adata(self, source: AnnData, coarse_key: str = "coarse") -> AnnData:
        """A copy of ``source`` whose ``obs[coarse_key]`` holds this case's coarse labels (categorical)."""
        out = source.copy()
        out.obs[coarse_key] = pd.Categorical(self.coarse)
        return out


def regroup(fine_classes: list[str], rng: np.random.Generator, *, max_children: int = 6) -> dict[str, str]:
    """Random grouping of fine classes into coarse classes of 1 to ``max_children`` children.

    Group sizes are drawn uniformly from ``1..max_children`` (the last group takes what is left); at least two coarse
    classes and at least one with two or more children are guaranteed when there are three or more fine classes.

    Parameters
    ----------
    fine_classes
        The fine class names (at least 3).
    rng
        Random generator.
    max_children
        Largest number of children of a coarse class.

    Returns
    -------
    dict
        Fine class -> coarse name ``"G<i>"``.

    Examples
    --------
    >>> import numpy as np
    >>> from falcon_sc.bench.real import regroup
    >>> grouping = regroup(list("abcdefg"), np.random.default_rng(0))
    >>> sorted(grouping) == list("abcdefg"), 2 <= len(set(grouping.values())) <= 7
    (True, True)
    """
    if len(fine_classes) < 3:
        raise ValueError(f"regroup needs at least 3 fine classes, got {len(fine_classes)}")
    if max_children < 2:
        raise ValueError(f"max_children={max_children} must be at least 2")
    n = len(fine_classes)
    while True:
        sizes: list[int] = []
        while sum(sizes) < n:
            sizes.append(int(min(rng.integers(1, max_children + 1), n - sum(sizes))))
        if len(sizes) >= 2 and max(sizes) >= 2:
            break
    order = rng.permutation(n)
    grouping, start = {}, 0
    for g, size in enumerate(sizes):
        for i in order[start : start + size]:
            grouping[str(fine_classes[i])] = f"G{g}"
        start += size
    return grouping


def real_cases(
    dataset: str,
    fine: np.ndarray,
    coarse: np.ndarray,
    *,
    n_regrouped: int = 10,
    seed: int = 0,
    max_children: int = 6,
) -> list[RealCase]:
    """The authors' case and ``n_regrouped`` regrouped cases of one real dataset.

    Parameters
    ----------
    dataset
        Dataset name; its split (tuning or held out) follows :data:`HELD_OUT_DATASETS`.
    fine, coarse
        The authors' fine and coarse label per cell.
    n_regrouped
        Number of random regroupings.
    seed
        Seed of the regroupings (a dataset's ``k``-th regrouping is the same for every ``n_regrouped > k``).
    max_children
        Largest number of children of a regrouped coarse class.

    Returns
    -------
    list of RealCase
        The authors' grouping first.
    """
    fine = np.asarray(fine).astype(str)
    held_out = dataset in HELD_OUT_DATASETS
    cases = [RealCase(dataset, dataset, np.asarray(coarse).astype(str), fine, held_out)]
    classes = sorted(set(fine))
    for k in range(n_regrouped):
        rng = np.random.default_rng([seed, k, sum(map(ord, dataset))])
        grouping = regroup(classes, rng, max_children=max_children)
        cases.append(RealCase(f"{dataset}~{k}", dataset, np.array([grouping[f] for f in fine]), fine, held_out))
    return cases


def _case_loader(dataset: str, index: int, n_regrouped: int, seed: int, max_children: int):
    def load() -> AnnData:
        from ._datasets import DATASETS

        source = DATASETS[dataset].loader()
        fine = source.obs["fine"].to_numpy()
        cases = real_cases(
            dataset,
            fine,
            source.obs["coarse"].to_numpy(),
            n_regrouped=n_regrouped,
            seed=seed,
            max_children=max_children,
        )
        source.obs["coarse"] = pd.Categorical(cases[index].coarse)
        if index:  # the stored authors' relation no longer holds: the bench takes each fine class's (only) group
            source.uns.get("falcon_dataset", {}).pop("relation", None)
        return source

    return load


def real_specs(
    split: str = "tuning",
    *,
    n_regrouped: int = 10,
    datasets: tuple[str, ...] | None = None,
    seed: int = 0,
    max_children: int = 6,
) -> list:
    """Benchmark datasets (:class:`~falcon_sc.bench.DatasetSpec`) of the real-cell suite.

    Parameters
    ----------
    split
        ``"tuning"`` (:data:`TUNING_DATASETS`), ``"held_out"`` (:data:`HELD_OUT_DATASETS`) or ``"all"``.
    n_regrouped
        Regrouped cases per dataset, after the authors' own grouping.
    datasets
        Restrict to these real datasets (each must belong to ``split``).
    seed, max_children
        As in :func:`real_cases`.

    Returns
    -------
    list of DatasetSpec
        Named ``<dataset>`` (authors' coarse labels) and ``<dataset>~<k>`` (regrouping ``k``); each loads lazily.
    """
    from ._datasets import DATASETS, DatasetSpec

    pools = {"tuning": TUNING_DATASETS, "held_out": HELD_OUT_DATASETS, "all": REAL_DATASETS}
    if split not in pools:
        raise ValueError(f"split={split!r} must be one of {sorted(pools)}")
    chosen = pools[split] if datasets is None else tuple(datasets)
    unknown = [d for d in chosen if d not in pools[split]]
    if unknown:
        raise ValueError(f"datasets {unknown} are not in the {split!r} split {list(pools[split])}")
    if isinstance(n_regrouped, bool) or not isinstance(n_regrouped, int) or n_regrouped < 0:
        raise ValueError(f"n_regrouped={n_regrouped!r} must be a non-negative int")
    specs = []
    for d in chosen:
        for k in range(n_regrouped + 1):
            name = d if k == 0 else f"{d}~{k - 1}"
            what = "authors' coarse labels" if k == 0 else f"regrouping {k - 1} of the authors' fine labels"
            specs.append(
                DatasetSpec(
                    name,
                    _case_loader(d, k, n_regrouped, seed, max_children),
                    description=f"{DATASETS[d].description}: {what}",
                )
            )
    return specs
