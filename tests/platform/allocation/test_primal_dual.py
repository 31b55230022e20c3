from __future__ import annotations

import math

import numpy as np
import pytest

from greenflow.platform.allocation import (
    DualPriceController,
    SpendGuard,
    WindowedAllocator,
    WindowRecord,
    replay,
    solve_exact,
)

J = 8
Q_FLOPS = np.random.default_rng(0).permutation(np.geomspace(1e6, 1e8, J))
RATE_PER_S = 500  # requests per 1 s window in steady traffic
BUDGET_FLOPS = 0.25 * RATE_PER_S * Q_FLOPS.max()  # per window: binding, far above cheapest


class FakeClock:
    """Seconds that only move when the test says so."""

    def __init__(self, now_s: float = 0.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def rewards(n: int, seed: int) -> np.ndarray:
    """Clicks that grow concavely with cost at request-specific rates."""
    rng = np.random.default_rng(seed)
    return rng.gamma(0.7, 1.0, (n, 1)) * np.log1p(Q_FLOPS / 1e6) + rng.normal(0, 0.1, (n, J))


def stream(rates_per_s: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced arrivals, window w of 1 s carrying rates_per_s[w] requests."""
    times = [w + np.arange(r) / r for w, r in enumerate(rates_per_s)]
    arrival = np.concatenate(times)
    return rewards(arrival.size, seed), arrival


def reference_price(seed: int = 99) -> float:
    """λ* of a large stationary sample at the per-request budget of a window."""
    n = 20_000
    return solve_exact(rewards(n, seed), Q_FLOPS, BUDGET_FLOPS * n / RATE_PER_S).dual_price


@pytest.mark.parametrize("method", ["gradient", "exact"])
def test_converges_near_the_optimal_price_on_a_stationary_stream(method: str) -> None:
    lam_star = reference_price()
    Q, arrival = stream([RATE_PER_S] * 40)
    controller = DualPriceController(step_size=0.5 * lam_star, method=method, smoothing=0.2)
    records = replay(
        Q, Q_FLOPS, arrival, window_s=1.0, budget_flops=BUDGET_FLOPS, controller=controller
    )
    assert len(records) == 40 and records[0].dual_price == 0.0  # cold start
    late = records[20:]
    prices = np.array([r.dual_price for r in late])
    assert abs(prices.mean() / lam_star - 1) < 0.05
    assert np.all(np.abs(prices / lam_star - 1) < 0.15)
    utilisation = np.array([r.spend_flops / r.budget_flops for r in late])
    assert abs(utilisation.mean() - 1) < 0.03


def test_guard_bounds_overspend_during_a_threefold_spike() -> None:
    lam_star = reference_price()
    rates = [RATE_PER_S] * 10 + [3 * RATE_PER_S] * 3 + [RATE_PER_S] * 7
    Q, arrival = stream(rates, seed=1)
    controller = DualPriceController(step_size=0.5 * lam_star).fit(
        rewards(2_000, 5), Q_FLOPS, BUDGET_FLOPS * 4
    )
    tolerance = 0.05
    records = replay(
        Q,
        Q_FLOPS,
        arrival,
        window_s=1.0,
        budget_flops=BUDGET_FLOPS,
        controller=controller,
        guard_tolerance=tolerance,
    )
    assert [r.requests for r in records] == rates
    for r in records:
        # Past C (1 + ε) each extra request costs at most the cheapest chain; the one
        # request that crossed the limit may have been the dearest.
        bound = BUDGET_FLOPS * tolerance + Q_FLOPS.max() + r.guard_requests * Q_FLOPS.min()
        assert r.overspend_flops <= bound
        assert r.overspend_flops == max(0.0, r.spend_flops - r.budget_flops)
    spike = records[10]  # priced for normal traffic: the guard must act, and says so
    assert spike.guard_requests > RATE_PER_S
    assert spike.overspend_flops > 0
    assert spike.spend_flops < 1.2 * BUDGET_FLOPS
    # Steady windows only trip the guard on noise; the spike is another matter.
    assert spike.guard_requests > 5 * max(r.guard_requests for r in records[:10])


def test_spend_guard_switches_to_the_cheapest_chain_after_the_limit() -> None:
    q = np.array([4.0, 1.0])
    Q = np.tile([5.0, 1.0], (5, 1))  # everyone prefers the dear chain at λ = 0
    guard = SpendGuard(budget_flops=10.0, tolerance=0.1)  # limit 11 FLOPs
    np.testing.assert_array_equal(guard.serve(Q[:2], q, 0.0), [0, 0])
    np.testing.assert_array_equal(guard.serve(Q[2:], q, 0.0), [0, 1, 1])  # 12 > 11 after 3
    assert guard.spend_flops == 14.0 and guard.overspend_flops == 4.0
    assert guard.requests == 5 and guard.guard_requests == 2


def exact_fields(r: WindowRecord) -> tuple[float, float, float, int, int]:
    return r.t_s, r.budget_flops, r.dual_price, r.requests, r.guard_requests


def sums(r: WindowRecord) -> tuple[float, float, float]:
    return r.spend_flops, r.overspend_flops, r.reward


def test_replay_is_deterministic_and_equals_a_clocked_allocator() -> None:
    Q, arrival = stream([RATE_PER_S, 0, 0, RATE_PER_S, 2 * RATE_PER_S], seed=2)
    arrival = arrival + 100.0  # the stream need not start at 0

    def controller() -> DualPriceController:
        return DualPriceController(step_size=1e-8, smoothing=0.5, initial_price=1e-9)

    kwargs = {"window_s": 1.0, "budget_flops": BUDGET_FLOPS, "guard_tolerance": 0.05}
    first = replay(Q, Q_FLOPS, arrival, controller=controller(), **kwargs)
    second = replay(Q, Q_FLOPS, arrival, controller=controller(), **kwargs)
    assert first == second

    clock = FakeClock()
    live = WindowedAllocator(controller(), clock=clock, **kwargs)
    for start in range(0, arrival.size, 100):  # batches of 100 requests, in order
        clock.now_s = arrival[start]
        live.serve(Q[start : start + 100], Q_FLOPS)
    live.close()
    # Same windows, prices and decisions; only float sums may differ in the last bit,
    # since batches split them differently.
    assert [exact_fields(r) for r in live.records] == [exact_fields(r) for r in first]
    np.testing.assert_allclose(
        [sums(r) for r in live.records], [sums(r) for r in first], rtol=1e-12
    )
    # Windows without traffic are recorded, and keep λ.
    assert [r.requests for r in first] == [RATE_PER_S, 0, 0, RATE_PER_S, 2 * RATE_PER_S]
    assert first[1].dual_price == first[2].dual_price == first[3].dual_price
    assert first[0].t_s == 100.0 and first[4].t_s == 104.0
    assert set(first[0].as_dict()) >= {"t", "spend", "budget", "dual_price", "requests"}


def test_allocator_state_and_time_checks() -> None:
    clock = FakeClock(5.0)
    controller = DualPriceController(step_size=1e-9, initial_price=2e-9)
    alloc = WindowedAllocator(controller, 10.0, BUDGET_FLOPS, clock=clock)
    alloc.serve(rewards(10, 3), Q_FLOPS)
    state = alloc.state()
    assert state["dual_price"] == 2e-9 and state["window_start_s"] == 5.0
    assert 0 < state["utilisation"] == state["spend_flops"] / BUDGET_FLOPS
    clock.now_s = 26.0  # two windows later: one full, one empty
    assert [r.requests for r in alloc.advance()] == [10, 0]
    with pytest.raises(ValueError, match="backwards"):
        alloc.advance(now_s=1.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        replay(
            rewards(3, 0),
            Q_FLOPS,
            np.array([0.0, 2.0, 1.0]),
            window_s=1.0,
            budget_flops=1.0,
            controller=DualPriceController(),
        )


def test_budget_schedule_and_true_clicks_are_recorded() -> None:
    Q, arrival = stream([100, 100, 100], seed=4)
    records = replay(
        Q,
        Q_FLOPS,
        arrival,
        window_s=1.0,
        budget_flops=lambda t_s: BUDGET_FLOPS * (1 + t_s),
        controller=DualPriceController(method="exact"),
        clicks=np.round(Q),
    )
    assert [r.budget_flops for r in records] == [BUDGET_FLOPS * k for k in (1, 2, 3)]
    assert all(r.clicks is not None and r.reward > 0 for r in records)


def test_controller_update_rules() -> None:
    Q = rewards(400, 6)
    budget = 0.2 * 400 * Q_FLOPS.max()
    lam_star = solve_exact(Q, Q_FLOPS, budget).dual_price
    exact = DualPriceController(method="exact", smoothing=0.25, initial_price=0.0)
    assert exact.update(Q, Q_FLOPS, budget) == pytest.approx(0.75 * lam_star)
    # One gradient step from λ = 0: spend exceeds the budget, so λ rises by η × excess.
    spend = float(Q_FLOPS[Q.argmax(axis=1)].sum())
    grad = DualPriceController(step_size=1e-8)
    assert grad.update(Q, Q_FLOPS, budget) == pytest.approx(1e-8 * (spend - budget) / budget)
    assert grad.n_updates_ == 1
    # Projection: a large budget drives λ to 0, never below.
    assert DualPriceController(step_size=1.0, initial_price=1e-9).update(Q, Q_FLOPS, 1e30) == 0
    # An empty window carries no information.
    kept = DualPriceController(step_size=1.0, initial_price=3e-9)
    assert kept.update(np.empty((0, J)), Q_FLOPS, budget) == 3e-9
    # Many steps with η from fit() reach λ* on the same samples.
    fitted = DualPriceController(n_steps=200).fit(Q, Q_FLOPS, budget)
    fitted.dual_price_ = 0.0
    assert fitted.update(Q, Q_FLOPS, budget) == pytest.approx(lam_star, rel=0.05)


def test_controller_rejects_bad_parameters() -> None:
    Q = rewards(5, 0)
    with pytest.raises(ValueError, match="fit"):
        DualPriceController().update(Q, Q_FLOPS, 1e9)
    with pytest.raises(ValueError, match="smoothing"):
        DualPriceController(smoothing=1.0).update(Q, Q_FLOPS, 1e9)
    with pytest.raises(ValueError, match="method"):
        DualPriceController(method="newton").update(Q, Q_FLOPS, 1e9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget"):
        DualPriceController(step_size=1.0).update(Q, Q_FLOPS, 0.0)
    assert math.isclose(DualPriceController(initial_price=1e-9).price(), 1e-9)
