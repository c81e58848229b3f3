"""Bad-input audit: try falcon_sc's public entry points as a careless or hostile user would, and classify each case.

Run from the repository root::

    .venv/bin/python scripts/audit_inputs.py [--out audit.json] [--only SUBSTRING]

Every case is a call with one thing wrong (or a valid edge case that must work) and the outcome it should have:
``error`` (the call must refuse) or ``ok`` (it must work). Each outcome is put in one class:

``ok``              a valid call worked (and its check passed), or an invalid call was refused clearly and early
                    (counted apart as ``clear error``);
``clear error``     refused by falcon_sc itself (the error is raised in a falcon_sc frame), with a ValueError,
                    TypeError, KeyError, FileNotFoundError/FileExistsError/NotADirectoryError, RuntimeError or a
                    falcon_sc.errors error, before any training step;
``late error``      the same, but only after a training loop had run;
``deep traceback``  an error raised outside falcon_sc (inside torch, numpy, pandas, pickle...) or of another type
                    (IndexError, AttributeError, AssertionError...);
``silent``          an invalid call that did not refuse, or a valid call whose result failed its check, or code
                    from a file ran;
``refused``         a valid call refused;
``corrupt``         the user's AnnData was changed beyond the documented keys (checked for every case that gets one).

Prints the count per class and per entry point, and the cases that are not ``ok``/``clear error``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import falcon_sc as fal
from falcon_sc.core import training

TIMEOUT_S = 120
PROOF = Path(tempfile.gettempdir()) / "falcon_audit_code_ran"
ALLOWED = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, RuntimeError)
FOREIGN = (IndexError, AttributeError, AssertionError, ZeroDivisionError, pickle.UnpicklingError, UnicodeDecodeError)
FAST = {"n_epochs": 2, "show_progress": False}


class Payload:
    """A pickle that, if unpickled, creates :data:`PROOF` (code execution)."""

    def __reduce__(self) -> tuple:
        return (open, (str(PROOF), "w"))


@dataclass
class Case:
    """One audited call."""

    entry: str
    name: str
    call: Callable[[], Any]
    expect: str  # "error" | "ok"
    adata: Callable[[], ad.AnnData | None] | None = None  # the user's object to check for corruption
    check: Callable[[Any], bool] | None = None
    allowed_keys: tuple[str, ...] = ("falcon",)
    result: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ data
def cells(n_cells: int = 240, seed: int = 0) -> ad.AnnData:
    """A small count matrix with coarse (3) and fine (6) labels."""
    return fal.datasets.simulate(n_cells=n_cells, n_genes=150, children=(1, 2, 3), random_state=seed)


class Fixtures:
    """Shared inputs, built once."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.base = cells()
        self.model = fal.FalconModel(self.base.copy(), "coarse").fit(6, **FAST)
        self.model_dir = tmp / "model"
        self.model.save(self.model_dir)
        self.refined = self.base.copy()
        fal.tl.refine(self.refined, "coarse", 6, **FAST)
        self.ckpt = tmp / "ckpt.pt"
        fal.FalconModel(self.base.copy(), "coarse").fit(6, checkpoint_path=str(self.ckpt), **FAST)

    def fresh(self) -> ad.AnnData:
        """A copy of the base data."""
        return self.base.copy()

    def model_copy(self, name: str) -> Path:
        """A copy of the saved model folder."""
        dst = self.tmp / f"m_{name}"
        shutil.copytree(self.model_dir, dst)
        return dst


def snapshot(adata: ad.AnnData) -> dict[str, Any]:
    """What must not change in the user's AnnData beyond the documented keys."""
    X = adata.X
    if sp.issparse(X):
        xs = (X.data.tobytes(), X.indices.tobytes(), X.indptr.tobytes(), X.format)
    else:
        xs = (np.asarray(X).tobytes(),) if X is not None else None
    return {
        "X": xs,
        "shape": adata.shape,
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "layers": {
            k: (v.data.tobytes() if sp.issparse(v) else np.asarray(v).tobytes()) for k, v in adata.layers.items()
        },
        "obsm": {k: np.asarray(v).tobytes() for k, v in adata.obsm.items()},
        "uns": sorted(adata.uns.keys()),
    }


def unchanged(before: dict[str, Any], after: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """The parts that changed, documented keys (``allowed`` prefixes) excepted."""
    bad = [k for k in ("X", "shape", "layers") if before[k] != after[k]]
    if before["var"].shape != after["var"].shape or not before["var"].equals(after["var"]):
        bad.append("var")
    ob, oa = before["obs"], after["obs"]
    for col in ob.columns:
        if col not in oa.columns or not ob[col].equals(oa[col]):
            bad.append(f"obs[{col!r}]")
    for col in set(oa.columns) - set(ob.columns):
        if not col.startswith(allowed):
            bad.append(f"new obs[{col!r}]")
    for k, v in before["obsm"].items():
        if after["obsm"].get(k) != v:
            bad.append(f"obsm[{k!r}]")
    for k in set(after["uns"]) - set(before["uns"]):
        if not str(k).startswith(allowed):
            bad.append(f"new uns[{k!r}]")
    return bad


# ------------------------------------------------------------------------------------------------ running
class CliRefused(ValueError):
    """The command line refused its arguments: non-zero exit, a message and no traceback."""


class Timeout(Exception):
    """A case ran over :data:`TIMEOUT_S`."""


def _alarm(signum: int, frame: Any) -> None:
    raise Timeout


def _raised_in_package(exc: BaseException) -> bool:
    tb = traceback.extract_tb(exc.__traceback__)
    return bool(tb) and f"{os.sep}falcon_sc{os.sep}" in tb[-1].filename and "scripts" not in tb[-1].filename


def classify(case: Case, exc: BaseException | None, value: Any, trained: int, corrupt: list[str]) -> str:
    """The class of one outcome (see the module docstring)."""
    if PROOF.exists():
        return "silent"
    if corrupt:
        return "corrupt"
    if exc is None:
        if case.expect == "error":
            return "silent"
        return "ok" if case.check is None or case.check(value) else "silent"
    if case.expect == "ok":
        return "refused"
    if isinstance(exc, CliRefused):
        return "clear error"
    if isinstance(exc, FOREIGN) or not isinstance(exc, ALLOWED) or not _raised_in_package(exc):
        return "deep traceback"
    return "late error" if trained else "clear error"


def run_case(case: Case) -> None:
    """Run ``case`` and store its outcome in ``case.result``."""
    PROOF.unlink(missing_ok=True)
    user = case.adata() if case.adata is not None else None
    before = snapshot(user) if isinstance(user, ad.AnnData) else None
    runs = [0]
    original = training._Loop.run

    def counted(self: Any) -> None:
        runs[0] += 1
        original(self)

    training._Loop.run = counted  # type: ignore[method-assign]
    exc: BaseException | None = None
    value = None
    start = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            value = case.call()
    except Timeout as e:
        exc = e
    except BaseException as e:  # noqa: BLE001 - everything is an outcome here
        if isinstance(e, KeyboardInterrupt):
            raise
        exc = e
    finally:
        signal.alarm(0)
        training._Loop.run = original  # type: ignore[method-assign]
    corrupt = unchanged(before, snapshot(user), case.allowed_keys) if before is not None else []
    label = "deep traceback" if isinstance(exc, Timeout) else classify(case, exc, value, runs[0], corrupt)
    where = ""
    if exc is not None and exc.__traceback__ is not None:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
    case.result = {
        "entry": case.entry,
        "case": case.name,
        "expect": case.expect,
        "class": label,
        "error": None if exc is None else f"{type(exc).__name__}: {str(exc)[:300]}",
        "raised_at": where,
        "trained": runs[0],
        "corrupt": corrupt,
        "seconds": round(time.perf_counter() - start, 2),
    }


# ------------------------------------------------------------------------------------------------ cases
def refine_cases(fx: Fixtures) -> list[Case]:
    """``tl.refine``: every argument with a bad value, and degenerate data."""
    out: list[Case] = []

    def add(name: str, expect: str, make: Callable[[], ad.AnnData] | None = None, **kwargs: Any) -> None:
        holder: dict[str, Any] = {}

        def adata() -> ad.AnnData:
            holder["a"] = (make or fx.fresh)()
            return holder["a"]

        args = {"coarse_key": "coarse", "n_fine": 6, **FAST, **kwargs}
        out.append(Case("tl.refine", name, lambda: fal.tl.refine(holder["a"], **args), expect, adata=adata))

    bad_values: dict[str, list[Any]] = {
        "coarse_key": [None, "", "missing", 5, ["coarse", "missing"], "fine_missing_col"],
        "n_fine": [0, -1, 2, 1.5, "many", True, None, 10**9, {"a": 2}, {"A": -1}],
        "layer": ["missing", 5],
        "use_rep": ["missing", 5],
        "input_kind": ["bogus", None],
        "batch_key": ["missing", 5, "n_counts_col", "cell_id"],
        "n_top_genes": [0, -5, "x", 1.5],
        "n_comps": [0, 1, "x"],
        "n_comps_within": [-1, 1.5],
        "model_input": ["bogus"],
        "n_neighbors": [0, -1, 1.5],
        "children_prior": ["bogus", {"x": 1}, 5],
        "init": ["bogus"],
        "hidden": [(0,), (-5,), "64", (64.5,), None],
        "n_epochs": [0, -1, 1.5, "x"],
        "batch_size": [0, -1, 1.5],
        "lr": [0, -1, float("nan"), float("inf"), "x"],
        "optimizer": ["bogus"],
        "lambda_coarse": [-1, float("nan")],
        "lambda_fine": [float("inf")],
        "lambda_reg": [-0.5],
        "regulariser": ["bogus"],
        "lambda_relation": [-1.0],
        "temperature": [0, -1, float("nan")],
        "relation_every": [0, -3],
        "learn_relation": ["yes"],
        "soft_fraction": [-0.1, 1.5],
        "guard_warm_start": ["no"],
        "accelerator": ["tpu", "cuda"],
        "random_state": [-1, "x", 1.5],
        "key_added": ["", None, "coarse", 5, "fine"],
        "copy": ["yes"],
        "show_progress": ["x"],
        "return_model": ["x"],
    }
    for arg, values in bad_values.items():
        for v in values:
            if arg == "batch_key" and v == "n_counts_col":

                def make_counts() -> ad.AnnData:
                    a = fx.fresh()
                    a.obs["n_counts"] = np.asarray(a.X.sum(1)).ravel() + np.arange(a.n_obs) * 1e-3
                    return a

                add("batch_key='n_counts' (one batch a cell)", "error", make_counts, batch_key="n_counts")
                continue
            if arg == "batch_key" and v == "cell_id":

                def make_ids() -> ad.AnnData:
                    a = fx.fresh()
                    a.obs["cell_id"] = a.obs_names.astype(str)
                    return a

                add("batch_key='cell_id' (one batch a cell)", "error", make_ids, batch_key="cell_id")
                continue
            if arg == "coarse_key" and v == "fine_missing_col":
                continue
            if arg == "key_added" and v == "fine":
                continue  # overwriting another obs column of the user is allowed with a warning? keep out
            expect = "error"
            if arg == "n_fine" and v is True:
                expect = "error"
            add(f"{arg}={v!r}", expect, **{arg: v})

    # data problems
    def mutate(fn: Callable[[ad.AnnData], ad.AnnData | None]) -> Callable[[], ad.AnnData]:
        def make() -> ad.AnnData:
            a = fx.fresh()
            r = fn(a)
            return a if r is None else r

        return make

    def setX(a: ad.AnnData, X: Any) -> None:
        a.X = X

    n, g = fx.base.shape
    add("X all zero", "error", mutate(lambda a: setX(a, np.zeros((n, g), dtype=np.float32))))
    add("X constant 3", "error", mutate(lambda a: setX(a, np.full((n, g), 3.0, dtype=np.float32))))
    add("X sparse all zero", "error", mutate(lambda a: setX(a, sp.csr_matrix((n, g), dtype=np.float32))))
    add("X with NaN", "error", mutate(lambda a: setX(a, np.where(np.eye(n, g) > 0, np.nan, dense(a)))))
    add("X with inf", "error", mutate(lambda a: setX(a, np.where(np.eye(n, g) > 0, np.inf, dense(a)))))
    add("X negative counts", "error", mutate(lambda a: setX(a, -dense(a))), input_kind="counts")
    add(
        "X non-integer as counts (an override: processed alike)",
        "ok",
        mutate(lambda a: setX(a, dense(a) + 0.5)),
        input_kind="counts",
    )
    add("X int64 counts", "ok", mutate(lambda a: setX(a, dense(a).astype(np.int64))))
    add("X csc", "ok", mutate(lambda a: setX(a, sp.csc_matrix(dense(a)))))
    add("X csr with duplicates", "ok", mutate(lambda a: setX(a, duplicated_csr(dense(a)))))
    add("X float16", "ok", mutate(lambda a: setX(a, dense(a).astype(np.float16))))
    add("X one gene", "error", mutate(lambda a: a[:, :1].copy()))
    add("X 0 genes", "error", mutate(lambda a: a[:, :0].copy()))
    add("0 cells", "error", mutate(lambda a: a[:0].copy()))
    add("3 cells", "error", mutate(lambda a: a[:3].copy()))
    add("duplicated obs_names", "ok", mutate(lambda a: set_names(a, obs=True)))
    add("duplicated var_names", "ok", mutate(lambda a: set_names(a, obs=False)))
    add("view of AnnData", "ok", mutate(lambda a: a[: n - 10]))
    add("coarse with unused category", "ok", mutate(lambda a: add_category(a)))
    add("coarse labels with '/' and unicode", "ok", mutate(lambda a: unicode_labels(a)))
    add("coarse numeric with NaN", "error", mutate(lambda a: numeric_coarse(a, nan=True)))
    add("coarse all NaN", "error", mutate(lambda a: all_nan_coarse(a)))
    add("single coarse class", "ok", mutate(lambda a: one_class(a)), n_fine=3)
    add("coarse class of 1 cell (kept whole, with a warning)", "ok", mutate(lambda a: tiny_class(a, 1)))
    add(
        "n_fine=60 uniform prior, 3-cell class",
        "error",
        mutate(lambda a: tiny_class(a, 3)),
        n_fine=60,
        children_prior="uniform",
    )
    add("use_rep with NaN", "error", mutate(lambda a: rep(a, nan=True)), use_rep="X_rep")
    add("use_rep 1 column", "ok", mutate(lambda a: rep(a, width=1)), use_rep="X_rep")
    add("use_rep constant", "error", mutate(lambda a: rep(a, const=True)), use_rep="X_rep")
    add("layer all zero", "error", mutate(lambda a: zero_layer(a)), layer="zeros")
    add("hidden=() (a linear model)", "ok", hidden=())
    add("n_neighbors=10**7 (capped, with a warning)", "ok", n_neighbors=10**7)
    add("valid run", "ok")
    add("valid run, copy=True", "ok", copy=True)
    return out


def dense(a: ad.AnnData) -> np.ndarray:
    """``a.X`` as a dense float32 array."""
    X = a.X
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def duplicated_csr(X: np.ndarray) -> sp.csr_matrix:
    """``X`` as CSR whose every entry is stored twice (two halves), indices unsorted within rows."""
    coo = sp.coo_matrix(X)
    rows = np.concatenate([coo.row, coo.row])
    cols = np.concatenate([coo.col, coo.col])
    half = np.concatenate([coo.data, coo.data]).astype(np.float32) / 2
    order = np.lexsort((-cols, rows))  # rows ascending, columns descending inside a row
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=X.shape[0]))])
    m = sp.csr_matrix(X.shape, dtype=np.float32)
    m.data, m.indices, m.indptr = half[order], cols[order].astype(np.int32), indptr.astype(np.int32)
    m.has_canonical_format = False
    return m


def set_names(a: ad.AnnData, *, obs: bool) -> None:
    """Make the first two obs (or var) names equal."""
    names = list(a.obs_names if obs else a.var_names)
    names[1] = names[0]
    if obs:
        a.obs_names = names
    else:
        a.var_names = names


def add_category(a: ad.AnnData) -> None:
    """An unused category in the coarse column."""
    a.obs["coarse"] = a.obs["coarse"].cat.add_categories(["never"])


def unicode_labels(a: ad.AnnData) -> None:
    """Coarse names with a slash and non-ASCII letters."""
    a.obs["coarse"] = a.obs["coarse"].cat.rename_categories(lambda c: f"T/NK é {c}")


def numeric_coarse(a: ad.AnnData, *, nan: bool) -> None:
    """Coarse labels as floats with NaN for some cells."""
    codes = a.obs["coarse"].cat.codes.to_numpy().astype(float)
    if nan:
        codes[:5] = np.nan
    a.obs["coarse"] = codes


def all_nan_coarse(a: ad.AnnData) -> None:
    """No coarse label at all."""
    a.obs["coarse"] = pd.Categorical([np.nan] * a.n_obs, categories=["a", "b"])


def one_class(a: ad.AnnData) -> None:
    """Every cell in one coarse class."""
    a.obs["coarse"] = pd.Categorical(["all"] * a.n_obs)


def tiny_class(a: ad.AnnData, size: int) -> None:
    """A fourth coarse class with ``size`` cells."""
    labels = a.obs["coarse"].astype(str).to_numpy().copy()
    labels[:size] = "tiny"
    a.obs["coarse"] = pd.Categorical(labels)


def rep(a: ad.AnnData, *, nan: bool = False, width: int = 10, const: bool = False) -> None:
    """A representation in ``obsm['X_rep']``."""
    rng = np.random.default_rng(0)
    r = rng.normal(size=(a.n_obs, width)) + a.obs["coarse"].cat.codes.to_numpy()[:, None] * 3
    if nan:
        r[0, 0] = np.nan
    if const:
        r[:] = 1.0
    a.obsm["X_rep"] = r


def zero_layer(a: ad.AnnData) -> None:
    """An all-zero layer ``zeros``."""
    a.layers["zeros"] = np.zeros(a.shape, dtype=np.float32)


def model_cases(fx: Fixtures) -> list[Case]:
    """``FalconModel``: setup, fit, predict, save, load, write_fit_results, checkpoints."""
    out: list[Case] = []
    m = fx.model

    def pred(name: str, expect: str, make: Callable[[], ad.AnnData], **kwargs: Any) -> None:
        holder: dict[str, Any] = {}

        def adata() -> ad.AnnData:
            holder["a"] = make()
            return holder["a"]

        out.append(Case("FalconModel.predict", name, lambda: m.predict(holder["a"], **kwargs), expect, adata=adata))

    pred("0 cells", "error", lambda: fx.fresh()[:0].copy())
    for bs in (0, -1, 1.5, "x"):
        pred(f"batch_size={bs!r}", "error", fx.fresh, batch_size=bs)
    pred("duplicated var_names", "error", lambda: with_dup_var(fx.fresh()))
    pred("no shared genes", "error", lambda: renamed_genes(fx.fresh()))
    pred("X with NaN", "error", lambda: with_nan(fx.fresh()))
    pred("X all zero", "error", lambda: zeroed(fx.fresh()))
    pred("coarse_key missing", "error", fx.fresh, coarse_key="missing")
    pred("key_added=''", "error", fx.fresh, key_added="")
    pred("key_added='coarse'", "error", fx.fresh, key_added="coarse")
    pred("input_kind bogus", "error", fx.fresh, input_kind="bogus")
    pred("valid", "ok", fx.fresh)
    pred("valid without coarse labels", "ok", lambda: drop_coarse(fx.fresh()))
    pred("valid, 1 cell", "ok", lambda: fx.fresh()[:1].copy())
    pred("unseen coarse label", "error", lambda: unseen_coarse(fx.fresh()))

    def setup(name: str, expect: str, make: Callable[[], Any], **kwargs: Any) -> None:
        out.append(Case("FalconModel.setup", name, lambda: fal.FalconModel(make(), **kwargs), expect))

    setup("adata None", "error", lambda: None, coarse_key="coarse")
    setup("adata ndarray", "error", lambda: np.zeros((3, 3)), coarse_key="coarse")
    setup("adata DataFrame", "error", lambda: pd.DataFrame(np.zeros((3, 3))), coarse_key="coarse")
    setup("coarse_key missing", "error", fx.fresh, coarse_key="nope")
    setup("n_comps 'x'", "error", fx.fresh, coarse_key="coarse", n_comps="x")
    setup("batch_key missing", "error", fx.fresh, coarse_key="coarse", batch_key="nope")

    def fit(name: str, expect: str, make: Callable[[], ad.AnnData] = fx.fresh, **kwargs: Any) -> None:
        out.append(
            Case(
                "FalconModel.fit", name, lambda: fal.FalconModel(make(), "coarse").fit(6, **{**FAST, **kwargs}), expect
            )
        )

    fit("devices=0", "error", devices=0)
    fit("precision bogus", "error", precision="bogus")
    fit("checkpoint_path a folder", "error", checkpoint_path=str(fx.tmp))
    fit("checkpoint_path parent missing", "error", checkpoint_path=str(fx.tmp / "no" / "ck.pt"))
    fit("checkpoint_path parent a file", "error", checkpoint_path=str(fx.ckpt / "ck.pt"))
    fit("checkpoint_path 5", "error", checkpoint_path=5)
    fit("resume without path", "error", resume=True)
    fit(
        "resume from other data (same shape)", "error", lambda: cells(seed=7), checkpoint_path=str(fx.ckpt), resume=True
    )
    fit("resume with other lr", "error", checkpoint_path=str(fx.ckpt), resume=True, lr=1e-2)
    for kind in ("truncated", "text", "pickle payload", "foreign dict", "empty"):
        path = damaged_checkpoint(fx, kind)
        fit(f"resume from {kind} checkpoint", "error", checkpoint_path=str(path), resume=True)
    fit("resume from same checkpoint", "ok", checkpoint_path=str(copy_file(fx.ckpt, fx.tmp / "same.pt")), resume=True)

    def write(name: str, expect: str, make: Callable[[], Any], key: Any = "falcon") -> None:
        holder: dict[str, Any] = {}

        def adata() -> Any:
            holder["a"] = make()
            return holder["a"]

        out.append(
            Case(
                "FalconModel.write_fit_results",
                name,
                lambda: m.write_fit_results(holder["a"], key),
                expect,
                adata=adata,
            )
        )

    write("other cells, other obs_names", "error", lambda: cells(seed=3)[:100].copy())
    write("other cells, same obs_names", "error", lambda: cells(seed=3))
    write("key_added None", "error", fx.fresh, None)
    write("key_added 'coarse'", "error", fx.fresh, "coarse")
    write("not an AnnData", "error", lambda: fx.base.X)
    write("valid", "ok", fx.fresh)

    def save(name: str, expect: str, target: Callable[[], Any], **kwargs: Any) -> None:
        out.append(Case("FalconModel.save", name, lambda: m.save(target(), **kwargs), expect))

    save("path is a file", "error", lambda: touch(fx.tmp / "file.txt"))
    save("non-empty folder, no overwrite", "error", lambda: fx.model_copy("s1"))
    save("user folder (not a model), overwrite", "error", lambda: user_folder(fx.tmp / "userdir"), overwrite=True)
    save("model folder, overwrite", "ok", lambda: fx.model_copy("s2"), overwrite=True)
    save("path None", "error", lambda: None)
    out.append(
        Case(
            "FalconModel.save",
            "unfitted model",
            lambda: fal.FalconModel(fx.fresh(), "coarse").save(fx.tmp / "unfitted"),
            "error",
        )
    )

    def load(name: str, expect: str, make: Callable[[], Any]) -> None:
        out.append(
            Case(
                "FalconModel.load",
                name,
                lambda: fal.FalconModel.load(make()),
                expect,
                check=lambda mm: mm.predict(fx.fresh(), copy=True) is not None,
            )
        )

    load("valid", "ok", lambda: fx.model_dir)
    load("missing folder", "error", lambda: fx.tmp / "nothing")
    load("empty folder", "error", lambda: mkdir(fx.tmp / "empty"))
    load("a file", "error", lambda: touch(fx.tmp / "f2.txt"))
    for kind, fn in damage_kinds().items():
        load(kind, "error", (lambda fn=fn, kind=kind: fn(fx.model_copy(slug(kind)))))
    return out


def slug(s: str) -> str:
    """A file-name-safe form of ``s``."""
    return "".join(c if c.isalnum() else "_" for c in s)


def damage_kinds() -> dict[str, Callable[[Path], Path]]:
    """Ways to damage a saved model folder; each returns the folder."""

    def edit(field: str, value: Any) -> Callable[[Path], Path]:
        def fn(d: Path) -> Path:
            s = json.loads((d / "model.json").read_text())
            if value is KeyError:
                s.pop(field)
            else:
                s[field] = value
            (d / "model.json").write_text(json.dumps(s))
            return d

        return fn

    def file_op(name: str, op: str) -> Callable[[Path], Path]:
        def fn(d: Path) -> Path:
            p = d / name
            if op == "truncate":
                p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)])
            elif op == "empty":
                p.write_bytes(b"")
            elif op == "delete":
                p.unlink()
            elif op == "random":
                p.write_bytes(np.random.default_rng(0).bytes(2000))
            elif op == "payload":
                p.write_bytes(pickle.dumps(Payload()))
            return d

        return fn

    def swap(d: Path) -> Path:
        a, b = d / "weights.pt", d / "preprocessing.npz"
        tmp = d / "tmp"
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
        return d

    def nan_weights(d: Path) -> Path:
        import torch

        w = torch.load(d / "weights.pt", weights_only=True)
        for k in w:
            if w[k].is_floating_point():
                w[k] = torch.full_like(w[k], float("nan"))
        torch.save(w, d / "weights.pt")
        return d

    kinds: dict[str, Callable[[Path], Path]] = {
        "json missing 'hidden'": edit("hidden", KeyError),
        "json hidden = [10**12]": edit("hidden", [10**12]),
        "json hidden = 'x'": edit("hidden", "x"),
        "json n_input = -1": edit("n_input", -1),
        "json relation all zero": edit("relation", [[0, 0, 0]] * 6),
        "json relation wrong shape": edit("relation", [[1]]),
        "json fine_names short": edit("fine_names", ["a"]),
        "json coarse_names duplicated": edit("coarse_names", ["a", "a", "a"]),
        "json use_warm = 5": edit("use_warm", 5),
        "json setup = []": edit("setup", []),
        "json setup unknown field": edit("setup", {"bogus": 1}),
        "json params = null": edit("params", None),
        "json format_version 99": edit("format_version", 99),
        "json model_class other": edit("model_class", "Other"),
        "json transform = {}": edit("transform", {}),
        "json history = 5": edit("history", 5),
        "json not JSON": lambda d: (d / "model.json").write_text("{not json") and d or d,
        "json a list": lambda d: (d / "model.json").write_text("[1, 2]") and d or d,
        "weights swapped with npz": swap,
        "weights NaN": nan_weights,
    }
    for name in ("model.json", "weights.pt", "preprocessing.npz"):
        for op in ("truncate", "empty", "delete", "random", "payload"):
            kinds[f"{name} {op}"] = file_op(name, op)
    return kinds


def damaged_checkpoint(fx: Fixtures, kind: str) -> Path:
    """A damaged copy of the fixture checkpoint."""
    import torch

    path = fx.tmp / f"ck_{slug(kind)}.pt"
    raw = fx.ckpt.read_bytes()
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "text":
        path.write_text("hello")
    elif kind == "pickle payload":
        path.write_bytes(pickle.dumps(Payload()))
    elif kind == "foreign dict":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    return path


def copy_file(src: Path, dst: Path) -> Path:
    """``src`` copied to ``dst``."""
    shutil.copy(src, dst)
    return dst


def touch(p: Path) -> Path:
    """A small file at ``p``."""
    p.write_text("x")
    return p


def mkdir(p: Path) -> Path:
    """An empty folder at ``p``."""
    p.mkdir(exist_ok=True)
    return p


def user_folder(p: Path) -> Path:
    """A folder with a user's file in it."""
    p.mkdir(exist_ok=True)
    (p / "thesis.tex").write_text("precious")
    return p


def with_dup_var(a: ad.AnnData) -> ad.AnnData:
    """Two genes with the same name."""
    set_names(a, obs=False)
    return a


def renamed_genes(a: ad.AnnData) -> ad.AnnData:
    """No gene name in common with the model."""
    a.var_names = [f"other{i}" for i in range(a.n_vars)]
    return a


def with_nan(a: ad.AnnData) -> ad.AnnData:
    """One NaN in X."""
    X = dense(a)
    X[0, 0] = np.nan
    a.X = X
    return a


def zeroed(a: ad.AnnData) -> ad.AnnData:
    """All-zero X."""
    a.X = np.zeros(a.shape, dtype=np.float32)
    return a


def drop_coarse(a: ad.AnnData) -> ad.AnnData:
    """No coarse column."""
    del a.obs["coarse"]
    return a


def unseen_coarse(a: ad.AnnData) -> ad.AnnData:
    """A coarse label the model never saw."""
    labels = a.obs["coarse"].astype(str).to_numpy().copy()
    labels[:4] = "never seen"
    a.obs["coarse"] = pd.Categorical(labels)
    return a


def other_cases(fx: Fixtures) -> list[Case]:
    """``coarse_conflicts``, ``fine_markers``, ``rename``, ``pl``, ``metrics``, readers, ``refine_images``, CLI."""
    out: list[Case] = []
    r = fx.refined

    def add(entry: str, name: str, expect: str, fn: Callable[[ad.AnnData], Any]) -> None:
        holder: dict[str, Any] = {}

        def adata() -> ad.AnnData:
            holder["a"] = r.copy()
            return holder["a"]

        out.append(Case(entry, name, lambda: fn(holder["a"]), expect, adata=adata))

    for k in (None, "", "missing", 5):
        add("tl.coarse_conflicts", f"key={k!r}", "error", lambda a, k=k: fal.tl.coarse_conflicts(a, key=k))
    add("tl.coarse_conflicts", "min_confidence=2", "error", lambda a: fal.tl.coarse_conflicts(a, min_confidence=2))
    add("tl.coarse_conflicts", "coarse_key missing", "error", lambda a: fal.tl.coarse_conflicts(a, coarse_key="x"))
    add("tl.coarse_conflicts", "valid", "ok", lambda a: fal.tl.coarse_conflicts(a))
    for k in (None, "missing"):
        add("tl.fine_markers", f"key={k!r}", "error", lambda a, k=k: fal.tl.fine_markers(a, key=k))
    add("tl.fine_markers", "valid", "ok", lambda a: fal.tl.fine_markers(a))
    add("tl.rename", "unknown fine name", "error", lambda a: fal.tl.rename(a, {"nope": "x"}))
    add("tl.rename", "two names to one", "error", lambda a: fal.tl.rename(a, two_to_one(a)))
    add("tl.rename", "key missing", "error", lambda a: fal.tl.rename(a, {}, key="missing"))
    add("tl.rename", "mapping not a dict", "error", lambda a: fal.tl.rename(a, ["x"]))
    for fn_name in ("relations", "history", "embedding", "coarse_conflicts", "fine_markers", "n_fine"):
        add(
            f"pl.{fn_name}",
            "key missing",
            "error",
            lambda a, fn_name=fn_name: getattr(fal.pl, fn_name)(a, key="missing", show=False),
        )
    add("pl.confusion", "key missing", "error", lambda a: fal.pl.confusion(a, "fine", key="missing", show=False))
    add("pl.confusion", "true_key missing", "error", lambda a: fal.pl.confusion(a, "nope", show=False))
    for name, args in {
        "different lengths": (["a", "b"], ["a"]),
        "empty": ([], []),
        "NaN labels": ([np.nan, "a"], ["a", "a"]),
        "2-d input": (np.zeros((2, 2)), np.zeros((2, 2))),
    }.items():
        out.append(Case("metrics.evaluate", name, lambda args=args: fal.metrics.evaluate(*args), "error"))
    out.append(Case("metrics.evaluate", "valid", lambda: fal.metrics.evaluate(["a", "b"], ["x", "y"]), "ok"))
    out += reader_cases(fx)
    out += image_cases(fx)
    out += cli_cases()
    return out


def two_to_one(a: ad.AnnData) -> dict[str, str]:
    """Two fine names renamed to the same new name."""
    names = list(a.obs["falcon"].cat.categories[:2])
    return {names[0]: "same", names[1]: "same"}


def reader_cases(fx: Fixtures) -> list[Case]:
    """The local dataset readers on empty, damaged and malicious files."""
    out: list[Case] = []
    root = fx.tmp / "readers"
    root.mkdir()

    def cifar_root(kind: str) -> Path:
        d = root / f"cifar_{slug(kind)}"
        d.mkdir()
        n = 20
        rng = np.random.default_rng(0)
        meta: Any = {
            "fine_label_names": [f"f{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)],
        }
        data = {
            "data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            "fine_labels": list(range(n)),
            "coarse_labels": [i % 20 for i in range(n)],
            "filenames": [f"{i}.png" for i in range(n)],
        }
        if kind == "meta a list":
            meta = [1, 2]
        if kind == "label out of range":
            data["fine_labels"][0] = 500
        if kind == "wrong width":
            data["data"] = data["data"][:, :100]
        for split in ("train", "test"):
            (d / split).write_bytes(pickle.dumps(data))
        (d / "meta").write_bytes(pickle.dumps(meta))
        if kind == "payload meta":
            (d / "meta").write_bytes(pickle.dumps(Payload()))
        if kind == "truncated train":
            (d / "train").write_bytes((d / "train").read_bytes()[:100])
        if kind == "text train":
            (d / "train").write_text("hello")
        return d

    for kind in ("payload meta", "truncated train", "text train", "meta a list", "label out of range", "wrong width"):
        out.append(Case("datasets.cifar100", kind, lambda kind=kind: fal.datasets.cifar100(cifar_root(kind)), "error"))
    out.append(Case("datasets.cifar100", "missing root", lambda: fal.datasets.cifar100(root / "none"), "error"))

    def folder(kind: str) -> tuple[Path, Path]:
        d = root / f"folder_{slug(kind)}"
        d.mkdir()
        csv = d / "coarse.csv"
        imgs = d / "images"
        imgs.mkdir()
        if kind == "empty root":
            csv.write_text("fine,coarse\ncat,animal\n")
        elif kind == "header-only csv":
            make_images(imgs / "cat")
            csv.write_text("fine,coarse\n")
        elif kind == "0-byte csv":
            make_images(imgs / "cat")
            csv.write_bytes(b"")
        elif kind == "binary csv":
            make_images(imgs / "cat")
            csv.write_bytes(bytes(range(256)) * 4)
        elif kind == "trailing space":
            make_images(imgs / "cat ")
            make_images(imgs / "dog")
            csv.write_text("fine,coarse\ncat ,animal\ndog,animal\n")
        return imgs, csv

    for kind, expect in (
        ("empty root", "error"),
        ("header-only csv", "error"),
        ("0-byte csv", "error"),
        ("binary csv", "error"),
        ("trailing space", "ok"),
    ):
        out.append(
            Case(
                "datasets.image_folder",
                kind,
                lambda kind=kind: fal.datasets.image_folder(*folder(kind), size=8),
                expect,
            )
        )

    def tiered(kind: str) -> Any:
        d = root / f"tiered_{slug(kind)}"
        hier = d / "hier"
        hier.mkdir(parents=True)
        make_images(d / "imagenet" / "train" / "n01440764")
        make_images(d / "imagenet" / "val" / "n01440764")
        rows = {"empty csvs": "", "row with empty coarse": "n01440764,\n", "binary csv": "\x00\x01\x02"}[kind]
        for name in ("train.csv", "val.csv", "test.csv"):
            (hier / name).write_text(rows)
        return fal.datasets.tiered_imagenet(d / "imagenet", hierarchy_dir=hier, size=8)

    for kind in ("empty csvs", "row with empty coarse", "binary csv"):
        out.append(Case("datasets.tiered_imagenet", kind, lambda kind=kind: tiered(kind), "error"))

    def breeds_empty() -> Any:
        d = root / "breeds_empty"
        hier = d / "hier"
        hier.mkdir(parents=True)
        for name in ("dataset_class_info.json", "class_hierarchy.txt", "node_names.txt"):
            (hier / name).write_text("")
        make_images(d / "imagenet" / "train" / "n01440764")
        return fal.datasets.breeds(d / "imagenet", "living17", hierarchy_dir=hier, size=8)

    out.append(Case("datasets.breeds", "empty hierarchy files", breeds_empty, "error"))
    return out


def make_images(d: Path, n: int = 3) -> None:
    """``n`` small PNG files in ``d``."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(d)))
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")


def image_cases(fx: Fixtures) -> list[Case]:
    """``tl.refine_images`` argument and data problems (on the bundled digits)."""
    out: list[Case] = []
    digits = fal.datasets.digits()
    small = digits[:300].copy()

    def add(name: str, expect: str, make: Callable[[], ad.AnnData] = lambda: small.copy(), **kwargs: Any) -> None:
        holder: dict[str, Any] = {}

        def adata() -> ad.AnnData:
            holder["a"] = make()
            return holder["a"]

        args = {"coarse_key": "coarse", "n_fine": 10, "width": 8, "n_epochs": 1, "show_progress": False, **kwargs}
        out.append(
            Case("tl.refine_images", name, lambda: fal.tl.refine_images(holder["a"], **args), expect, adata=adata)
        )

    for k in ("", None, "coarse", 5):
        add(f"key_added={k!r}", "error", key_added=k)
    add("image_shape (-1, 8, -8)", "error", image_shape=(-1, 8, -8))
    add("image_shape wrong size", "error", image_shape=(3, 8, 8))
    add("width 0", "error", width=0)
    add("backbone bogus", "error", backbone="bogus")
    add("checkpoint missing", "error", checkpoint=str(fx.tmp / "none.pth"))
    add("n_fine 1", "error", n_fine=1)
    add("all-black images", "error", lambda: black(small.copy()))
    add("valid", "ok")
    return out


def black(a: ad.AnnData) -> ad.AnnData:
    """Every pixel 0."""
    a.X = np.zeros(a.shape, dtype=np.float32)
    return a


def cli_cases() -> list[Case]:
    """``falcon-bench`` options that must be refused (exit code 2)."""
    import subprocess

    def cli(*args: str) -> Callable[[], Any]:
        def call() -> None:
            res = subprocess.run(
                [sys.executable, "-m", "falcon_sc.bench", *args], capture_output=True, text=True, timeout=100
            )
            if res.returncode == 0:
                return None
            if "Traceback" in res.stderr:
                raise AssertionError(f"traceback from the CLI: {res.stderr[-300:]}")
            if not res.stderr.strip():
                raise AssertionError(f"exit {res.returncode} without a message")
            raise CliRefused(res.stderr.strip().splitlines()[-1])

        return call

    out = []
    for args in (
        ("images", "--split", "bogus"),
        ("run", "--dataset", "bogus"),
        ("run", "--seeds", "-1"),
        ("run", "--methods", "bogus"),
    ):
        out.append(Case("falcon-bench", " ".join(args), cli(*args), "error"))
    return out


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    """Run the audit and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write every case's outcome to this JSON file")
    parser.add_argument("--only", default=None, help="run only cases whose entry or name contains this")
    args = parser.parse_args()
    import resource

    limit = 12 * 2**30  # a runaway allocation becomes a MemoryError (a finding), not a killed audit
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixtures(Path(tmp))
        cases = refine_cases(fx) + model_cases(fx) + other_cases(fx)
        if args.only:
            cases = [c for c in cases if args.only in c.entry or args.only in c.name]
        for i, case in enumerate(cases):
            run_case(case)
            print(f"[{i + 1}/{len(cases)}] {case.result['class']:15s} {case.entry}: {case.name}", file=sys.stderr)
    results = [c.result for c in cases]
    counts = Counter(r["class"] for r in results)
    print(f"\n{len(results)} cases")
    for label in ("ok", "clear error", "late error", "deep traceback", "silent", "refused", "corrupt"):
        print(f"  {label:15s} {counts.get(label, 0)}")
    bad = [r for r in results if r["class"] not in ("ok", "clear error")]
    if bad:
        print("\nnot ok:")
        for r in bad:
            print(f"  [{r['class']}] {r['entry']}: {r['case']} -> {r['error']} @ {r['raised_at']} {r['corrupt']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
