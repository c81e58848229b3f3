from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falcon_sc.core.relation import _cancel_negative_cycles, random_relation, relation_objective, solve_relation

#: objectives must agree to TOL times the magnitude of one cost or balance step (``_tol``): rounding noise is about
#: 1e-15 of it and the solvers' combinatorial tolerance 1e-13 of it per step (at most n_fine x (n_coarse + 1) steps),
#: while any real suboptimality, even a cost entry of 1e-8 among entries of 10, is larger. The tolerance is relative,
#: so tiny cost scales (all entries ~1e-8) are checked as strictly as unit ones; its only absolute part, 1e-300, covers
#: underflow when hypothesis draws subnormal numbers (balance 5e-324 makes every balance marginal 0).
TOL = 1e-11


def _tol(C, balance, targets=None) -> float:
    n_fine, n_coarse = C.shape
    t = np.full(n_coarse, n_fine / n_coarse) if targets is None else np.asarray(targets, dtype=float)
    return TOL * (float(np.abs(C).max()) + balance * (n_fine + float(np.abs(t).max()) + 1.0)) + 1e-300


def _is_valid(M: np.ndarray, shape: tuple[int, int], fixed=None, pinned=None) -> bool:
    M = np.asarray(M)
    if M.shape != shape or not np.isin(M, (0, 1)).all():
        return False
    if not (M.sum(axis=1) == 1).all() or not (M.sum(axis=0) >= 1).all():
        return False
    n = M.sum(axis=0)
    if any(n[c] != k for c, k in (fixed or {}).items()):
        return False
    return all(M[f, c] == 1 for f, c in (pinned or {}).items())


def _brute_force(C, balance, targets, fixed, pinned) -> float:
    """Best objective over all valid relations, by enumeration (vectorised)."""
    n_fine, n_coarse = C.shape
    t = np.full(n_coarse, n_fine / n_coarse) if targets is None else np.asarray(targets, dtype=float)
    A = np.array(list(itertools.product(range(n_coarse), repeat=n_fine)), dtype=np.int64).reshape(-1, n_fine)
    counts = np.stack([(A == c).sum(axis=1) for c in range(n_coarse)], axis=1)
    ok = (counts >= 1).all(axis=1)
    for c, k in fixed.items():
        ok &= counts[:, c] == k
    for f, c in pinned.items():
        ok &= A[:, f] == c
    A, counts = A[ok], counts[ok]
    gain = C[np.arange(n_fine), A].sum(axis=1)
    obj = -gain + balance * ((counts - t) ** 2).sum(axis=1) / n_coarse
    return float(obj.min())


@st.composite
def instances(draw, constraints: bool):
    n_coarse = draw(st.integers(1, 3))
    n_fine = draw(st.integers(n_coarse, 6))
    if draw(st.booleans()):
        values = st.integers(-3, 3).map(float)  # many ties
    else:
        values = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
    C = np.array(draw(st.lists(values, min_size=n_fine * n_coarse, max_size=n_fine * n_coarse))).reshape(
        n_fine, n_coarse
    )
    balance = draw(st.sampled_from([0.0, 0.0, 1e-3, 1.0, 100.0]) | st.floats(0, 20))
    targets = None
    if draw(st.booleans()):
        targets = np.array(draw(st.lists(st.floats(-2, 8), min_size=n_coarse, max_size=n_coarse)))
    fixed: dict[int, int] = {}
    pinned: dict[int, int] = {}
    if constraints:
        # a hidden valid relation makes every drawn constraint set feasible
        rest = draw(st.lists(st.integers(0, n_coarse - 1), min_size=n_fine - n_coarse, max_size=n_fine - n_coarse))
        parents = np.array(draw(st.permutations(list(range(n_coarse)) + rest)))
        counts = np.bincount(parents, minlength=n_coarse)
        for c in draw(st.sets(st.integers(0, n_coarse - 1))):
            fixed[c] = int(counts[c])
        for f in draw(st.sets(st.integers(0, n_fine - 1))):
            pinned[f] = int(parents[f])
    return C, balance, targets, fixed, pinned


HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_against_brute(inst, method):
    C, balance, targets, fixed, pinned = inst
    M = solve_relation(C, balance=balance, target_counts=targets, fixed_counts=fixed, pinned=pinned, method=method)
    assert M.dtype == np.int8
    assert _is_valid(M, C.shape, fixed, pinned)
    got = relation_objective(M, C, balance=balance, target_counts=targets)
    best = _brute_force(C, balance, targets, fixed, pinned)
    assert abs(got - best) <= _tol(C, balance, targets), (got, best)


@HYP
@given(instances(constraints=False))
def test_exact_matches_brute_force(inst):
    _check_against_brute(inst, "exact")


@HYP
@given(instances(constraints=True))
def test_exact_matches_brute_force_with_constraints(inst):
    _check_against_brute(inst, "exact")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(constraints=False))
def test_milp_matches_brute_force(inst):
    _check_against_brute(inst, "milp")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(constraints=True))
def test_milp_matches_brute_force_with_constraints(inst):
    _check_against_brute(inst, "milp")


@pytest.mark.parametrize("balance", [0.0, 0.05, 0.5, 5.0])
def test_exact_and_milp_agree_on_larger_instance(balance):
    rng = np.random.default_rng(42)
    C = rng.random((60, 8))
    objs = {}
    for method in ("exact", "milp"):
        M = solve_relation(C, balance=balance, method=method)
        assert _is_valid(M, C.shape)
        objs[method] = relation_objective(M, C, balance=balance)
    assert abs(objs["exact"] - objs["milp"]) <= _tol(C, balance)


def test_exact_and_milp_agree_with_constraints_and_targets():
    rng = np.random.default_rng(7)
    C = rng.normal(size=(40, 6))
    targets = rng.uniform(2, 10, size=6)
    fixed = {0: 3, 4: 9}
    pinned = {1: 0, 2: 5, 10: 5, 11: 2}
    objs = {}
    for method in ("exact", "milp"):
        M = solve_relation(C, balance=0.3, target_counts=targets, fixed_counts=fixed, pinned=pinned, method=method)
        assert _is_valid(M, C.shape, fixed, pinned)
        objs[method] = relation_objective(M, C, balance=0.3, target_counts=targets)
    assert abs(objs["exact"] - objs["milp"]) <= _tol(C, 0.3, targets)


METHODS = ("exact", "milp")
TINY = [
    np.array([[0.0, 0.0, 1e-8], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
    np.array([[1e-8, 0.0], [0.0, 0.0]]),
    np.array([[10.0, 0.0, 1e-8], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0], [-10.0, 0.0, 0.0]]),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("balance", [0.0, 1e-3, 1.0])
@pytest.mark.parametrize("case", range(len(TINY)))
def test_tiny_cost_entry_is_not_lost(method, balance, case):
    """Regression: CBC took the zero relation for a single 1e-8 entry (below its 1e-7 dual tolerance)."""
    C = TINY[case]
    M = solve_relation(C, balance=balance, method=method)
    got = relation_objective(M, C, balance=balance)
    best = _brute_force(C, balance, None, {}, {})
    assert abs(got - best) <= _tol(C, balance), (got, best)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [1e-12, 1e-6, 1e6])
def test_solvers_are_scale_invariant(method, factor):
    """Scaling cost and balance together scales the objective: no absolute tolerance may hide small costs."""
    rng = np.random.default_rng(11)
    targets = np.array([1.0, 2.0, 4.0])
    for i in range(12):
        C = rng.normal(size=(6, 3)) if i % 2 else rng.integers(0, 3, size=(6, 3)) + 1e-3 * rng.random((6, 3))
        fixed, pinned = ({2: 3}, {0: 1}) if i % 3 == 0 else ({}, {})
        M = solve_relation(
            C * factor, balance=0.2 * factor, target_counts=targets, fixed_counts=fixed, pinned=pinned, method=method
        )
        assert _is_valid(M, C.shape, fixed, pinned)
        got = relation_objective(M, C, balance=0.2, target_counts=targets)
        best = _brute_force(C, 0.2, targets, fixed, pinned)
        assert abs(got - best) <= _tol(C, 0.2, targets), (i, got, best)


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_milp_resolves_near_ties(balance):
    """Cost differences of 1e-9 on entries up to 6: CBC alone misses most of them, the negative-cycle polish decides."""
    rng = np.random.default_rng(0)
    for _ in range(4):
        C = rng.integers(0, 3, size=(8, 3)) * 3.0 + 1e-9 * rng.random((8, 3))
        objs = [relation_objective(solve_relation(C, balance=balance, method=m), C, balance=balance) for m in METHODS]
        best = _brute_force(C, balance, None, {}, {})
        assert all(abs(o - best) <= _tol(C, balance) for o in objs), (objs, best)


@HYP
@given(instances(constraints=True), st.integers(0, 2**32 - 1))
def test_cycle_cancelling_reaches_optimum_from_any_relation(inst, seed):
    """The optimality certificate of the MILP path, started from a random valid relation instead of CBC's."""
    C, balance, targets, fixed, pinned = inst
    n_fine, n_coarse = C.shape
    t = np.full(n_coarse, n_fine / n_coarse) if targets is None else targets
    rng = np.random.default_rng(seed)
    # random valid start: pins, then the fixed counts and one child per free class, then the rest at random
    assign = np.full(n_fine, -1)
    for f, c in pinned.items():
        assign[f] = c
    free_rows = [f for f in rng.permutation(n_fine) if assign[f] < 0]
    for c in range(n_coarse):
        need = (fixed[c] if c in fixed else 1) - int((assign == c).sum())
        for _ in range(max(need, 0)):
            assign[free_rows.pop()] = c
    open_ = [c for c in range(n_coarse) if c not in fixed]
    for f in free_rows:
        assign[f] = rng.choice(open_)
    allowed = np.ones(C.shape, dtype=bool)
    for f, c in pinned.items():
        allowed[f] = False
        allowed[f, c] = True
    out, _n, certified = _cancel_negative_cycles(assign, C, allowed, balance, t, fixed)
    assert certified
    M = np.zeros(C.shape, dtype=np.int8)
    M[np.arange(n_fine), out] = 1
    assert _is_valid(M, C.shape, fixed, pinned)
    got = relation_objective(M, C, balance=balance, target_counts=targets)
    best = _brute_force(C, balance, targets, fixed, pinned)
    assert abs(got - best) <= _tol(C, balance, targets), (got, best)


def test_auto_is_exact_and_deterministic():
    rng = np.random.default_rng(3)
    C = rng.integers(0, 3, size=(30, 5)).astype(float)  # lots of ties
    M1 = solve_relation(C, balance=0.2)
    M2 = solve_relation(C, balance=0.2, method="exact")
    M3 = solve_relation(C.copy(), balance=0.2, method="auto")
    np.testing.assert_array_equal(M1, M2)
    np.testing.assert_array_equal(M1, M3)


@given(st.integers(1, 6), st.integers(0, 6), st.integers(0, 2**32 - 1), st.floats(0, 10))
@settings(max_examples=50, deadline=None)
def test_default_balance_term_is_falcon_term(n_coarse, extra, seed, balance):
    n_fine = n_coarse + extra
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(n_fine, n_coarse))
    parents = rng.permutation(np.concatenate([np.arange(n_coarse), rng.integers(0, n_coarse, extra)]))
    M = np.zeros((n_fine, n_coarse), dtype=np.int8)
    M[np.arange(n_fine), parents] = 1
    n = M.sum(axis=0)
    falcon = -(C * M).sum() + balance * ((n**2).sum() / n_coarse - (n_fine / n_coarse) ** 2)
    assert relation_objective(M, C, balance=balance) == pytest.approx(falcon, rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("method", ["exact", "milp"])
def test_every_coarse_class_gets_a_child_under_strong_preference(method):
    rng = np.random.default_rng(0)
    C = rng.random((30, 5))
    C[:, 2] += 1000.0
    M = solve_relation(C, method=method)
    assert _is_valid(M, C.shape)
    np.testing.assert_array_equal(M.sum(axis=0), [1, 1, 26, 1, 1])


@pytest.mark.parametrize("method", ["exact", "milp"])
def test_large_balance_gives_near_equal_counts(method):
    rng = np.random.default_rng(1)
    C = rng.random((61, 8))
    C[:, 0] += 0.5
    counts = solve_relation(C, balance=1e4, method=method).sum(axis=0)
    assert counts.sum() == 61
    assert counts.max() - counts.min() <= 1


def test_targets_steer_counts():
    C = np.zeros((10, 2))
    M = solve_relation(C, balance=10.0, target_counts=np.array([8.0, 2.0]))
    np.testing.assert_array_equal(M.sum(axis=0), [8, 2])


def test_single_coarse_class_and_square_case():
    M = solve_relation(np.ones((4, 1)))
    np.testing.assert_array_equal(M, np.ones((4, 1)))
    C = np.random.default_rng(0).random((5, 5))
    M = solve_relation(C, balance=1.0)
    np.testing.assert_array_equal(M.sum(axis=0), np.ones(5))


def test_fixed_counts_and_pinned_are_respected():
    rng = np.random.default_rng(5)
    C = rng.random((100, 10))
    fixed = {0: 20, 3: 1}
    pinned = {5: 3, 6: 0, 7: 9}
    M = solve_relation(C, balance=0.1, fixed_counts=fixed, pinned=pinned)
    assert _is_valid(M, C.shape, fixed, pinned)


def test_random_relation():
    M1 = random_relation(50, 7, 123)
    M2 = random_relation(50, 7, np.random.default_rng(123))
    np.testing.assert_array_equal(M1, M2)
    assert _is_valid(M1, (50, 7))
    assert M1.dtype == np.int8
    assert _is_valid(random_relation(7, 7, 0), (7, 7))
    with pytest.raises(ValueError, match="n_fine"):
        random_relation(3, 5, 0)


GOOD = np.arange(12, dtype=float).reshape(4, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cost": np.ones((2, 3))}, "cost"),
        ({"cost": np.ones(3)}, "cost"),
        ({"cost": np.ones((3, 0))}, "cost"),
        ({"cost": np.array([[1.0, np.nan], [0.0, 1.0]])}, "cost"),
        ({"cost": np.array([[1.0, np.inf], [0.0, 1.0]])}, "cost"),
        ({"cost": [["a", "b"]]}, "cost"),
        ({"balance": -0.1}, "balance"),
        ({"balance": np.nan}, "balance"),
        ({"target_counts": np.ones(2)}, "target_counts"),
        ({"target_counts": np.array([1.0, np.nan, 1.0])}, "target_counts"),
        ({"fixed_counts": {3: 1}}, "fixed_counts"),
        ({"fixed_counts": {0: 0}}, "fixed_counts"),
        ({"fixed_counts": {0: 3}}, "fixed_counts"),
        ({"fixed_counts": {0: 1, 1: 1, 2: 1}}, "fixed_counts"),
        ({"fixed_counts": {0: 1.5}}, "fixed_counts"),
        ({"fixed_counts": [1, 2]}, "fixed_counts"),
        ({"pinned": {4: 0}}, "pinned"),
        ({"pinned": {-1: 0}}, "pinned"),
        ({"pinned": {0: 3}}, "pinned"),
        ({"pinned": {0: 1, 1: 1}, "fixed_counts": {1: 1}}, "pinned"),
        ({"pinned": {0: 0, 1: 0, 2: 0}}, "pinned"),
        ({"method": "simplex"}, "method"),
        ({"time_limit": -1.0}, "time_limit"),
        ({"time_limit": "soon"}, "time_limit"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    kwargs = dict(kwargs)
    cost = kwargs.pop("cost", GOOD)
    with pytest.raises(ValueError, match=match):
        solve_relation(cost, **kwargs)


def test_relation_objective_bad_inputs():
    with pytest.raises(ValueError, match="relation"):
        relation_objective(np.ones((3, 3)), GOOD)
    with pytest.raises(ValueError, match="balance"):
        relation_objective(np.eye(4, 3), GOOD, balance=-1.0)
    with pytest.raises(ValueError, match="target_counts"):
        relation_objective(np.eye(4, 3), GOOD, target_counts=[1.0])
