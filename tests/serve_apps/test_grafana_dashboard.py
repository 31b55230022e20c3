"""The PFEC Grafana dashboard: valid Grafana JSON, and every metric it queries is declared."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest

from greenflow.ray_support import metrics
from greenflow.ray_support.metrics import ALL_METRICS, PROMETHEUS_NAMES, MetricKind

DASHBOARD = resources.files("greenflow.serve_apps") / "grafana" / "greenflow_pfec.json"
_OURS = re.compile(r"\bray_greenflow_[A-Za-z0-9_]*")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every templating variable query."""
    for panel in _panels(dashboard["panels"]):
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield f"${variable['name']}", query["query"]


def test_is_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    assert dashboard["title"] and dashboard["uid"]
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard["panels"]):
        assert panel["title"], panel
        assert isinstance(panel["targets"], list), panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] == "row":
            continue
        # Same datasource variable as Ray's dashboards, so it works beside them.
        assert panel["datasource"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
    (datasource,) = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")


def test_every_queried_metric_is_declared(dashboard: dict[str, Any]) -> None:
    used = set()
    for where, expr in _queries(dashboard):
        names = set(_OURS.findall(expr))
        assert names, f"{where}: query reads no ray_greenflow_* metric: {expr}"
        undeclared = names - PROMETHEUS_NAMES
        assert not undeclared, f"{where}: {sorted(undeclared)} not in ray_support/metrics.py"
        used |= names
    # The panels the dashboard promises: power, energy, carbon, FLOPs, requests, serving.
    for metric in ALL_METRICS:
        if metric is not metrics.REQUEST_LATENCY_MS:
            assert metric.prometheus_name in used, f"no panel shows {metric.prometheus_name}"


def test_prometheus_names_follow_ray_exporter() -> None:
    assert metrics.ENERGY_JOULES.prometheus_names == ("ray_greenflow_energy_joules_total",)
    assert metrics.POWER_WATTS.prometheus_names == ("ray_greenflow_power_watts",)
    assert metrics.REQUEST_LATENCY_MS.prometheus_names == (
        "ray_greenflow_request_latency_ms_bucket",
        "ray_greenflow_request_latency_ms_sum",
        "ray_greenflow_request_latency_ms_count",
    )
    assert len({m.name for m in ALL_METRICS}) == len(ALL_METRICS)
    for metric in ALL_METRICS:
        assert metric.name.startswith("greenflow_") and metric.description
        if metric.kind is MetricKind.COUNTER:
            # Ray appends _total itself; a name ending in it would be scraped as *_total_total.
            assert not metric.name.endswith("_total"), metric.name
