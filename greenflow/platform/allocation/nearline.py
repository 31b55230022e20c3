"""The nearline half of Algorithm 1: per-window reports in, the next dual price out.

Allocator replicas report, for each wall-clock window (``online.window_start``), the
estimated rewards Q_i· of the requests they served, the chains chosen and the FLOPs spent.
When a window has ended (plus ``grace_s`` for the last reports in flight), the driver
closes it: its record (spend, budget, λ used, requests) is kept and λ_{t+1} is computed
from its samples and the next window's budget by the ``DualPriceController`` (gradient
steps with the tuned step size, or the exact solve). With an ``arrivals_forecast`` (the
expected requests of a window, e.g. from a known traffic profile or yesterday's curve),
λ_{t+1} is solved for that many requests like the samples instead of for the last
window's count: after a spike the price falls as soon as the traffic is forecast to. Reports that arrive after their
window closed still count in its record (spend is never hidden), but no longer move λ.

**Shared budget.** With several allocator replicas each guards its own share of the
window budget. The driver learns each replica's traffic (requests per window, from the
replica id of its reports; ``heartbeat`` marks a replica seen without traffic) and, when
window t closes, publishes the shares of window t+2 (``shares()``; t+2 opens a window
minus ``grace_s`` later, so replicas polling every 0.1 s have them before it opens):
proportional to an exponential moving average of each replica's requests per window
(weight ``SHARE_EMA`` on the newest), with a floor of ``SHARE_FLOOR`` / n for each of the
n replicas seen in the last ``FORGET_WINDOWS`` windows (a replica whose traffic rises is
not starved), summing to exactly 1. Shares are keyed by window, so the shares the replicas
use in one window always sum to <= 1, whenever every replica uses the published shares. A
replica uses its static default (1/N) for a window without published shares: before the
driver has seen traffic, and while it is down, when all replicas fall back together.
Anonymous reports (no replica id) count for λ but not for shares.

The whole state (λ, the controller's learned attributes, the recent records, the replicas'
traffic and shares) round-trips through a JSON-able checkpoint, so a restarted driver
resumes where it stopped; windows missed while it was down are recorded with whatever
spend the replicas report for them.

Units: Q clicks, q and budgets FLOPs, λ clicks/FLOP, times Unix seconds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.online import window_start
from greenflow.platform.allocation.primal_dual import Clock, DualPriceController, WindowRecord

MAX_RECORDS = 3600  # closed-window records kept (an hour of 1 s windows)
MAX_CATCH_UP = 600  # windows closed one by one after a long gap; older ones are skipped
MAX_REPORT_IDS = 100_000  # recent report ids remembered to drop duplicates
# Weight of the newest closed window in a replica's traffic estimate (requests/window, an
# exponential moving average). High: a shift of traffic between replicas is followed
# within a window or two of the (unavoidable) two-window publication lag; a window's
# Poisson noise in the split matters less than that lag at serving rates.
SHARE_EMA = 0.8
SHARE_FLOOR = 0.1  # fraction of the budget split equally among the replicas seen
FORGET_WINDOWS = 10  # a replica neither reporting nor polling this many windows is forgotten

# (window start s, window length s) -> expected requests in that window; None: no forecast
ArrivalsForecast = Callable[[float, float], float | None]


@dataclass
class _Window:
    """What the replicas reported for one window so far."""

    Q: list[np.ndarray] = field(default_factory=list)  # (n, J) blocks
    spend_flops: float = 0.0
    requests: int = 0
    guard_requests: int = 0
    reward: float = 0.0  # Σ Q of the chosen chains, estimated clicks
    replica_requests: dict[str, int] = field(default_factory=dict)  # identified replicas


def budget_shares(traffic: dict[str, float], floor: float = SHARE_FLOOR) -> dict[str, float]:
    """Each replica's fraction of the window budget from its traffic (requests/window).

    Proportional to ``traffic``, except that every replica gets at least ``floor`` / n
    (n replicas): those below it are raised to it and the others share the rest in
    proportion (water-filling), so the shares sum to 1. No traffic at all: equal shares.
    """
    if not 0 <= floor <= 1:
        raise ValueError(f"share floor must be in [0, 1], got {floor}")
    if not traffic:
        return {}
    least = floor / len(traffic)
    floored: set[str] = set()
    while True:
        free = [r for r in traffic if r not in floored]
        rest = 1.0 - least * len(floored)
        total = sum(max(traffic[r], 0.0) for r in free)
        if total <= 0:
            shares = {r: rest / len(free) for r in free}
        else:
            shares = {r: rest * max(traffic[r], 0.0) / total for r in free}
        low = {r for r, s in shares.items() if s < least}
        if not low:
            break
        floored |= low  # at most n rounds: each adds a replica
    shares.update(dict.fromkeys(floored, least))
    return shares


def nearline_controller(
    method: Literal["exact", "gradient"],
    step_size_rel: float,
    smoothing: float,
    fit_price: float,
    price: float | None = None,
) -> DualPriceController:
    """The driver's controller: gradient steps of η = ``step_size_rel`` × ``fit_price``
    (clicks/FLOP) from λ = ``price`` (default ``fit_price``), or the exact re-solve each
    window (also when there is no warm-start price to scale η by); ``smoothing`` either way."""
    gradient = method == "gradient" and fit_price > 0
    return DualPriceController(
        step_size=step_size_rel * fit_price if gradient else None,
        method="gradient" if gradient else "exact",
        smoothing=smoothing,
        initial_price=fit_price if price is None else price,
    )


class NearlineDriver:
    """Collects window reports and updates λ; see the module docstring."""

    def __init__(
        self,
        controller: DualPriceController,
        q: np.ndarray,
        budget: ComputeBudget,
        window_s: float,
        *,
        grace_s: float = 0.2,
        clock: Clock = time.time,
        arrivals_forecast: ArrivalsForecast | None = None,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        if not 0 <= grace_s < window_s:
            raise ValueError(f"grace_s must be in [0, window_s), got {grace_s}")
        self.controller = controller
        self.q = np.asarray(q, dtype=np.float64)
        self.budget = budget
        self.window_s = float(window_s)
        self.grace_s = float(grace_s)
        self.clock = clock
        self.arrivals_forecast = arrivals_forecast
        self.records: deque[WindowRecord] = deque(maxlen=MAX_RECORDS)
        self._open: dict[float, _Window] = {}
        self._price_in: dict[float, float] = {}  # λ published when a window opened
        self._last_closed = window_start(clock(), self.window_s) - self.window_s
        self.late_reports = 0
        self.duplicate_reports = 0
        self._report_ids: OrderedDict[str, None] = OrderedDict()
        # Shared budget: requests per window (EMA) and the last window each replica was
        # seen in, by replica id; shares published by window start (s).
        self.replica_traffic: dict[str, float] = {}
        self._replica_seen: dict[str, float] = {}
        self._shares: dict[float, dict[str, float]] = {}
        # per closed window (start s): requests of each identified replica
        self.replica_requests: deque[tuple[float, dict[str, int]]] = deque(maxlen=FORGET_WINDOWS)

    def price(self) -> float:
        return self.controller.price()

    def window_budget_flops(self, start_s: float) -> float:
        return self.budget.window_flops(start_s, self.window_s)

    def report(
        self,
        window_start_s: float,
        Q: np.ndarray,
        choice: np.ndarray,
        spend_flops: float,
        guard_requests: int = 0,
        report_id: str | None = None,
        replica_id: str | None = None,
    ) -> bool:
        """One replica's requests of one window: Q (n, J), chains (n,), FLOPs spent.

        ``report_id`` makes delivery idempotent: a report seen before (a Ray retry, or a
        replica re-sending after a driver restart) is dropped; returns False then.
        ``replica_id`` names the sender for the shared budget; without it, the part of a
        ``"<replica>:<seq>"`` report id before the colon, else an anonymous replica.
        """
        if replica_id is None and report_id is not None and ":" in report_id:
            replica_id = report_id.split(":", 1)[0]
        if report_id is not None:
            if report_id in self._report_ids:
                self.duplicate_reports += 1
                return False
            self._report_ids[report_id] = None
            if len(self._report_ids) > MAX_REPORT_IDS:
                self._report_ids.popitem(last=False)
        Q = np.asarray(Q, dtype=np.float64).reshape(-1, len(self.q))
        choice = np.asarray(choice, dtype=np.int64)
        if choice.shape != (Q.shape[0],):
            raise ValueError(f"choice must be ({Q.shape[0]},), got {choice.shape}")
        start = window_start(window_start_s + 1e-9 * self.window_s, self.window_s)
        reward = float(Q[np.arange(len(choice)), choice].sum()) if len(choice) else 0.0
        if replica_id is not None:
            self.heartbeat(replica_id)
        if start <= self._last_closed:
            self._add_late(start, Q.shape[0], spend_flops, guard_requests, reward)
            return True
        w = self._open.setdefault(start, _Window())
        if replica_id is not None:
            w.replica_requests[replica_id] = w.replica_requests.get(replica_id, 0) + Q.shape[0]
        self._price_in.setdefault(start, self.price())
        w.Q.append(Q)
        w.spend_flops += float(spend_flops)
        w.requests += Q.shape[0]
        w.guard_requests += int(guard_requests)
        w.reward += reward
        return True

    def heartbeat(self, replica_id: str) -> None:
        """Mark a replica alive now (it polled), so it keeps a share without traffic."""
        now_start = window_start(self.clock(), self.window_s)
        self._replica_seen[replica_id] = max(
            self._replica_seen.get(replica_id, now_start), now_start
        )

    def shares(self) -> dict[float, dict[str, float]]:
        """Published budget shares: window start (s) -> replica id -> fraction of C."""
        return {start: dict(s) for start, s in self._shares.items()}

    def _update_shares(self, start: float, w: _Window) -> None:
        """Window ``start`` closed: learn its traffic, publish the shares of ``start`` + 2w.

        Not published when that window opens in less than (w − grace) / 2 (a late close,
        e.g. catching up after an outage): replicas polling at least that often all have
        the shares before it opens, or none of them uses any (they fall back together).
        """
        self.replica_requests.append((start, dict(w.replica_requests)))
        for replica in set(self.replica_traffic) | set(w.replica_requests):
            n = float(w.replica_requests.get(replica, 0))
            old = self.replica_traffic.get(replica)
            self.replica_traffic[replica] = (
                n if old is None else SHARE_EMA * n + (1 - SHARE_EMA) * old
            )
        for replica, seen in list(self._replica_seen.items()):
            if seen < start - FORGET_WINDOWS * self.window_s:
                del self._replica_seen[replica]
        for replica in list(self.replica_traffic):
            if replica not in self._replica_seen:
                del self.replica_traffic[replica]
        traffic = {r: self.replica_traffic.get(r, 0.0) for r in self._replica_seen}
        self._shares = {t: s for t, s in self._shares.items() if t > start + 1e-9 * self.window_s}
        target = start + 2 * self.window_s
        lead_s = target - self.clock()
        if traffic and lead_s >= (self.window_s - self.grace_s) / 2:
            self._shares[target] = budget_shares(traffic)

    def _add_late(self, start: float, n: int, spend: float, guarded: int, reward: float) -> None:
        self.late_reports += 1
        for i, r in enumerate(self.records):
            if abs(r.t_s - start) < 1e-6 * self.window_s:
                spend_flops = r.spend_flops + spend
                self.records[i] = dataclasses.replace(
                    r,
                    spend_flops=spend_flops,
                    requests=r.requests + n,
                    guard_requests=r.guard_requests + guarded,
                    overspend_flops=max(0.0, spend_flops - r.budget_flops),
                    reward=r.reward + reward,
                )
                return

    def tick(self) -> list[WindowRecord]:
        """Close every window that ended ``grace_s`` ago or earlier; their records."""
        now = self.clock()
        closable = window_start(now - self.grace_s, self.window_s) - self.window_s
        if closable - self._last_closed > MAX_CATCH_UP * self.window_s:
            self._last_closed = closable - MAX_CATCH_UP * self.window_s
        closed = []
        while self._last_closed + self.window_s <= closable + 1e-9 * self.window_s:
            start = self._last_closed + self.window_s
            # A window closed over a window late (a restarted or stalled driver catching
            # up) holds only the reports that reached it so far: the rest arrive late.
            # Its record counts them all, but λ does not learn from a part of a window.
            late = closable - start >= self.window_s * (1 - 1e-9)
            closed.append(self._close(start, learn=not late))
            self._last_closed = start
        return closed

    def _close(self, start: float, learn: bool = True) -> WindowRecord:
        w = self._open.pop(start, _Window())
        budget = self.window_budget_flops(start)
        record = WindowRecord(
            t_s=start,
            spend_flops=w.spend_flops,
            budget_flops=budget,
            dual_price=self._price_in.pop(start, self.price()),
            requests=w.requests,
            guard_requests=w.guard_requests,
            overspend_flops=max(0.0, w.spend_flops - budget),
            reward=w.reward,
        )
        self.records.append(record)
        self._update_shares(start, w)
        if w.Q and learn:
            # λ_{t+1} from this window's samples and the next window's budget.
            samples = np.concatenate(w.Q)
            next_start = start + self.window_s
            self.controller.update(samples, self.q, self._solve_budget(next_start, len(samples)))
        return record

    def _solve_budget(self, start: float, samples: int) -> float:
        """The budget the next λ is solved for on ``samples`` requests: the window's budget,
        rescaled to the sample count when the window's arrivals are forecast (samples drawn
        like the forecast requests: each gets budget / forecast FLOPs on average)."""
        budget = self.window_budget_flops(start)
        if self.arrivals_forecast is None:
            return budget
        expected = self.arrivals_forecast(start, self.window_s)
        return budget * samples / expected if expected is not None and expected > 0 else budget

    def state(self) -> dict[str, Any]:
        now = self.clock()
        start = window_start(now, self.window_s)
        w = self._open.get(start, _Window())
        budget = self.window_budget_flops(start)
        return {
            "dual_price": self.price(),
            "window_s": self.window_s,
            "window_start_s": start,
            "spend_flops": w.spend_flops,
            "budget_flops": budget,
            "utilisation": w.spend_flops / budget if budget > 0 else math.nan,
            "budget_flops_per_s": self.budget.flops_per_s(start),
            "windows_closed": len(self.records),
            "last_closed_s": self._last_closed,
            "late_reports": self.late_reports,
            "duplicate_reports": self.duplicate_reports,
            # JSON-able: window start (s) as a string -> replica id -> fraction of C
            "shares": {str(t): s for t, s in self.shares().items()},
            "replica_traffic": dict(self.replica_traffic),  # requests per window, EMA
        }

    def windows(self, since_s: float = -math.inf) -> list[dict[str, Any]]:
        """Closed-window records starting at or after ``since_s``, as loadtest.json dicts."""
        return [r.as_dict() for r in self.records if r.t_s >= since_s]

    # -- checkpoint ------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        learned = {k: v for k, v in vars(self.controller).items() if k.endswith("_")}
        return {
            "dual_price": self.price(),
            "controller": {
                k: v.item() if isinstance(v, np.generic) else v for k, v in learned.items()
            },
            "last_closed_s": self._last_closed,
            "records": [dataclasses.asdict(r) for r in self.records],
            "saved_at_s": self.clock(),
            "replica_traffic": dict(self.replica_traffic),
            "replica_seen_s": dict(self._replica_seen),
            "shares": {str(t): dict(s) for t, s in self._shares.items()},
        }

    def restore(self, doc: dict[str, Any]) -> None:
        """Resume from ``checkpoint()``'s output: λ, controller state, records and shares.

        Every replica the checkpoint knew counts as seen now: a restarted driver has heard
        from nobody yet, and gives them ``FORGET_WINDOWS`` windows to poll again.
        """
        for key, value in doc.get("controller", {}).items():
            if key.endswith("_"):
                setattr(self.controller, key, value)
        self.controller.dual_price_ = float(doc["dual_price"])
        self.records.extend(WindowRecord(**r) for r in doc.get("records", []))
        # Windows since the checkpoint are closed one by one by the next ticks, with the
        # spend the replicas (re)send for them.
        self._last_closed = float(doc["last_closed_s"])
        now_start = window_start(self.clock(), self.window_s)
        self.replica_traffic = {str(r): float(n) for r, n in doc.get("replica_traffic", {}).items()}
        self._replica_seen = {str(r): max(float(t), now_start)
                              for r, t in doc.get("replica_seen_s", {}).items()}  # fmt: skip
        self._shares = {float(t): {str(r): float(x) for r, x in s.items()}
                        for t, s in doc.get("shares", {}).items()}  # fmt: skip
