"""The online half of Algorithm 1 inside one allocator replica: policy, cached λ, guard.

Each arriving batch of requests gets j*(i, λ) = argmax_j (Q_ij − λ q_j) with the replica's
locally cached dual price (``policy="greenflow"``), or one fixed chain (EQUAL and
``fixed:<chain>`` baselines, served by the same app for a fair comparison). A predictive
``SpendGuard`` then keeps the window's spend within this replica's share of the window
budget: the same safety net for every policy.

Windows are aligned on the wall clock (window t = [t·w, (t+1)·w) in Unix seconds), so every
replica and the nearline driver agree on window boundaries without talking to each other.
With several replicas, the driver publishes each replica's share of every coming window's
budget from the replicas' traffic (``set_shares``; see ``nearline``); a replica uses its
static ``share`` (1/N) for a window without one.
Time comes from an injected clock. Units: Q clicks, q FLOPs, λ clicks/FLOP, times seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.decision import as_costs, as_rewards, choose
from greenflow.platform.allocation.pacing import WindowPacer
from greenflow.platform.allocation.primal_dual import Clock, SpendGuard

# Arrivals over the last RATE_HORIZON_S also set the expected rate: a spike that began in
# the previous window's tail is known at the start of the next one.
RATE_HORIZON_S = 0.5


def window_start(now_s: float, window_s: float) -> float:
    """Start (Unix s) of the wall-clock-aligned window holding ``now_s``."""
    return math.floor(now_s / window_s) * window_s


def own_shares(published: Mapping[str, Mapping[str, float]], replica_id: str) -> dict[float, float]:
    """One replica's entries of the driver's ``"shares"`` (window start as a string ->
    replica id -> share): window start (s) -> this replica's fraction of the budget."""
    return {float(t): float(s[replica_id]) for t, s in published.items() if replica_id in s}


@dataclass(frozen=True)
class Decision:
    """The chains chosen for a batch and how."""

    choice: np.ndarray  # (N,) chain indices
    guarded: np.ndarray  # (N,) bool: the guard changed the policy's chain
    dual_price: float  # λ used, clicks/FLOP
    window_start_s: float  # Unix s


class OnlineAllocator:
    """Decisions of one replica. ``fixed_chain`` None means GreenFlow (argmax Q − λq).

    q: (J,) FLOPs per chain. ``share`` is this replica's static fraction of the window
    budget (1 / number of allocator replicas), used for every window the driver has not
    published a share for (``set_shares``). ``replica_id`` names the replica in its
    reports and state. ``guard_tolerance`` ε lets a window reach
    C (1 + ε) before the guard acts. ``reserve_sigmas``: the guard keeps room for the
    expected remaining arrivals plus this many standard deviations (None: no reserve).
    ``predictive=False`` uses the paper's reactive guard instead (for comparisons).
    """

    def __init__(
        self,
        q: np.ndarray,
        budget: ComputeBudget,
        window_s: float,
        *,
        fixed_chain: int | None = None,
        share: float = 1.0,
        replica_id: str | None = None,
        guard_tolerance: float = 0.0,
        initial_price: float = 0.0,
        reserve_sigmas: float | None = 3.0,
        predictive: bool = True,
        pacing: bool = True,
        clock: Clock = time.time,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.q = as_costs(q, (1, len(q)))
        if fixed_chain is not None and not 0 <= fixed_chain < len(self.q):
            raise ValueError(f"fixed chain {fixed_chain} outside 0..{len(self.q) - 1}")
        self.budget = budget
        self.window_s = float(window_s)
        self.fixed_chain = fixed_chain
        self.share = share
        self.replica_id = replica_id
        self._shares: dict[int, float] = {}  # window index (start / w) -> published share
        self._share_in_use = share  # the open window's
        self.guard_tolerance = guard_tolerance
        self.dual_price = float(initial_price)
        self.reserve_sigmas = reserve_sigmas
        self.predictive = predictive
        self._pacer = WindowPacer(self.q) if pacing and fixed_chain is None else None
        self.clock = clock
        self._window_start = -math.inf
        self._guard: SpendGuard | None = None
        self._last_rate_rps = 0.0  # arrivals per second seen in the previous window
        self._recent: deque[float] = deque()  # arrival times within RATE_HORIZON_S

    def set_price(self, dual_price: float) -> None:
        """Cache λ (clicks/FLOP) published by the nearline driver."""
        if not (math.isfinite(dual_price) and dual_price >= 0):
            raise ValueError(f"dual price must be finite and >= 0, got {dual_price}")
        self.dual_price = float(dual_price)

    def set_shares(self, shares: Mapping[float, float]) -> None:
        """Cache this replica's published shares: window start (s) -> fraction of C.

        Replaces the previous ones. A share is taken when its window opens, so the open
        window keeps the share it opened with; windows without one get the static share.
        """
        for start, x in shares.items():
            if not (math.isfinite(x) and 0 < x <= 1):
                raise ValueError(f"share of window {start} must be in (0, 1], got {x}")
        self._shares = {round(t / self.window_s): float(x) for t, x in shares.items()}

    def window_share(self, start_s: float) -> float:
        """The share this replica would use for the window starting at ``start_s``."""
        return self._shares.get(round(start_s / self.window_s), self.share)

    def _current_guard(self) -> SpendGuard:
        start = window_start(self.clock(), self.window_s)
        if start != self._window_start or self._guard is None:
            if self._guard is not None and start - self._window_start == self.window_s:
                self._last_rate_rps = self._guard.requests / self.window_s
            elif self._guard is not None:  # a gap of empty windows: no recent traffic
                self._last_rate_rps = 0.0
            self._share_in_use = self.window_share(start)
            budget = self.budget.window_flops(start, self.window_s) * self._share_in_use
            self._guard = SpendGuard(budget, self.guard_tolerance, predictive=self.predictive)
            self._window_start = start
        return self._guard

    def decide(self, Q: np.ndarray) -> Decision:
        """Chains for requests Q (N, J) in arrival order, guard applied."""
        Q = as_rewards(Q)
        if Q.shape[1] != len(self.q):
            raise ValueError(f"Q has {Q.shape[1]} chains, costs {len(self.q)}")
        guard = self._current_guard()
        now = self.clock()
        self._recent.extend([now] * Q.shape[0])
        while self._recent and self._recent[0] <= now - RATE_HORIZON_S:
            self._recent.popleft()
        lam = self.dual_price
        if self.fixed_chain is None:
            if self._pacer is not None:
                self._pacer.observe(Q)
                lam = self._paced_price(guard, Q.shape[0], lam)
            wanted = choose(Q, self.q, lam)
        else:
            wanted = np.full(Q.shape[0], self.fixed_chain, dtype=np.int64)
        reserve = self._reserve_flops(self._expected_arrivals(guard, Q.shape[0]))
        choice = guard.admit(Q, self.q, wanted, lam, reserve)
        return Decision(choice, choice != wanted, lam, self._window_start)

    def _expected_arrivals(self, guard: SpendGuard, arriving: int) -> float:
        """Requests still expected in this window after the ``arriving`` batch, high side
        (for the guard's reserve).

        Arrivals are taken as Poisson at the fastest of the previous window's rate, this
        window's so far and the last ``RATE_HORIZON_S``'s (this replica's own traffic).
        """
        now = self.clock()
        elapsed = now - self._window_start
        rate = self._last_rate_rps
        if elapsed > 0.1 * self.window_s:  # too early in the window for its own rate
            rate = max(rate, (guard.requests + arriving) / elapsed)
        rate = max(rate, len(self._recent) / RATE_HORIZON_S)
        return rate * max(0.0, self._window_start + self.window_s - now)

    def _reserve_flops(self, expected: float) -> float:
        """FLOPs kept for the ``expected`` requests still to come at the cheapest chain.

        The reserve covers their mean plus ``reserve_sigmas`` standard deviations (3: ~99.9%
        of windows). Without it a window spends its budget on its first requests, and its
        last ones overflow it even at the cheapest chain.
        """
        if self.reserve_sigmas is None:
            return 0.0
        return (expected + self.reserve_sigmas * math.sqrt(expected)) * float(self.q.min())

    def _paced_price(self, guard: SpendGuard, arriving: int, fallback: float) -> float:
        """λ at which the ``arriving`` batch and the requests expected after it spend the
        window's free budget (``pacing``); ``fallback`` until the pacer has enough rows.

        The expected count is the mean rate's: this window's arrivals so far plus one window
        at the previous window's rate, over the time elapsed plus one window (a spike in the
        last ``RATE_HORIZON_S`` overrides it), times the time left.
        """
        assert self._pacer is not None
        now = self.clock()
        elapsed = max(0.0, now - self._window_start)
        seen = guard.requests + arriving + self._last_rate_rps * self.window_s
        rate = max(seen / (elapsed + self.window_s), len(self._recent) / RATE_HORIZON_S)
        later = rate * max(0.0, self._window_start + self.window_s - now)
        free = guard.budget_flops - guard.spend_flops  # the budget, not the guard's C (1 + ε)
        paced = self._pacer.price(free, arriving, later, self.reserve_sigmas or 0.0)
        return fallback if paced is None else paced

    def refund(self, flops: float, window_start_s: float) -> bool:
        """Correct the guard's spend by ``flops`` the request admitted in the window starting
        at ``window_start_s`` did not spend (negative: spent beyond its chain's cost, e.g. a
        fallback after a failed stage). Returns whether it was applied.

        Only the admitting window's guard is corrected, and only while it is open: a request
        that finishes after its window closed belongs to that window's spend, and returning
        its FLOPs to a later window would let that one spend beyond its budget.
        """
        if self._guard is None or window_start_s != self._window_start:
            return False
        self._guard.spend_flops = max(0.0, self._guard.spend_flops - flops)
        return True

    def state(self) -> dict[str, Any]:
        """λ, the open window and its spend, budget, share and utilisation (this replica)."""
        guard = self._current_guard()
        budget = guard.budget_flops
        return {
            "replica_id": self.replica_id,
            "share": self._share_in_use,  # of the open window's budget
            "static_share": self.share,
            "dual_price": self.dual_price,
            "window_s": self.window_s,
            "window_start_s": self._window_start,
            "spend_flops": guard.spend_flops,
            "budget_flops": budget,
            "utilisation": guard.spend_flops / budget,  # ComputeBudget is > 0
            "guard_requests": guard.guard_requests,
        }
