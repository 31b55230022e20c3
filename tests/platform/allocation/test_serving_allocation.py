"""Serving-side allocation core: budgets in three units, the predictive guard, one replica's
online decisions on a fake clock, and the nearline driver's windows and checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.decision import choose
from greenflow.platform.allocation.nearline import (
    ArrivalsForecast,
    NearlineDriver,
    nearline_controller,
)
from greenflow.platform.allocation.online import OnlineAllocator, window_start
from greenflow.platform.allocation.primal_dual import DualPriceController, SpendGuard
from greenflow.platform.energy.carbon import CarbonSchedule, PFECConfig

pytestmark = pytest.mark.usefixtures("no_ray")


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_flops_budget_is_rate_times_window() -> None:
    b = ComputeBudget("flops", 2e6)
    assert b.window_flops(0.0, 3.0) == 6e6


def test_power_budget_converts_through_pue_and_joules_per_flop() -> None:
    b = ComputeBudget("power", 167.0, joules_per_flop=1e-9, pfec=PFECConfig(pue=1.67))
    # 167 W facility = 100 W of devices = 1e11 FLOPs/s at 1 nJ/FLOP
    assert b.flops_per_s() == pytest.approx(1e11)


def test_carbon_budget_gets_fewer_flops_in_a_dirty_hour() -> None:
    schedule = CarbonSchedule.from_rows([(0.0, 300.0), (12 * 3600.0, 600.0)])
    b = ComputeBudget("carbon", 10.0, 1e-9, PFECConfig(pue=1.0, schedule=schedule))
    import datetime as dt

    day = dt.datetime(2026, 1, 1).timestamp()  # local midnight
    clean, dirty = b.flops_per_s(day + 3600), b.flops_per_s(day + 13 * 3600)
    assert clean == pytest.approx(2 * dirty)
    # 10 g/h at 300 g/kWh = 1/30 kWh per hour = 33.3 W = 3.33e10 FLOPs/s at 1 nJ/FLOP
    assert clean == pytest.approx(1 / 30 * 3.6e6 / 3600 / 1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "watts", "value": 1.0},
        {"kind": "flops", "value": 0.0},
        {"kind": "power", "value": 5.0},
    ],  # fmt: skip
)
def test_bad_budgets_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        ComputeBudget(**kwargs)


def test_predictive_guard_acts_before_the_budget() -> None:
    q = np.array([1.0, 4.0, 10.0])
    Q = np.tile([1.0, 2.0, 3.0], (6, 1))
    guard = SpendGuard(budget_flops=25.0, tolerance=0.0, predictive=True)
    choice = guard.admit(Q, q, np.full(6, 2), dual_price=0.0)
    # 10 + 10 fit (20), then 4 fits (24), then only 1 fits (25), then nothing: cheapest
    assert choice.tolist() == [2, 2, 1, 0, 0, 0]
    assert guard.guard_requests == 4
    assert guard.spend_flops == 27.0  # past C only by the cheapest chain, twice
    assert guard.overspend_flops == 2.0


def test_reactive_guard_is_unchanged() -> None:
    q = np.array([1.0, 10.0])
    Q = np.tile([1.0, 2.0], (4, 1))
    guard = SpendGuard(budget_flops=15.0, tolerance=0.0)
    assert guard.admit(Q, q, np.ones(4, int)).tolist() == [1, 1, 0, 0]


def test_predictive_guard_never_exceeds_the_limit_while_a_chain_fits() -> None:
    rng = np.random.default_rng(0)
    q = np.sort(rng.uniform(1, 20, 8))
    for trial in range(20):
        Q = np.cumsum(rng.uniform(0, 1, (50, 8)), axis=1)
        guard = SpendGuard(budget_flops=200.0, tolerance=0.05, predictive=True)
        lam = 0.01 * trial
        choice = guard.admit(Q, q, choose(Q, q, lam), lam)
        spend = np.cumsum(q[choice])
        fits = spend <= 210.0 + 1e-9
        # once a request had to exceed, every later one is the cheapest chain
        first_over = np.flatnonzero(~fits)
        if first_over.size:
            assert (choice[first_over[0] :] == 0).all()
            assert spend[first_over[0] - 1] + q[0] > 210.0


def test_online_allocator_windows_follow_the_wall_clock() -> None:
    clock = FakeClock(1000.0)
    q = np.array([1.0, 5.0])
    alloc = OnlineAllocator(q, ComputeBudget("flops", 6.0), 2.0, reserve_sigmas=None, clock=clock)
    Q = np.array([[1.0, 3.0]] * 3)
    d = alloc.decide(Q)
    assert d.window_start_s == 1000.0 == window_start(1001.0, 2.0)
    assert d.choice.tolist() == [1, 1, 0]  # 5 + 5 > 12? no: 10 fits, then 1 fits
    assert d.guarded.tolist() == [False, False, True]
    clock.t = 1002.5  # next window: fresh budget
    assert alloc.decide(Q[:1]).choice.tolist() == [1]
    alloc.set_price(1.0)  # λ high: value 1-1 = 0 vs 3-5 = -2 → cheap chain
    assert alloc.decide(Q[:1]).choice.tolist() == [0]
    with pytest.raises(ValueError):
        alloc.set_price(math.nan)


def test_online_allocator_reserves_budget_for_expected_arrivals() -> None:
    clock = FakeClock(1000.0)
    q = np.array([1.0, 5.0])
    alloc = OnlineAllocator(
        q, ComputeBudget("flops", 10.0), 2.0, reserve_sigmas=2.0, clock=clock
    )  # C = 20; fmt: skip
    Q = np.array([[1.0, 3.0]])
    clock.t = 1000.5  # 2 req/s × 1.5 s left = 3 expected; reserve 3 + 2√3 ≈ 6.5: 5 + 6.5 ≤ 20
    assert alloc.decide(Q).choice.tolist() == [1]
    clock.t = 1001.0  # 2 expected, reserve ≈ 4.8: 10 + 4.8 ≤ 20
    assert alloc.decide(Q).choice.tolist() == [1]
    clock.t = 1001.1  # ≈ 2.5 expected, reserve ≈ 5.6: 15 + 5.6 > 20 → the cheapest keeps room
    d = alloc.decide(Q)
    assert d.choice.tolist() == [0] and d.guarded.tolist() == [True]
    assert alloc.state()["spend_flops"] == 11.0


def test_fixed_chain_policy_is_guarded_too() -> None:
    clock = FakeClock(0.0)
    alloc = OnlineAllocator(np.array([1.0, 5.0]), ComputeBudget("flops", 6.0), 1.0,
                            fixed_chain=1, reserve_sigmas=None, clock=clock)  # fmt: skip
    d = alloc.decide(np.zeros((3, 2)))
    assert d.choice.tolist() == [1, 0, 0]
    assert alloc.state()["spend_flops"] == 7.0


def test_a_refund_corrects_only_the_window_that_admitted_the_request() -> None:
    """A request admitted in one window and finished in a later one (a stage timed out, a
    cheaper fallback chain served it) must not free budget in the later window: that window
    would then spend beyond its budget with no request guarded (a node loss in CI)."""
    clock = FakeClock(0.0)
    alloc = OnlineAllocator(np.array([1.0, 5.0]), ComputeBudget("flops", 10.0), 1.0,
                            fixed_chain=1, reserve_sigmas=None, clock=clock)  # fmt: skip
    first = alloc.decide(np.zeros((1, 2)))  # 5 FLOPs predicted in window 0
    assert alloc.refund(4.0, first.window_start_s)  # served by the 1-FLOP chain, still open
    assert alloc.state()["spend_flops"] == 1.0
    assert alloc.refund(-2.0, first.window_start_s)  # a failed stage wasted 2 more
    assert alloc.state()["spend_flops"] == 3.0
    clock.t = 1.5
    assert alloc.decide(np.zeros((2, 2))).choice.tolist() == [1, 1]  # window 1: 10 of 10
    assert not alloc.refund(4.0, first.window_start_s)  # window 0's request ends late
    assert alloc.refund(-3.0, first.window_start_s) is False
    assert alloc.state()["spend_flops"] == 10.0
    assert alloc.decide(np.zeros((1, 2))).choice.tolist() == [0]  # no room was freed


def _driver(clock: FakeClock, **kw) -> NearlineDriver:
    controller = DualPriceController(step_size=0.1, initial_price=0.01)
    return NearlineDriver(controller, np.array([1.0, 10.0]), ComputeBudget("flops", 10.0), 1.0,
                          grace_s=0.2, clock=clock, **kw)  # fmt: skip


def test_driver_closes_windows_after_grace_and_raises_price_on_overspend() -> None:
    clock = FakeClock(100.5)
    drv = _driver(clock)
    Q = np.array([[1.0, 2.0]] * 3)
    drv.report(100.0, Q, np.array([1, 1, 1]), spend_flops=30.0, guard_requests=1)
    clock.t = 101.1  # window 100 ended, but within grace
    assert drv.tick() == []
    clock.t = 101.3
    (rec,) = drv.tick()
    assert (rec.t_s, rec.spend_flops, rec.requests, rec.guard_requests) == (100.0, 30.0, 3, 1)
    assert rec.overspend_flops == 20.0 and rec.dual_price == 0.01
    assert drv.price() > 0.01  # spent 3× the budget: λ rises
    # a late report still counts in its window's record
    drv.report(100.0, Q[:1], np.array([0]), 1.0)
    assert drv.windows()[-1]["spend"] == 31.0 and drv.late_reports == 1


def test_a_window_closed_late_is_recorded_but_does_not_move_the_price() -> None:
    """A restarted driver closes the windows since its checkpoint at once, holding only the
    reports re-sent so far; solving λ on that part of a window (a full budget for a few
    samples) dropped λ to 0 after a node loss."""
    Q = np.array([[1.0, 1.05]])  # at λ = 0.01 the 1-FLOP chain: 1 of 10 FLOPs, λ should fall
    timely, late = _driver(FakeClock(100.5)), _driver(FakeClock(100.5))
    for drv in (timely, late):
        drv.report(100.0, Q, np.array([0]), spend_flops=1.0)
    timely.clock.t = 101.3
    (rec,) = timely.tick()
    assert timely.price() < 0.01
    late.clock.t = 103.3  # windows 100 and 101 close two windows late
    records = late.tick()
    assert [r.t_s for r in records] == [100.0, 101.0, 102.0]
    assert records[0].spend_flops == rec.spend_flops == 1.0
    assert late.price() == 0.01
    late.report(103.0, Q, np.array([0]), spend_flops=1.0)  # closed in time: λ learns again
    late.clock.t = 104.3
    late.tick()
    assert late.price() == timely.price()


def test_driver_checkpoint_round_trip_resumes_price_and_records() -> None:
    clock = FakeClock(100.5)
    drv = _driver(clock)
    drv.report(100.0, np.array([[1.0, 2.0]]), np.array([1]), 10.0)
    clock.t = 102.5
    drv.tick()
    doc = drv.checkpoint()
    again = _driver(clock)
    again.restore(doc)
    assert again.price() == drv.price()
    assert again.windows() == drv.windows()
    clock.t = 104.5
    closed = again.tick()
    assert [r.t_s for r in closed] == [102.0, 103.0]  # missed windows are recorded, not skipped


def test_driver_drops_reports_it_has_seen() -> None:
    clock = FakeClock(100.5)
    drv = _driver(clock)
    Q = np.array([[1.0, 2.0]])
    assert drv.report(100.0, Q, np.array([1]), 10.0, report_id="a:1") is True
    assert drv.report(100.0, Q, np.array([1]), 10.0, report_id="a:1") is False  # a retry
    assert drv.report(100.0, Q, np.array([1]), 10.0, report_id="b:1") is True
    clock.t = 101.5
    (rec,) = drv.tick()
    assert rec.requests == 2 and rec.spend_flops == 20.0
    assert drv.state()["duplicate_reports"] == 1


def test_no_reserve_fills_the_window_before_guarding() -> None:
    clock = FakeClock(1001.0)
    alloc = OnlineAllocator(np.array([1.0, 5.0]), ComputeBudget("flops", 10.0), 2.0,
                            reserve_sigmas=None, clock=clock)  # fmt: skip
    assert alloc.decide(np.array([[1.0, 3.0]] * 5)).choice.tolist() == [1, 1, 1, 1, 0]


def test_a_spike_in_the_last_half_second_raises_the_reserve() -> None:
    clock = FakeClock(1000.0)
    q = np.array([1.0, 5.0])
    alloc = OnlineAllocator(q, ComputeBudget("flops", 10.0), 2.0, reserve_sigmas=0.0, clock=clock)
    for t in np.linspace(1001.55, 1001.95, 5):  # 10 req/s in the previous window's tail
        clock.t = t
        alloc.decide(np.array([[0.0, 0.0]]))  # equal Q: the cheapest chain, 1 FLOP each
    clock.t = 1002.0  # new window, C = 20: 2.5 req/s last window, but 10 req/s just now
    # 6 arrivals in the last 0.5 s (this one too): 12 req/s × 2 s × 1 FLOP > C: no room
    d = alloc.decide(np.array([[1.0, 3.0]]))
    assert d.choice.tolist() == [0] and d.guarded.tolist() == [True]


def test_forecast_arrivals_set_the_next_price() -> None:
    """After a spike (4 requests in a window whose budget buys one expensive chain) the
    next window is forecast to bring 1 request: λ is solved for that, and falls to 0."""

    def closed_price(forecast: ArrivalsForecast | None) -> float:
        clock = FakeClock(100.5)
        controller = DualPriceController(method="exact", initial_price=0.01)
        drv = NearlineDriver(controller, np.array([1.0, 10.0]), ComputeBudget("flops", 10.0),
                             1.0, grace_s=0.2, clock=clock, arrivals_forecast=forecast)  # fmt: skip
        drv.report(100.0, np.array([[1.0, 2.0]] * 4), np.array([0, 0, 0, 0]), 4.0)
        clock.t = 101.3
        drv.tick()
        return drv.price()

    last_count = closed_price(None)  # 4 requests, 10 FLOPs: nobody can have the 10-FLOP chain
    assert last_count >= 1 / 9  # the upgrade (+1 click for +9 FLOPs) is priced out
    assert closed_price(lambda start, length: 4.0) == pytest.approx(last_count)  # same count
    assert closed_price(lambda start, length: 1.0) == pytest.approx(0.0, abs=1e-12)
    seen = []
    closed_price(lambda start, length: seen.append((start, length)) or 2.0)
    assert seen == [(101.0, 1.0)]  # asked for the window the new price will serve


def test_the_driver_controller_follows_the_served_lambda_update() -> None:
    exact = nearline_controller("exact", 1.0, 0.3, 2e-9)
    assert exact.method == "exact" and exact.smoothing == 0.3 and exact.price() == 2e-9
    grad = nearline_controller("gradient", 4.0, 0.0, 2e-9, 1e-9)
    assert grad.method == "gradient" and grad.step_size == pytest.approx(8e-9)
    assert grad.price() == 1e-9
    # no warm-start price, no scale for η: the exact re-solve
    assert nearline_controller("gradient", 1.0, 0.0, 0.0).method == "exact"
