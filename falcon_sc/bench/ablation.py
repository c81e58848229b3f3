"""Ablations of FALCON's options on the real-cell suite: :func:`run_ablation` and ``falcon-bench ablation``.

Each variant of :data:`ABLATIONS` is :func:`falcon_sc.tl.refine` with a few options changed from its defaults, run on
the cases of :func:`~falcon_sc.bench.real.real_specs` by :func:`~falcon_sc.bench.real.run_real` in the counts modes
where the option matters: options of the warm start's counts (``children_prior``, ``learn_relation``) when only the
total is known (``"learned"``), the others when every coarse class's count is given (``"given"``), so that a count
error does not hide them. :data:`DEFAULTS` runs in both modes and is the reference of every table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from . import real
from ._methods import Method, refine_copy
from .real import COUNTS, REAL_METRICS


class Ablation(NamedTuple):
    """One variant of :data:`ABLATIONS`: what it changes, the options passed to refine, its counts modes."""

    description: str
    kwargs: dict[str, Any]
    counts: tuple[str, ...]


DEFAULTS = "falcon (defaults)"
"""Name of the variant with refine's defaults: measured once per counts mode, the reference of the differences."""

_LEARNED, _GIVEN = ("learned",), ("given",)

ABLATIONS: dict[str, Ablation] = {
    DEFAULTS: Ablation("refine's defaults (the reference)", {}, COUNTS),
    "init='kmeans'": Ablation("warm start fitted to k-means clusters instead of Leiden", {"init": "kmeans"}, _GIVEN),
    "n_comps_within=0 (global PCs only)": Ablation(
        "neighbours and warm start in the global PCs, no within-class PCs", {"n_comps_within": 0}, _GIVEN
    ),
    "model_input='hvg'": Ablation(
        "the network reads the log-normalised HVGs, not the PCs", {"model_input": "hvg"}, _GIVEN
    ),
    "lambda_fine=0 (no neighbour / confident-target losses)": Ablation(
        "coarse likelihood and regulariser only", {"lambda_fine": 0.0}, _GIVEN
    ),
    "lambda_fine=1": Ablation("twice the default weight of the fine losses", {"lambda_fine": 1.0}, _GIVEN),
    "regulariser='global', lambda_reg=0.5 (reference)": Ablation(
        "the reference's entropy of the batch mean, at its weight", {"regulariser": "global", "lambda_reg": 0.5}, _GIVEN
    ),
    "guard_warm_start=False": Ablation("always the trained partition", {"guard_warm_start": False}, _GIVEN),
    "n_epochs=1 (about the warm start)": Ablation("one epoch of FALCON training", {"n_epochs": 1}, _GIVEN),
    "lr=1e-3": Ablation("learning rate 1e-3 instead of 3e-4", {"lr": 1e-3}, _GIVEN),
    "temperature=0.5": Ablation("sharper confident targets (default 0.9)", {"temperature": 0.5}, _GIVEN),
    "n_neighbors=10": Ablation("10 within-class neighbours per cell instead of 20", {"n_neighbors": 10}, _GIVEN),
    "children_prior='size'": Ablation("children in proportion to class sizes", {"children_prior": "size"}, _LEARNED),
    "children_prior='variance'": Ablation(
        "children where k-means explains the most variance", {"children_prior": "variance"}, _LEARNED
    ),
    "learn_relation=False": Ablation("the warm start's relation kept fixed", {"learn_relation": False}, _LEARNED),
    "children_prior='size', init='kmeans'": Ablation(
        "size prior with a k-means warm start", {"children_prior": "size", "init": "kmeans"}, _LEARNED
    ),
}
"""Variants by name (ordered): :class:`Ablation` ``(description, refine kwargs, counts modes)``."""


def resolve_variants(variants: str | Iterable[str | int] | None = None) -> list[str]:
    """Names of the selected variants of :data:`ABLATIONS`, in its order.

    Parameters
    ----------
    variants
        ``None`` or ``"all"`` (every variant); a comma separated string of names or of their positions in
        :data:`ABLATIONS` (``0`` is :data:`DEFAULTS`); or a sequence of names / positions. A name that holds a comma
        (``"children_prior='size', init='kmeans'"``) is matched whole, as written, before its parts are.

    Returns
    -------
    list of str
        The names, in the order of :data:`ABLATIONS`.

    Examples
    --------
    >>> from falcon_sc.bench.ablation import resolve_variants
    >>> resolve_variants("lr=1e-3,0")
    ['falcon (defaults)', 'lr=1e-3']
    >>> resolve_variants("children_prior='size', init='kmeans'")
    ["children_prior='size', init='kmeans'"]
    """
    names = list(ABLATIONS)
    if variants is None or (isinstance(variants, str) and variants.strip() == "all"):
        return names
    items = _split_names(variants, names) if isinstance(variants, str) else list(variants)
    chosen = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
            chosen.add(names[item])
        elif isinstance(item, str) and item.strip() in ABLATIONS:
            chosen.add(item.strip())
        elif isinstance(item, str) and item.strip().isdigit() and int(item) < len(names):
            chosen.add(names[int(item)])
        else:
            raise ValueError(
                f"unknown ablation variant {item!r} in variants={variants!r}: use 'all', names of ABLATIONS or their "
                f"positions 0..{len(names) - 1} (see `falcon-bench list`)"
            )
    if not chosen:
        raise ValueError(f"variants={variants!r} names no ablation variant; see `falcon-bench list`")
    return [n for n in names if n in chosen]


def _split_names(text: str, names: Sequence[str]) -> list[str]:
    """Split ``text`` at commas, keeping the longest run of pieces that is one of ``names`` together."""
    pieces, out, i = text.split(","), [], 0
    while i < len(pieces):
        for j in range(len(pieces), i, -1):
            joined = ",".join(pieces[i:j]).strip()
            if joined in names or j == i + 1:
                if joined:
                    out.append(joined)
                i = j
                break
    return out


def variant_method(kwargs: Mapping[str, Any], refine_defaults: Mapping[str, Any] | None = None) -> Method:
    """A bench method running :func:`~falcon_sc.tl.refine` with ``{**refine_defaults, **kwargs}``.

    The signature is that of :data:`falcon_sc.bench.METHODS`: ``(adata, coarse_key, n_fine, *, batch_key, seed,
    fine_key=None)``; ``fine_key`` is not used.
    """
    options = {**(refine_defaults or {}), **kwargs}

    def method(adata, coarse_key, n_fine, *, batch_key, seed, fine_key=None):
        return refine_copy(adata, coarse_key, n_fine, batch_key=batch_key, seed=seed, **options)

    method.__doc__ = f"FALCON: refine with {options or 'its defaults'}"
    return method


def run_ablation(
    split: str = "tuning",
    *,
    variants: str | Iterable[str | int] | None = None,
    seeds: int | Iterable[int] = (0,),
    n_regrouped: int = 6,
    datasets: Sequence[str] | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    refine_defaults: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Run the variants of :data:`ABLATIONS` on the real-cell suite, in their counts modes.

    One :func:`~falcon_sc.bench.real.run_real` call per counts mode with every selected variant of that mode (each
    case is loaded once per mode). :data:`DEFAULTS` runs in every mode that has a selected variant, once.

    Parameters
    ----------
    split
        ``"tuning"``, ``"held_out"`` or ``"all"``, see :func:`~falcon_sc.bench.real.real_specs`.
    variants
        Variants to run (see :func:`resolve_variants`); ``None``: all.
    seeds
        Seeds, or their number ``n`` for ``0..n-1``.
    n_regrouped
        Regrouped cases per dataset, after the authors' own grouping.
    datasets
        Restrict to these real datasets of ``split``.
    out
        Folder for ``runs.csv`` (all rows), ``ablation.md`` (:func:`ablation_markdown`) and ``summary.md``
        (:func:`~falcon_sc.bench.real.real_summary_markdown`), rewritten after each counts mode; ``<out>/<mode>/``
        holds the per-case ``runs.csv`` written as the runs finish. Nothing is written when ``None``.
    progress
        Show a progress bar over the runs.
    refine_defaults
        Options of :func:`~falcon_sc.tl.refine` under every variant's own (for tests and quick looks, e.g.
        ``{"n_epochs": 3, "n_top_genes": 100, "n_comps": 10}``); the ablation proper uses none.

    Returns
    -------
    pandas.DataFrame
        The rows of :func:`~falcon_sc.bench.real.run_real` (``method`` is the variant's name, ``counts`` its mode)
        with the column ``variant`` added.

    Examples
    --------
    >>> from falcon_sc.bench.ablation import run_ablation
    >>> df = run_ablation(variants="lr=1e-3", n_regrouped=2, out="falcon_ablation")  # doctest: +SKIP
    """
    selected = resolve_variants(variants)
    plan = {mode: [n for n in selected if mode in ABLATIONS[n].counts] for mode in COUNTS}
    plan = {mode: list(dict.fromkeys([DEFAULTS, *names])) for mode, names in plan.items() if names}
    out_dir = Path(out) if out is not None else None
    frames: list[pd.DataFrame] = []
    for mode, names in plan.items():
        methods = {n: variant_method(ABLATIONS[n].kwargs, refine_defaults) for n in names}
        rows = real.run_real(
            split,
            methods=methods,
            seeds=seeds,
            n_regrouped=n_regrouped,
            counts=mode,
            datasets=datasets,
            out=out_dir,
            progress=progress,
        )
        frames.append(rows.assign(variant=rows["method"]))
        if out_dir is not None:
            _write(pd.concat(frames, ignore_index=True), out_dir)
    return pd.concat(frames, ignore_index=True)


def _write(df: pd.DataFrame, out_dir: Path) -> None:
    """``runs.csv``, ``ablation.md`` and ``summary.md`` of the rows so far."""
    df.to_csv(out_dir / "runs.csv", index=False)
    (out_dir / "ablation.md").write_text(ablation_markdown(df) + "\n")
    (out_dir / "summary.md").write_text(real.real_summary_markdown(df))


def _variant_means(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Variant x source dataset: mean of ``metric`` over cases (each the mean over its successful seeds)."""
    cases = real.case_means(df.assign(method=df["variant"]), metric)
    table = cases.groupby(["method", "source"], sort=False)[metric].mean().unstack("source")
    return table.reindex(index=list(dict.fromkeys(df["variant"])), columns=list(dict.fromkeys(df["source"])))


def _fmt(value: float, digits: int, sign: bool = False) -> str:
    return "–" if pd.isna(value) else f"{value:{'+' if sign else ''}.{digits}f}"


def ablation_table_markdown(df: pd.DataFrame, digits: int = 3, metrics: Sequence[str] = REAL_METRICS) -> str:
    """Markdown table variant x (metric, source dataset) of one counts mode, with the differences to the defaults.

    For each of ``metrics`` (default :data:`~falcon_sc.bench.real.REAL_METRICS`): the mean per source dataset (over its
    cases, each the mean over its successful seeds; ``–`` where every run failed) and ``mean`` (over the source
    datasets; ``–`` when one of them is); the last columns
    ``Δ <metric>`` are a variant's ``mean`` minus that of :data:`DEFAULTS` (``–`` without it). Rows: the variants in
    the order of ``df``.

    Examples
    --------
    >>> import pandas as pd
    >>> from falcon_sc.bench.ablation import ablation_table_markdown
    >>> df = pd.DataFrame({"dataset": ["kang", "kang~0"] * 2, "source": "kang", "regrouped": [False, True] * 2,
    ...                    "variant": ["falcon (defaults)"] * 2 + ["lr=1e-3"] * 2,
    ...                    "within_coarse_ari": [0.5, 0.3, 0.4, 0.3], "error": ""})
    >>> print(ablation_table_markdown(df, metrics=["within_coarse_ari"]))
    | variant | within_coarse_ari kang | within_coarse_ari mean | Δ within_coarse_ari |
    |---|---:|---:|---:|
    | falcon (defaults) | 0.400 | 0.400 | – |
    | lr=1e-3 | 0.350 | 0.350 | -0.050 |
    """
    tables = {m: _variant_means(df, m) for m in metrics}
    sources = list(dict.fromkeys(df["source"]))
    head = [f"{m} {s}" for m in metrics for s in [*sources, "mean"]] + [f"Δ {m}" for m in metrics]
    lines = ["| variant | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for variant in tables[metrics[0]].index:
        cells, deltas = [], []
        for table in tables.values():
            mean = table.loc[variant].mean(skipna=False)  # over the source datasets, each once; NaN if one is
            cells += [_fmt(table.loc[variant, s], digits) for s in sources] + [_fmt(mean, digits)]
            reference = table.loc[DEFAULTS].mean(skipna=False) if DEFAULTS in table.index else float("nan")
            deltas.append(_fmt(mean - reference, digits, sign=True) if variant != DEFAULTS else "–")
        lines.append(f"| {variant} | " + " | ".join(cells + deltas) + " |")
    return "\n".join(lines)


def ablation_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """The report of :func:`run_ablation`: one :func:`ablation_table_markdown` per counts mode, failures below."""
    seeds = sorted(int(s) for s in df["seed"].dropna().unique())
    n_cases = df.groupby("source", sort=False)["dataset"].nunique()
    cases = ", ".join(f"{s} {n}" for s, n in n_cases.items())
    lines = [
        "# falcon-bench ablation",
        "",
        f"Seeds {seeds}; cases per source dataset: {cases} (the authors' grouping and its random regroupings). Each "
        "cell is the mean over a dataset's cases (each the mean over its successful seeds); `mean` is the mean over "
        f"the source datasets; `Δ` is a variant's mean minus that of {DEFAULTS!r}. Higher is better.",
    ]
    for mode in [m for m in COUNTS if m in set(df["counts"])]:
        part = df[df["counts"] == mode]
        lines += ["", f"## {real.COUNT_TITLES[mode]}", "", ablation_table_markdown(part, digits)]
        lines += real.failure_lines(part.assign(method=part["variant"]))
    return "\n".join(lines)
