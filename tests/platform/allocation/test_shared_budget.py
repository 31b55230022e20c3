"""The window budget shared by several allocator replicas (issue #14 item 6), without Ray.

Two ``OnlineAllocator`` replicas and one ``NearlineDriver`` on a fake clock, wired the way
the Serve app wires them (reports with ``"<replica>:<seq>"`` ids flushed and the driver
polled every 0.1 s, windows closed 0.2 s after they end), GreenFlow's policy with exact λ
re-solves and a binding budget, steady Poisson traffic routed unevenly. With the driver's
adaptive shares the replicas spend >= 95% of the budget and no window goes over it; with
static 1/N shares the replica with most traffic is capped at half the budget while the
other cannot use its half.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.nearline import (
    FORGET_WINDOWS,
    SHARE_FLOOR,
    NearlineDriver,
    budget_shares,
)
from greenflow.platform.allocation.online import OnlineAllocator, own_shares
from greenflow.platform.allocation.primal_dual import DualPriceController

pytestmark = pytest.mark.usefixtures("no_ray")

EPOCH = 1_800_000_000.35  # fake clock start (Unix s), mid-window
WINDOW_S = 2.0  # the serving default
GRACE_S = 0.2
POLL_S = 0.1
BATCH_S = 0.02  # a replica decides the requests that arrived within 20 ms together
Q_COSTS = np.array([1.0, 2.0, 4.0, 8.0])  # FLOPs per chain
FLOPS_PER_REQUEST = 3.0  # the budget: everyone-full would need 8
RATE_RPS = 400.0  # both replicas together
REPLICAS = ("a", "b")
SECONDS = 120.0  # 60 windows
WARMUP_WINDOWS = 3  # not measured: static shares until the driver has seen a window
FLIP_S = 60.0  # the flip case: 80% to replica a before, 20% after


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _rewards(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, J) estimated clicks: increasing, concave in a chain's FLOPs, per-request scale."""
    gain = rng.uniform(0.2, 1.5, (n, 1))
    knee = rng.uniform(1.0, 8.0, (n, 1))
    return gain * (1.0 - np.exp(-Q_COSTS[None, :] / knee))


@dataclass(frozen=True)
class Run:
    starts: np.ndarray  # (windows,) Unix s, measured windows
    spend: np.ndarray  # (windows,) FLOPs, both replicas, measured windows
    budget: np.ndarray  # (windows,) FLOPs
    reward: np.ndarray  # (windows,) Σ Q of the chains served, both replicas, clicks
    shares: list[dict[str, float]]  # share each replica used, per measured window

    @property
    def utilisation(self) -> float:
        return float(self.spend.sum() / self.budget.sum())

    @property
    def max_window_utilisation(self) -> float:
        return float((self.spend / self.budget).max())


def _serve(
    split_a: Callable[[float], float],
    adaptive: bool,
    seconds: float = SECONDS,
    warmup: int = WARMUP_WINDOWS,
    seed: int = 0,
) -> Run:
    """Replay ``seconds`` of traffic; ``split_a(t)``: fraction routed to replica a at t s.

    ``adaptive``: the replicas use the driver's published shares (else static 1/N).
    Windows after the first ``warmup`` ones and before the last one are measured.
    """
    rng = np.random.default_rng(seed)
    clock = FakeClock(EPOCH)
    budget = ComputeBudget("flops", FLOPS_PER_REQUEST * RATE_RPS)
    train = _rewards(rng, 4000)
    warm = DualPriceController().fit(train, Q_COSTS, FLOPS_PER_REQUEST * len(train)).price()
    driver = NearlineDriver(
        DualPriceController(method="exact", initial_price=warm),
        Q_COSTS, budget, WINDOW_S, grace_s=GRACE_S, clock=clock,
    )  # fmt: skip
    replicas = {
        r: OnlineAllocator(
            Q_COSTS,
            budget,
            WINDOW_S,
            share=1 / len(REPLICAS),
            replica_id=r,
            initial_price=warm,
            clock=clock,
        )  # fmt: skip
        for r in REPLICAS
    }
    buffers: dict[str, list[tuple[float, np.ndarray, int, float, bool]]] = {r: [] for r in REPLICAS}
    seq = dict.fromkeys(REPLICAS, 0)
    used: dict[float, dict[str, float]] = {}  # window start -> replica -> share in use

    def poll(r: str) -> None:  # the Serve replica's _nearline_loop, one turn
        by_window: dict[float, list] = {}
        for row in buffers[r]:
            by_window.setdefault(row[0], []).append(row)
        buffers[r].clear()
        for start, rows in by_window.items():
            seq[r] += 1
            driver.report(
                start, np.stack([x[1] for x in rows]), np.array([x[2] for x in rows]),
                sum(x[3] for x in rows), sum(x[4] for x in rows), f"{r}:{seq[r]}",
            )  # fmt: skip
        driver.heartbeat(r)
        state = driver.state()
        replicas[r].set_price(state["dual_price"])
        if adaptive:
            replicas[r].set_shares(own_shares(state["shares"], r))

    n = rng.poisson(RATE_RPS * seconds)
    arrivals = np.sort(rng.uniform(0.0, seconds, n))
    Q = _rewards(rng, n)
    to_a = rng.uniform(size=n)
    slot = np.floor(arrivals / BATCH_S)
    routed_a = to_a < np.array([split_a(float(t)) for t in arrivals])
    next_poll = 0.0
    i = 0
    while i < n:
        k = i  # the batch: the slot's arrivals, each replica's decided at the last one
        while k < n and slot[k] == slot[i]:
            k += 1
        while next_poll <= arrivals[k - 1]:
            clock.t = EPOCH + next_poll
            for r in REPLICAS:
                poll(r)
            driver.tick()
            next_poll += POLL_S
        clock.t = EPOCH + float(arrivals[k - 1])
        for r, mask in (("a", routed_a[i:k]), ("b", ~routed_a[i:k])):
            rows = np.flatnonzero(mask) + i
            if not len(rows):
                continue
            d = replicas[r].decide(Q[rows])
            if r not in used.get(d.window_start_s, {}):
                used.setdefault(d.window_start_s, {})[r] = replicas[r].state()["share"]
            for row, j, g in zip(rows, d.choice, d.guarded, strict=True):
                buffers[r].append((d.window_start_s, Q[row], int(j), float(Q_COSTS[j]), bool(g)))
        i = k
    clock.t = EPOCH + seconds + 1.0
    for r in REPLICAS:
        poll(r)
    clock.t += WINDOW_S + GRACE_S
    driver.tick()
    first = math.floor(EPOCH / WINDOW_S) * WINDOW_S + warmup * WINDOW_S
    last = EPOCH + seconds - WINDOW_S
    records = [w for w in driver.records if first <= w.t_s < last]
    return Run(
        starts=np.array([w.t_s for w in records]),
        spend=np.array([w.spend_flops for w in records]),
        budget=np.array([w.budget_flops for w in records]),
        reward=np.array([w.reward for w in records]),
        shares=[used.get(w.t_s, {}) for w in records],
    )


def _assert_within_budget(run: Run) -> None:
    # The predictive guard keeps each replica within its share of C, past it only by one
    # cheapest chain per request that finds even that chain over (none here: the reserve
    # keeps room); the shares of a window sum to <= 1, so the window total is <= C.
    assert (run.spend <= run.budget * (1 + 1e-9)).all(), run.max_window_utilisation
    for used in run.shares:
        assert sum(used.values()) <= 1 + 1e-12


def test_shared_budget_is_used_with_uneven_routing() -> None:
    """80% of the traffic to one replica. Static halves cap the busy replica at C/2 while
    the quiet one pads its few requests with dear chains (pacing spends its half): about
    as many FLOPs, ~11% fewer clicks."""
    adaptive = _serve(lambda t: 0.8, adaptive=True)
    static = _serve(lambda t: 0.8, adaptive=False)
    _assert_within_budget(adaptive)
    _assert_within_budget(static)
    assert adaptive.utilisation >= 0.95  # measured 0.990 (seed 0)
    # measured 1.123 (seeds 1, 2: 1.123, 1.119); static used 0.978 of the FLOPs
    assert adaptive.reward.sum() >= 1.08 * static.reward.sum()
    assert all(u == {"a": 0.5, "b": 0.5} for u in static.shares)
    a = np.array([u["a"] for u in adaptive.shares])
    assert abs(np.median(a) - 0.8) < 0.02  # the shares follow the traffic


def test_shared_budget_follows_a_flip_in_routing() -> None:
    """The split flips from 80/20 to 20/80 mid-run. A share is fixed when its window
    opens and published two windows ahead, so the flip's window and the next run on the
    old shares (~78% used, the quiet side padding its few requests); from then on the shares follow the new split."""
    split = lambda t: 0.8 if t < FLIP_S else 0.2  # noqa: E731
    adaptive = _serve(split, adaptive=True)
    static = _serve(split, adaptive=False)
    _assert_within_budget(adaptive)
    _assert_within_budget(static)
    flip = int(np.flatnonzero(adaptive.starts <= EPOCH + FLIP_S)[-1])  # window holding it
    util = adaptive.spend / adaptive.budget
    assert util[flip : flip + 2].mean() < 0.9  # the lag: old shares, new traffic (0.78)
    steady = np.r_[0:flip, flip + 3 : len(util)]  # not the flip's window and the 2 after
    spend, budget = adaptive.spend[steady], adaptive.budget[steady]
    assert spend.sum() / budget.sum() >= 0.95  # all but those 3 windows
    # One flip in 60 windows costs about one window's budget: measured 0.982 (seeds 0-2)
    assert adaptive.utilisation >= 0.94
    assert adaptive.reward.sum() >= 1.06 * static.reward.sum()  # measured 1.108-1.109
    assert adaptive.shares[-1]["b"] == pytest.approx(0.8, abs=0.03)


def test_budget_shares_are_proportional_with_a_floor() -> None:
    assert budget_shares({}) == {}
    shares = budget_shares({"a": 80.0, "b": 20.0})
    assert shares == pytest.approx({"a": 0.8, "b": 0.2})
    assert budget_shares({"a": 0.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}  # no traffic: equal
    # an idle replica keeps SHARE_FLOOR / n, the rest goes by traffic
    least = SHARE_FLOOR / 3
    shares = budget_shares({"a": 100.0, "b": 0.0, "c": 0.0})
    assert shares == pytest.approx({"a": 1 - 2 * least, "b": least, "c": least})
    # water-filling: raising b to the floor pushes c (just above it at first) below it
    shares = budget_shares({"a": 1000.0, "b": 1.0, "c": 35.0})
    assert shares["b"] == shares["c"] == pytest.approx(least)
    assert math.fsum(shares.values()) == pytest.approx(1.0, abs=1e-15)
    assert budget_shares({"a": 1.0, "b": 3.0}, floor=0.0) == pytest.approx({"a": 0.25, "b": 0.75})
    with pytest.raises(ValueError):
        budget_shares({"a": 1.0}, floor=1.5)


def _driver(clock: FakeClock) -> NearlineDriver:
    controller = DualPriceController(step_size=0.1, initial_price=0.01)
    return NearlineDriver(controller, np.array([1.0, 10.0]), ComputeBudget("flops", 10.0), 1.0,
                          grace_s=0.2, clock=clock)  # fmt: skip


def _report(drv: NearlineDriver, start: float, n: int, **ids: str) -> None:
    drv.report(start, np.ones((n, 2)), np.zeros(n, dtype=np.int64), float(n), **ids)


def test_driver_publishes_shares_two_windows_ahead() -> None:
    clock = FakeClock(100.5)
    drv = _driver(clock)
    _report(drv, 100.0, 6, report_id="a:1")  # replica id from the report id
    _report(drv, 100.0, 2, report_id="x", replica_id="b")
    _report(drv, 100.0, 50)  # anonymous: counts for λ, not for shares
    assert drv.state()["shares"] == {}  # nothing published before a window closed
    clock.t = 101.25  # window 100 closed: shares of window 102 (opens in 0.75 s)
    drv.tick()
    assert drv.state()["shares"] == {"102.0": pytest.approx({"a": 0.75, "b": 0.25})}
    assert drv.records[-1].requests == 58
    assert drv.replica_requests[-1] == (100.0, {"a": 6, "b": 2})
    _report(drv, 101.0, 2, report_id="a:2")  # b: no traffic in window 101, but it polls
    drv.heartbeat("b")
    clock.t = 102.25
    drv.tick()
    shares = drv.state()["shares"]
    assert list(shares) == ["102.0", "103.0"]  # the open window's and the next one's
    traffic_a, traffic_b = 0.8 * 2 + 0.2 * 6, 0.2 * 2  # EMA, SHARE_EMA = 0.8
    assert shares["103.0"]["b"] == pytest.approx(traffic_b / (traffic_a + traffic_b))
    assert own_shares(shares, "b") == {102.0: 0.25, 103.0: shares["103.0"]["b"]}
    assert own_shares(shares, "nobody") == {}
    # b silent (no reports, no polls) for FORGET_WINDOWS windows: forgotten
    for k in range(FORGET_WINDOWS + 1):
        drv.heartbeat("a")
        clock.t = 103.25 + k
        drv.tick()
    assert drv.state()["shares"][str(drv.state()["last_closed_s"] + 2)] == {"a": 1.0}
    assert "b" not in drv.replica_traffic


def test_a_late_close_publishes_no_shares() -> None:
    """Closing windows long after they ended (a driver back from an outage) must not
    publish shares for a window about to open: some replicas could miss them."""
    clock = FakeClock(100.5)
    drv = _driver(clock)
    _report(drv, 100.0, 4, report_id="a:1")
    clock.t = 101.9  # window 100 closes 0.9 s late: window 102 opens in 0.1 s
    drv.tick()
    assert drv.state()["shares"] == {}
    assert drv.replica_traffic == {"a": 4.0}  # the traffic is learned all the same


def test_online_allocator_takes_the_share_of_each_window_when_it_opens() -> None:
    clock = FakeClock(1000.0)
    alloc = OnlineAllocator(np.array([1.0, 5.0]), ComputeBudget("flops", 10.0), 2.0,
                            share=0.5, replica_id="a", clock=clock)  # fmt: skip
    alloc.set_shares({1000.0: 0.8, 1002.0: 0.3})
    state = alloc.state()
    assert (state["share"], state["static_share"], state["budget_flops"]) == (0.8, 0.5, 16.0)
    assert state["replica_id"] == "a"
    alloc.set_shares({1000.0: 0.1, 1002.0: 0.3})  # the open window keeps its share
    assert alloc.state()["share"] == 0.8
    clock.t = 1002.0 + 1e-6
    assert alloc.state()["share"] == 0.3
    clock.t = 1004.5  # nothing published: the static share
    assert (alloc.state()["share"], alloc.state()["budget_flops"]) == (0.5, 10.0)
    # keys that are float-rounded window starts still match their window
    alloc.set_shares({1006.0 + 1e-9: 0.7})
    clock.t = 1006.5
    assert alloc.state()["share"] == 0.7
    for bad in (0.0, 1.5, math.nan):
        with pytest.raises(ValueError):
            alloc.set_shares({1008.0: bad})


def test_shares_survive_a_driver_restart() -> None:
    clock = FakeClock(100.5)
    drv = _driver(clock)
    for k in range(3):
        _report(drv, 100.0 + k, 3, report_id=f"a:{k}")
        _report(drv, 100.0 + k, 1, report_id=f"b:{k}")
        clock.t = 101.25 + k
        drv.tick()
    doc = json.loads(json.dumps(drv.checkpoint()))  # what the actor writes to disk
    clock.t += 0.3  # restarted a little later, before the next close
    again = _driver(clock)
    again.restore(doc)
    assert again.shares() == drv.shares()
    assert again.replica_traffic == drv.replica_traffic
    assert again.state()["shares"] == drv.state()["shares"]
    # the learned traffic carries on: both close the next window the same way
    for d in (drv, again):
        _report(d, 103.0, 1, report_id="a:9")
        _report(d, 103.0, 3, report_id="b:9")
    clock.t = 104.25
    drv.tick()
    again.tick()
    assert again.shares() == drv.shares()
    # a checkpoint from long ago: every replica it knew gets FORGET_WINDOWS windows to poll
    clock.t = 200.5
    late = _driver(clock)
    late.restore(doc)
    late.tick()  # catches up 97 windows without a report or a poll
    assert set(late.replica_traffic) == {"a", "b"}


if __name__ == "__main__":  # the numbers quoted in docs/serving.md
    for name, split in (("80/20", lambda t: 0.8), ("flip", lambda t: 0.8 if t < 60 else 0.2)):
        for adaptive in (False, True):
            run = _serve(split, adaptive, 120.0, 3)
            print(f"{name:>6} {'adaptive' if adaptive else 'static':>8}: "
                  f"utilisation {run.utilisation:.4f}, "
                  f"max window {run.max_window_utilisation:.4f}, windows {len(run.spend)}")  # fmt: skip
