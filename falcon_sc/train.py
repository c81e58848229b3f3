r"""``python -m falcon_sc.train``: FALCON on an ``.h5ad`` file from the command line, on one process or under torchrun.

Several machines (see ``docs/multinode.md``)::

    torchrun --nnodes 2 --nproc-per-node 4 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        -m falcon_sc.train cells.h5ad --coarse-key coarse --n-fine 40 --output labelled.h5ad

Rank 0 reads the file, checks the arguments, preprocesses (genes, normalisation, PCA, neighbours, warm start) and
hands the training call to the other ranks (:class:`~falcon_sc.core.launch.TorchrunLaunch`); every rank trains on its
share of each epoch's minibatches, rank 0 solves the relation and broadcasts it; rank 0 alone writes the labelled copy
(``--output``) and the model (``--model-dir``). Without torchrun the same command trains on one process.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any

import anndata as ad

from ._validate import resolve_device
from .core.launch import TorchrunLaunch, launched_by_torchrun
from .core.relation_log import RELATION_LOG_ENV
from .models import FalconModel

PROG = "python -m falcon_sc.train"
SUFFIXES = (".h5ad", ".zarr")
SETUP_OPTIONS = ("layer", "batch_key", "n_top_genes", "n_comps")
"""Command-line options passed to :class:`~falcon_sc.FalconModel` (its setup), when given."""
FIT_OPTIONS = (
    "n_epochs",
    "batch_size",
    "lr",
    "random_state",
    "accelerator",
    "precision",
    "n_neighbors",
    "init",
    "relation_every",
)
"""Command-line options passed to :meth:`~falcon_sc.FalconModel.fit`, when given (otherwise its defaults hold)."""


class UsageError(ValueError):
    """A command-line argument that cannot work (the message names it and says what to do)."""


def env_rank() -> int:
    """The global rank torchrun gave this process (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def say(message: str, file: IO[str] | None = None) -> None:
    """Print ``message`` on rank 0 only (other ranks stay silent)."""
    if env_rank() == 0:
        print(message, file=sys.stderr if file is None else file, flush=True)


class RankZeroParser(argparse.ArgumentParser):
    """An argument parser whose usage, help and errors only rank 0 prints (every rank still exits alike)."""

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        if env_rank() == 0:
            super()._print_message(message, file)


def n_fine_arg(text: str) -> int | str:
    """``--n-fine``: a count of fine classes or ``"auto"``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of fine classes nor 'auto'") from None


def parser() -> argparse.ArgumentParser:
    """The command line; options left out keep the defaults of :meth:`~falcon_sc.FalconModel.fit`."""
    p = RankZeroParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("input", help="cells x genes: an .h5ad file (or a .zarr folder), read by rank 0 only")
    p.add_argument("--coarse-key", required=True, help="column of obs with the coarse labels")
    p.add_argument("--n-fine", required=True, type=n_fine_arg, help="number of fine classes, or 'auto'")
    p.add_argument("--output", help="write a copy of the input with the labels (obs[KEY_ADDED], uns[KEY_ADDED]) here")
    p.add_argument("--model-dir", help="save the fitted FalconModel to this new folder (FalconModel.save)")
    p.add_argument("--key-added", default="falcon", help="prefix of the keys written (default: falcon)")
    p.add_argument("--backed", action="store_true", default=False, help="open the .h5ad backed (obs checked first)")
    p.add_argument("--relation-log", help="folder where every rank records every relation solve (checks)")
    p.add_argument("--layer", help="layer with the expression values (default: X)")
    p.add_argument("--batch-key", help="column of obs with the batches")
    p.add_argument("--n-top-genes", type=int, help="highly variable genes")
    p.add_argument("--n-comps", type=int, help="principal components")
    p.add_argument("--n-epochs", type=int, help="passes over the data (default: automatic)")
    p.add_argument("--batch-size", type=int, help="minibatch size per rank")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--random-state", type=int, help="seed")
    p.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), help="cpu (gloo) or cuda (NCCL, one GPU a rank)")
    p.add_argument("--precision", choices=("32-true", "bf16-mixed", "16-mixed"), help="Lightning precision")
    p.add_argument("--n-neighbors", type=int, help="neighbours per cell inside its coarse class")
    p.add_argument("--init", choices=("leiden", "kmeans", "random"), help="warm start")
    p.add_argument("--relation-every", type=int, help="optimisation steps between relation solves")
    return p


def fit_default(name: str) -> Any:
    """The default of :meth:`~falcon_sc.FalconModel.fit`'s argument ``name`` (declared there only)."""
    return inspect.signature(FalconModel.fit).parameters[name].default


def given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The options among ``names`` that were given on the command line."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def check_outputs(args: argparse.Namespace) -> None:
    """``--output`` / ``--model-dir``: at least one, in folders that exist, never the input or a used folder."""
    output, model_dir = getattr(args, "output", None), getattr(args, "model_dir", None)
    if output is None and model_dir is None:
        raise UsageError("give --output FILE.h5ad (the labelled copy) and/or --model-dir DIR (the saved model).")
    if output is not None:
        target = Path(output)
        if target.suffix != ".h5ad":
            raise UsageError(f"--output {output!r}: name an .h5ad file (e.g. {target.with_suffix('.h5ad').name!r}).")
        if not target.parent.is_dir():
            raise UsageError(f"--output {output!r}: its folder {str(target.parent)!r} does not exist; create it first.")
        if target.resolve() == Path(args.input).resolve():
            raise UsageError(f"--output {output!r} is the input file; write the labelled copy to another path.")
    if model_dir is not None:
        folder = Path(model_dir)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise UsageError(f"--model-dir {model_dir!r} exists and is not an empty folder; name a new folder.")
        if not folder.parent.is_dir():
            raise UsageError(f"--model-dir {model_dir!r}: its folder {str(folder.parent)!r} does not exist.")


def read_cells(args: argparse.Namespace) -> ad.AnnData:
    """Rank 0: the cells of ``input`` in memory, after checking the file and ``--coarse-key`` (obs read first)."""
    path = Path(args.input)
    if not path.exists():
        raise UsageError(f"input {args.input!r}: no such file; give the path of an .h5ad file (or a .zarr folder).")
    if path.suffix not in SUFFIXES:
        raise UsageError(f"input {args.input!r}: not an .h5ad file or a .zarr folder; convert it with anndata first.")
    if path.suffix == ".zarr":
        if args.backed:
            raise UsageError("--backed opens .h5ad files; a .zarr folder is read in memory (leave --backed out).")
        adata = ad.read_zarr(path)
    else:
        adata = ad.read_h5ad(path, backed="r" if args.backed else None)
    if args.coarse_key not in adata.obs.columns:
        columns = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise UsageError(
            f"--coarse-key {args.coarse_key!r} is not a column of obs in {args.input!r} (its columns: {columns}); "
            "pass the column that holds the coarse labels."
        )
    if adata.isbacked:  # obs was checked without reading X; preprocessing needs the matrix in memory
        backed, adata = adata, adata.to_memory()
        backed.file.close()
    return adata


def fit_and_write(args: argparse.Namespace, launch: TorchrunLaunch | None) -> None:
    """Rank 0: read, fit (training on every rank under torchrun), then write the outputs."""
    check_outputs(args)
    adata = read_cells(args)
    say(f"{PROG}: {adata.n_obs:,} cells x {adata.n_vars:,} genes from {args.input}", file=sys.stdout)
    with launch if launch is not None else nullcontext():
        model = FalconModel(adata, args.coarse_key, **given(args, SETUP_OPTIONS))
        model.fit(args.n_fine, **given(args, FIT_OPTIONS))
    if getattr(args, "output", None) is not None:
        model.write_fit_results(adata, key_added=args.key_added)
        adata.write_h5ad(args.output)
        say(f"{PROG}: labels in obs[{args.key_added!r}] of {args.output}", file=sys.stdout)
    if getattr(args, "model_dir", None) is not None:
        model.save(args.model_dir)
        say(f"{PROG}: model saved to {args.model_dir}", file=sys.stdout)


def run_rank_zero(args: argparse.Namespace, launch: TorchrunLaunch | None) -> int:
    """Rank 0's part; an argument error before training is printed (no traceback) and the other ranks released."""
    try:
        fit_and_write(args, launch)
    except (UsageError, ValueError, KeyError, TypeError) as err:
        if launch is not None and launch.sent:  # training had begun: a failure, not a usage error
            raise
        if launch is not None:
            launch.cancel()
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        say(f"{PROG}: error: {message}")
        return 2
    except BaseException:
        if launch is not None:
            launch.cancel()
        raise
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (0: done, 2: bad arguments).

    Under torchrun every rank runs it: rank 0 reads, fits and writes; the others train and exit 0 (2 after an
    argument error rank 0 reported).
    """
    args = parser().parse_args(argv)
    if getattr(args, "relation_log", None):
        os.environ[RELATION_LOG_ENV] = str(Path(args.relation_log).resolve())
    try:
        device = resolve_device(getattr(args, "accelerator", fit_default("accelerator")))
    except ValueError as err:
        say(f"{PROG}: error: --accelerator: {err}")
        return 2
    if not launched_by_torchrun():
        return run_rank_zero(args, None)
    launch = TorchrunLaunch.from_environment(device, precision=getattr(args, "precision", fit_default("precision")))
    try:
        if launch.rank == 0:
            return run_rank_zero(args, launch)
        return 0 if launch.follow() else 2
    finally:
        launch.close()


if __name__ == "__main__":
    sys.exit(main())
