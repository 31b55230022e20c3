"""The serving documents (DESIGN.md §5): ``loadtest.json`` (``greenflow loadtest``: one
policy's run, or several under ``"policies"`` with their ``"repeats"`` summary) and
``bench_serving.json`` (``bench/serving.py``: the app against a no-work floor)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from greenflow.platform.documents.base import JsonDocument, named, one, rows


@dataclass(frozen=True)
class Window(JsonDocument):
    """One closed allocator window of a load test (a row of ``windows``)."""

    t: float  # seconds from the load test's start to the window's start
    spend: float  # FLOPs spent in the window
    budget: float  # FLOPs the window may spend
    dual_price: float  # λ at the window's close (clicks per FLOP)
    requests: int  # requests the window served

    WHERE = "loadtest.json: windows[]"

    @property
    def spend_flops_per_s(self) -> float | None:
        """FLOPs per second (None when the window length is unknown)."""
        return self.extra.get("spend_flops_per_s")

    @property
    def requests_per_s(self) -> float | None:
        return self.extra.get("requests_per_s")


@dataclass(frozen=True)
class LatencyMs(JsonDocument):
    """Latency percentiles of the answered requests, in milliseconds (None: no answer)."""

    p50: float | None
    p99: float | None

    WHERE = "loadtest.json: latency_ms"


@dataclass(frozen=True)
class PolicyRepeats(JsonDocument):
    """One policy across the repeats (``repeats.policies[name]``); clicks are counts."""

    runs: tuple[dict[str, Any], ...]  # per repeat: clicks, FLOPs/request, μ %, ...
    clicks_mean: float
    clicks_min: float
    clicks_max: float

    WHERE = "loadtest.json: repeats.policies[]"
    DECODE = {"runs": lambda v, _: tuple(v)}


@dataclass(frozen=True)
class RepeatsSummary(JsonDocument):
    """``loadtest.json``'s ``"repeats"``: the same schedule served several times."""

    repeats: int
    policies: dict[str, PolicyRepeats]
    greenflow_minus_equal_clicks: tuple[float, ...] | None = None  # paired, per repeat
    greenflow_wins: int | None = None  # repeats GreenFlow earned more clicks than EQUAL

    WHERE = "loadtest.json: repeats"
    OPTIONAL = frozenset({"greenflow_minus_equal_clicks", "greenflow_wins"})
    DECODE = {"policies": named(PolicyRepeats),
              "greenflow_minus_equal_clicks": lambda v, _: tuple(v)}  # fmt: skip


@dataclass(frozen=True)
class LoadtestDoc(JsonDocument):
    """One policy's load test, or ``loadtest.json`` itself: the main policy's keys at the
    top level, every policy's document under ``policies``, the ground-truth ``horizon``
    the clicks counted and, for repeated runs, ``repeats``. With several policies the
    top-level ``pfec`` maps policy -> PFEC record."""

    policy: str
    budget_flops_per_s: float  # FLOPs per second the allocator may spend
    windows: tuple[Window, ...]
    over_budget_windows_pct: float | None  # % of counted windows over budget × slack
    clicks: float  # ground-truth clicks of the answered requests
    requests: int  # scheduled = ok + errors + dropped by the client
    errors: int
    latency_ms: LatencyMs
    utilisation_pct: float | None  # MaRCA's μ: spend over budget, %
    over_utilisation_pct: float | None  # MaRCA's ν: overspend over budget, %
    pfec: dict[str, Any]  # PFEC record (estimated joules, grams); {} when none
    ok: int | None = None  # answered requests
    flops: float | None = None  # FLOPs of the answered requests
    duration_s: float | None = None  # from the schedule's t = 0 to the last answer
    profile: dict[str, Any] | None = None  # the TrafficProfile's fields
    policies: dict[str, LoadtestDoc] | None = None
    horizon: str | None = None
    repeats: RepeatsSummary | None = None

    WHERE = "loadtest.json"
    ORDER = ("policy", "budget_flops_per_s", "windows", "window_s", "over_budget_windows_pct",
             "over_budget_windows", "windows_counted", "over_budget_slack", "utilisation_pct",
             "over_utilisation_pct", "clicks", "requests", "sent", "ok", "errors",
             "errors_by_status", "error_examples", "dropped_client", "flops",
             "flops_per_request", "clicks_per_request", "throughput_rps", "latency_ms",
             "send_lag_ms", "guard_requests", "server_guard_requests", "degraded", "chains",
             "pfec", "profile", "duration_s", "start_epoch_s", "state", "client",
             "fetch_errors", "policies", "horizon", "repeats")  # fmt: skip
    OPTIONAL = frozenset({"ok", "flops", "duration_s", "profile", "policies", "horizon",
                          "repeats"})  # fmt: skip
    DECODE = {"windows": rows(Window), "latency_ms": one(LatencyMs),
              "repeats": one(RepeatsSummary)}  # fmt: skip

    @property
    def window_s(self) -> float | None:
        """The allocator's window length in seconds (None when unknown)."""
        return self.extra.get("window_s")

    @property
    def flops_per_request(self) -> float | None:
        return self.extra.get("flops_per_request")

    @property
    def clicks_per_request(self) -> float | None:
        return self.extra.get("clicks_per_request")


LoadtestDoc.DECODE = {**LoadtestDoc.DECODE, "policies": named(LoadtestDoc)}  # itself, nested


@dataclass(frozen=True)
class ServingSweep(JsonDocument):
    """Closed-loop latency and throughput at 1, 4, 16 clients (``p50_ms_c4``, ``rps_c16``
    and so on in ``extra``): ``floor`` or ``app`` of ``bench_serving.json``."""

    p50_ms_c1: float  # median latency with one client, ms
    p99_ms_c1: float
    max_rps: float  # best requests per second over the client levels

    WHERE = "bench_serving.json: floor/app"


@dataclass(frozen=True)
class BenchServingDoc(JsonDocument):
    """``bench_serving.json``: each part of ``bench/serving.py`` adds its keys (a part not
    run keeps the previous run's); ``floor`` is the same Serve topology doing no model
    work, measured in the same run as ``app``."""

    floor: ServingSweep | None = None
    app: ServingSweep | None = None

    WHERE = "bench_serving.json"
    OPTIONAL = frozenset({"floor", "app"})
    DECODE = {"floor": one(ServingSweep), "app": one(ServingSweep)}


__all__ = [
    "BenchServingDoc",
    "LatencyMs",
    "LoadtestDoc",
    "PolicyRepeats",
    "RepeatsSummary",
    "ServingSweep",
    "Window",
]
