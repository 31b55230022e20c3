from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from greenflow.platform.allocation import (
    chain_flops,
    choose,
    chosen_rewards,
    dual_value,
    solve_exact,
)
from greenflow.platform.allocation import exact as exact_module
from greenflow.platform.allocation.highs import build_lp, solve_lp

pytest.importorskip("highspy")


def highs_lp(Q: np.ndarray, q: np.ndarray, budget: float) -> float | None:
    """Optimum of the LP relaxation of problem (3) by HiGHS; None when infeasible."""
    return solve_lp(build_lp(Q, q, budget))


def check_against_highs(Q: np.ndarray, q: np.ndarray, budget: float) -> None:
    sol = solve_exact(Q, q, budget)
    lp = highs_lp(Q, q, budget)
    assert sol.feasible == (lp is not None)
    if lp is None:
        return
    assert sol.lp_bound == pytest.approx(lp, rel=1e-6, abs=1e-9)
    assert sol.spend_flops <= budget * (1 + 1e-12)
    assert sol.objective <= sol.lp_bound + 1e-9
    one_request = float((Q.max(axis=1) - Q.min(axis=1)).max())
    assert sol.lp_bound - sol.objective <= one_request + 1e-9
    # The choice is a Lagrangian optimum at λ*: no chain is better at that price.
    qq = np.broadcast_to(q, Q.shape)
    value = Q - sol.dual_price * qq
    chosen = value[np.arange(Q.shape[0]), sol.choice]
    assert np.all(chosen >= value.max(axis=1) - 1e-9 * (1 + np.abs(value).max()))
    assert dual_value(Q, q, budget, sol.dual_price) == pytest.approx(lp, rel=1e-6, abs=1e-9)


def budgets_between(q: np.ndarray, n: int, n_budgets: int) -> np.ndarray:
    qq = np.broadcast_to(q, (n, q.shape[-1]))
    low, high = qq.min(axis=1).sum(), qq.max(axis=1).sum()
    return np.linspace(low, high, n_budgets)


@pytest.mark.parametrize("seed", range(6))
def test_matches_highs_on_random_instances(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, J = int(rng.integers(50, 300)), int(rng.integers(2, 12))
    q = rng.permutation(np.geomspace(1e5, 1e8, J))  # FLOPs, arbitrary chain order
    if seed % 2:
        q[: J // 2] = q[J // 2 : 2 * (J // 2)]  # duplicate costs
    activity = rng.gamma(0.7, 1.0, (n, 1))
    Q = activity * np.log1p(q / 1e5) + rng.normal(0, 0.2, (n, J))
    if seed % 3 == 0:
        Q = np.round(Q)  # integer clicks: many requests share breakpoints
    for budget in budgets_between(q, n, 5)[1:-1]:
        check_against_highs(Q, q, budget)


def test_matches_highs_with_per_request_costs() -> None:
    rng = np.random.default_rng(7)
    n, J = 120, 6
    q = rng.uniform(1, 10, (n, J)).round()
    Q = rng.integers(0, 5, (n, J)).astype(float)
    for budget in budgets_between(q, n, 6)[1:-1]:
        check_against_highs(Q, q, budget)


@st.composite
def tiny_instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    n = draw(st.integers(1, 5))
    J = draw(st.integers(1, 4))
    Q = draw(hnp.arrays(np.float64, (n, J), elements=st.integers(0, 3).map(float)))
    q = draw(hnp.arrays(np.float64, (J,), elements=st.integers(1, 4).map(float)))
    budget = draw(st.integers(0, 4 * n + 1).map(float))
    return Q, q, budget


@settings(max_examples=100, deadline=None)
@given(tiny_instances())
def test_hypothesis_small_instances_with_ties(inst: tuple[np.ndarray, np.ndarray, float]) -> None:
    Q, q, budget = inst
    check_against_highs(Q, q, budget)
    sol = solve_exact(Q, q, budget)
    assume(sol.feasible)
    # Brute force over every integral allocation: ours is within one request of it
    # (it can never beat it) and the LP bound is above it.
    best = -math.inf
    for choice in itertools.product(range(Q.shape[1]), repeat=Q.shape[0]):
        c = np.array(choice)
        if chain_flops(q, c).sum() <= budget:
            best = max(best, chosen_rewards(Q, c).sum())
    assert sol.objective <= best + 1e-9
    assert best <= sol.lp_bound + 1e-9
    assert best - sol.objective <= (Q.max(axis=1) - Q.min(axis=1)).max() + 1e-9


def test_budget_below_everyone_cheapest_serves_all_cheapest_and_says_so() -> None:
    Q = np.array([[1.0, 3.0, 2.0], [0.0, 5.0, 0.5]])
    q = np.array([2.0, 4.0, 2.0])  # chains 0 and 2 tie for cheapest
    sol = solve_exact(Q, q, budget_flops=3.0)
    assert not sol.feasible
    np.testing.assert_array_equal(sol.choice, [2, 2])  # higher Q among the cheapest
    assert sol.spend_flops == 4.0 and sol.budget_flops == 3.0
    assert math.isnan(sol.lp_bound)
    # λ is the least price at which everyone prefers the cheapest chain.
    assert sol.dual_price == pytest.approx(4.5 / 2)
    np.testing.assert_array_equal(choose(Q, q, sol.dual_price), [2, 2])
    assert choose(Q, q, sol.dual_price * 0.99)[1] == 1
    per_request = solve_exact(Q, np.tile(q, (2, 1)), budget_flops=3.0)
    assert not per_request.feasible and per_request.dual_price == sol.dual_price


def test_budget_above_everyone_most_expensive_gives_zero_price() -> None:
    rng = np.random.default_rng(3)
    Q, q = rng.random((40, 5)), rng.uniform(1, 9, 5)
    sol = solve_exact(Q, q, budget_flops=40 * q.max() + 1)
    assert sol.feasible and sol.dual_price == 0.0
    np.testing.assert_array_equal(sol.choice, Q.argmax(axis=1))
    assert sol.lp_bound == sol.objective == pytest.approx(Q.max(axis=1).sum())
    assert solve_exact(Q, q, math.inf).dual_price == 0.0


def test_zero_price_when_the_best_chains_fit_though_dearer_ones_do_not() -> None:
    Q = np.array([[1.0, 3.0, 3.0, 2.0]] * 3)
    q = np.array([1.0, 2.0, 5.0, 9.0])  # the best reward is on the second cheapest chain
    sol = solve_exact(Q, q, budget_flops=6.0)
    assert sol.dual_price == 0.0 and sol.feasible
    np.testing.assert_array_equal(sol.choice, [1, 1, 1])
    assert sol.spend_flops == 6.0
    assert solve_exact(Q, q, budget_flops=5.0).dual_price == pytest.approx(2.0)


def test_one_fractional_request_is_served_its_cheaper_vertex() -> None:
    Q = np.array([[0.0, 4.0], [0.0, 3.0]])
    q = np.array([1.0, 3.0])
    sol = solve_exact(Q, q, budget_flops=5.0)  # room to upgrade 1.5 requests
    assert sol.dual_price == pytest.approx(1.5)  # the second request's slope
    np.testing.assert_array_equal(sol.choice, [1, 0])
    assert sol.objective == 4.0 and sol.lp_bound == pytest.approx(5.5)


def test_requests_tied_at_the_price_are_upgraded_while_the_budget_allows() -> None:
    # Ten identical requests: they all switch at λ = 1; the LP mixes, the integral
    # solution upgrades as many as fit rather than none.
    Q = np.tile([0.0, 2.0], (10, 1))
    q = np.array([1.0, 3.0])
    sol = solve_exact(Q, q, budget_flops=17.0)
    assert sol.dual_price == pytest.approx(1.0)
    assert (sol.choice == 1).sum() == 3 and sol.spend_flops == 16.0
    assert sol.lp_bound == pytest.approx(7.0) and sol.objective == 6.0


@pytest.mark.parametrize("per_request", [False, True])
def test_spend_and_objective_are_non_decreasing_in_the_budget(per_request: bool) -> None:
    rng = np.random.default_rng(11)
    n, J = 200, 8
    q = rng.uniform(1, 20, (n, J) if per_request else J).round()
    Q = rng.integers(0, 6, (n, J)).astype(float)
    sols = [solve_exact(Q, q, c) for c in budgets_between(q, n, 40)]
    spends = [s.spend_flops for s in sols]
    objectives = [s.objective for s in sols]
    prices = [s.dual_price for s in sols]
    assert all(s.feasible for s in sols)
    assert np.all(np.diff(spends) >= 0)
    assert np.all(np.diff(objectives) >= -1e-9)
    assert np.all(np.diff([s.lp_bound for s in sols]) >= -1e-9)
    assert np.all(np.diff(prices) <= 0)


def test_subsampled_bracket_gives_the_whole_hull_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n, J = 30_000, 16  # above the whole-hull size: the subsample recursion runs
    q = rng.permutation(np.geomspace(1e6, 1e9, J))
    Q = rng.gamma(0.7, 1.0, (n, 1)) * np.log1p(q / 1e6) + rng.normal(0, 0.3, (n, J))
    cases = [(R, c) for R in (Q, np.round(Q)) for c in (n * q.min() * 1.01, n * np.median(q))]
    fast = [solve_exact(R, q, c) for R, c in cases]
    monkeypatch.setattr(exact_module, "_WHOLE_HULL_MAX_ROWS", 10**9)
    for (R, c), f in zip(cases, fast, strict=True):
        whole = solve_exact(R, q, c)
        assert f.dual_price == whole.dual_price
        np.testing.assert_array_equal(f.choice, whole.choice)


def test_a_bracket_that_misses_falls_back_to_the_exact_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(6)
    n, J = 12_000, 8
    q = rng.permutation(np.geomspace(1e6, 1e8, J))
    Q = rng.gamma(0.7, 1.0, (n, 1)) * np.log1p(q / 1e6) + rng.normal(0, 0.3, (n, J))
    budget = n * np.median(q)
    expected = solve_exact(Q, q, budget)
    monkeypatch.setattr(exact_module, "_MARGIN_Z", -50.0)  # a bracket on the wrong side
    missed = solve_exact(Q, q, budget)
    assert missed.dual_price == expected.dual_price
    np.testing.assert_array_equal(missed.choice, expected.choice)


def test_single_chain_and_empty_inputs() -> None:
    sol = solve_exact(np.ones((4, 1)), np.array([2.0]), 8.0)
    assert sol.feasible and sol.dual_price == 0.0 and sol.spend_flops == 8.0
    empty = solve_exact(np.empty((0, 3)), np.ones(3), 0.0)
    assert empty.feasible and empty.n_requests == 0 and empty.objective == 0.0


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="costs q"):
        solve_exact(np.ones((2, 3)), np.ones((3, 2)), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        solve_exact(np.ones((2, 3)), np.ones(3), math.nan)


@pytest.mark.parametrize("seed", range(6))
def test_exact_price_is_solve_exacts_price_digit_for_digit(seed: int) -> None:
    from greenflow.platform.allocation.exact import exact_price

    rng = np.random.default_rng(seed)
    n, j = int(rng.integers(1, 300)), int(rng.integers(1, 40))
    Q = rng.uniform(0, 1, (n, j))
    q = rng.uniform(1.0, 20.0, j) if seed % 2 else rng.uniform(1.0, 20.0, (n, j))
    cheapest = float(np.min(q, axis=-1).sum() if q.ndim == 2 else n * q.min())
    dearest = float(np.max(q, axis=-1).sum() if q.ndim == 2 else n * q.max())
    best = Q.argmax(axis=1)  # no ties in uniform draws: each request's chain at λ = 0
    at_zero = float((q[np.arange(n), best] if q.ndim == 2 else q[best]).sum())
    budgets = (0.0, 0.5 * cheapest, cheapest, 0.5 * (cheapest + dearest), at_zero,
               np.nextafter(at_zero, 0.0), 1.001 * at_zero, 2 * dearest)  # fmt: skip
    for budget in budgets:
        assert exact_price(Q, q, budget) == solve_exact(Q, q, budget).dual_price
    # a budget that does not bind (the fast path): λ* = 0, and just below it λ* > 0
    assert exact_price(Q, q, 1.001 * at_zero) == 0.0 < exact_price(Q, q, 0.999 * at_zero)
    assert solve_exact(Q, q, 1.001 * at_zero).dual_price == 0.0
    assert exact_price(np.empty((0, j)), q[0] if q.ndim == 2 else q, 1.0) == 0.0
