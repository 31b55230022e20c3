"""Request traffic shared by the offline replay (``greenflow tune step-size``) and the
online load test (``greenflow loadtest``): a seeded Poisson arrival process with a rate
spike, a seeded request order, and the FLOPs budget rate derived from the base rate.

``TrafficProfile``: ``base_rate`` req/s, then ``spike_factor`` × that for the middle
segment (thirds of the timeline by default), then ``base_rate`` again. Budget:
``budget_flops_per_s = budget_fraction × q.max() × base_rate``, so during the spike the
same FLOPs per second must cover ``spike_factor`` times the requests. A window overspends
when its spend passes its budget × ``OVER_BUDGET_SLACK``.

Pure numpy: no Ray, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

OVER_BUDGET_SLACK = 1.01  # a window "overspends" when spend > budget × this

Phase = Literal["steady", "spike"]


@dataclass(frozen=True)
class TrafficProfile:
    """Arrival-rate profile of the replay: base rate, a spike segment, base rate again."""

    base_rate: float = 20.0  # requests per second
    duration_s: float = 300.0  # 30 windows of the longest window length (10 s)
    spike_factor: float = 3.0
    spike_start: float = 1 / 3  # fraction of the timeline
    spike_end: float = 2 / 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.base_rate > 0 and self.duration_s > 0 and self.spike_factor > 0):
            raise ValueError("base_rate, duration_s and spike_factor must be positive")
        if not 0.0 <= self.spike_start <= self.spike_end <= 1.0:
            raise ValueError("need 0 <= spike_start <= spike_end <= 1")

    def rate(self, t_s: np.ndarray) -> np.ndarray:
        """Requests per second at time t (s)."""
        t = np.asarray(t_s, dtype=np.float64)
        spike = (t >= self.spike_start * self.duration_s) & (t < self.spike_end * self.duration_s)
        return np.where(spike, self.base_rate * self.spike_factor, self.base_rate)

    def spike_interval_s(self) -> tuple[float, float]:
        """(start, end) of the spike segment, seconds from the start of the traffic."""
        return self.spike_start * self.duration_s, self.spike_end * self.duration_s

    def phase(self, t_s: float) -> Phase:
        """The phase at t (s): "spike" inside the spike segment [start, end), else "steady"."""
        start, end = self.spike_interval_s()
        # A spike_factor of 1 is no spike at all, whatever the segment says.
        return "spike" if start <= t_s < end and self.spike_factor != 1.0 else "steady"

    def rate_steps(self) -> list[tuple[float, float]]:
        """``[(s from the start, req/s), ...]``: the profile as steps of an announced plan
        (``ArrivalPlan``; the base rate holds after the end)."""
        start, end = self.spike_interval_s()
        steps = [(0.0, self.base_rate), (start, self.base_rate * self.spike_factor),
                 (end, self.base_rate)]  # fmt: skip
        # a spike at the very start, or of no length, shares a time with another step
        return [a for a, b in zip(steps, [*steps[1:], (math.inf, 0.0)], strict=True)
                if a[0] < b[0]]  # fmt: skip

    def expected_arrivals(self, start_s: float, length_s: float) -> float:
        """Expected requests in [start, start + length) (s from the start of the traffic):
        the integral of the rate, exact (Λ is piecewise linear between the breaks)."""
        t, cum = self._breaks()
        span = np.clip([start_s, start_s + length_s], t[0], t[-1])
        inside = float(np.diff(np.interp(span, t, cum))[0])
        outside = max(0.0, length_s - float(span[1] - span[0]))  # before 0 / after the end
        return inside + self.base_rate * outside

    def _breaks(self) -> tuple[np.ndarray, np.ndarray]:
        """Segment start times (s) and the expected arrivals before each: Λ at the breaks."""
        t = np.array([0.0, self.spike_start, self.spike_end, 1.0]) * self.duration_s
        rates = self.rate(t[:-1])
        cum = np.concatenate(([0.0], np.cumsum(rates * np.diff(t))))
        return t, cum

    def arrivals(self) -> np.ndarray:
        """Seeded Poisson arrival times (s), sorted, in [0, duration_s)."""
        t, cum = self._breaks()
        rng = np.random.default_rng(self.seed)
        total = cum[-1]
        # A unit-rate process on the Λ axis, mapped back through Λ⁻¹ (piecewise linear).
        gaps = rng.exponential(1.0, size=int(total + 6 * np.sqrt(total) + 10))
        lam = np.cumsum(gaps)
        lam = lam[lam < total]
        return np.interp(lam, cum, t)


def request_order(n: int, length: int, seed: int) -> np.ndarray:
    """``length`` request indices in 0..n-1: seeded permutations, one per pass."""
    rng = np.random.default_rng(seed)
    passes = -(-length // n) if n else 0
    order = np.concatenate([rng.permutation(n) for _ in range(passes)]) if passes else []
    return np.asarray(order, dtype=np.int64)[:length]


def budget_flops_per_s(q: np.ndarray, base_rate: float, budget_fraction: float) -> float:
    """FLOPs per second: ``budget_fraction`` of the full chain for everyone at the base rate."""
    return float(budget_fraction * np.max(q) * base_rate)


__all__ = [
    "OVER_BUDGET_SLACK",
    "Phase",
    "TrafficProfile",
    "budget_flops_per_s",
    "request_order",
]
