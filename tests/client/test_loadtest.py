"""The load-test client: the document, the table and plot, and real HTTP against a small
aiohttp server on 127.0.0.1 that plays the allocator (the real Serve app is tested
elsewhere). The fake's answers depend only on user_id % 6, so every outcome is known."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from aiohttp import web

from greenflow.client.loadtest import (
    LoadtestConfig,
    LoadtestError,
    RequestRecord,
    format_loadtest_table,
    loadtest_doc,
    run_loadtest,
    write_loadtest,
)
from greenflow.platform.run_dir import RunDir
from greenflow.platform.traffic import TrafficProfile

CONTRACT_KEYS = {"policy", "budget_flops_per_s", "windows", "over_budget_windows_pct", "clicks",
                 "requests", "errors", "latency_ms", "pfec", "utilisation_pct",
                 "over_utilisation_pct"}  # fmt: skip
WINDOW_S = 0.25  # the fake allocator's window length (s)
FLOPS_PER_ITEM = 1000.0
BUDGET = 4 * 3 * FLOPS_PER_ITEM  # 4 default requests per window: the spike overspends
SLOW_S = 1.0  # the slow user's delay; the client's timeout in the tests is shorter


def _kind(user_id: int) -> str:
    """What the fake allocator does with a user."""
    return {0: "bad", 1: "slow", 2: "drop", 3: "guarded"}.get(user_id % 6, "ok")


class FakeAllocator:
    """The three endpoints of the allocator ingress with deterministic answers."""

    def __init__(self) -> None:
        self.served: list[tuple[float, float, bool]] = []  # (epoch s, FLOPs, guarded)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/recommend", self.recommend)
        app.router.add_get("/allocator/state", self.state)
        app.router.add_get("/allocator/windows", self.windows)
        return app

    async def recommend(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        user_id = body.get("user_id")
        if not isinstance(user_id, int) or not isinstance(body.get("history"), list):
            return web.json_response({"detail": "user_id must be an int"}, status=400)
        kind, k = _kind(user_id), int(body.get("k", 3))
        if kind == "bad":
            return web.json_response({"detail": f"user {user_id} is refused"}, status=400)
        if kind == "slow":
            await asyncio.sleep(SLOW_S)
        if kind == "drop":
            assert request.transport is not None
            request.transport.close()  # the client sees the connection go
            return web.Response()
        flops = FLOPS_PER_ITEM * k
        self.served.append((time.time(), flops, kind == "guarded"))
        return web.json_response({
            "items": [user_id * 100 + j for j in range(k)],
            "chain": {"id": f"dssm@20>din@{k}", "stages": []},
            "flops": flops, "dual_price": 0.5, "request_id": body["request_id"],
            "window_start_s": 0.0, "guarded": kind == "guarded", "degraded": False,
        })  # fmt: skip

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response({"policy": "greenflow", "dual_price": 0.5, "window_s": WINDOW_S,
                                  "window_start_s": time.time(), "spend_flops": 0.0,
                                  "budget_flops": BUDGET, "utilisation": 0.0})  # fmt: skip

    async def windows(self, request: web.Request) -> web.Response:
        since, now = float(request.query["since"]), time.time()
        by_window: dict[int, list[tuple[float, float, bool]]] = {}
        for s in self.served:
            by_window.setdefault(math.floor(s[0] / WINDOW_S), []).append(s)
        out = []
        for i in sorted(by_window):
            t = i * WINDOW_S
            if t >= since and t + WINDOW_S <= now:  # closed windows only
                spend = sum(s[1] for s in by_window[i])
                out.append({"t": t, "spend": spend, "budget": BUDGET, "dual_price": 0.1 * (i % 5),
                            "requests": len(by_window[i]),
                            "guard_requests": sum(s[2] for s in by_window[i]),
                            "overspend": max(0.0, spend - BUDGET)})  # fmt: skip
        out.append({"t": "not a time"})  # a malformed entry is skipped, not fatal
        return web.json_response({"windows": out})


class ServerThread:
    """An aiohttp server on 127.0.0.1:<free port> in its own thread and event loop."""

    def __init__(self, app: web.Application) -> None:
        self.app, self.port = app, 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        # A short shutdown so a slow handler does not hold the teardown for a minute.
        runner = web.AppRunner(self.app, shutdown_timeout=0.2, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.port = runner.addresses[0][1]
        self.ready.set()
        try:
            await self.stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(10), "test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
        assert not self.thread.is_alive(), "test server did not stop"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture()
def allocator() -> Iterator[tuple[FakeAllocator, ServerThread]]:
    fake = FakeAllocator()
    with ServerThread(fake.app()) as server:
        yield fake, server


def _requests(user_ids: list[int]) -> pd.DataFrame:
    """Request rows whose positives hold the first two items the fake returns, + one more."""
    return pd.DataFrame({
        "request_id": [1000 + u for u in user_ids],
        "user_id": user_ids,
        "history": [[1, 2, u] for u in user_ids],
        "positives": [[u * 100, u * 100 + 1, 99_999] for u in user_ids],
    })  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- HTTP --------------------------------------------------------------------------------


def test_replay_records_every_outcome_and_reads_the_windows(allocator) -> None:
    fake, server = allocator
    profile = TrafficProfile(base_rate=30.0, duration_s=1.0, spike_factor=3.0, seed=1)
    config = LoadtestConfig(url=server.url, profile=profile, request_timeout_s=0.3,
                            progress_every_s=0.25, seed=2)  # fmt: skip
    lines: list[str] = []
    started = time.monotonic()
    run = run_loadtest(config, _requests(list(range(12))), log=lines.append)
    assert time.monotonic() - started < config.wall_limit_s

    n = profile.arrivals().size
    assert len(run.records) == n > 20
    kinds = [_kind(r.user_id) for r in run.records]
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

    doc = run.doc(pfec={"energy_j": 1.5})
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
    run = run_loadtest(config, _requests([1, 7]), log=lambda _: None)  # slow users only
    doc = run.doc(policy="equal", budget_flops_per_s=1.0, pfec=None)
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
    run = run_loadtest(config, _requests([1]), log=lambda _: None)
    assert time.monotonic() - started < 2.0
    assert all(r.scheduled_s < 0.4 for r in run.records)
    assert run.records and all(r.error_kind == "cancelled" for r in run.records)
    assert run.duration_s < 1.0


def test_no_server_is_a_clear_error_before_the_run() -> None:
    config = LoadtestConfig(url=f"http://127.0.0.1:{_free_port()}", request_timeout_s=1.0)
    with pytest.raises(LoadtestError, match="greenflow serve"):
        run_loadtest(config, _requests([4]), log=lambda _: None)


def test_cli_url_replays_the_run_against_a_running_app(
    allocator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from greenflow.cli import main

    _, server = allocator
    monkeypatch.setattr("greenflow.client.loadtest.load_replay_requests",
                        lambda run_dir: _requests([4, 5, 10, 11]))  # fmt: skip
    monkeypatch.setattr("greenflow.platform.data.store.read_horizon", lambda data_dir: "next:5")
    argv = ["loadtest", "--url", server.url, "--run-dir", str(tmp_path), "--base-rate", "8",
            "--duration", "1"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    assert doc["policy"] == "greenflow" and doc["horizon"] == "next:5" and doc["requests"] > 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'loadtest.json'}, {tmp_path / 'loadtest.png'}" in out
    assert main([*argv, "--repeats", "2"]) == 2  # repeats redeploy: not with --url
    assert "--repeats redeploys each policy" in capsys.readouterr().err


# --- config -------------------------------------------------------------------------------


def test_config_refuses_non_local_targets_and_bad_numbers() -> None:
    for url in ("http://example.com:8000", "http://10.0.0.5:8000", "ftp://127.0.0.1"):
        with pytest.raises(ValueError, match="loadtest only targets 127.0.0.1"):
            LoadtestConfig(url=url)
    assert LoadtestConfig(url="http://localhost:9000/").base_url == "http://localhost:9000"
    for bad in ({"max_requests": 0}, {"max_in_flight": 0}, {"request_timeout_s": 0.0},
                {"max_duration_s": -1.0}, {"k": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            LoadtestConfig(**bad)
    config = LoadtestConfig()
    assert config.url == "http://127.0.0.1:8000" and config.max_requests == 2000
    assert config.profile.base_rate == 10.0 and config.profile.duration_s == 30.0
    assert config.profile.phase(15.0) == "spike" and config.profile.spike_factor == 3.0
    assert config.wall_limit_s == pytest.approx(30.0 + 10.0 + 5.0)


def test_module_imports_no_ray() -> None:
    code = ("import sys, greenflow.client.loadtest, greenflow.platform.traffic; "
            "assert 'ray' not in sys.modules, 'ray imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- the document ---------------------------------------------------------------------


START = 1000.0
PROFILE = TrafficProfile(base_rate=10.0, duration_s=3.5, seed=0)


def _record(seq: int, latency: float, clicks: int, **kw: object) -> RequestRecord:
    fields = {"status": 200, "flops": 10.0, "dual_price": 0.2, "chain_id": "a",
              "sent_epoch_s": START + 0.1 * seq, "scheduled_s": 0.1 * seq}  # fmt: skip
    fields.update(kw)
    return RequestRecord(seq=seq, request_id=f"r{seq}", user_id=seq, latency_ms=latency,
                         clicks=clicks, **fields)  # type: ignore[arg-type]  # fmt: skip


def _window(t: float, spend: float, requests: int = 5) -> dict[str, float]:
    return {"t": START + t, "spend": spend, "budget": 100.0, "dual_price": 0.1 * t,
            "requests": requests, "guard_requests": 1, "overspend": max(0.0, spend - 100.0)}  # fmt: skip


def _doc(policy: str = "greenflow", **kw: object) -> dict:
    latencies, clicks = [10, 20, 30, 40, 50], [0, 1, 2, 0, 1]
    records = [_record(i, lat, c) for i, (lat, c) in enumerate(zip(latencies, clicks, strict=True))]
    records += [
        _record(5, 1.0, 0, status=503, error="HTTP 503: busy", error_kind="http", chain_id=None),
        _record(6, None, 0, status=None, error="timeout after 1 s", error_kind="timeout"),
        _record(7, None, 0, status=None, sent_epoch_s=None, dropped_client=True,
                error="cap", error_kind="dropped_client"),
    ]  # fmt: skip
    windows = [
        _window(-0.5, 500.0),  # began before the run: partial, its overspend not counted
        _window(0.5, 100.5),  # within the slack
        _window(1.5, 150.0),  # over
        _window(2.5, 90.0),  # ends exactly at the run end: full
        _window(3.5, 900.0),  # ends after the run: partial
    ]
    return loadtest_doc(policy, 100.0, records, windows, kw.pop("pfec", None),
                        start_epoch_s=START, duration_s=3.5, profile=PROFILE, window_s=1.0,
                        **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.usefixtures("no_ray")
def test_doc_counts_percentiles_and_over_budget_windows() -> None:
    doc = _doc(pfec={"energy_j": 12.0, "carbon_g": 0.002})
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
    doc = loadtest_doc("equal", 1.0, [], [_window(-0.5, 500.0)], None, start_epoch_s=START,
                       duration_s=0.2, profile=PROFILE, window_s=1.0)  # fmt: skip
    assert doc["over_budget_windows_pct"] == 100.0  # every window when none is full
    assert doc["latency_ms"]["p50"] is None and doc["clicks_per_request"] is None
    empty = loadtest_doc("equal", 1.0, [], [], None, start_epoch_s=START, duration_s=0.2,
                         profile=PROFILE)  # fmt: skip
    assert empty["over_budget_windows_pct"] is None and empty["windows"] == []


@pytest.mark.usefixtures("no_ray")
def test_table_compares_policies_in_fixed_width() -> None:
    docs = {"greenflow": _doc(pfec={"energy_j": 12.0, "carbon_g": 0.002}), "equal": _doc("equal")}
    table = format_loadtest_table(docs)
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert "clicks/req" in lines[0] and "over-budget" in lines[0] and "p99 ms" in lines[0]
    assert lines[2].startswith("greenflow") and "33.3%" in lines[2] and "12" in lines[2]
    assert lines[3].startswith("equal") and lines[3].rstrip().endswith("-")


@pytest.mark.usefixtures("no_ray")
def test_write_loadtest_puts_greenflow_on_top_and_draws_the_figure(tmp_path: Path) -> None:
    docs = {"equal": _doc("equal"), "greenflow": _doc()}
    json_path, png_path = write_loadtest(RunDir(tmp_path / "run"), docs, horizon="next:5")
    saved = json.loads(Path(json_path).read_text())
    assert saved["policy"] == "greenflow" and set(saved["policies"]) == {"equal", "greenflow"}
    assert set(saved) >= CONTRACT_KEYS and saved["policies"]["equal"]["policy"] == "equal"
    assert not list((tmp_path / "run").glob(".*tmp"))
    assert Path(png_path).name == "loadtest.png" and Path(png_path).stat().st_size > 10_000
    only = write_loadtest(RunDir(tmp_path / "other"), {"equal": _doc("equal")}, horizon="all")[0]
    assert json.loads(Path(only).read_text())["policy"] == "equal"
    assert saved["horizon"] == "next:5"
    assert np.isfinite(saved["over_budget_windows_pct"])
