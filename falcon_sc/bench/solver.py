"""Benchmark of the coarse-fine relation solvers (exact successive shortest paths vs. CBC MILP)."""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np
import pandas as pd

from falcon_sc._checks import check_int
from falcon_sc.core.relation import relation_objective, require_pulp, solve_relation

__all__ = ["require_pulp", "run_solver_bench"]

logger = logging.getLogger(__name__)


def run_solver_bench(
    n_fine: int = 608,
    n_coarse: int = 34,
    balance: float = 0.1,
    repeats: int = 5,
    seed: int = 0,
    milp: bool = True,
    milp_time_limit: float = 60.0,
) -> pd.DataFrame:
    """Time :func:`~falcon_sc.core.relation.solve_relation` on a uniform random cost matrix.

    Parameters
    ----------
    n_fine, n_coarse
        Problem size (``K_F x K_C``).
    balance
        Balance weight passed to the solver.
    repeats
        Timed runs per method.
    seed
        Seed of the random cost matrix.
    milp
        Also time the MILP (CBC) path; it needs PuLP (``pip install 'falcon_sc[bench]'``).
    milp_time_limit
        CBC time limit in seconds for each MILP run.

    Returns
    -------
    pandas.DataFrame
        One row per method with columns ``method``, ``n_fine``, ``n_coarse``, ``seconds_median``, ``seconds_min``,
        ``objective`` and ``matches_exact`` (objective equal to the exact one within ``1e-9`` relative).
    """
    check_int("repeats", repeats, 1)
    if milp:
        require_pulp()
    cost = np.random.default_rng(seed).random((n_fine, n_coarse))
    methods: list[Literal["exact", "milp"]] = ["exact", "milp"] if milp else ["exact"]
    rows = []
    for method in methods:
        times = []
        relation = None
        for _ in range(repeats):
            t0 = time.perf_counter()
            relation = solve_relation(
                cost, balance=balance, method=method, time_limit=milp_time_limit if method == "milp" else None
            )
            times.append(time.perf_counter() - t0)
        rows.append(
            {
                "method": method,
                "n_fine": n_fine,
                "n_coarse": n_coarse,
                "seconds_median": float(np.median(times)),
                "seconds_min": float(np.min(times)),
                "objective": relation_objective(relation, cost, balance=balance),
            }
        )
    df = pd.DataFrame(rows)
    ref = float(df.loc[df["method"] == "exact", "objective"].iloc[0])
    df["matches_exact"] = (df["objective"] - ref).abs() <= 1e-9 * max(1.0, abs(ref))
    if not df["matches_exact"].all():
        logger.warning("relation solvers disagree on the objective:\n%s", df.to_string(index=False))
    return df
