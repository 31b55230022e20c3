"""Announced traffic: expected arrivals of a rate step function, by hand; the plan of a
traffic profile agrees with the profile; and the driver prices the next window with it."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.allocation.arrival_plan import ArrivalPlan
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.nearline import NearlineDriver
from greenflow.platform.allocation.primal_dual import DualPriceController
from greenflow.platform.traffic import TrafficProfile

pytestmark = pytest.mark.usefixtures("no_ray")


def test_expected_arrivals_integrate_the_rate_steps() -> None:
    plan = ArrivalPlan.from_steps([[100.0, 10.0], [110.0, 30.0], [120.0, 10.0]])
    assert plan.expected_arrivals(100.0, 2.0) == pytest.approx(20.0)
    assert plan.expected_arrivals(109.0, 2.0) == pytest.approx(10.0 + 30.0)  # across a step
    assert plan.expected_arrivals(105.0, 20.0) == pytest.approx(50 + 300 + 50)
    assert plan.expected_arrivals(500.0, 4.0) == pytest.approx(40.0)  # the last rate holds
    assert plan.expected_arrivals(99.0, 2.0) is None  # before the plan: no forecast
    assert ArrivalPlan.from_steps(plan.steps()) == plan


@pytest.mark.parametrize(
    ("steps", "message"),
    [([], "at least|>= 1"), ([[1.0, 2.0], [1.0, 3.0]], "increasing"),
     ([[1.0, -2.0]], ">= 0"), ([[float("nan"), 2.0]], "finite"),
     ([[1.0, float("inf")]], "finite"), ([[1.0]], "pair")],
)  # fmt: skip
def test_bad_plans_are_refused(steps, message) -> None:
    with pytest.raises(ValueError, match=message):
        ArrivalPlan.from_steps(steps)


def test_the_plan_of_a_profile_forecasts_what_the_profile_expects() -> None:
    profile = TrafficProfile(base_rate=8.0, duration_s=30.0, spike_factor=3.0)
    epoch = 1_800_000_000.3
    plan = ArrivalPlan.from_steps([[epoch + t, r] for t, r in profile.rate_steps()])
    for start in np.arange(0.0, 29.0, 0.7):
        assert plan.expected_arrivals(epoch + start, 2.0) == pytest.approx(
            profile.expected_arrivals(start, 2.0)
        )
    assert TrafficProfile(spike_start=0.0).rate_steps()[0] == (0.0, 60.0)  # no zero-length step


def test_the_driver_prices_the_next_window_for_its_planned_arrivals() -> None:
    """A spike window of 40 requests; the plan says 10 come next: λ is solved for 10
    requests on the next window's 100 FLOPs (10 each: the dear chain), not for 40 (2.5
    each: mostly the cheap one), so the price falls at once."""
    q = np.array([1.0, 10.0])
    Q = np.tile([1.0, 3.0], (40, 1))  # the dear chain is worth 2 clicks for 9 FLOPs more

    def price_after_the_spike(plan: ArrivalPlan | None) -> float:
        now = [1000.5]
        d = NearlineDriver(DualPriceController(method="exact"), q, ComputeBudget("flops", 50.0),
                           2.0, clock=lambda: now[0],
                           arrivals_forecast=None if plan is None else plan.expected_arrivals)  # fmt: skip
        d.report(1000.0, Q, np.ones(40, dtype=np.int64), 400.0)
        now[0] = 1002.3  # the window [1000, 1002) closes after its grace
        assert [r.t_s for r in d.tick()] == [1000.0]
        return d.price()

    last_count = price_after_the_spike(None)
    assert last_count > 0
    assert price_after_the_spike(ArrivalPlan.from_steps([[1000.0, 20.0], [1002.0, 5.0]])) == 0
    # a plan that starts later gives no forecast yet: the last window's count again
    assert price_after_the_spike(ArrivalPlan.from_steps([[5000.0, 5.0]])) == last_count
