"""Real-cell benchmark cases: the labelled real datasets and *regrouped* real cases, with a fixed tuning split.

A regrouped case keeps a real dataset's cells and its authors' fine labels, and replaces the coarse labels by a random
grouping of the fine classes (1 to ``max_children`` children per coarse class, group sizes drawn so that both
single-child and large classes occur). That gives real expression noise with a known answer, and many cases to tell
methods apart. The split is fixed before any tuning: the datasets in :data:`TUNING_DATASETS` (and their regroupings)
may inform a choice of default; those in :data:`HELD_OUT_DATASETS` (and theirs) never do, and are reported apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from falcon_sc._checks import check_choice, check_int

REAL_DATASETS: tuple[str, ...] = ("pbmc3k", "zeisel", "kang", "pbmc68k", "moncada")
"""Every labelled real dataset the bench knows (see :mod:`falcon_sc.datasets`)."""

TUNING_DATASETS: tuple[str, ...] = ("pbmc3k", "zeisel", "kang")
"""Real datasets (and their regroupings) that defaults may be tuned on."""

HELD_OUT_DATASETS: tuple[str, ...] = ("pbmc68k", "moncada")
"""Real datasets (and their regroupings) that no tuning decision sees: reported apart."""

REAL_METHODS: tuple[str, ...] = ("falcon", "kmeans_within", "leiden_within", "leiden_scanpy", "subcluster")
"""Methods of :func:`run_real` by default: FALCON and the within-coarse baselines that also take known counts."""

COUNTS: tuple[str, ...] = ("learned", "given")
"""Counts modes of :func:`run_real`: ``"learned"`` tells each method the true total of fine classes only, ``"given"``
the true number of fine classes of every coarse class (``run(known_counts=True)``)."""

REAL_METRICS: tuple[str, ...] = ("within_coarse_ari", "macro_accuracy")
"""Metrics of the real-cell summary tables."""

TIE: float = 0.005
"""FALCON counts as at or above the best other method on a case when its mean is at least that method's minus this."""

_SPLIT_TITLES = {
    "tuning": f"Tuning split ({', '.join(TUNING_DATASETS)}): may inform choices of defaults",
    "held_out": f"Held-out split ({', '.join(HELD_OUT_DATASETS)}): never used for a choice",
}
COUNT_TITLES: dict[str, str] = {
    "learned": "Counts learned: each method is told the true total of fine classes",
    "given": "Counts given: each method is told the true number of fine classes of every coarse class",
}
"""Section titles of the counts modes (:data:`COUNTS`) in the summary tables."""


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
    check_int("max_children", max_children, 2)
    n = len(fine_classes)
    while True:
        sizes: list[int] = []
        while sum(sizes) < n:
            sizes.append(min(int(rng.integers(1, max_children + 1)), n - sum(sizes)))
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
    check_choice("split", split, tuple(pools))
    chosen = pools[split] if datasets is None else tuple(datasets)
    unknown = [d for d in chosen if d not in pools[split]]
    if unknown:
        raise ValueError(f"datasets {unknown} are not in the {split!r} split {list(pools[split])}")
    check_int("n_regrouped", n_regrouped, 0)
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


def check_counts(counts: str | Iterable[str]) -> tuple[str, ...]:
    """``counts`` as a tuple of :data:`COUNTS` modes (a comma separated string is split); ``ValueError`` otherwise."""
    modes = tuple(c.strip() for c in counts.split(",") if c.strip()) if isinstance(counts, str) else tuple(counts)
    if not modes or any(m not in COUNTS for m in modes) or len(set(modes)) < len(modes):
        raise ValueError(f"counts={counts!r} must name one or both of {list(COUNTS)}, each once")
    return modes


def _label_runs(df: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Add the columns ``split``, ``source``, ``regrouped`` and ``counts`` to rows of :func:`~falcon_sc.bench.run`."""
    df = df.copy()
    source = df["dataset"].astype(str).str.split("~").str[0]
    df.insert(1, "split", np.where(source.isin(HELD_OUT_DATASETS), "held_out", "tuning"))
    df.insert(2, "source", source)
    df.insert(3, "regrouped", df["dataset"].astype(str).str.contains("~"))
    df.insert(4, "counts", mode)
    return df


def run_real(
    split: str = "tuning",
    *,
    methods: Sequence[str] | Mapping[str, object] | str = REAL_METHODS,
    seeds: int | Iterable[int] = (0, 1, 2),
    n_regrouped: int = 10,
    counts: str | Sequence[str] = COUNTS,
    datasets: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run the real-cell suite: every case of :func:`real_specs` x method x seed, once per counts mode.

    Parameters
    ----------
    split
        ``"tuning"``, ``"held_out"`` or ``"all"`` (both), see :func:`real_specs`.
    methods
        Method names (see :data:`falcon_sc.bench.METHODS`), callables or a mapping name -> either, as in
        :func:`~falcon_sc.bench.run`. The method named ``"falcon"`` is compared with the others in the summary.
    seeds
        Seeds, or their number ``n`` for ``0..n-1``.
    n_regrouped
        Regrouped cases per dataset, after the authors' own grouping.
    counts
        Counts modes (:data:`COUNTS`): ``"learned"`` (``n_fine`` is the true total) and/or ``"given"``
        (``run(known_counts=True)``: the true count of every coarse class).
    datasets
        Restrict to these real datasets of ``split``.
    out
        Folder for ``runs.csv`` (all rows) and ``summary.md`` (:func:`real_summary_markdown`), rewritten after each
        counts mode; ``<out>/<mode>/`` holds :func:`~falcon_sc.bench.run`'s own ``runs.csv`` (written as the runs
        finish) and per-case ``summary.md``. Nothing is written when ``None``.
    progress
        Show a progress bar over the runs.

    Returns
    -------
    pandas.DataFrame
        The rows of :func:`~falcon_sc.bench.run` with the columns ``split`` (``"tuning"``/``"held_out"``),
        ``source`` (the real dataset), ``regrouped`` (bool) and ``counts`` (``"learned"``/``"given"``) added.
    """
    from .run import resolve_methods, run

    modes = check_counts(counts)
    specs = real_specs(split, n_regrouped=n_regrouped, datasets=None if datasets is None else tuple(datasets))
    if not specs:
        raise ValueError(f"datasets={datasets!r} selects no dataset of the {split!r} split")
    resolved = resolve_methods(methods)
    if not resolved:
        raise ValueError(f"methods={methods!r} names no method")
    out_dir = Path(out) if out is not None else None
    frames: list[pd.DataFrame] = []
    for mode in modes:
        rows = run(
            specs,
            resolved,
            seeds,
            None if out_dir is None else out_dir / mode,
            known_counts=mode == "given",
            progress=progress,
            plots=False,
        )
        frames.append(_label_runs(rows, mode))
        if out_dir is not None:
            done = pd.concat(frames, ignore_index=True)
            done.to_csv(out_dir / "runs.csv", index=False)
            (out_dir / "summary.md").write_text(real_summary_markdown(done))
    return pd.concat(frames, ignore_index=True)


def case_means(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean of ``metric`` over the successful seeds of every (case, method); NaN where every seed failed.

    Columns ``dataset`` (the case), ``source``, ``regrouped``, ``method`` and ``metric``, in the order of ``df``.
    """
    ok = df[df["error"] == ""]
    means = ok.groupby(["dataset", "method"], sort=False)[metric].mean().reset_index()
    keys = df[["dataset", "source", "regrouped", "method"]].drop_duplicates()
    return keys.merge(means, how="left", on=["dataset", "method"])


def source_table_markdown(df: pd.DataFrame, metric: str) -> str:
    """Markdown table method x source dataset of the mean ``metric`` over cases (each the mean over its seeds).

    Each source dataset has a column for its authors' case (``pbmc3k``) and one for its regrouped cases
    (``pbmc3k~regrouped (n)``); :func:`~falcon_sc.bench.pivot_markdown` makes the table, best method in bold.

    Examples
    --------
    >>> import pandas as pd
    >>> from falcon_sc.bench.real import source_table_markdown
    >>> df = pd.DataFrame({"dataset": ["kang", "kang~0", "kang~1"] * 2, "source": "kang",
    ...                    "regrouped": [False, True, True] * 2, "method": ["a"] * 3 + ["b"] * 3,
    ...                    "within_coarse_ari": [0.5, 0.2, 0.4, 0.1, 0.6, 0.6], "error": ""})
    >>> print(source_table_markdown(df, "within_coarse_ari"))
    | method | kang | kang~regrouped (2) |
    |---|---:|---:|
    | a | **0.500** | 0.300 |
    | b | 0.100 | **0.600** |
    """
    from .run import pivot_markdown

    cases = case_means(df, metric)
    n_regrouped = cases[cases["regrouped"]].groupby("source")["dataset"].nunique()
    cases["dataset"] = [
        f"{s}~regrouped ({n_regrouped[s]})" if r else s
        for s, r in zip(cases["source"], cases["regrouped"], strict=True)
    ]
    return pivot_markdown(cases.assign(error=""), metric)


def _vs_best_cells(table: pd.DataFrame, falcon: str, others: list[str], digits: int) -> str:
    """Two cells for a case x method ``table`` of means: FALCON minus the best other mean, and FALCON's wins."""
    means = table[others].mean()
    falcon_mean = table[falcon].mean()
    if means.isna().all() or pd.isna(falcon_mean):
        delta = "–"
    else:
        best = means.idxmax()
        delta = f"{falcon_mean - means[best]:+.{digits}f} ({best})"
    best_case = table[others].max(axis=1)
    valid = table[falcon].notna() & best_case.notna()
    wins = int((table.loc[valid, falcon] >= best_case[valid] - TIE).sum())
    return f"{delta} | {wins}/{int(valid.sum())}"


def falcon_vs_best_markdown(df: pd.DataFrame, *, falcon: str = "falcon", digits: int = 3) -> str:
    """Markdown table "FALCON vs the best baseline", one row per source dataset (and ``all`` when several).

    For each of :data:`REAL_METRICS`: ``Δ``, FALCON's mean over the dataset's cases (each the mean over its seeds)
    minus the best of the other methods' means (that method in brackets), and ``FALCON ≥ best``, on how many cases
    FALCON is at or above the best other method of the case (within :data:`TIE`). The references that see the truth
    (:data:`~falcon_sc.bench.run.REFERENCES`) count as no other method.

    Examples
    --------
    >>> import pandas as pd
    >>> from falcon_sc.bench.real import falcon_vs_best_markdown
    >>> df = pd.DataFrame({"dataset": ["kang", "kang~0"] * 2, "source": "kang", "regrouped": [False, True] * 2,
    ...                    "method": ["falcon"] * 2 + ["subcluster"] * 2, "within_coarse_ari": [0.5, 0.3, 0.4, 0.35],
    ...                    "macro_accuracy": [0.8, 0.7, 0.6, 0.702], "error": ""})
    >>> print(falcon_vs_best_markdown(df))
    | dataset | cases | Δ within_coarse_ari | FALCON ≥ best | Δ macro_accuracy | FALCON ≥ best |
    |---|---:|---:|---:|---:|---:|
    | kang | 2 | +0.025 (subcluster) | 1/2 | +0.099 (subcluster) | 2/2 |
    """
    from .run import REFERENCES

    methods = list(dict.fromkeys(df["method"]))
    others = [m for m in methods if m != falcon and m not in REFERENCES]
    if falcon not in methods or not others:
        return f"(no comparison: needs the method {falcon!r} and another one that does not see the truth)"
    tables = {m: case_means(df, m).pivot(index="dataset", columns="method", values=m) for m in REAL_METRICS}
    groups = [(s, df.loc[df["source"] == s, "dataset"].unique()) for s in dict.fromkeys(df["source"])]
    if len(groups) > 1:
        groups.append(("all", df["dataset"].unique()))
    head = "".join(f" Δ {m} | FALCON ≥ best |" for m in REAL_METRICS)
    lines = ["| dataset | cases |" + head, "|---|---:|" + "---:|---:|" * len(REAL_METRICS)]
    for name, cases in groups:
        cells = [_vs_best_cells(tables[m].loc[cases], falcon, others, digits) for m in REAL_METRICS]
        lines.append(f"| {name} | {len(cases)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failure_lines(df: pd.DataFrame) -> list[str]:
    """One line counting the failed runs per method (none when every run succeeded)."""
    failed = df[df["error"] != ""].groupby("method", sort=False).size()
    if failed.empty:
        return []
    total = df.groupby("method").size()
    listed = ", ".join(f"{m} {n}/{total[m]}" for m, n in failed.items())
    return ["", f"Failed runs, left out of the means (see the `error` column of runs.csv): {listed}."]


def real_summary_markdown(df: pd.DataFrame) -> str:
    """The report of :func:`run_real`: per split (tuning first) and counts mode, the tables of :data:`REAL_METRICS`.

    For each split and counts mode: :func:`source_table_markdown` of each metric and
    :func:`falcon_vs_best_markdown`. Failed runs are left out of the means and counted below the tables.
    """
    seeds = sorted(int(s) for s in df["seed"].dropna().unique())
    lines = [
        "# falcon-bench real-cell suite",
        "",
        f"Seeds {seeds}. A case is one dataset name: `<dataset>` keeps the authors' coarse labels, `<dataset>~<k>` "
        "is random regrouping k of the authors' fine labels (columns `<dataset>~regrouped (n)`: the mean over its n "
        "regrouped cases). Means are over the successful seeds of a case, then over cases; higher is better; best "
        "method per column in bold, the references that see the true labels excepted. FALCON vs the best baseline: "
        "Δ is FALCON's mean minus the best mean of the other methods (that method in brackets); FALCON ≥ best "
        f"counts the cases where FALCON's mean is at or above the best other method's (within {TIE}).",
    ]
    for split in ("tuning", "held_out"):
        part = df[df["split"] == split]
        if part.empty:
            continue
        lines += ["", f"## {_SPLIT_TITLES[split]}"]
        for mode in COUNTS:
            sub = part[part["counts"] == mode]
            if sub.empty:
                continue
            lines += ["", f"### {COUNT_TITLES[mode]}"]
            for metric in REAL_METRICS:
                lines += ["", f"#### {metric}", "", source_table_markdown(sub, metric)]
            lines += ["", "#### FALCON vs the best baseline", "", falcon_vs_best_markdown(sub), *failure_lines(sub)]
    return "\n".join(lines) + "\n"
