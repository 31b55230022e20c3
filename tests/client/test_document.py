"""The ``loadtest.json`` document: counts, percentiles, partial and over-budget windows."""

from __future__ import annotations

import json

import pytest

from greenflow.client.document import loadtest_doc
from tests.client.fakes import CONTRACT_KEYS, PROFILE, START, sample_doc, window_row


@pytest.mark.usefixtures("no_ray")
def test_doc_counts_percentiles_and_over_budget_windows() -> None:
    typed = sample_doc(pfec={"energy_j": 12.0, "carbon_g": 0.002})
    assert typed.latency_ms.p50 == 30.0 and typed.windows[2].spend == 150.0
    doc = typed.to_json()  # the file's keys
    assert set(doc) >= CONTRACT_KEYS
    assert doc["requests"] == 8 and doc["ok"] == 5 and doc["sent"] == 7
    assert doc["errors"] == 2 and doc["errors_by_status"] == {"503": 1, "timeout": 1}
    assert doc["dropped_client"] == 1
    assert doc["clicks"] == 4.0 and doc["clicks_per_request"] == pytest.approx(0.8)
    assert doc["flops"] == 50.0 and doc["flops_per_request"] == 10.0
    lat = doc["latency_ms"]
    assert lat["p50"] == 30.0 and lat["p99"] == pytest.approx(49.6) and lat["max"] == 50.0
    assert lat["mean"] == 30.0  # the 503's fast answer is not a served latency
    assert doc["throughput_rps"] == pytest.approx(5 / 3.5)
    assert [w["partial"] for w in doc["windows"]] == [True, False, False, False, True]
    assert [w["over_budget"] for w in doc["windows"]] == [True, False, True, False, True]
    assert doc["windows_counted"] == 3 and doc["over_budget_windows"] == 1
    assert doc["over_budget_windows_pct"] == pytest.approx(100 / 3)
    assert [w["t"] for w in doc["windows"]] == [-0.5, 0.5, 1.5, 2.5, 3.5]
    # Phase at each window's midpoint; the spike is [1.17, 2.33) s of the 3.5 s profile.
    assert [w["phase"] for w in doc["windows"]] == ["steady", "steady", "spike", "steady",
                                                    "steady"]  # fmt: skip
    assert doc["server_guard_requests"] == 5 and doc["chains"] == {"a": 5}
    assert doc["profile"]["base_rate"] == 10.0 and doc["pfec"]["energy_j"] == 12.0
    json.dumps(doc, allow_nan=False)  # plain JSON, no NaN


@pytest.mark.usefixtures("no_ray")
def test_doc_without_full_windows_or_answers() -> None:
    doc = loadtest_doc("equal", 1.0, [], [window_row(-0.5, 500.0)], None, start_epoch_s=START,
                       duration_s=0.2, profile=PROFILE, window_s=1.0).to_json()  # fmt: skip
    assert doc["over_budget_windows_pct"] == 100.0  # every window when none is full
    assert doc["latency_ms"]["p50"] is None and doc["clicks_per_request"] is None
    empty = loadtest_doc("equal", 1.0, [], [], None, start_epoch_s=START, duration_s=0.2,
                         profile=PROFILE).to_json()  # fmt: skip
    assert empty["over_budget_windows_pct"] is None and empty["windows"] == []
