"""How well each allotment of children to coarse classes matches the truth: :func:`count_errors`, ``counts``.

On every case of the real-cell suite (:func:`~falcon_sc.bench.real.real_specs`), with the true total of fine classes,
the children per coarse class that each way of :func:`~falcon_sc.tl.refine` to share them out gives (:data:`ALLOTMENTS`)
are compared with the true children: no training, only the features and neighbours refine builds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import real

ALLOTMENTS: tuple[str, ...] = ("graph", "size", "variance", "n_fine='auto'")
"""Allotments compared by :func:`count_errors`: refine's ``children_prior="auto"`` (the neighbour graph,
:func:`~falcon_sc.core.graph_init.graph_clusters`), ``"size"`` and ``"variance"``
(:func:`~falcon_sc.core.prior.children_prior`), and ``n_fine="auto"``
(:func:`~falcon_sc.core.n_fine.estimate_children`, which is not told the total)."""

COLUMNS: tuple[str, ...] = (
    "dataset",
    "case",
    "allotment",
    "abs_error",
    "single_split",
    "total",
    "estimated_total",
    "truth",
    "estimate",
)
"""Columns of :func:`count_errors`."""

N_NEIGHBORS = 20
"""Neighbours per cell, refine's default ``n_neighbors``."""


def allotments(adata, coarse_key: str, total: int, *, batch_key: str | None = None, random_state: int = 0):
    """Children per coarse class by each of :data:`ALLOTMENTS`, from the features and neighbours refine builds.

    Parameters
    ----------
    adata
        Cells with their coarse labels in ``obs[coarse_key]``.
    coarse_key, batch_key
        ``obs`` columns, as passed to :func:`~falcon_sc.tl.refine`.
    total
        Number of fine classes to share out.
    random_state
        Seed of the preprocessing, neighbour search, Leiden and k-means, as refine's ``random_state``.

    Returns
    -------
    tuple
        The coarse class names (category order, as refine) and a dict allotment -> int array of children per class.

    Examples
    --------
    >>> import falcon_sc as fal
    >>> from falcon_sc.bench.counts import allotments
    >>> adata = fal.datasets.simulate(n_cells=300, n_genes=100, children=(1, 2, 3), fine_effect=3.0, fine_de_frac=0.2)
    >>> names, counts = allotments(adata, "coarse", 6)  # clear fine classes: the graph finds them
    >>> names, counts["graph"].tolist(), int(counts["size"].sum())
    (['C0', 'C1', 'C2'], [1, 2, 3], 6)
    """
    from falcon_sc.core.graph_init import graph_clusters
    from falcon_sc.core.n_fine import estimate_children
    from falcon_sc.core.neighbors import within_class_neighbors
    from falcon_sc.core.prior import children_prior
    from falcon_sc.pp import FeatureTransform

    categories = pd.Categorical(adata.obs[coarse_key]).remove_unused_categories()
    codes = categories.codes.astype(np.int64)
    names = [str(c) for c in categories.categories]
    _, inputs = FeatureTransform.fit(adata, codes, n_coarse=len(names), batch_key=batch_key, random_state=random_state)
    space = inputs.neighbour_space
    neighbors = within_class_neighbors(space, codes, N_NEIGHBORS, random_state=random_state)
    _, relation = graph_clusters(space, neighbors, codes, total, random_state=random_state)
    if inputs.prepared is None:  # fitted on adata itself (no use_rep), so FeatureTransform prepared it
        raise RuntimeError("FeatureTransform.fit returned no prepared inputs; the 'variance' prior needs their PCs")
    shared = inputs.prepared.embedding  # the global PCs, as refine's "variance" prior
    counts = {
        "graph": relation.sum(axis=0),
        "size": children_prior(codes, total, method="size"),
        "variance": children_prior(codes, total, method="variance", X=shared, random_state=random_state),
        "n_fine='auto'": estimate_children(neighbors, codes, random_state=random_state).counts,
    }
    return names, {k: np.rint(np.asarray(v, dtype=float)).astype(int) for k, v in counts.items()}


def _case_rows(spec, random_state: int) -> list[dict]:
    """The rows of :func:`count_errors` for one case (a :class:`~falcon_sc.bench.DatasetSpec`)."""
    data = spec.load()
    true_children = data.children  # as given to the methods in the counts mode "given"
    total = int(sum(true_children.values()))
    names, counts = allotments(data.adata, spec.coarse_key, total, batch_key=spec.batch_key, random_state=random_state)
    truth = np.array([true_children[n] for n in names])
    rows = []
    for allotment, estimate in counts.items():
        rows.append(
            {
                "dataset": spec.name.split("~")[0],
                "case": spec.name,
                "allotment": allotment,
                "abs_error": int(np.abs(estimate - truth).sum()),
                "single_split": int(((truth == 1) & (estimate > 1)).sum()),
                "total": total,
                "estimated_total": int(estimate.sum()),
                "truth": ",".join(map(str, truth)),
                "estimate": ",".join(map(str, estimate)),
            }
        )
    return rows


def count_errors(
    split: str = "tuning",
    *,
    n_regrouped: int = 6,
    datasets: Sequence[str] | None = None,
    random_state: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Error of each allotment of children to the coarse classes, on every case of the real-cell suite.

    For each case, with the true total of fine classes, every allotment of :data:`ALLOTMENTS` gives a number of
    children per coarse class (:func:`allotments`, features and neighbours as :func:`~falcon_sc.tl.refine` with its
    defaults builds them, fitted per case since the within-class components depend on the grouping), compared with
    the true children (:attr:`~falcon_sc.bench.LoadedDataset.children`, the counts given to the methods in the counts
    mode ``"given"``).

    Parameters
    ----------
    split
        ``"tuning"``, ``"held_out"`` or ``"all"``, see :func:`~falcon_sc.bench.real.real_specs`.
    n_regrouped
        Regrouped cases per dataset, after the authors' own grouping.
    datasets
        Restrict to these real datasets of ``split``.
    random_state
        Seed of the features, neighbours and allotments (refine's ``random_state``).
    progress
        Show a progress bar over the cases.

    Returns
    -------
    pandas.DataFrame
        One row per case x allotment (:data:`COLUMNS`): ``dataset`` (the source dataset), ``case``, ``allotment``,
        ``abs_error`` (sum over coarse classes of ``|estimate - truth|``), ``single_split`` (coarse classes with one
        true child that got more), ``total`` (true), ``estimated_total`` (differs from ``total`` only for
        ``n_fine='auto'``), ``truth`` and ``estimate`` (children per coarse class in category order, ``"1,2,3"``).

    Examples
    --------
    >>> from falcon_sc.bench.counts import count_errors
    >>> df = count_errors("tuning", n_regrouped=2)  # doctest: +SKIP
    >>> df.groupby(["dataset", "allotment"])["abs_error"].mean().unstack()  # doctest: +SKIP
    """
    specs = real.real_specs(split, n_regrouped=n_regrouped, datasets=None if datasets is None else tuple(datasets))
    if not specs:
        raise ValueError(f"datasets={datasets!r} selects no dataset of the {split!r} split")
    rows: list[dict] = []
    for spec in tqdm(specs, desc="falcon-bench counts", disable=not progress):
        rows += _case_rows(spec, random_state)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def counts_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """Markdown tables of :func:`count_errors`: mean ``abs_error`` and ``single_split`` per allotment x dataset.

    Each cell is the mean over a source dataset's cases; ``mean`` is the mean over the source datasets. Lower is
    better.

    Examples
    --------
    >>> import pandas as pd
    >>> from falcon_sc.bench.counts import counts_markdown
    >>> df = pd.DataFrame({"dataset": "kang", "case": ["kang", "kang~0"] * 2, "allotment": ["graph"] * 2 + ["size"] * 2,
    ...                    "abs_error": [2, 4, 0, 1], "single_split": [1, 0, 0, 0]})
    >>> for line in counts_markdown(df).splitlines()[4:8]:
    ...     print(line)
    | allotment | kang | mean |
    |---|---:|---:|
    | graph | 3.00 | 3.00 |
    | size | 0.50 | 0.50 |
    """
    lines = [f"# falcon-bench counts ({df['case'].nunique()} cases)"]
    titles = {
        "abs_error": "Absolute error of the children per coarse class (summed over a case's classes)",
        "single_split": "Single-child coarse classes given more than one child (per case)",
    }
    for column, title in titles.items():
        table = df.groupby(["allotment", "dataset"], sort=False)[column].mean().unstack("dataset")
        table = table.reindex(columns=list(dict.fromkeys(df["dataset"])))
        table["mean"] = table.mean(axis=1)
        lines += ["", f"## {title}", "", "| allotment | " + " | ".join(map(str, table.columns)) + " |"]
        lines.append("|---|" + "---:|" * table.shape[1])
        lines += [f"| {a} | " + " | ".join(f"{v:.{digits}f}" for v in row) + " |" for a, row in table.iterrows()]
    return "\n".join(lines)


def write_counts(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write ``runs.csv`` (the rows of :func:`count_errors`) and ``counts.md`` (:func:`counts_markdown`) to ``out``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "runs.csv", index=False)
    (out_dir / "counts.md").write_text(counts_markdown(df) + "\n")
    return out_dir
