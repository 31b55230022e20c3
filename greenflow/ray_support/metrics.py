"""Every Ray metric GreenFlow exports, or will export, declared once; and the FLOPs counter.

Code that creates a metric (``ray.util.metrics.Counter(NAME.name, ...)``) and everything
that queries one (the Grafana dashboard ``serve_apps/grafana/greenflow_pfec.json``,
``greenflow pfec report --prometheus``, the docs) takes the name from here, so a rename
cannot leave a dashboard panel silently empty; ``tests/serve_apps/test_grafana_dashboard.py``
checks the dashboard against :data:`PROMETHEUS_NAMES`.

Names here are what ``ray.util.metrics`` is given. Prometheus sees them with Ray's ``ray_``
prefix, and counters with OpenMetrics' ``_total`` suffix (a counter ``greenflow_flops`` is
scraped as ``ray_greenflow_flops_total``); :attr:`MetricName.prometheus_names` spells that
out. Ray adds its own labels to every series (``SessionName``, ``NodeAddress``,
``WorkerId``, ``Component``, ``Version``); the ``tag_keys`` below are ours.

``planned=True`` marks a metric declared before the code that exports it exists; today
every metric here is exported (serving: ``serve_apps/allocator.py``, ``driver.py``,
``stage_model.py``).

:func:`counter` makes the Ray counter of a declared metric, and :class:`FlopsMetric` is
the ``greenflow_flops`` counter that jobs (``simulators``) and Serve replicas
(``serve_apps``) record their work with.

No Ray import at module level: this module is read by tests and tools that never start
Ray; :func:`counter` imports ``ray.util.metrics`` when a metric is created.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray.util.metrics import Counter

RAY_PREFIX = "ray_"  # Ray's Prometheus exporter namespace


class MetricKind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricName:
    """One exported metric: its Ray name, kind, tag keys, and who exports it."""

    name: str  # as passed to ray.util.metrics, e.g. "greenflow_energy_joules"
    kind: MetricKind
    tag_keys: tuple[str, ...]
    description: str  # the Prometheus HELP text; says the unit
    exporter: str  # the module (or planned component) that records it
    planned: bool = False  # declared for code that does not exist yet

    @property
    def prometheus_name(self) -> str:
        """The series name a PromQL query uses (a histogram's ``_bucket`` series)."""
        return self.prometheus_names[0]

    @property
    def prometheus_names(self) -> tuple[str, ...]:
        """Every series name Prometheus stores for this metric."""
        base = RAY_PREFIX + self.name
        if self.kind is MetricKind.COUNTER:
            return (f"{base}_total",)
        if self.kind is MetricKind.HISTOGRAM:
            return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
        return (base,)


_NODE_TAGS = ("node", "device", "source")  # node id, "cpu:0"/"gpu:1"/…, nvml|rapl|estimate
_NODE_METER = "greenflow.simulators.node_meter.NodeMeter"
_DRIVER = "greenflow.serve_apps.driver.DualPriceDriver"
_ALLOCATOR = "greenflow.serve_apps.allocator.Allocator"

ENERGY_JOULES = MetricName(
    "greenflow_energy_joules",
    MetricKind.COUNTER,
    _NODE_TAGS,
    "Device energy in J (PUE not included), by node, device and source.",
    _NODE_METER,
)
POWER_WATTS = MetricName(
    "greenflow_power_watts",
    MetricKind.GAUGE,
    _NODE_TAGS,
    "Mean device power in W over the last sampling window.",
    _NODE_METER,
)
CARBON_GRAMS = MetricName(
    "greenflow_carbon_grams",
    MetricKind.COUNTER,
    _NODE_TAGS,
    "Emissions in gCO2eq (PUE and grid carbon intensity included).",
    _NODE_METER,
)
FLOPS = MetricName(
    "greenflow_flops",
    MetricKind.COUNTER,
    ("app", "stage", "model"),
    "Floating-point operations done, by app, cascade stage and model.",
    "greenflow.ray_support.metrics.FlopsMetric",
)
REQUESTS = MetricName(
    "greenflow_requests",
    MetricKind.COUNTER,
    ("app", "chain"),  # chain id, e.g. "dssm@400>youtube_dnn@50>din@10": the chain choices
    "Requests served, by app and the action chain chosen for them.",
    _ALLOCATOR,
)
REQUEST_LATENCY_MS = MetricName(
    "greenflow_request_latency_ms",
    MetricKind.HISTOGRAM,
    ("app",),
    "End-to-end latency of /recommend in ms, allocation and all cascade stages included.",
    _ALLOCATOR,
)
DUAL_PRICE = MetricName(
    "greenflow_dual_price",
    MetricKind.GAUGE,
    ("app",),
    "Dual price lambda in force: reward (clicks) per FLOP at the margin.",
    _DRIVER,
)
WINDOW_BUDGET_FLOPS = MetricName(
    "greenflow_window_budget_flops",
    MetricKind.GAUGE,
    ("app",),
    "FLOPs budget C_t of the current allocation window.",
    _DRIVER,
)
WINDOW_SPEND_FLOPS = MetricName(
    "greenflow_window_spend_flops",
    MetricKind.GAUGE,
    ("app",),
    "FLOPs spent so far in the current allocation window.",
    _DRIVER,
)

ALL_METRICS: tuple[MetricName, ...] = (
    ENERGY_JOULES,
    POWER_WATTS,
    CARBON_GRAMS,
    FLOPS,
    REQUESTS,
    REQUEST_LATENCY_MS,
    DUAL_PRICE,
    WINDOW_BUDGET_FLOPS,
    WINDOW_SPEND_FLOPS,
)

# Every series name a query may use; the dashboard test checks against this set.
PROMETHEUS_NAMES: frozenset[str] = frozenset(n for m in ALL_METRICS for n in m.prometheus_names)


def counter(metric: MetricName) -> Counter:
    """The Ray counter of ``metric`` (its name, help text and tag keys as declared)."""
    from ray.util.metrics import Counter

    return Counter(metric.name, description=metric.description, tag_keys=metric.tag_keys)


class FlopsMetric:
    """``greenflow_flops`` counter for jobs and Serve apps (tags app, stage, model).

    Create one per process after ``ray.init`` (e.g. in a deployment's ``__init__``), then
    ``record(flops, stage=..., model=...)`` wherever work is done.
    """

    def __init__(self, app: str) -> None:
        self.app = app
        self._counter = counter(FLOPS)

    def record(self, flops: float, *, stage: str, model: str) -> None:
        """Add ``flops`` FLOPs done by ``model`` in ``stage``."""
        if flops > 0:  # Ray counters refuse increments <= 0
            self._counter.inc(float(flops), tags={"app": self.app, "stage": stage, "model": model})


class CounterBuffer:
    """Increments of a Ray counter summed in the process and sent by ``flush()``.

    A Ray metric call costs ~0.1-0.2 ms of a replica's CPU (``Metric._record``), which a
    serving replica paid per request and per counter; summed here, a counter costs one
    call per tag set and flush (the replica flushes every ~0.1-0.5 s). Prometheus scrapes
    the same totals, at most one flush period later.
    """

    def __init__(self, counter: Counter, default_tags: dict[str, str] | None = None) -> None:
        self._counter = counter
        self._default_tags = dict(default_tags or {})
        self._pending: dict[tuple[tuple[str, str], ...], float] = {}

    def add(self, value: float, **tags: str) -> None:
        """Add ``value`` (> 0; others are ignored, as Ray counters refuse them)."""
        if value > 0:
            key = tuple(sorted(tags.items()))
            self._pending[key] = self._pending.get(key, 0.0) + float(value)

    def flush(self) -> None:
        """Send the sums and forget them. A sum whose call fails is kept for the next flush
        (the others are sent), and the first error is raised after the loop."""
        error: Exception | None = None
        for key, value in list(self._pending.items()):
            try:
                self._counter.inc(value, tags={**self._default_tags, **dict(key)})
            except Exception as err:
                error = error or err
                continue
            del self._pending[key]
        if error is not None:
            raise error

    @property
    def pending(self) -> float:
        """The sum not yet sent, over every tag set."""
        return sum(self._pending.values())


__all__ = [
    "ALL_METRICS",
    "CARBON_GRAMS",
    "CounterBuffer",
    "DUAL_PRICE",
    "ENERGY_JOULES",
    "FLOPS",
    "FlopsMetric",
    "POWER_WATTS",
    "PROMETHEUS_NAMES",
    "RAY_PREFIX",
    "REQUESTS",
    "REQUEST_LATENCY_MS",
    "WINDOW_BUDGET_FLOPS",
    "WINDOW_SPEND_FLOPS",
    "MetricKind",
    "MetricName",
    "counter",
]
