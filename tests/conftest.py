"""Shared fixtures: single-threaded torch, quiet scanpy and a small simulated dataset with a clear answer."""

from __future__ import annotations

import io
import os
from contextlib import contextmanager

import pytest
import scanpy as sc
import torch
from hypothesis import settings

import falcon_sc as fal

# hypothesis: in CI (CI set, e.g. CI=true) every run draws the same examples and neither reads nor writes the example
# database, so a failure found once cannot replay in later runs; locally ("dev") examples are random and failures are
# saved in the git-ignored `.hypothesis/` to replay until fixed. print_blob prints the `@reproduce_failure` line for
# any failure. Both derive from hypothesis's "default" profile: hypothesis itself loads its own "ci" profile whenever a
# CI variable is present, even CI=false.
_HYP_DEFAULT = settings.get_profile("default")
settings.register_profile("ci", _HYP_DEFAULT, derandomize=True, database=None, deadline=None, print_blob=True)
settings.register_profile("dev", _HYP_DEFAULT, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no") else "dev")

# 2 shared cores: one thread keeps the many small torch ops fast and the suite predictable
torch.set_num_threads(1)
sc.settings.verbosity = 0

#: simulated hierarchy (children per coarse class) of the shared dataset: equal numbers of children, so that every
#: children prior ("size", "uniform", "auto") is right and end-to-end results do not hinge on the prior's default
CHILDREN = (2, 2, 2)
N_FINE = sum(CHILDREN)
#: an uneven hierarchy, for tests of the children prior / relation learning
CHILDREN_UNEVEN = (1, 2, 3)

#: simulator settings giving fine classes that are clearly separated (strong, balanced, no continuous state)
SIM_KWARGS = dict(
    n_cells=1000,
    n_genes=300,
    children=CHILDREN,
    fine_effect=2.0,
    fine_de_frac=0.05,
    imbalance=0.0,
    state_effect=0.0,
)

#: refine arguments that bound run time (a few seconds on one CPU thread); other hyperparameters stay at defaults
FAST = dict(n_epochs=20, batch_size=64, n_top_genes=200, n_comps=20, accelerator="cpu", show_progress=False)


def simulate(**overrides):
    """Small simulated AnnData (raw counts, CSR) with ``obs['coarse']`` and ``obs['fine']``."""
    return fal.datasets.simulate(**{**SIM_KWARGS, "random_state": 0, **overrides})


@pytest.fixture(scope="session")
def sim():
    """Session-wide simulated dataset; tests must not modify it (use ``sim.copy()``)."""
    return simulate()


@pytest.fixture(scope="session")
def sim_uneven():
    """Like ``sim`` with 1, 2 and 3 fine classes under C0, C1 and C2."""
    return simulate(children=CHILDREN_UNEVEN)


@pytest.fixture(scope="session")
def sim_batches():
    """Simulated dataset with 2 batches whose effect is comparable to the fine programs."""
    return simulate(n_batches=2, batch_effect=1.5)


@contextmanager
def scanpy_log(verbosity: int = 1):
    """Capture scanpy's log (warnings and above; ``verbosity=2`` adds info) in a string buffer."""
    old_file, old_verbosity = sc.settings.logfile, sc.settings.verbosity
    buf = io.StringIO()
    sc.settings.logfile = buf
    sc.settings.verbosity = verbosity
    try:
        yield buf
    finally:
        sc.settings.logfile = old_file
        sc.settings.verbosity = old_verbosity
