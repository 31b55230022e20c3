"""Announced traffic: request rates an operator (or a load test) knows in advance — a
push campaign at 20:00, a sale, a replayed spike — as a step function over Unix time.

The nearline driver solves λ for the *next* window's arrivals from it
(``NearlineDriver.arrivals_forecast``): after a spike the price falls as the plan says the
traffic does, instead of a window late. Units: times in Unix seconds, rates in requests
per second, arrivals in requests.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_STEPS = 10_000  # steps in one plan (a day of 10 s steps is 8,640)


@dataclass(frozen=True)
class ArrivalPlan:
    """From ``times_s[k]`` on, ``rps[k]`` requests/s, until the next step; the last rate
    holds after it. No forecast before the first step."""

    times_s: tuple[float, ...]
    rps: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.rps):
            raise ValueError(f"a plan needs >= 1 step and as many rates as times, got "
                             f"{len(self.times_s)} times and {len(self.rps)} rates")  # fmt: skip
        if len(self.times_s) > MAX_STEPS:
            raise ValueError(f"a plan has at most {MAX_STEPS} steps, got {len(self.times_s)}")
        if not all(math.isfinite(t) for t in self.times_s):
            raise ValueError("plan times must be finite Unix seconds")
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ValueError("plan times must be strictly increasing")
        if not all(math.isfinite(r) and r >= 0 for r in self.rps):
            raise ValueError("plan rates must be finite and >= 0 requests/s")

    @classmethod
    def from_steps(cls, steps: Sequence[Sequence[float]]) -> ArrivalPlan:
        """From ``[(unix_s, rps), ...]`` pairs, in time order."""
        if any(len(step) != 2 for step in steps):
            raise ValueError("each step is a pair [unix seconds, requests per second]")
        return cls(tuple(float(t) for t, _ in steps), tuple(float(r) for _, r in steps))

    def steps(self) -> list[list[float]]:
        """``[[unix_s, rps], ...]``: JSON-able, ``from_steps`` reads it back."""
        return [[t, r] for t, r in zip(self.times_s, self.rps, strict=True)]

    def expected_arrivals(self, start_s: float, length_s: float) -> float | None:
        """Expected requests in [start_s, start_s + length_s): the integral of the rate;
        None when the interval begins before the plan does."""
        if start_s < self.times_s[0]:
            return None
        end_s = start_s + length_s
        k = bisect.bisect_right(self.times_s, start_s) - 1
        total, t = 0.0, start_s
        while t < end_s:
            step_end = self.times_s[k + 1] if k + 1 < len(self.times_s) else math.inf
            until = min(end_s, step_end)
            total += self.rps[k] * (until - t)
            t, k = until, k + 1
        return total
