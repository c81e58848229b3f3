"""Run methods on datasets over seeds, score them, and write a small report."""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from ._datasets import DEFAULT_DATASETS, DatasetSpec, LoadedDataset, get_dataset
from ._methods import METHODS, Method, accepts, get_method

METRICS = ("accuracy", "macro_accuracy", "ari", "nmi", "within_coarse_ari", "rare_recall", "relation_edit_distance")
"""Metric columns, from :func:`falcon_sc.metrics.evaluate` (``rare_recall`` is NaN on data without rare classes)."""

WARM_METRICS = ("accuracy", "macro_accuracy", "ari", "within_coarse_ari", "rare_recall")
"""Metrics of the warm start's labels (``info["warm_start_labels"]`` of a result), in columns ``warm_<metric>``."""

WARM_COLUMNS = tuple(f"warm_{m}" for m in WARM_METRICS)

COST = ("seconds", "peak_mem_mb")
"""Cost columns: wall seconds and peak memory of the method call."""

REFERENCES = frozenset({"erm", "falcon_oracle_relation"})
"""Methods that see the true fine labels (upper references): never marked best in the tables."""

LOWER_IS_BETTER = {"relation_edit_distance", "seconds", "peak_mem_mb", "maxrss_delta_mb"}

COLUMNS = (
    "dataset",
    "method",
    "seed",
    "n_cells",
    "n_fine_true",
    "n_fine_pred",
    *METRICS,
    "seconds",
    "peak_mem_mb",
    "maxrss_delta_mb",
    *WARM_COLUMNS,
    "info",
    "error",
)


def _proc_status_kib(field: str) -> int | None:
    """Read a ``kB`` field of ``/proc/self/status`` (Linux); ``None`` where unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (``VmHWM``; Linux >= 4.0); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss() -> int | None:
    """High-water resident set size of this process in bytes; ``None`` where it cannot be read.

    ``resource.getrusage`` on POSIX systems; elsewhere (Windows) the peak working set from ``psutil`` when it is
    installed. ``resource`` is imported here, not with the module: it does not exist on Windows.
    """
    try:
        import resource
    except ImportError:
        return _peak_working_set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _peak_working_set() -> int | None:
    """Peak working set of this process in bytes from ``psutil`` (Windows); ``None`` without it."""
    try:
        import psutil
    except ImportError:
        return None
    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)
    return None if peak is None else int(peak)


class PeakMemory:
    """Measure the peak memory a block of code adds to the process, in MiB.

    ``peak_mb``: the kernel's peak resident set size during the block minus the resident set size at its start. On
    Linux the peak mark (``VmHWM``) is reset at the start by writing ``5`` to ``/proc/self/clear_refs`` and read at
    the end, so it is exact and covers numpy/scipy/torch buffers that ``tracemalloc`` does not see (``source`` is
    ``"vmhwm"``). Where that is not possible, it equals ``maxrss_delta_mb`` (``source`` is ``"maxrss"``).
    ``maxrss_delta_mb``: growth of the process high-water mark from ``resource.getrusage`` (never reset): zero when
    the block stays below a peak reached earlier in the process, e.g. by a larger dataset. Without ``resource``
    (Windows) the high-water mark is ``psutil``'s peak working set when ``psutil`` is installed; with neither, both
    values are NaN and ``source`` is ``"unavailable"`` (the tables show them as missing).
    """

    def __init__(self) -> None:
        self.peak_mb = float("nan")
        self.maxrss_delta_mb = float("nan")
        self.source = ""
        self._start_maxrss: int | None = None
        self._start_rss: int | None = None

    def __enter__(self) -> PeakMemory:
        self._start_maxrss = _maxrss()
        self._start_rss = _proc_status_kib("VmRSS")
        self.source = "vmhwm" if self._start_rss is not None and _reset_peak_rss() else "maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        end_maxrss = _maxrss()
        if end_maxrss is not None and self._start_maxrss is not None:
            self.maxrss_delta_mb = (end_maxrss - self._start_maxrss) / 2**20
        hwm = _proc_status_kib("VmHWM") if self.source == "vmhwm" else None
        if hwm is not None and self._start_rss is not None:
            self.peak_mb = max(hwm - self._start_rss, 0) / 1024
        else:
            self.source = "maxrss" if end_maxrss is not None else "unavailable"
            self.peak_mb = self.maxrss_delta_mb


def parse_names(names: str, everything: Sequence[str] = ()) -> list[str]:
    """Split a comma separated list of names; ``"all"`` or ``"default"`` stands for ``everything`` (when given).

    Examples
    --------
    >>> from falcon_sc.bench.run import parse_names
    >>> parse_names(" a, ,b ,all", everything=("x", "y"))
    ['a', 'b', 'x', 'y']
    """
    out: list[str] = []
    for n in (n.strip() for n in names.split(",")):
        if n in ("all", "default") and everything:
            out += list(everything)
        elif n:
            out.append(n)
    return out


def resolve_datasets(
    datasets: Any, coarse_key: str | None, fine_key: str | None, batch_key: str | None
) -> list[DatasetSpec]:
    """The datasets of :func:`run` as :class:`DatasetSpec` objects, nothing loaded.

    Names are resolved by :func:`~falcon_sc.bench.get_dataset` (``ValueError`` for an unknown one,
    ``FileNotFoundError`` for a missing ``.h5ad``); AnnData objects get the given ``obs`` keys.
    """
    keys = {"coarse_key": coarse_key, "fine_key": fine_key, "batch_key": batch_key}
    if isinstance(datasets, str):
        datasets = parse_names(datasets, DEFAULT_DATASETS)
    elif isinstance(datasets, DatasetSpec | AnnData):
        datasets = [datasets]
    if isinstance(datasets, Mapping):
        items = list(datasets.items())
    else:
        items = [(None, d) for d in datasets]
    specs = []
    for i, (name, d) in enumerate(items):
        if isinstance(d, AnnData):

            def load(d: AnnData = d) -> AnnData:
                return d

            specs.append(
                DatasetSpec(
                    name=str(name) if name is not None else f"adata{i}",
                    loader=load,
                    coarse_key=coarse_key or "coarse",
                    fine_key=fine_key or "fine",
                    batch_key=batch_key,
                )
            )
        else:
            spec = get_dataset(d, **keys)
            if name is not None and spec.name != name:
                spec = DatasetSpec(**{**spec.__dict__, "name": str(name)})
            specs.append(spec)
    return specs


def resolve_methods(methods: Any) -> dict[str, Method]:
    """The methods of :func:`run` by name: names (``ValueError`` for an unknown one), callables or a mapping."""
    if isinstance(methods, str):
        methods = parse_names(methods, list(METHODS))
    elif callable(methods):
        methods = [methods]
    if isinstance(methods, Mapping):
        return {str(k): (get_method(v) if isinstance(v, str) else v) for k, v in methods.items()}
    out: dict[str, Method] = {}
    for m in methods:
        if isinstance(m, str):
            out[m] = get_method(m)
        else:
            out[getattr(m, "__name__", f"method{len(out)}")] = m
    return out


def _resolve_seeds(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, int | np.integer):
        return list(range(int(seeds)))
    return [int(s) for s in seeds]


def _run_one(
    data: LoadedDataset,
    name: str,
    method: Method,
    seed: int,
    evaluate: Callable[..., dict[str, float]],
    relation_figure: Path | None = None,
    known_counts: bool = False,
) -> dict[str, Any]:
    spec = data.spec
    adata = data.adata
    n_fine = data.children if known_counts else data.n_fine
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        extra = {"fine_key": spec.fine_key} if accepts(method, "fine_key") else {}
        res = method(adata, spec.coarse_key, n_fine, batch_key=spec.batch_key, seed=seed, **extra)
        seconds = time.perf_counter() - t0
    labels = np.asarray(res.labels).astype(str)
    if labels.shape != (adata.n_obs,):
        raise ValueError(f"method {name!r} returned {labels.shape} labels for {adata.n_obs} cells")
    y_true = adata.obs[spec.fine_key].astype(str).to_numpy()
    coarse = adata.obs[spec.coarse_key].astype(str).to_numpy()
    scores = evaluate(
        y_true,
        labels,
        coarse=coarse,
        true_relation=data.relation,
        pred_relation={str(k): str(v) for k, v in res.relation.items()},
    )
    info = dict(getattr(res, "info", None) or {})
    warm_scores: dict[str, float] = {}
    warm = info.pop("warm_start_labels", None)  # an array per cell: scored, never written to the info column
    if warm is not None:
        warm = np.asarray(warm).astype(str)
        if warm.shape == (adata.n_obs,):
            warm_scores = evaluate(y_true, warm, coarse=coarse)
        else:
            info["warm_start_error"] = f"{warm.shape} warm-start labels for {adata.n_obs} cells"
    annotated = getattr(res, "adata", None)
    if relation_figure is not None and annotated is not None and "falcon" in annotated.uns:
        _relation_figure(annotated, spec.fine_key, relation_figure)
    return {
        "n_fine_pred": int(len(np.unique(labels))),
        **{k: float(scores[k]) for k in METRICS if k in scores},
        "seconds": seconds,
        "peak_mem_mb": mem.peak_mb,
        "maxrss_delta_mb": mem.maxrss_delta_mb,
        **{f"warm_{k}": float(warm_scores[k]) for k in WARM_METRICS if k in warm_scores},
        "info": json.dumps(info, default=str) if info else "",
    }


def _relation_figure(annotated: AnnData, fine_key: str, path: Path) -> None:
    """Learned relation next to the true one (:func:`falcon_sc.pl.relations`), saved to ``path``.

    The figure is closed after saving; the matplotlib backend is left as it is (the command line selects ``Agg``).
    """
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from falcon_sc import pl

    drawn = pl.relations(annotated, key="falcon", true_key=fine_key, show=False, save=path)
    if drawn is not None:
        fig = drawn if isinstance(drawn, Figure) else drawn.figure
        plt.close(fig if isinstance(fig, Figure) else fig.figure)  # a subfigure's .figure is its root figure


def run(
    datasets: str | DatasetSpec | AnnData | Sequence[str | DatasetSpec | AnnData] | Mapping[str, Any],
    methods: str | Method | Sequence[str | Method] | Mapping[str, str | Method] = "all",
    seeds: int | Iterable[int] = (0, 1, 2),
    out: str | os.PathLike | None = None,
    *,
    coarse_key: str | None = None,
    fine_key: str | None = None,
    batch_key: str | None = None,
    progress: bool = True,
    plots: bool = True,
    known_counts: bool = False,
) -> pd.DataFrame:
    """Run every (dataset, method, seed) and score it against the true fine labels.

    Each dataset is loaded once and shared by its runs (methods must not modify it; ``n_fine`` is its number of true
    fine classes). A run that raises is recorded with its error string and the others go on.

    Parameters
    ----------
    datasets
        Preset names (see :data:`falcon_sc.bench.DATASETS`, comma separated or a list; ``"default"`` is
        :data:`~falcon_sc.bench.DEFAULT_DATASETS`), ``.h5ad`` paths,
        :class:`~falcon_sc.bench.DatasetSpec` objects, or a mapping name -> AnnData / name / spec.
    methods
        Method names (see :data:`falcon_sc.bench.METHODS`; ``"all"``, the default, is every one), callables
        ``(adata, coarse_key, n_fine, *, batch_key, seed[, fine_key]) -> BaselineResult``, or a mapping name ->
        either.
    seeds
        Seeds, or their number ``n`` for ``0..n-1``.
    out
        Folder for ``runs.csv``, ``summary.md`` (with the table "FALCON: warm start vs final" when there are warm
        start scores), one ``<metric>.png`` per metric and, for the FALCON methods (first
        seed), ``relations_<dataset>_<method>.png``: the learned relation next to the true one. Nothing is written
        when ``None``.
    coarse_key, fine_key, batch_key
        ``obs`` columns for ``.h5ad`` paths and AnnData objects (defaults ``"coarse"``, ``"fine"``, none).
    progress
        Show a progress bar over the runs.
    plots
        Write the figures (with ``out``).
    known_counts
        Give every method the true number of fine classes of each coarse class (``n_fine`` as a mapping coarse label
        -> count, :attr:`~falcon_sc.bench.LoadedDataset.children`) instead of the total. ``falcon`` passes it to
        :func:`~falcon_sc.tl.refine` (known counts), ``falcon_oracle_relation`` is unchanged, ``kmeans_within``,
        ``leiden_within``, ``leiden_scanpy`` and ``subcluster`` give each class exactly its count; the other methods
        take only a total, so their runs are recorded as errors.

    Returns
    -------
    One row per run: ``dataset, method, seed, n_cells, n_fine_true, n_fine_pred``, the metrics
    (:data:`METRICS`), ``seconds`` (wall time of the method call), ``peak_mem_mb`` and ``maxrss_delta_mb``
    (see :class:`PeakMemory`), ``warm_<metric>`` (:data:`WARM_METRICS` of the warm start's labels, for methods whose
    result has ``info["warm_start_labels"]``, i.e. FALCON; NaN otherwise), ``info`` (JSON of method extras, without
    the warm-start labels) and ``error`` (empty when the run succeeded).
    """
    from falcon_sc.metrics import evaluate

    specs = resolve_datasets(datasets, coarse_key, fine_key, batch_key)
    meths = resolve_methods(methods)
    seed_list = _resolve_seeds(seeds)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs) * len(meths) * len(seed_list), desc="falcon-bench", disable=not progress)
    for spec in specs:
        bar.set_postfix_str(f"loading {spec.name}")
        try:
            data: LoadedDataset | None = spec.load()
            load_error = ""
        except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
            data, load_error = None, f"loading dataset failed: {type(exc).__name__}: {exc}"
            bar.write(f"[falcon-bench] {spec.name}: {load_error}")
        for name, method in meths.items():
            for seed in seed_list:
                bar.set_postfix_str(f"{spec.name} | {name} | seed {seed}")
                row: dict[str, Any] = {"dataset": spec.name, "method": name, "seed": seed, "error": load_error}
                if data is not None:
                    row.update(n_cells=data.adata.n_obs, n_fine_true=data.n_fine)
                    try:
                        figure = (
                            out_dir / f"relations_{spec.name}_{name}.png"
                            if out_dir is not None and plots and seed == seed_list[0]
                            else None
                        )
                        row.update(_run_one(data, name, method, seed, evaluate, figure, known_counts))
                    except Exception as exc:  # noqa: BLE001 - recorded, the benchmark goes on
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        bar.write(f"[falcon-bench] {spec.name} / {name} / seed {seed} failed: {row['error']}")
                        if os.environ.get("FALCON_BENCH_TRACEBACK"):
                            bar.write(traceback.format_exc())
                rows.append(row)
                bar.update(1)
                if out_dir is not None:
                    _frame(rows).to_csv(out_dir / "runs.csv", index=False)
        del data
    bar.close()

    df = _frame(rows)
    if out_dir is not None:
        df.to_csv(out_dir / "runs.csv", index=False)
        (out_dir / "summary.md").write_text(summary_markdown(df))
        if plots:
            plot_metrics(df, out_dir)
    return df


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    df["error"] = df["error"].fillna("").astype(str)
    df["info"] = df["info"].fillna("").astype(str)
    return df


def _metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in (*METRICS, *COST) if c in df.columns and df[c].notna().any()]


def pivot_markdown(df: pd.DataFrame, metric: str, digits: int = 3) -> str:
    """Markdown table of the mean of ``metric`` over seeds: one row per method, one column per dataset.

    The best method of each dataset is in bold (lowest for :data:`LOWER_IS_BETTER` metrics), references that see
    the true labels (:data:`REFERENCES`) excepted; failed runs are left out of the means.
    """
    ok = df[df["error"] == ""]
    datasets = list(dict.fromkeys(df["dataset"]))
    methods = list(dict.fromkeys(df["method"]))
    table = ok.pivot_table(index="method", columns="dataset", values=metric, aggfunc="mean")
    table = table.reindex(index=methods, columns=datasets)
    lines = ["| method | " + " | ".join(datasets) + " |", "|---|" + "---:|" * len(datasets)]
    contenders = table.loc[[m for m in methods if m not in REFERENCES] or methods]
    best = contenders.min() if metric in LOWER_IS_BETTER else contenders.max()
    for m in methods:
        cells = []
        for d in datasets:
            v = table.loc[m, d]
            txt = "–" if pd.isna(v) else f"{v:.{digits}f}"
            cells.append(f"**{txt}**" if pd.notna(v) and m not in REFERENCES and np.isclose(v, best[d]) else txt)
        lines.append(f"| {m}{' (uses truth)' if m in REFERENCES else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(df: pd.DataFrame) -> str:
    """Markdown tables (one per dataset) of mean ± sd over seeds, best method per column in bold.

    The references that see the true fine labels (:data:`REFERENCES`) are never marked best.

    Higher is better except for ``relation_edit_distance``, ``seconds`` and ``peak_mem_mb``. Failed runs are left
    out of the means and counted in the ``runs`` column (successful / all).
    """
    cols = _metric_columns(df)
    lines = ["# falcon-bench summary", ""]
    lines.append(
        f"{df['seed'].nunique()} seed(s); mean ± sd over successful seeds. "
        "Higher is better, except relation_edit_distance, seconds (wall time of the method call) and peak_mem_mb "
        "(peak resident memory above the start of the call). Best per column in bold, the references that see the "
        "true labels (erm, falcon_oracle_relation) excepted."
    )
    ok_all = df[df["error"] == ""]
    if df["dataset"].nunique() > 1:
        for metric in ("accuracy", "within_coarse_ari", "rare_recall"):
            if metric in cols:
                lines += ["", f"## {metric} (mean over seeds; methods x datasets)", "", pivot_markdown(df, metric)]
    warm = warm_start_markdown(df)
    if warm:
        lines += ["", warm]
    for dataset, sub in df.groupby("dataset", sort=False):
        ok = ok_all[ok_all["dataset"] == dataset]
        methods = list(dict.fromkeys(sub["method"]))
        mean = ok.groupby("method")[cols].mean().reindex(methods)
        sd = ok.groupby("method")[cols].std(ddof=1).reindex(methods)
        n_ok = ok.groupby("method").size().reindex(methods).fillna(0).astype(int)
        n_all = sub.groupby("method").size().reindex(methods)
        n_true = sub["n_fine_true"].dropna()
        title = f"## {dataset}" + (f" (n_fine = {int(n_true.iloc[0])})" if len(n_true) else "")
        lines += ["", title, "", "| method | " + " | ".join(cols) + " | runs |"]
        lines.append("|---|" + "---:|" * len(cols) + "---:|")
        best = {}
        for c in cols:
            col = mean.loc[[m for m in methods if m not in REFERENCES] or methods, c].dropna()
            if len(col):
                best[c] = col.min() if c in LOWER_IS_BETTER else col.max()
        for m in methods:
            cells = []
            for c in cols:
                mu, s = mean.loc[m, c], sd.loc[m, c]
                if pd.isna(mu):
                    cells.append("–")
                    continue
                digits = 1 if c in COST else 3
                txt = f"{mu:.{digits}f}" + (f" ± {s:.{digits}f}" if pd.notna(s) else "")
                mark = c in best and m not in REFERENCES and np.isclose(mu, best[c])
                cells.append(f"**{txt}**" if mark else txt)
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {n_ok[m]}/{n_all[m]} |")
        errors = sub[sub["error"] != ""]
        if len(errors):
            lines += ["", "Failures:", ""]
            for _, r in errors.iterrows():
                lines.append(f"- {r['method']} (seed {r['seed']}): `{r['error'].splitlines()[0][:300]}`")
    return "\n".join(lines) + "\n"


def warm_start_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """Markdown table "FALCON: warm start vs final": per dataset and method, mean warm -> final (difference).

    Only the successful runs that scored a warm start (columns ``warm_<metric>``, see :data:`WARM_METRICS`) count,
    and both means are over the same runs. Empty string when there are none.
    """
    if "warm_accuracy" not in df.columns:
        return ""
    ok = df[(df["error"] == "") & df["warm_accuracy"].notna()]
    if ok.empty:
        return ""
    metrics = [m for m in WARM_METRICS if m in ok.columns and ok[m].notna().any()]
    lines = [
        "## FALCON: warm start vs final",
        "",
        "Mean over seeds of the warm start's labels -> the final labels (final - warm in brackets).",
        "",
        "| dataset | method | runs | " + " | ".join(metrics) + " |",
        "|---|---|---:|" + "---:|" * len(metrics),
    ]
    for (dataset, method), sub in ok.groupby(["dataset", "method"], sort=False):
        cells = []
        for m in metrics:
            w, f = sub[f"warm_{m}"].mean(), sub[m].mean()
            if pd.isna(w) or pd.isna(f):
                cells.append("–")
            else:
                cells.append(f"{w:.{digits}f} -> {f:.{digits}f} ({f - w:+.{digits}f})")
        lines.append(f"| {dataset} | {method} | {len(sub)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_metrics(df: pd.DataFrame, out: str | os.PathLike) -> list[Path]:
    """Write one grouped bar chart per metric (``<metric>.png``): datasets on x, one bar per method, sd as error bar.

    Returns
    -------
    The paths written.
    """
    from matplotlib.figure import Figure  # not pyplot: no figure manager, the backend is left as it is

    out = Path(out)
    ok = df[df["error"] == ""]
    datasets = list(dict.fromkeys(df["dataset"]))
    methods = list(dict.fromkeys(df["method"]))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(datasets))
    paths = []
    for c in _metric_columns(df):
        mean = ok.pivot_table(index="dataset", columns="method", values=c, aggfunc="mean")
        sd = ok.pivot_table(index="dataset", columns="method", values=c, aggfunc="std")
        mean = mean.reindex(index=datasets, columns=methods)
        sd = sd.reindex(index=datasets, columns=methods).fillna(0.0)
        fig = Figure(figsize=(max(4.0, 1.2 * len(datasets) * max(1, len(methods)) / 2 + 2), 3.5))
        ax = fig.subplots()
        for j, m in enumerate(methods):
            ax.bar(
                x + (j - (len(methods) - 1) / 2) * width,
                mean[m].to_numpy(),
                width,
                yerr=sd[m].to_numpy(),
                label=m,
                capsize=2,
            )
        ax.set_xticks(x, datasets, rotation=20 if len(datasets) > 3 else 0)
        ax.set_ylabel(c)
        ax.set_title(c + (" (lower is better)" if c in LOWER_IS_BETTER else ""))
        ax.legend(fontsize="small", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
        fig.tight_layout()
        path = out / f"{c}.png"
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths
