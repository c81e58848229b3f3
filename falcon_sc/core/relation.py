r"""Coarse-fine relation solver.

Given ``K_F`` fine classes, ``K_C <= K_F`` coarse classes and a cost matrix ``C`` (``K_F x K_C``, larger means fine
class ``f`` is more associated with coarse class ``c``), find a binary relation ``M`` (``K_F x K_C``) with exactly one
parent per fine class and at least one child per coarse class that minimises

.. math::

    \mathrm{objective}(M) = -\sum_{f,c} C_{fc} M_{fc} + \mathrm{balance} \sum_c (n_c - t_c)^2 / K_C,
    \qquad n_c = \sum_f M_{fc},

where ``t_c`` are target child counts. With the default ``t_c = K_F / K_C`` the balance term equals the FALCON
paper's ``sum_c n_c^2 / K_C - (K_F / K_C)^2`` exactly, because ``sum_c n_c = K_F``.

Two solvers are available: an exact combinatorial one (successive shortest paths for a convex-cost transportation
problem, see :func:`solve_relation`) and a mixed-integer linear program solved with CBC through PuLP.
"""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = ["random_relation", "relation_objective", "solve_relation"]

logger = logging.getLogger(__name__)

_METHODS = ("auto", "exact", "milp")


# ----------------------------------------------------------------------------------------------------- validation


def require_pulp() -> None:
    """``ImportError`` naming the ``bench`` extra unless PuLP (the CBC MILP path) is installed."""
    try:
        import pulp  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "the MILP relation solver (method='milp') needs PuLP, an optional dependency: "
            "pip install 'falcon_sc[bench]' (or run the solver bench with milp=False)."
        ) from err


def _check_cost(cost: Any) -> np.ndarray:
    try:
        arr = np.array(cost, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"`cost` must be a real-valued 2-d array (n_fine x n_coarse); could not convert it to float ({err})."
        ) from err
    if arr.ndim != 2:
        raise ValueError(
            f"`cost` must be a 2-d array of shape (n_fine, n_coarse); got {arr.ndim} dimension(s) with shape "
            f"{arr.shape}. Pass one row per fine class and one column per coarse class."
        )
    n_fine, n_coarse = arr.shape
    if n_coarse < 1:
        raise ValueError(f"`cost` has shape {arr.shape}: it needs at least one coarse column.")
    if n_fine < n_coarse:
        raise ValueError(
            f"`cost` has shape {arr.shape}: {n_fine} fine classes cannot cover {n_coarse} coarse classes (every coarse "
            "class needs at least one fine child). Use at least as many fine classes as coarse classes, or check that "
            "the matrix is not transposed (rows = fine, columns = coarse)."
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"`cost` contains {bad} non-finite value(s) (NaN or inf). Replace them with finite numbers; to forbid a "
            "fine-coarse pair, use `pinned` instead."
        )
    return arr


def _check_balance(balance: Any) -> float:
    try:
        value = float(balance)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`balance` must be a non-negative float; got {balance!r}.") from err
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`balance` must be a finite, non-negative float; got {balance!r}. Use balance >= 0.")
    return value


def _check_targets(target_counts: Any, n_fine: int, n_coarse: int) -> np.ndarray:
    if target_counts is None:
        return np.full(n_coarse, n_fine / n_coarse, dtype=np.float64)
    try:
        arr = np.array(target_counts, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`target_counts` must be a 1-d float array of length n_coarse={n_coarse} ({err}).") from err
    if arr.shape != (n_coarse,):
        raise ValueError(
            f"`target_counts` must have shape ({n_coarse},) (one target per coarse class); got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise ValueError("`target_counts` contains NaN or inf; pass finite target child counts (or None).")
    return arr


def _as_index(value: Any, name: str, what: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` has a boolean {what} {value!r}; use integer indices.")
    try:
        return operator.index(value)
    except TypeError as err:
        raise ValueError(f"`{name}` has a non-integer {what} {value!r}; use integer indices.") from err


def _check_fixed(fixed_counts: Any, n_fine: int, n_coarse: int) -> dict[int, int]:
    if fixed_counts is None:
        return {}
    if not isinstance(fixed_counts, Mapping):
        raise ValueError(f"`fixed_counts` must be a dict {{coarse index: child count}}; got {type(fixed_counts)}.")
    out: dict[int, int] = {}
    for key, val in fixed_counts.items():
        c = _as_index(key, "fixed_counts", "key")
        k = _as_index(val, "fixed_counts", "value")
        if not 0 <= c < n_coarse:
            raise ValueError(f"`fixed_counts` has coarse index {c}, outside [0, {n_coarse}). Use valid column indices.")
        if k < 1:
            raise ValueError(
                f"`fixed_counts` asks coarse class {c} for {k} children; every coarse class needs at least 1."
            )
        out[c] = k
    total = sum(out.values())
    n_free = n_coarse - len(out)
    if total + n_free > n_fine:
        raise ValueError(
            f"`fixed_counts` sums to {total}, which with {n_free} other coarse class(es) needing at least one child "
            f"each exceeds the {n_fine} fine classes. Lower the fixed counts."
        )
    if n_free == 0 and total != n_fine:
        raise ValueError(
            f"`fixed_counts` fixes every coarse class but sums to {total}, not to the {n_fine} fine classes. "
            "Make the counts sum to n_fine or leave some coarse class unfixed."
        )
    return out


def _check_pinned(pinned: Any, fixed: dict[int, int], n_fine: int, n_coarse: int) -> dict[int, int]:
    if pinned is None:
        return {}
    if not isinstance(pinned, Mapping):
        raise ValueError(f"`pinned` must be a dict {{fine index: coarse index}}; got {type(pinned)}.")
    out: dict[int, int] = {}
    for key, val in pinned.items():
        f = _as_index(key, "pinned", "key")
        c = _as_index(val, "pinned", "value")
        if not 0 <= f < n_fine:
            raise ValueError(f"`pinned` has fine index {f}, outside [0, {n_fine}). Use valid row indices of `cost`.")
        if not 0 <= c < n_coarse:
            raise ValueError(
                f"`pinned` maps fine class {f} to coarse index {c}, outside [0, {n_coarse}). Use valid column indices."
            )
        out[f] = c
    pin_counts = np.bincount(np.fromiter(out.values(), dtype=np.int64, count=len(out)), minlength=n_coarse)
    for c, k in fixed.items():
        if pin_counts[c] > k:
            raise ValueError(
                f"`pinned` puts {pin_counts[c]} fine classes under coarse class {c}, but `fixed_counts` allows only "
                f"{k}. Remove pins or raise the fixed count."
            )
    n_unpinned = n_fine - len(out)
    need = sum(k - pin_counts[c] for c, k in fixed.items())
    need += sum(1 for c in range(n_coarse) if c not in fixed and pin_counts[c] == 0)
    if need > n_unpinned or (len(fixed) == n_coarse and need != n_unpinned):
        raise ValueError(
            f"`pinned` leaves {n_unpinned} unpinned fine classes, but {need} are needed to satisfy `fixed_counts` and "
            "give every coarse class a child. Pin fewer fine classes or change `fixed_counts`."
        )
    return out


def _allowed_pairs(shape: tuple[int, int], pinned: dict[int, int]) -> np.ndarray:
    """Boolean ``K_F x K_C`` mask of the fine-coarse pairs that ``pinned`` leaves open."""
    allowed = np.ones(shape, dtype=bool)
    for f, c in pinned.items():
        allowed[f] = False
        allowed[f, c] = True
    return allowed


def _float_tolerance(C: np.ndarray, balance: float, targets: np.ndarray) -> float:
    """Smallest objective improvement that the combinatorial steps act on.

    ``1e-13`` times the magnitude of one cost or balance step: far above the rounding noise of a zero-cost cycle
    (about ``1e-16`` of that magnitude) and far below any real difference. It is relative, with no absolute floor, so
    that scaling ``cost`` and ``balance`` by the same factor gives the same relation at any scale.
    """
    n_fine = C.shape[0]
    scale = float(np.abs(C).max()) + balance * (n_fine + float(np.abs(targets).max()) + 1.0)
    return 1e-13 * scale


def _marginals(balance: float, targets: np.ndarray, n_coarse: int) -> Any:
    """Return ``m(c, k)``: the increase of the balance term when coarse class ``c`` goes from ``k - 1`` to ``k``."""
    scale = balance / n_coarse

    def marginal(c: np.ndarray | int, k: np.ndarray | int) -> np.ndarray | float:
        return scale * (2.0 * k - 1.0 - 2.0 * targets[c])

    return marginal


# ----------------------------------------------------------------------------------------------------- objective
def relation_objective(
    relation: Any, cost: Any, *, balance: float = 0.0, target_counts: np.ndarray | None = None
) -> float:
    """Objective value of a relation.

    Parameters
    ----------
    relation
        Binary ``K_F x K_C`` relation matrix ``M``.
    cost
        ``K_F x K_C`` cost matrix ``C``.
    balance
        Weight of the balance term (>= 0).
    target_counts
        Target child count per coarse class; default ``K_F / K_C`` for all.

    Returns
    -------
    float
        ``-sum(C * M) + balance * sum_c (n_c - t_c)^2 / K_C`` with ``n_c`` the column sums of ``M``. With the default
        targets this equals ``-sum(C * M) + balance * (sum_c n_c^2 / K_C - (K_F / K_C)^2)`` for any valid ``M``.
    """
    C = _check_cost(cost)
    M = np.asarray(relation)
    if M.shape != C.shape:
        raise ValueError(f"`relation` has shape {M.shape} but `cost` has shape {C.shape}; they must match.")
    M = M.astype(np.float64)
    bal = _check_balance(balance)
    t = _check_targets(target_counts, *C.shape)
    n = M.sum(axis=0)
    return float(-(C * M).sum() + bal * ((n - t) ** 2).sum() / C.shape[1])


# ----------------------------------------------------------------------------------------------------- exact solver
def _solve_exact(
    C: np.ndarray, balance: float, targets: np.ndarray, fixed: dict[int, int], pinned: dict[int, int]
) -> np.ndarray:
    """Successive shortest paths on the fine -> coarse -> sink network with lexicographic costs.

    Network: source -> fine ``f`` (capacity 1), fine ``f`` -> coarse ``c`` (capacity 1, cost ``-C[f, c]``, only
    allowed pairs), coarse ``c`` -> sink through unit "slot" arcs ``k = 1, 2, ...`` with cost ``m_c(k)``, the marginal
    of the balance term (non-decreasing in ``k``: convex). Slots that must be used (slot 1 of every coarse class, all
    slots of a fixed-count class) carry an extra lexicographic cost ``-1`` in a first cost component instead of a
    big-M constant, so the minimum-cost flow first maximises the number of required slots used, then minimises the
    real objective; no large constant ever enters floating-point arithmetic.

    Each augmentation adds one fine class. Shortest paths only go through coarse nodes (a step ``c -> c'`` moves one
    fine class from ``c`` to ``c'``) and end with the cheapest free slot of the last coarse class, so they are found by
    Bellman-Ford on the ``K_C`` coarse nodes; only the final arc carries the lexicographic component.
    """
    n_fine, n_coarse = C.shape
    allowed = _allowed_pairs(C.shape, pinned)
    required = np.ones(n_coarse, dtype=np.int64)
    cap = np.full(n_coarse, n_fine, dtype=np.int64)
    for c, k in fixed.items():
        required[c] = k
        cap[c] = k

    # entry[c, f]: cost of entering coarse c from the source through unassigned fine f (inf once f is assigned)
    entry = np.ascontiguousarray(np.where(allowed, -C, np.inf).T)
    # tolerance for Bellman-Ford improvements: guards against float noise on zero-cost cycles
    eps = _float_tolerance(C, balance, targets)
    slope = balance / n_coarse
    exit_base = slope * (-1.0 - 2.0 * targets)  # marginal m_c(k) = exit_base[c] + 2 * slope * k
    any_pins = bool(pinned)

    assign = np.full(n_fine, -1, dtype=np.int64)
    counts = np.zeros(n_coarse, dtype=np.int64)
    # W[c, c'] = cheapest move of a fine class from c to c'; WF[c, c'] = the fine class that achieves it
    W = np.full((n_coarse, n_coarse), np.inf)
    WF = np.zeros((n_coarse, n_coarse), dtype=np.int64)
    idx = np.arange(n_coarse)
    entry_fine = entry.argmin(axis=1)
    entry_dist = entry[idx, entry_fine]

    def refresh_row(c: int) -> None:
        members = (assign == c).nonzero()[0]
        if members.size == 0:  # pragma: no cover - path nodes always keep a member
            W[c] = np.inf
            return
        rows = C[members]
        moves = rows[:, c : c + 1] - rows
        if any_pins:
            moves[~allowed[members]] = np.inf
        best = moves.argmin(axis=0)
        W[c] = moves.min(axis=0)
        WF[c] = members[best]
        W[c, c] = np.inf

    for _ in range(n_fine):
        dist = entry_dist.copy()
        pred = np.full(n_coarse, -1, dtype=np.int64)
        for _it in range(n_coarse + 1):
            cand = dist[:, None] + W
            src = cand.argmin(axis=0)
            best = cand[src, idx]
            better = best < dist - eps
            if not better.any():
                break
            dist[better] = best[better]
            pred[better] = src[better]
        else:  # pragma: no cover - only with a negative cycle, which SSP excludes
            raise RuntimeError("exact relation solver: Bellman-Ford did not converge (negative cycle).")

        # last arc: the next slot of the end node; required slots first (lexicographic cost), then the real cost
        reachable = dist < np.inf
        need = reachable & (counts < required)
        open_ = need if need.any() else reachable & (counts < cap)
        if not open_.any():  # pragma: no cover - excluded by input validation
            raise RuntimeError("exact relation solver: no augmenting path; the constraints are infeasible.")
        total = np.where(open_, dist + exit_base + (2.0 * slope) * (counts + 1), np.inf)
        end = int(total.argmin())

        counts[end] += 1
        path = [end]
        c = end
        while pred[c] >= 0:
            p = int(pred[c])
            assign[WF[p, c]] = c
            c = p
            path.append(c)
            if len(path) > n_coarse:  # pragma: no cover - a predecessor cycle would mean a negative cycle
                raise RuntimeError("exact relation solver: cycle in shortest-path tree.")
        f0 = int(entry_fine[c])
        assign[f0] = c
        entry[:, f0] = np.inf
        stale = np.flatnonzero(entry_fine == f0)
        if stale.size:
            sub = entry[stale]
            entry_fine[stale] = sub.argmin(axis=1)
            entry_dist[stale] = entry[stale, entry_fine[stale]]
        # refresh move costs of every coarse class whose members changed (all nodes on the path)
        for c in path:
            refresh_row(c)

    if (counts < required).any():  # pragma: no cover - excluded by input validation
        raise RuntimeError("exact relation solver: constraints could not be satisfied.")
    M = np.zeros((n_fine, n_coarse), dtype=np.int8)
    M[np.arange(n_fine), assign] = 1
    return M


# ----------------------------------------------------------------------------------------------------- MILP solver
#: CBC settings of the MILP path: prove optimality (no relative or absolute gap), accept any strictly better incumbent
#: (CBC's default cutoff increment, 1e-5, discards improvements below it) and tighter feasibility / optimality
#: tolerances than CBC's 1e-7 defaults. The objective is normalised to coefficients in [-1, 1] first, so these
#: tolerances are relative to the cost scale.
_CBC_OPTIONS = ("increment 1e-10", "integerTolerance 1e-9", "primalTolerance 1e-9", "dualTolerance 1e-10")


def _find_negative_cycle(W: np.ndarray, eps: float) -> list[int] | None:
    """A cycle of weight below ``-eps`` in the graph with arc weights ``W`` (``inf``: no arc), or ``None``.

    Bellman-Ford from a virtual source joined to every node at cost 0; an improvement is only taken when it is larger
    than ``eps``. ``None`` means no cycle weighs less than ``-eps`` (up to rounding), i.e. the certificate of
    optimality used by :func:`_cancel_negative_cycles`.
    """
    n = W.shape[0]
    idx = np.arange(n)
    dist = np.zeros(n)
    pred = np.full(n, -1, dtype=np.int64)
    for _round in range(4 * n + 4):
        cand = dist[:, None] + W
        src = cand.argmin(axis=0)
        best = cand[src, idx]
        better = best < dist - eps
        if not better.any():
            return None
        dist[better] = best[better]
        pred[better] = src[better]
        if _round + 1 < n:  # no cycle can show before n rounds without a negative cycle; skip the search
            continue
        # search the predecessor graph for a cycle (colour nodes by the walk that first reached them)
        seen = np.full(n, -1, dtype=np.int64)
        for start in range(n):
            v = start
            while v >= 0 and seen[v] < 0:
                seen[v] = start
                v = int(pred[v])
            if v >= 0 and seen[v] == start:  # the walk from `start` closed a cycle through v
                cycle = [v]
                u = int(pred[v])
                while u != v:
                    cycle.append(u)
                    u = int(pred[u])
                cycle.reverse()  # arcs run pred[x] -> x, i.e. cycle[i] -> cycle[i + 1]
                weight = sum(W[cycle[i - 1], cycle[i]] for i in range(len(cycle)))
                if weight < -eps:
                    return cycle
    raise _NotCertifiedError  # pragma: no cover - Bellman-Ford keeps improving but no cycle is below -eps


class _NotCertifiedError(RuntimeError):
    """Raised when the negative-cycle search cannot decide (float trouble); the relation is then not certified."""


def _cancel_negative_cycles(
    assign: np.ndarray,
    C: np.ndarray,
    allowed: np.ndarray,
    balance: float,
    targets: np.ndarray,
    fixed: dict[int, int],
) -> tuple[np.ndarray, int, bool]:
    """Improve a valid relation until it is provably optimal; return ``(assign, n_cancelled, certified)``.

    The relation is a flow in the network of :func:`_solve_exact`, and a flow is a minimum-cost flow if and only if its
    residual network has no negative cycle. The residual network is reduced to the coarse classes plus the sink:
    arc ``c -> c'`` moves the cheapest fine child of ``c`` that may go to ``c'`` (cost ``C[f, c] - C[f, c']``), arc
    ``c -> sink`` gives ``c`` one more child (cost ``m_c(n_c + 1)``) and ``sink -> c`` one fewer (cost
    ``-m_c(n_c)``), both only for classes whose count may change (not fixed; ``n_c >= 2`` to lose one). A simple cycle
    moves distinct fine classes and changes the objective by exactly its weight, so each cancelled cycle lowers the
    objective by more than the tolerance, and the loop ends with no negative cycle left: an optimum, whatever the
    starting relation, computed in double precision from the original costs.
    """
    n_fine, n_coarse = C.shape
    sink = n_coarse
    slope = balance / n_coarse
    exit_base = slope * (-1.0 - 2.0 * targets)  # m_c(k) = exit_base[c] + 2 * slope * k
    free = np.ones(n_coarse, dtype=bool)
    free[list(fixed)] = False
    eps = _float_tolerance(C, balance, targets)
    assign = assign.copy()
    n_cancelled = 0
    for _ in range(n_fine * n_coarse + 16):  # a handful at most from a CBC optimum; the bound is only a safeguard
        counts = np.bincount(assign, minlength=n_coarse)
        W = np.full((n_coarse + 1, n_coarse + 1), np.inf)
        WF = np.zeros((n_coarse, n_coarse), dtype=np.int64)
        for c in range(n_coarse):
            members = (assign == c).nonzero()[0]
            rows = C[members]
            moves = rows[:, c : c + 1] - rows
            moves[~allowed[members]] = np.inf
            best = moves.argmin(axis=0)
            W[c, :n_coarse] = moves[best, np.arange(n_coarse)]
            WF[c] = members[best]
            W[c, c] = np.inf
        W[:n_coarse, sink] = np.where(free, exit_base + 2.0 * slope * (counts + 1), np.inf)
        W[sink, :n_coarse] = np.where(free & (counts >= 2), -(exit_base + 2.0 * slope * counts), np.inf)
        try:
            cycle = _find_negative_cycle(W, eps)
        except _NotCertifiedError:  # pragma: no cover - float trouble only
            return assign, n_cancelled, False
        if cycle is None:
            return assign, n_cancelled, True
        for i in range(len(cycle)):
            u, v = cycle[i - 1], cycle[i]
            if u != sink and v != sink:
                assign[WF[u, v]] = v
        n_cancelled += 1
    return assign, n_cancelled, False  # pragma: no cover - safeguard


def _solve_milp(
    C: np.ndarray,
    balance: float,
    targets: np.ndarray,
    fixed: dict[int, int],
    pinned: dict[int, int],
    time_limit: float | None,
) -> np.ndarray:
    """MILP with binary ``x[f, c]`` and, for the balance term, binary ``z[c, k]`` = "coarse c has >= k children".

    ``n_c = sum_k z[c, k]`` with ``z`` non-increasing in ``k`` and ``z[c, 1] = 1``; the balance term equals
    ``sum_c g_c(1) + sum_{k >= 2} m_c(k) z[c, k]`` exactly (``g_c`` convex, ``m_c`` its marginals).

    CBC works with absolute tolerances (reduced costs within ``1e-7`` count as zero, a new incumbent must improve by
    ``1e-5``) and reads the model through a 12-digit MPS file, so on its own it can miss cost differences that are
    small against those tolerances (a ``1e-8`` cost entry) or against the cost scale. Hence: the objective is
    normalised to coefficients in ``[-1, 1]``, CBC runs with zero gaps and tight tolerances (``_CBC_OPTIONS``), and
    its relation is then polished by :func:`_cancel_negative_cycles` on the original costs, which certifies
    optimality (no improving cycle of fine-class moves) to floating-point precision. The polish knows the constraints
    of :func:`solve_relation` (one parent, non-empty classes, ``fixed_counts``, ``pinned``); a constraint added to the
    model below must be added to it too.
    """
    require_pulp()
    import pulp

    n_fine, n_coarse = C.shape
    marginal = _marginals(balance, targets, n_coarse)
    allowed = _allowed_pairs(C.shape, pinned)

    prob = pulp.LpProblem("falcon_relation", pulp.LpMinimize)
    x = {
        (f, c): pulp.LpVariable(f"x_{f}_{c}", cat=pulp.LpBinary)
        for f in range(n_fine)
        for c in range(n_coarse)
        if allowed[f, c]
    }
    terms = [(x[f, c], -float(C[f, c])) for (f, c) in x]
    for f in range(n_fine):
        prob += pulp.lpSum(x[f, c] for c in range(n_coarse) if allowed[f, c]) == 1, f"one_parent_{f}"
    n_required_others = n_coarse - len(fixed) + sum(fixed.values())
    for c in range(n_coarse):
        n_c = pulp.lpSum(x[f, c] for f in range(n_fine) if allowed[f, c])
        if c in fixed:
            prob += n_c == fixed[c], f"fixed_{c}"
            continue
        if balance == 0.0:
            prob += n_c >= 1, f"nonempty_{c}"
            continue
        # slots 2..kmax; slot 1 is always used (at least one child)
        kmax = min(n_fine - (n_required_others - 1), int(allowed[:, c].sum()))
        z = [pulp.LpVariable(f"z_{c}_{k}", cat=pulp.LpBinary) for k in range(2, kmax + 1)]
        prob += n_c == 1 + pulp.lpSum(z), f"count_{c}"
        for k in range(len(z) - 1):
            prob += z[k] >= z[k + 1], f"order_{c}_{k + 2}"
        terms.extend((zk, float(marginal(c, k + 2))) for k, zk in enumerate(z))
    # normalise: CBC's tolerances are absolute, so give the objective coefficients a unit scale
    norm = max((abs(coef) for _, coef in terms), default=0.0)
    if norm > 0.0 and np.isfinite(1.0 / norm):
        terms = [(var, coef / norm) for var, coef in terms]
    prob += pulp.LpAffineExpression(terms)

    solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, gapRel=0, gapAbs=0, options=list(_CBC_OPTIONS))
    try:
        prob.solve(solver)
    except pulp.PulpSolverError as err:
        raise RuntimeError(f"MILP relation solver: CBC failed ({err}).") from err
    status = pulp.LpStatus.get(prob.status, str(prob.status))
    sol_status = getattr(prob, "sol_status", pulp.LpSolutionOptimal if prob.status == 1 else None)
    if sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        raise RuntimeError(
            f"MILP relation solver: CBC returned no feasible solution (status {status!r}, time_limit={time_limit}). "
            "Increase `time_limit` or use method='exact'."
        )
    M = np.zeros((n_fine, n_coarse), dtype=np.int8)
    for (f, c), var in x.items():
        if (var.value() or 0.0) > 0.5:
            M[f, c] = 1
    if not (M.sum(axis=1) == 1).all() or not (M.sum(axis=0) >= 1).all():
        raise RuntimeError(f"MILP relation solver: CBC returned an invalid relation (status {status!r}).")
    counts = M.sum(axis=0)
    if any(counts[c] != k for c, k in fixed.items()):
        raise RuntimeError(f"MILP relation solver: CBC violated `fixed_counts` (status {status!r}).")

    assign, n_cancelled, certified = _cancel_negative_cycles(M.argmax(axis=1), C, allowed, balance, targets, fixed)
    if n_cancelled:
        logger.debug("MILP relation solver: %d improving cycle(s) cancelled after CBC.", n_cancelled)
    if not certified:  # pragma: no cover - only with float trouble in the certificate
        msg = (
            "MILP relation solver: could not certify the optimality of CBC's relation; returning the best relation "
            "found. Use method='exact'."
        )
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    elif sol_status != pulp.LpSolutionOptimal:
        logger.info(
            "MILP relation solver: CBC stopped at time_limit=%s s without proving optimality; the relation was "
            "completed and certified optimal by negative-cycle cancelling.",
            time_limit,
        )
    M = np.zeros((n_fine, n_coarse), dtype=np.int8)
    M[np.arange(n_fine), assign] = 1
    return M


# ----------------------------------------------------------------------------------------------------- public API
def solve_relation(
    cost: np.ndarray,
    *,
    balance: float = 0.0,
    target_counts: np.ndarray | None = None,
    fixed_counts: dict[int, int] | None = None,
    pinned: dict[int, int] | None = None,
    method: Literal["auto", "exact", "milp"] = "auto",
    time_limit: float | None = None,
) -> np.ndarray:
    """Find the coarse-fine relation minimising the FALCON relation objective.

    Minimises ``-sum(C * M) + balance * sum_c (n_c - t_c)^2 / K_C`` over binary ``M`` with one parent per fine class
    and at least one child per coarse class. With the default ``t_c = K_F / K_C`` the balance term equals the FALCON
    paper's ``sum_c n_c^2 / K_C - (K_F / K_C)^2``.

    Parameters
    ----------
    cost
        ``K_F x K_C`` matrix ``C`` (``K_F >= K_C``); larger means fine class ``f`` fits coarse class ``c`` better.
    balance
        Weight (>= 0) of the quadratic balance term on child counts.
    target_counts
        Target child count ``t_c`` per coarse class (length ``K_C``); default ``K_F / K_C``.
    fixed_counts
        ``{coarse index: exact number of children}`` (each >= 1).
    pinned
        ``{fine index: coarse index}`` parents that are imposed.
    method
        ``"exact"``: successive shortest paths on a convex-cost transportation network (exact, polynomial).
        ``"milp"``: exact linearisation solved by CBC via PuLP. ``"auto"``: ``"exact"`` (it supports every option).
    time_limit
        CBC time limit in seconds (``"milp"`` only; ignored by ``"exact"``).

    Returns
    -------
    numpy.ndarray
        ``int8`` array ``M`` of shape ``(K_F, K_C)``; ties are broken deterministically.

    Raises
    ------
    ValueError
        On invalid or infeasible inputs, before any work is done.
    """
    C = _check_cost(cost)
    n_fine, n_coarse = C.shape
    bal = _check_balance(balance)
    targets = _check_targets(target_counts, n_fine, n_coarse)
    fixed = _check_fixed(fixed_counts, n_fine, n_coarse)
    pins = _check_pinned(pinned, fixed, n_fine, n_coarse)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
    if time_limit is not None:
        try:
            limit_ok = float(time_limit) > 0 and np.isfinite(float(time_limit))
        except (TypeError, ValueError):
            limit_ok = False
        if not limit_ok:
            raise ValueError(f"`time_limit` must be a positive number of seconds or None; got {time_limit!r}.")
        time_limit = float(time_limit)
    if method == "milp":
        return _solve_milp(C, bal, targets, fixed, pins, time_limit)
    return _solve_exact(C, bal, targets, fixed, pins)


def random_relation(
    n_fine: int, n_coarse: int, rng: np.random.Generator | int | None = None, *, balance: float = 0.0
) -> np.ndarray:
    """Random valid relation, used as FALCON's initial ``M``.

    Parameters
    ----------
    n_fine, n_coarse
        Numbers of fine and coarse classes (``n_fine >= n_coarse >= 1``).
    rng
        NumPy ``Generator`` or integer seed.
    balance
        Balance weight of the solve (default: the :func:`solve_relation` default).

    Returns
    -------
    numpy.ndarray
        ``int8`` relation solving :func:`solve_relation` on a uniform random cost.
    """
    n_f = _as_index(n_fine, "n_fine", "value")
    n_c = _as_index(n_coarse, "n_coarse", "value")
    if n_c < 1 or n_f < n_c:
        raise ValueError(
            f"`n_fine`={n_f} and `n_coarse`={n_c} are invalid: need n_fine >= n_coarse >= 1 so every coarse class "
            "gets a child."
        )
    gen = np.random.default_rng(rng)
    return solve_relation(gen.random((n_f, n_c)), balance=balance, method="exact")
