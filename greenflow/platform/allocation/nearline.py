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

The whole state (λ, the controller's learned attributes, the recent records) round-trips
through a JSON-able checkpoint, so a restarted driver resumes where it stopped; windows
missed while it was down are recorded with whatever spend the replicas report for them.

Units: Q clicks, q and budgets FLOPs, λ clicks/FLOP, times Unix seconds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.online import window_start
from greenflow.platform.allocation.primal_dual import Clock, DualPriceController, WindowRecord

MAX_RECORDS = 3600  # closed-window records kept (an hour of 1 s windows)
MAX_CATCH_UP = 600  # windows closed one by one after a long gap; older ones are skipped
MAX_REPORT_IDS = 100_000  # recent report ids remembered to drop duplicates

# (window start s, window length s) -> expected requests in that window
ArrivalsForecast = Callable[[float, float], float]


@dataclass
class _Window:
    """What the replicas reported for one window so far."""

    Q: list[np.ndarray] = field(default_factory=list)  # (n, J) blocks
    spend_flops: float = 0.0
    requests: int = 0
    guard_requests: int = 0
    reward: float = 0.0  # Σ Q of the chosen chains, estimated clicks


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
    ) -> bool:
        """One replica's requests of one window: Q (n, J), chains (n,), FLOPs spent.

        ``report_id`` makes delivery idempotent: a report seen before (a Ray retry, or a
        replica re-sending after a driver restart) is dropped; returns False then.
        """
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
        if start <= self._last_closed:
            self._add_late(start, Q.shape[0], spend_flops, guard_requests, reward)
            return True
        w = self._open.setdefault(start, _Window())
        self._price_in.setdefault(start, self.price())
        w.Q.append(Q)
        w.spend_flops += float(spend_flops)
        w.requests += Q.shape[0]
        w.guard_requests += int(guard_requests)
        w.reward += reward
        return True

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
            closed.append(self._close(start))
            self._last_closed = start
        return closed

    def _close(self, start: float) -> WindowRecord:
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
        if w.Q:
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
        expected = float(self.arrivals_forecast(start, self.window_s))
        return budget * samples / expected if expected > 0 else budget

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
        }

    def restore(self, doc: dict[str, Any]) -> None:
        """Resume from ``checkpoint()``'s output: λ, controller state and records."""
        for key, value in doc.get("controller", {}).items():
            if key.endswith("_"):
                setattr(self.controller, key, value)
        self.controller.dual_price_ = float(doc["dual_price"])
        self.records.extend(WindowRecord(**r) for r in doc.get("records", []))
        # Windows since the checkpoint are closed one by one by the next ticks, with the
        # spend the replicas (re)send for them.
        self._last_closed = float(doc["last_closed_s"])
