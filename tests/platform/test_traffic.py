"""The traffic profile shared by the step-size replay and the load test (pure numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.traffic import (
    OVER_BUDGET_SLACK,
    TrafficProfile,
    budget_flops_per_s,
    request_order,
)

pytestmark = pytest.mark.usefixtures("no_ray")


def test_phase_labels_the_middle_third_as_the_spike() -> None:
    p = TrafficProfile(base_rate=10.0, duration_s=30.0, spike_factor=3.0)
    assert p.spike_interval_s() == pytest.approx((10.0, 20.0))
    assert [p.phase(t) for t in (0.0, 9.99, 10.0, 19.99, 20.0, 29.9)] == [
        "steady", "steady", "spike", "spike", "steady", "steady",
    ]  # fmt: skip
    # The labels agree with the rate the arrivals are drawn from.
    for t in np.linspace(0.0, 29.9, 50):
        assert (p.phase(t) == "spike") == (float(p.rate(np.array(t))) == 30.0)
    assert TrafficProfile(spike_factor=1.0).phase(150.0) == "steady"  # no spike at all


def test_arrivals_follow_the_rate_and_are_seeded() -> None:
    p = TrafficProfile(base_rate=50.0, duration_s=60.0, spike_factor=3.0, seed=4)
    t = p.arrivals()
    assert np.all(np.diff(t) >= 0) and t[0] >= 0.0 and t[-1] < 60.0
    spike = np.sum([p.phase(x) == "spike" for x in t])
    assert spike / (t.size - spike) == pytest.approx(3.0 / 2.0, rel=0.1)  # 20 s x3 vs 40 s
    assert np.array_equal(t, TrafficProfile(base_rate=50.0, duration_s=60.0, seed=4).arrivals())
    assert not np.array_equal(t, TrafficProfile(base_rate=50.0, duration_s=60.0).arrivals())


def test_profile_validation() -> None:
    with pytest.raises(ValueError, match="positive"):
        TrafficProfile(base_rate=0.0)
    with pytest.raises(ValueError, match="spike_start"):
        TrafficProfile(spike_start=0.8, spike_end=0.2)


def test_request_order_and_budget() -> None:
    order = request_order(5, 12, seed=3)
    assert order.dtype == np.int64 and order.size == 12
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:10]) == list(range(5))
    assert np.array_equal(order, request_order(5, 12, seed=3))
    assert request_order(0, 0, seed=0).size == 0
    q = np.array([1e6, 4e6, 2e6])
    assert budget_flops_per_s(q, 20.0, 0.5) == pytest.approx(0.5 * 4e6 * 20.0)
    assert pytest.approx(1.01) == OVER_BUDGET_SLACK


def test_step_size_still_exports_the_moved_names() -> None:
    from greenflow.platform import traffic
    from greenflow.tune_configs import step_size

    assert step_size.TrafficProfile is traffic.TrafficProfile
    assert step_size.request_order is traffic.request_order
    assert step_size.budget_flops_per_s is traffic.budget_flops_per_s
    assert step_size.OVER_BUDGET_SLACK == traffic.OVER_BUDGET_SLACK


def test_expected_arrivals_integrate_the_rate() -> None:
    profile = TrafficProfile(base_rate=10.0, duration_s=30.0, spike_factor=3.0)  # spike 10-20 s
    assert profile.expected_arrivals(0.0, 2.0) == pytest.approx(20.0)
    assert profile.expected_arrivals(9.0, 2.0) == pytest.approx(10.0 + 30.0)  # across the onset
    assert profile.expected_arrivals(19.5, 1.0) == pytest.approx(15.0 + 5.0)  # across the end
    assert profile.expected_arrivals(29.0, 2.0) == pytest.approx(20.0)  # past the end: base
    total = sum(profile.expected_arrivals(t, 0.5) for t in np.arange(0.0, 30.0, 0.5))
    assert total == pytest.approx(10 * 10 + 30 * 10 + 10 * 10)
