"""In-window pacing: the pacer's price by hand, and what it does to a replayed window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greenflow.platform.allocation.adherence import budget_adherence
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.online import OnlineAllocator
from greenflow.platform.allocation.pacing import PACE_SIGMAS_BELOW, WindowPacer
from greenflow.platform.allocation.replay import ServingSettings, replay_serving

pytestmark = pytest.mark.usefixtures("no_ray")

Q_FLOPS = np.array([1.0, 3.0])  # a cheap and a dear chain


def two_chain_rows(gains: list[float]) -> np.ndarray:
    """Rows whose dear chain earns ``gain`` more clicks than the cheap one (2 FLOPs more)."""
    return np.array([[0.0, g] for g in gains])


def test_pacer_prices_the_free_budget_over_the_planned_requests() -> None:
    pacer = WindowPacer(Q_FLOPS, min_rows=4)
    pacer.observe(two_chain_rows([0.2, 0.4, 0.6, 0.8]))  # upgrade prices 0.1 .. 0.4
    # 1 arriving + 0 later: 3 FLOPs free buys the dear chain for everyone: λ = 0
    assert pacer.price(3.0, 1, 0.0, reserve_sigmas=0.0) == 0.0
    # 2 per request: half the rows upgrade (the two best gains), so λ sits at 0.2
    later = 3.0  # planned: 1 + 3 − √3 requests
    planned = 1 + later - PACE_SIGMAS_BELOW * math.sqrt(later)
    assert pacer.price(2.0 * planned, 1, later, reserve_sigmas=0.0) == pytest.approx(0.2)
    # a reserve of √planned cheapest chains leaves less: only the best gain upgrades
    reserve = math.sqrt(planned) * Q_FLOPS.min()
    free = 1.5 * planned + reserve
    assert pacer.price(free, 1, later, reserve_sigmas=1.0) == pytest.approx(0.3)
    # below the cheapest chain for everyone: the least price that sends every sampled
    # request to its cheapest chain (the steepest upgrade, 0.8 clicks / 2 FLOPs), finite
    assert pacer.price(0.5, 1, 0.0, reserve_sigmas=0.0) == pytest.approx(0.4)


def test_pacer_waits_for_enough_rows_and_keeps_the_newest() -> None:
    pacer = WindowPacer(Q_FLOPS, max_rows=3, min_rows=2)
    pacer.observe(two_chain_rows([0.2]))
    assert pacer.price(10.0, 1, 0.0, 0.0) is None
    pacer.observe(two_chain_rows([0.4, 0.6, 0.8]))
    assert pacer.rows == 3  # 0.2 dropped: 1 upgrade of 3 rows at 2 FLOPs each ...
    assert pacer.price(1.0 + 2.0 / 3.0, 1, 0.0, 0.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="min_rows"):
        WindowPacer(Q_FLOPS, max_rows=2, min_rows=3)


def test_a_quiet_window_spends_its_budget_on_its_last_requests() -> None:
    """Priced for 10 requests, a window that gets 5 spends what is left on them."""
    clock_s = [0.0]
    budget = ComputeBudget("flops", 10 * 2.0)  # 2 FLOPs per expected request, 1 s windows

    def make(pacing: bool) -> OnlineAllocator:
        alloc = OnlineAllocator(Q_FLOPS, budget, 1.0, initial_price=0.25, pacing=pacing,
                                reserve_sigmas=0.0, clock=lambda: clock_s[0])  # fmt: skip
        for i in range(20):  # a window of 10 requests at λ = 0.25 sets the rate and sample
            clock_s[0] = i * 0.1
            alloc.decide(two_chain_rows([0.2 + 0.4 * (i % 2)]))
        return alloc

    spend = {}
    for pacing in (False, True):
        alloc = make(pacing)
        for i in range(5):  # then 5 requests, one every 0.2 s
            clock_s[0] = 2.0 + i * 0.2
            alloc.decide(two_chain_rows([0.2 + 0.4 * (i % 2)]))
        spend[pacing] = alloc.state()["spend_flops"]
    assert spend[False] == 1 + 3 + 1 + 3 + 1  # λ fixed: the dear chain for gains > 0.5 only
    assert spend[True] > spend[False]
    assert spend[True] <= budget.flops_per_s()


def test_an_exhausted_window_reports_a_finite_price() -> None:
    """The price goes into every answer's JSON: never inf, even with no budget left."""
    clock_s = [0.0]
    alloc = OnlineAllocator(Q_FLOPS, ComputeBudget("flops", 4.0), 1.0, initial_price=0.25,
                            clock=lambda: clock_s[0])  # fmt: skip
    for i in range(40):  # 40 requests on a budget of 4 FLOPs a window
        clock_s[0] = i * 0.02
        d = alloc.decide(two_chain_rows([0.6]))
        assert math.isfinite(d.dual_price)
    assert d.choice[0] == 0 and d.guarded[0]  # the cheap chain, by the guard


def test_pacing_uses_more_of_the_budget_and_earns_more() -> None:
    """Poisson arrivals of ~40 requests a window: pacing lifts μ, without overspend."""
    rng = np.random.default_rng(0)
    q = np.geomspace(1e6, 2e7, 6)
    n = 4000
    Q = rng.gamma(0.7, 1.0, (n, 1)) * np.log1p(q / 1e6) + rng.normal(0, 0.05, (n, q.size))
    arrival = np.cumsum(rng.exponential(1 / 20.0, n))  # 20 req/s, 2 s windows
    budget = ComputeBudget("flops", 20.0 * 0.4 * q.max())
    out = {}
    for pacing in (False, True):
        settings = ServingSettings(window_s=2.0, pacing=pacing)
        r = replay_serving(Q, q, arrival, budget, settings, fit_price=0.0, clicks=Q)
        full = r.windows[1:-1]
        adherence = budget_adherence([w["spend"] for w in full], [w["budget"] for w in full],
                                     [w["requests"] for w in full])  # fmt: skip
        out[pacing] = (r.clicks, adherence)
    assert out[True][0] > out[False][0]
    assert out[True][1].utilisation_pct > out[False][1].utilisation_pct + 2
    assert out[True][1].utilisation_pct > 95
    assert out[True][1].over_utilisation_pct < 0.1


def test_the_sample_is_the_newest_rows_oldest_first_across_the_ring() -> None:
    pacer = WindowPacer(Q_FLOPS, max_rows=4, min_rows=1)
    rows = two_chain_rows([0.1 * k for k in range(1, 11)])
    pacer.observe(rows[:3])
    assert np.array_equal(pacer.sample(), rows[:3])
    for k in range(3, 10):  # one at a time, wrapping the ring
        pacer.observe(rows[k : k + 1])
        assert np.array_equal(pacer.sample(), rows[max(0, k - 3) : k + 1])
    pacer.observe(rows)  # a batch larger than the ring keeps its newest rows
    assert np.array_equal(pacer.sample(), rows[-4:]) and pacer.rows == 4
