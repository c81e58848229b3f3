"""Command line: ``python -m falcon_sc.bench {run,real,ablation,counts,images,list,solver,scale}``, ``falcon-bench``."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import pandas as pd


def _seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,5,7"`` -> those seeds."""
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count or a comma separated list, not {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("--seeds must be at least 1")
    return list(range(n))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="falcon-bench", description="Benchmark FALCON against within-coarse baselines.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run methods on datasets over seeds and write a report")
    r.add_argument(
        "--dataset",
        "--datasets",
        dest="dataset",
        default="default",
        help="comma separated preset names (see `list`) or .h5ad paths; 'default' is the default suite",
    )
    r.add_argument("--methods", default="all", help="comma separated method names, or 'all' (default)")
    r.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="number of seeds (0..n-1) or a comma separated list")
    r.add_argument("--out", default="falcon_bench", help="output folder (default ./falcon_bench/)")
    r.add_argument("--coarse-key", default=None, help="obs column of the coarse labels (.h5ad paths)")
    r.add_argument("--fine-key", default=None, help="obs column of the true fine labels (.h5ad paths)")
    r.add_argument("--batch-key", default=None, help="obs column of the batches (.h5ad paths)")
    r.add_argument("--no-plots", action="store_true", help="skip the bar charts")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--known-counts",
        action="store_true",
        help="give the methods the true number of fine classes of every coarse class instead of the total (methods "
        "that take only a total fail)",
    )

    _add_real(sub)
    _add_ablation(sub)
    _add_counts(sub)

    im = sub.add_parser(
        "images", help="FALCON on images (a ResNet on random views) against the within-coarse baselines"
    )
    im.add_argument(
        "--dataset",
        default="digits",
        help="digits (offline), cifar100, cifar68, cifar_si, living17, nonliving26, entity30, entity13, tiered",
    )
    im.add_argument(
        "--methods",
        default="falcon,kmeans_within",
        help="comma separated, or 'all': falcon, kmeans_within, scan_c, sela, ancor, gml, wcl, erm",
    )
    im.add_argument(
        "--seeds", type=_seeds, default=[0, 1, 2], help="number of seeds (0..n-1) or a comma separated list"
    )
    im.add_argument("--root", default=None, help="folder of the dataset's files (CIFAR pickles, ImageNet folder)")
    im.add_argument("--hierarchy", default=None, help="folder of the BREEDS / tieredImageNet hierarchy files")
    im.add_argument("--split", default="train", help="split to fit and score (train, val, test, all)")
    im.add_argument("--width", type=int, default=None, help="channels of the ResNet's first stage (64: standard)")
    im.add_argument("--epochs", type=int, default=None, help="FALCON epochs (default: the dataset's)")
    im.add_argument("--checkpoint", default=None, help="local self-supervised checkpoint for the backbone")
    im.add_argument("--out", default=None, help="folder for runs.csv, summary.md and the bar charts")
    im.add_argument("--no-plots", action="store_true", help="skip the bar charts")
    im.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])

    sub.add_parser("list", help="list dataset presets and methods")
    sub.add_parser("solver", help="benchmark the relation solver")
    sc_ = sub.add_parser(
        "scale", help="wall time and peak memory of refine and of the scanpy pipeline on large simulated data"
    )
    sc_.add_argument("--n-cells", type=int, default=100_000, help="cells (without --backed)")
    sc_.add_argument("--n-genes", type=int, default=2000)
    sc_.add_argument("--n-batches", type=int, default=1)
    sc_.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda"])
    sc_.add_argument(
        "--methods",
        default="leiden_scanpy,falcon",
        help="comma separated, run in this order: leiden_scanpy (the scanpy pipeline), falcon (refine); "
        "default both, the scanpy pipeline first",
    )
    sc_.add_argument("--seed", type=int, default=0, help="seed of the simulation and of the methods")
    sc_.add_argument(
        "--warmup",
        action="store_true",
        help="first run each method untimed on 5,000 cells (imports and numba compilation then count for neither)",
    )
    sc_.add_argument(
        "--backed",
        action="store_true",
        help="write each simulation to an .h5ad (block by block) and refine it opened with backed='r'; the scanpy "
        "pipeline reads it into memory in a child process under a memory limit",
    )
    sc_.add_argument(
        "--sizes",
        default=None,
        help="with --backed: comma separated numbers of cells, e.g. 10000,100000,1000000 (default 10k,100k,300k,1M)",
    )
    sc_.add_argument("--peer-max-cells", type=int, default=300_000, help="with --backed: largest size for scanpy")
    sc_.add_argument("--peer-limit-gb", type=float, default=16.0, help="with --backed: address space of scanpy's child")
    sc_.add_argument("--workdir", default=None, help="with --backed: folder of the temporary .h5ad files")
    sc_.add_argument("--out", default=None, help="with --backed: also write the table to this CSV file")
    return p


def _add_real(sub: argparse._SubParsersAction) -> None:
    """The ``real`` subcommand: :func:`falcon_sc.bench.real.run_real`."""
    rl = sub.add_parser(
        "real", help="the real-cell suite: real datasets and random regroupings of their fine labels, by split"
    )
    rl.add_argument(
        "--split",
        default="tuning",
        help="tuning (pbmc3k, zeisel, kang; default), held_out (pbmc68k, moncada: never used for a choice) or all",
    )
    rl.add_argument("--regrouped", type=int, default=10, help="random regroupings per dataset (default 10)")
    rl.add_argument(
        "--methods",
        default=None,
        help="comma separated method names, or 'all' (every method); default "
        "falcon,kmeans_within,leiden_within,leiden_scanpy,subcluster",
    )
    rl.add_argument(
        "--seeds", type=_seeds, default=[0, 1, 2], help="number of seeds (0..n-1) or a comma separated list"
    )
    rl.add_argument(
        "--counts",
        default="learned,given",
        help="learned (methods get the true total of fine classes), given (the true count per coarse class) or both "
        "(default)",
    )
    rl.add_argument("--datasets", default=None, help="comma separated real datasets of the split (default all of it)")
    rl.add_argument("--out", default="falcon_real", help="output folder (default ./falcon_real/)")
    rl.add_argument("--quiet", action="store_true", help="no progress bar")


def _real(args: argparse.Namespace) -> int:
    """Run ``falcon-bench real``: check the arguments (usage error, status 2), run, print the summary tables."""
    from .real import REAL_METHODS, check_counts, real_specs, real_summary_markdown, run_real
    from .run import parse_names, resolve_methods

    datasets = None if args.datasets is None else tuple(parse_names(args.datasets))
    try:  # nothing is loaded here: a typo is one line and status 2, not a traceback
        counts = check_counts(args.counts)
        methods = resolve_methods(",".join(REAL_METHODS) if args.methods is None else args.methods)
        specs = real_specs(args.split, n_regrouped=args.regrouped, datasets=datasets)
    except ValueError as err:
        return _usage_error(err)
    if not specs:
        return _usage_error(f"--datasets {args.datasets!r} names no dataset; see `falcon-bench list`")
    if not methods:
        return _usage_error(f"--methods {args.methods!r} names no method; see `falcon-bench list`")
    df = run_real(
        args.split,
        methods=methods,
        seeds=args.seeds,
        n_regrouped=args.regrouped,
        counts=counts,
        datasets=datasets,
        out=args.out,
        progress=not args.quiet,
    )
    print(real_summary_markdown(df))
    return _report(df, ("dataset", "method", "counts", "seed"), f"wrote {args.out}/runs.csv and summary.md")


def _add_ablation(sub: argparse._SubParsersAction) -> None:
    """The ``ablation`` subcommand: :func:`falcon_sc.bench.ablation.run_ablation`."""
    ab = sub.add_parser(
        "ablation", help="refine with options changed from its defaults, on the real-cell suite, per counts mode"
    )
    ab.add_argument("--split", default="tuning", help="tuning (default), held_out or all (see `real`)")
    ab.add_argument(
        "--variants",
        default="all",
        help="comma separated variant names or their numbers as `falcon-bench list` shows them, or 'all' (default); "
        "a name holding a comma is matched whole",
    )
    ab.add_argument("--seeds", type=_seeds, default=[0], help="number of seeds (0..n-1) or a comma separated list")
    ab.add_argument("--regrouped", type=int, default=6, help="random regroupings per dataset (default 6)")
    ab.add_argument("--datasets", default=None, help="comma separated real datasets of the split (default all of it)")
    ab.add_argument("--out", default="falcon_ablation", help="output folder (default ./falcon_ablation/)")
    ab.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_counts(sub: argparse._SubParsersAction) -> None:
    """The ``counts`` subcommand: :func:`falcon_sc.bench.counts.count_errors`."""
    co = sub.add_parser(
        "counts", help="children per coarse class of each allotment (graph, size, variance, n_fine='auto') vs the truth"
    )
    co.add_argument("--split", default="tuning", help="tuning (default), held_out or all (see `real`)")
    co.add_argument("--regrouped", type=int, default=6, help="random regroupings per dataset (default 6)")
    co.add_argument("--datasets", default=None, help="comma separated real datasets of the split (default all of it)")
    co.add_argument("--out", default=None, help="folder for runs.csv and counts.md (default: print only)")
    co.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_real_args(args: argparse.Namespace) -> tuple[str, ...] | None:
    """``--datasets`` as a tuple (``None``: all); ``ValueError`` for a bad split, number of regroupings or dataset."""
    from . import real
    from .run import parse_names

    datasets = None if args.datasets is None else tuple(parse_names(args.datasets))
    if not real.real_specs(args.split, n_regrouped=args.regrouped, datasets=datasets):
        raise ValueError(f"--datasets {args.datasets!r} names no dataset; see `falcon-bench list`")
    return datasets


def _ablation(args: argparse.Namespace) -> int:
    """Run ``falcon-bench ablation``: check the arguments (usage error, status 2), run, print the tables."""
    from .ablation import ablation_markdown, resolve_variants, run_ablation

    try:  # nothing is loaded here
        variants = resolve_variants(args.variants)
        datasets = _check_real_args(args)
    except ValueError as err:
        return _usage_error(err)
    df = run_ablation(
        args.split,
        variants=variants,
        seeds=args.seeds,
        n_regrouped=args.regrouped,
        datasets=datasets,
        out=args.out,
        progress=not args.quiet,
    )
    print(ablation_markdown(df))
    wrote = f"wrote {args.out}/runs.csv, ablation.md and summary.md"
    return _report(df, ("dataset", "variant", "counts", "seed"), wrote)


def _counts(args: argparse.Namespace) -> int:
    """Run ``falcon-bench counts``: check the arguments (usage error, status 2), measure, print the tables."""
    from .counts import count_errors, counts_markdown, write_counts

    try:
        datasets = _check_real_args(args)
    except ValueError as err:
        return _usage_error(err)
    df = count_errors(args.split, n_regrouped=args.regrouped, datasets=datasets, progress=not args.quiet)
    print(counts_markdown(df))
    if args.out is not None:
        write_counts(df, args.out)
        print(f"wrote {args.out}/runs.csv and counts.md")
    return 0


_ROLE = re.compile(r":[\w.:+-]+:`([^`]+)`")  # :func:`target`, :class:`~a.b.C`, :doc:`title <target>`


def _role_text(match: re.Match[str]) -> str:
    text = match.group(1)
    if text.endswith(">") and "<" in text:  # `title <target>`: the title
        return text[: text.rindex("<")].strip()
    if text.startswith("~"):  # `~a.b.name`: Sphinx shows only the last part
        return text[1:].rsplit(".", 1)[-1]
    return text.lstrip("!")


def _plain(text: str) -> str:
    """Docstring text for a terminal: Sphinx roles and inline literals become their plain text."""
    text = _ROLE.sub(_role_text, text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    return re.sub(r"`([^`]+)`", r"\1", text)


def _first_line(doc: str | None) -> str:
    """The first line of a docstring as plain text ('' without a docstring)."""
    lines = (doc or "").strip().splitlines()
    return _plain(lines[0].strip()) if lines else ""


def _list_ablations() -> None:
    """Print the variants of ``falcon-bench ablation`` (number, name, counts modes, what changes)."""
    from .ablation import ABLATIONS

    print("ablation variants (falcon-bench ablation --variants NAMES or NUMBERS):")
    for i, (name, variant) in enumerate(ABLATIONS.items()):
        print(f"  {i:>2} {name:<56} [{','.join(variant.counts)}] {variant.description}")


def _usage_error(message: object) -> int:
    """Print one line ``falcon-bench: error: ...`` to stderr and return the usage-error status 2."""
    print(f"falcon-bench: error: {message}", file=sys.stderr)
    return 2


def _report(df: pd.DataFrame, where: tuple[str, ...], wrote: str) -> int:
    """List the failed runs on stderr (``FAILED <where columns>: <error>``), say what was written; exit status."""
    failed = df[df["error"] != ""]
    for _, row in failed.iterrows():
        place = " / ".join(("seed " if c == "seed" else "") + str(row[c]) for c in where)
        print(f"FAILED {place}: {row['error']}", file=sys.stderr)
    print(wrote)
    if len(failed) == len(df):
        print(f"falcon-bench: every run failed ({len(df)} of {len(df)}); see the errors above", file=sys.stderr)
        return 1
    return 0


def _list() -> int:
    """Run ``falcon-bench list``: the dataset presets, methods, suites and ablation variants."""
    from ._datasets import DATASETS, DEFAULT_DATASETS
    from ._methods import METHODS
    from .real import HELD_OUT_DATASETS, TUNING_DATASETS

    print("datasets:")
    for name, spec in DATASETS.items():
        batch = f" [batch_key={spec.batch_key}]" if spec.batch_key else ""
        print(f"  {name:<16} {_plain(spec.description)}{batch}")
    print("  <path>.h5ad      any file, with --coarse-key/--fine-key/--batch-key")
    print("methods:")
    for name, fn in METHODS.items():
        print(f"  {name:<24} {_first_line(fn.__doc__)}")
    print("default suite: --dataset default = " + ",".join(DEFAULT_DATASETS))
    print(
        "real-cell suite (falcon-bench real): each real dataset with its authors' coarse labels and --regrouped N "
        "random regroupings of its fine labels"
    )
    tuning, held_out = ",".join(TUNING_DATASETS), ",".join(HELD_OUT_DATASETS)
    print(f"  tuning split: {tuning}; held out (never used for a choice): {held_out}")
    _list_ablations()
    return 0


def _solver() -> int:
    """Run ``falcon-bench solver`` and print its table (the exact solver only when PuLP is not installed)."""
    from .solver import require_pulp, run_solver_bench

    try:
        require_pulp()
        milp = True
    except ImportError as err:
        print(f"falcon-bench: {err} Timing the exact solver only.", file=sys.stderr)
        milp = False
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None):
        print(run_solver_bench(milp=milp))
    return 0


def _images(args: argparse.Namespace) -> int:
    """Run ``falcon-bench images``: a bad dataset, method, split or path is a usage error (status 2)."""
    from .images import IMAGE_METHODS, run_image_bench, summary

    methods = list(IMAGE_METHODS) if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    try:
        df = run_image_bench(
            args.dataset,
            [m for m in methods if m],
            args.seeds,
            root=args.root,
            hierarchy=args.hierarchy,
            split=args.split,
            width=args.width,
            n_epochs=args.epochs,
            checkpoint=args.checkpoint,
            accelerator=args.accelerator,
            out=args.out,
            plots=not args.no_plots,
        )
    except (ValueError, OSError) as err:
        return _usage_error(err)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(f"{args.dataset}: mean ± sd over seeds {args.seeds}")
        print(summary(df).to_string())
    for _, row in df[df["error"] != ""].iterrows():
        print(f"FAILED {row['method']} / seed {row['seed']}: {row['error']}", file=sys.stderr)
    if args.out:
        print(f"wrote {args.out}/runs.csv, summary.md" + ("" if args.no_plots else " and plots"))
    return 1 if (df["error"] != "").all() else 0


def _scale(args: argparse.Namespace) -> int:
    """Run ``falcon-bench scale``: an unknown method is a usage error (status 2); print the table and the ratio."""
    from .scale import resolve_scale_methods, run_scale_bench

    try:
        resolve_scale_methods(args.methods)
        sizes = _sizes(args.sizes)
    except ValueError as err:
        return _usage_error(err)
    if args.backed:
        return _scale_backed(args, sizes)
    df = run_scale_bench(
        args.n_cells,
        args.n_genes,
        n_batches=args.n_batches,
        random_state=args.seed,
        accelerator=args.accelerator,
        methods=args.methods,
        warmup=args.warmup,
    )
    with pd.option_context(
        "display.width", 250, "display.max_columns", None, "display.max_colwidth", None, "display.precision", 3
    ):
        print(df.to_string(index=False))
    if not pd.isna(df.attrs["ratio"]):
        print(f"ratio (falcon seconds / leiden_scanpy seconds): {df.attrs['ratio']:.2f}")
    return 0


def _sizes(text: str | None) -> list[int] | None:
    """``--sizes``: positive whole numbers of cells (``10000,1e6`` style allowed); ``ValueError`` otherwise."""
    if text is None:
        return None
    sizes = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        value = float(part)
        if not value.is_integer() or value < 2:
            raise ValueError(f"--sizes: {part!r} is not a number of cells (a whole number >= 2)")
        sizes.append(int(value))
    return sizes


def _scale_backed(args: argparse.Namespace, sizes: list[int] | None) -> int:
    """``falcon-bench scale --backed``: the table of :func:`~falcon_sc.bench.scale.run_backed_scale`."""
    from .scale import BACKED_SIZES, run_backed_scale

    df = run_backed_scale(
        sizes or BACKED_SIZES,
        args.n_genes,
        n_batches=args.n_batches,
        random_state=args.seed,
        accelerator=args.accelerator,
        peer_max_cells=args.peer_max_cells,
        peer_limit_gb=args.peer_limit_gb,
        workdir=args.workdir,
        methods=args.methods,
    )
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.precision", 3):
        print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run ``falcon-bench run``: names resolved first (usage error, status 2), run, print the table."""
    from .run import METRICS, resolve_datasets, resolve_methods, run

    try:  # names are resolved (nothing loaded) up front: a typo is one line and status 2, not a traceback
        specs = resolve_datasets(args.dataset, args.coarse_key, args.fine_key, args.batch_key)
        resolved = resolve_methods(args.methods)
    except (ValueError, OSError) as err:
        return _usage_error(err)
    if not specs:
        return _usage_error(f"--dataset {args.dataset!r} names no dataset; see `falcon-bench list`")
    if not resolved:
        return _usage_error(f"--methods {args.methods!r} names no method; see `falcon-bench list`")
    df = run(
        args.dataset,
        args.methods,
        seeds=args.seeds,
        out=args.out,
        coarse_key=args.coarse_key,
        fine_key=args.fine_key,
        batch_key=args.batch_key,
        progress=not args.quiet,
        plots=not args.no_plots,
        known_counts=args.known_counts,
    )
    cols = ["dataset", "method", "seed", *METRICS, "seconds", "peak_mem_mb"]
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.3f}".format):
        print(df[cols].to_string(index=False))
    return _report(df, ("dataset", "method", "seed"), f"wrote {args.out}/runs.csv, summary.md and plots")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``falcon-bench``; returns the exit status.

    0 on success (some runs of ``run`` may have failed: they are listed on stderr and in ``runs.csv``), 1 when every
    run failed, 2 for a usage error (an unknown dataset, method or split name, a missing ``.h5ad`` file, nothing
    selected). The command line draws its figures into files only, so it selects matplotlib's non-interactive
    ``Agg`` backend; the library functions (``falcon_sc.bench.run`` ...) leave the backend as the user set it.
    """
    args = _parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    commands = {
        "list": lambda: _list(),
        "solver": lambda: _solver(),
        "real": lambda: _real(args),
        "ablation": lambda: _ablation(args),
        "counts": lambda: _counts(args),
        "images": lambda: _images(args),
        "scale": lambda: _scale(args),
        "run": lambda: _run(args),
    }
    return commands[args.command]()


if __name__ == "__main__":
    sys.exit(main())
