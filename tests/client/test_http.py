"""The open-loop HTTP client against the fake allocator: every outcome recorded, the
in-flight cap, the wall bound, and a clear error when nothing answers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from greenflow.client.config import LoadtestConfig, LoadtestError
from greenflow.client.http import run_loadtest
from greenflow.platform.traffic import TrafficProfile
from tests.client.fakes import (
    BUDGET,
    CONTRACT_KEYS,
    FLOPS_PER_ITEM,
    WINDOW_S,
    free_port,
    requests_frame,
    user_kind,
)


def test_replay_records_every_outcome_and_reads_the_windows(allocator) -> None:
    fake, server = allocator
    profile = TrafficProfile(base_rate=30.0, duration_s=1.0, spike_factor=3.0, seed=1)
    config = LoadtestConfig(url=server.url, profile=profile, request_timeout_s=0.3,
                            progress_every_s=0.25, seed=2)  # fmt: skip
    lines: list[str] = []
    started = time.monotonic()
    run = run_loadtest(config, requests_frame(list(range(12))), log=lines.append)
    assert time.monotonic() - started < config.wall_limit_s

    n = profile.arrivals().size
    assert len(run.records) == n > 20
    kinds = [user_kind(r.user_id) for r in run.records]
    for rec, kind in zip(run.records, kinds, strict=True):
        assert rec.sent_epoch_s is not None and not rec.dropped_client
        if kind in ("ok", "guarded"):
            assert rec.ok and rec.clicks == 2 and rec.flops == 3 * FLOPS_PER_ITEM
            assert rec.chain_id == "dssm@20>din@3" and rec.guarded == (kind == "guarded")
            assert rec.latency_ms is not None and rec.latency_ms < 300
        elif kind == "bad":
            assert rec.status == 400 and rec.error == f"HTTP 400: user {rec.user_id} is refused"
        elif kind == "slow":
            assert rec.status is None and rec.error_kind == "timeout"
        else:
            assert rec.status is None and rec.error_kind == "connection", rec.error
    assert any("s: sent" in line and "req/s" in line for line in lines)  # progress lines
    assert "loadtest done" in lines[-1]

    doc = run.doc(pfec={"energy_j": 1.5}).to_json()
    assert set(doc) >= CONTRACT_KEYS
    ok = kinds.count("ok") + kinds.count("guarded")
    assert doc["policy"] == "greenflow" and doc["budget_flops_per_s"] == BUDGET / WINDOW_S
    assert doc["requests"] == n and doc["ok"] == ok and doc["dropped_client"] == 0
    assert doc["errors"] == n - ok
    assert doc["errors_by_status"] == {
        k: v for k, v in (("400", kinds.count("bad")), ("connection", kinds.count("drop")),
                          ("timeout", kinds.count("slow"))) if v
    }  # fmt: skip
    assert doc["clicks"] == 2 * ok and doc["clicks_per_request"] == 2.0
    assert doc["guard_requests"] == kinds.count("guarded")
    assert doc["chains"] == {"dssm@20>din@3": ok}
    assert doc["pfec"] == {"energy_j": 1.5}

    # Closed windows of this run only, t relative to the start, spend as served.
    assert doc["windows"] and doc["window_s"] == WINDOW_S
    assert sum(w["requests"] for w in doc["windows"]) <= ok
    for w in doc["windows"]:
        assert -WINDOW_S < w["t"] < doc["duration_s"]
        assert w["t_epoch"] == pytest.approx(w["t"] + run.start_epoch_s)
        assert w["phase"] in ("steady", "spike")
        assert w["spend_flops_per_s"] == pytest.approx(w["spend"] / WINDOW_S)
    # MaRCA's μ and ν over the full windows that served requests, from the same rows
    served = [w for w in doc["windows"] if not w["partial"] and w["requests"] > 0] or [
        w for w in doc["windows"] if w["requests"] > 0
    ]
    mu = 100 * np.mean([min(w["spend"], w["budget"]) / w["budget"] for w in served])
    nu = 100 * np.mean([max(w["spend"] - w["budget"], 0) / w["budget"] for w in served])
    assert doc["utilisation_pct"] == pytest.approx(mu)
    assert doc["over_utilisation_pct"] == pytest.approx(nu)
    assert fake.served
    assert run.fetch_errors == (
        "ignored /allocator/windows entries without numeric t, spend, budget",
    )


def test_in_flight_cap_drops_instead_of_delaying(allocator) -> None:
    _, server = allocator
    profile = TrafficProfile(base_rate=40.0, duration_s=0.5, spike_factor=1.0, seed=3)
    config = LoadtestConfig(url=server.url, profile=profile, request_timeout_s=0.2,
                            max_in_flight=1)  # fmt: skip
    run = run_loadtest(config, requests_frame([1, 7]), log=lambda _: None)  # slow users only
    doc = run.doc(policy="equal", budget_flops_per_s=1.0, pfec=None).to_json()
    assert doc["dropped_client"] > 0 and doc["ok"] == 0
    assert doc["errors_by_status"] == {"timeout": doc["errors"]}
    assert doc["errors"] + doc["dropped_client"] == doc["requests"] == profile.arrivals().size
    # Open loop: whatever was sent went out on time, not after the one in flight.
    assert doc["send_lag_ms"]["max"] < 150


def test_wall_bound_cancels_what_is_still_in_flight(allocator) -> None:
    _, server = allocator
    profile = TrafficProfile(base_rate=20.0, duration_s=2.0, seed=0)
    config = LoadtestConfig(url=server.url, profile=profile, request_timeout_s=5.0,
                            max_duration_s=0.4)  # fmt: skip
    started = time.monotonic()
    run = run_loadtest(config, requests_frame([1]), log=lambda _: None)
    assert time.monotonic() - started < 2.0
    assert all(r.scheduled_s < 0.4 for r in run.records)
    assert run.records and all(r.error_kind == "cancelled" for r in run.records)
    assert run.duration_s < 1.0


def test_no_server_is_a_clear_error_before_the_run() -> None:
    config = LoadtestConfig(url=f"http://127.0.0.1:{free_port()}", request_timeout_s=1.0)
    with pytest.raises(LoadtestError, match="greenflow serve"):
        run_loadtest(config, requests_frame([4]), log=lambda _: None)
