"""Algorithm 1 replayed offline with the serving core itself, on an injected clock.

The step-size tune, ``bench/online_replay.py`` and the tests drive exactly what the Serve
app runs — one ``OnlineAllocator`` (a replica: cached λ, policy, predictive guard) and one
``NearlineDriver`` (windows, λ updates) — request by request over a recorded stream, with
the replica's λ poll every ``POLL_S`` and windows closed ``GRACE_S`` after they end, as the
live app does. There is no second implementation of Algorithm 1 to drift from the served
one: what is tuned here is what is served.

Units: Q and clicks in clicks, q and budgets in FLOPs, λ in clicks/FLOP, times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.decision import as_costs, as_rewards
from greenflow.platform.allocation.nearline import (
    ArrivalsForecast,
    NearlineDriver,
    nearline_controller,
)
from greenflow.platform.allocation.online import OnlineAllocator, window_start

# Replay clock start (Unix s): 0.7 s into a window, so a spike starts mid-window as it
# does live (a window-aligned start flatters the guard).
EPOCH_S = 1_800_000_000.7
POLL_S = 0.1  # the replica's λ poll (serve_apps.allocator.POLL_S)
GRACE_S = 0.2  # the driver closes a window this long after it ends (DriverConfig.grace_s)


@dataclass(frozen=True)
class ServingSettings:
    """Algorithm 1's knobs as the app serves them; ``greenflow tune step-size`` picks the
    first four, ``greenflow serve`` loads them (``tune/step_size_best.json``)."""

    window_s: float = 2.0
    method: Literal["exact", "gradient"] = "exact"  # λ_{t+1}: exact re-solve or a step
    step_size_rel: float = 1.0  # η as a multiple of the warm-start λ (gradient only)
    smoothing: float = 0.0  # λ_{t+1} = s λ_t + (1 − s) update
    guard_tolerance: float = 0.0  # the guard lets a window reach C (1 + ε)
    reserve_sigmas: float | None = 3.0  # the guard's reserve for expected arrivals
    predictive: bool = True  # False: the paper's reactive guard (comparisons only)
    pacing: bool = True  # re-price each batch for the window's free budget (pacing.py)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay served and the driver's records of the windows it touched."""

    choice: np.ndarray  # (N,) chain served to each request, in stream order
    guarded: np.ndarray  # (N,) bool: the guard overrode the policy's chain
    flops: float  # total FLOPs served
    clicks: float | None  # total true clicks of the served chains, when given
    windows: list[dict[str, Any]]  # closed windows (loadtest.json keys), in time order
    final_price: float  # λ after the last window, clicks/FLOP


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def replay_serving(
    Q: np.ndarray,
    q: np.ndarray,
    arrival_s: np.ndarray,
    budget: ComputeBudget,
    settings: ServingSettings,
    fit_price: float,
    *,
    clicks: np.ndarray | None = None,
    fixed_chain: int | None = None,
    arrivals_forecast: ArrivalsForecast | None = None,
    epoch_s: float = EPOCH_S,
) -> ReplayResult:
    """Serve the stream Q (N, J) arriving at ``arrival_s`` (N,) seconds after ``epoch_s``
    (non-decreasing) with the serving core; ``clicks`` (N, J) true rewards are counted,
    never used to decide. ``fit_price`` is the warm-start λ; ``fixed_chain`` serves a
    baseline's chain through the same guard; ``arrivals_forecast(start, length)`` takes
    window starts in stream seconds (as ``TrafficProfile.expected_arrivals``)."""
    Q = as_rewards(Q)
    q = as_costs(q, Q.shape)
    if q.ndim != 1:
        raise ValueError("replay_serving takes one cost per chain, q of shape (J,)")
    arrival = np.asarray(arrival_s, dtype=np.float64)
    if arrival.shape != (Q.shape[0],):
        raise ValueError(f"arrival_s must be ({Q.shape[0]},), got {arrival.shape}")
    if arrival.size == 0:
        raise ValueError("the stream has no requests")
    if np.any(np.diff(arrival) < 0) or arrival[0] < 0:
        raise ValueError("arrival_s must be non-decreasing seconds >= 0")
    if clicks is not None and np.shape(clicks) != Q.shape:
        raise ValueError(f"clicks must have the shape of Q {Q.shape}, got {np.shape(clicks)}")
    forecast = None
    if arrivals_forecast is not None:
        forecast = lambda start, length: arrivals_forecast(start - epoch_s, length)  # noqa: E731

    clock = _Clock(epoch_s)
    controller = nearline_controller(
        settings.method, settings.step_size_rel, settings.smoothing, fit_price
    )
    driver = NearlineDriver(controller, q, budget, settings.window_s, grace_s=GRACE_S,
                            clock=clock, arrivals_forecast=forecast)  # fmt: skip
    online = OnlineAllocator(
        q, budget, settings.window_s, fixed_chain=fixed_chain, initial_price=fit_price,
        guard_tolerance=settings.guard_tolerance, reserve_sigmas=settings.reserve_sigmas,
        predictive=settings.predictive, pacing=settings.pacing, clock=clock,
    )  # fmt: skip
    choice = np.empty(arrival.size, dtype=np.int64)
    guarded = np.zeros(arrival.size, dtype=bool)
    next_poll = epoch_s
    for i, t in enumerate(epoch_s + arrival):
        while next_poll <= t:  # the replica's poll: windows closed, the driver's λ cached
            clock.t = next_poll
            driver.tick()
            online.set_price(driver.price())
            next_poll += POLL_S
        clock.t = t
        d = online.decide(Q[i : i + 1])
        choice[i], guarded[i] = d.choice[0], d.guarded[0]
        driver.report(d.window_start_s, Q[i : i + 1], d.choice, float(q[choice[i]]),
                      int(d.guarded[0]))  # fmt: skip
    last = window_start(epoch_s + arrival[-1], settings.window_s)
    clock.t = last + settings.window_s + GRACE_S  # the last window closes
    driver.tick()
    first = window_start(epoch_s + arrival[0], settings.window_s)
    windows = [w for w in driver.windows(first) if w["t"] <= last + 1e-9 * settings.window_s]
    rows = np.arange(arrival.size)
    return ReplayResult(
        choice=choice,
        guarded=guarded,
        flops=float(q[choice].sum()),
        clicks=None if clicks is None else float(np.asarray(clicks)[rows, choice].sum()),
        windows=windows,
        final_price=driver.price(),
    )
