"""What the load-test client's tests run against: a small aiohttp server on 127.0.0.1
that plays the allocator (the real Serve app is tested elsewhere), request frames, and
sample documents. The fake's answers depend only on user_id % 6, so every outcome is
known."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time

import pandas as pd
from aiohttp import web

from greenflow.client.document import loadtest_doc
from greenflow.client.records import RequestRecord
from greenflow.platform.documents import LoadtestDoc
from greenflow.platform.traffic import TrafficProfile

CONTRACT_KEYS = {"policy", "budget_flops_per_s", "windows", "over_budget_windows_pct", "clicks",
                 "requests", "errors", "latency_ms", "pfec", "utilisation_pct",
                 "over_utilisation_pct"}  # fmt: skip
WINDOW_S = 0.25  # the fake allocator's window length (s)
FLOPS_PER_ITEM = 1000.0
BUDGET = 4 * 3 * FLOPS_PER_ITEM  # 4 default requests per window: the spike overspends
SLOW_S = 1.0  # the slow user's delay; the client's timeout in the tests is shorter


def user_kind(user_id: int) -> str:
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
        kind, k = user_kind(user_id), int(body.get("k", 3))
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


def requests_frame(user_ids: list[int]) -> pd.DataFrame:
    """Request rows whose positives hold the first two items the fake returns, + one more."""
    return pd.DataFrame({
        "request_id": [1000 + u for u in user_ids],
        "user_id": user_ids,
        "history": [[1, 2, u] for u in user_ids],
        "positives": [[u * 100, u * 100 + 1, 99_999] for u in user_ids],
    })  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- sample documents ------------------------------------------------------------------


START = 1000.0
PROFILE = TrafficProfile(base_rate=10.0, duration_s=3.5, seed=0)


def record(seq: int, latency: float, clicks: int, **kw: object) -> RequestRecord:
    fields = {"status": 200, "flops": 10.0, "dual_price": 0.2, "chain_id": "a",
              "sent_epoch_s": START + 0.1 * seq, "scheduled_s": 0.1 * seq}  # fmt: skip
    fields.update(kw)
    return RequestRecord(seq=seq, request_id=f"r{seq}", user_id=seq, latency_ms=latency,
                         clicks=clicks, **fields)  # type: ignore[arg-type]  # fmt: skip


def window_row(t: float, spend: float, requests: int = 5) -> dict[str, float]:
    return {"t": START + t, "spend": spend, "budget": 100.0, "dual_price": 0.1 * t,
            "requests": requests, "guard_requests": 1, "overspend": max(0.0, spend - 100.0)}  # fmt: skip


def sample_doc(policy: str = "greenflow", **kw: object) -> LoadtestDoc:
    latencies, clicks = [10, 20, 30, 40, 50], [0, 1, 2, 0, 1]
    records = [record(i, lat, c) for i, (lat, c) in enumerate(zip(latencies, clicks, strict=True))]
    records += [
        record(5, 1.0, 0, status=503, error="HTTP 503: busy", error_kind="http", chain_id=None),
        record(6, None, 0, status=None, error="timeout after 1 s", error_kind="timeout"),
        record(7, None, 0, status=None, sent_epoch_s=None, dropped_client=True,
                error="cap", error_kind="dropped_client"),
    ]  # fmt: skip
    windows = [
        window_row(-0.5, 500.0),  # began before the run: partial, its overspend not counted
        window_row(0.5, 100.5),  # within the slack
        window_row(1.5, 150.0),  # over
        window_row(2.5, 90.0),  # ends exactly at the run end: full
        window_row(3.5, 900.0),  # ends after the run: partial
    ]
    return loadtest_doc(policy, 100.0, records, windows, kw.pop("pfec", None),
                        start_epoch_s=START, duration_s=3.5, profile=PROFILE, window_s=1.0,
                        **kw)  # type: ignore[arg-type]  # fmt: skip
