"""The load-test HTTP client: replay requests open loop against the allocator's endpoint.

Open loop: every request is sent at its scheduled time whatever the earlier ones are
doing, so a slow server meets the offered load rather than a politely reduced one. At most
``max_in_flight`` requests are outstanding; a request due while the cap is reached is
counted as ``dropped_client`` (never sent) instead of delaying the schedule. Every request
has a timeout and the whole run a hard wall bound; a timeout or connection error is
recorded as an error, never raised.

After the run the client reads the allocator's closed windows
(``GET /allocator/windows?since=...``) and state (``GET /allocator/state``) into a
``LoadtestRun``. No Ray import; nothing runs at import time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from greenflow.client.config import LoadtestConfig, LoadtestError, Log
from greenflow.client.document import LoadtestRun, infer_window_s, state_window_s
from greenflow.client.records import RequestRecord
from greenflow.client.schedule import ReplayRow, replay_rows, schedule

if TYPE_CHECKING:
    import aiohttp
    import pandas as pd

ANNOUNCE_LEAD_S = 0.5  # an announced run starts this long after its plan is sent
PREFLIGHT_TIMEOUT_S = 5.0


def run_loadtest(config: LoadtestConfig, requests: pd.DataFrame, log: Log = print) -> LoadtestRun:
    """Replay ``requests`` against ``config.url`` (blocking; runs its own event loop).

    Raises ``LoadtestError`` only when the allocator does not answer before the start;
    failures during the run are records, not exceptions."""
    return asyncio.run(replay(config, requests, log))


async def replay(config: LoadtestConfig, requests: pd.DataFrame, log: Log = print) -> LoadtestRun:
    """``run_loadtest`` for callers that already run an event loop."""
    import aiohttp

    rows = replay_rows(requests)
    times, order = schedule(config, len(rows))
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)
    # The connector's own pool must not queue requests behind the client's cap.
    connector = aiohttp.TCPConnector(limit=config.max_in_flight)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        state_before = await _preflight(session, config)
        p = config.profile
        spike = p.spike_interval_s()
        log(
            f"loadtest: {times.size} request(s) from {len(rows)} evaluation request(s) over "
            f"{p.duration_s:g} s (base {p.base_rate:g} req/s, x{p.spike_factor:g} in "
            f"[{spike[0]:g}, {spike[1]:g}) s) -> {config.base_url} "
            f"(policy {state_before.get('policy', '?')})"
        )
        start_at = None
        if config.announce:
            start_at = time.time() + ANNOUNCE_LEAD_S
            await _announce(session, config, start_at, log)
        records, start_epoch, duration = await _send_all(
            session, config, rows, times, order, log, start_at
        )
        # Ask from one window before the start so the window holding t = 0 is included.
        since = start_epoch - max(1.0, state_window_s(state_before) or 1.0)
        windows, state, errors = await _fetch_after(session, config, since)
    window_s = (
        state_window_s(state) or state_window_s(state_before) or infer_window_s(windows) or 1.0
    )
    # Keep the windows that overlap the run: earlier ones hold someone else's traffic.
    windows = [
        w for w in windows
        if float(w["t"]) + window_s > start_epoch and float(w["t"]) < start_epoch + duration
    ]  # fmt: skip
    for err in errors:
        log(f"loadtest: {err}")
    run = LoadtestRun(config, tuple(records), start_epoch, duration, tuple(windows), state,
                      state_before, tuple(errors))  # fmt: skip
    log(_summary_line(run))
    return run


async def _announce(
    session: aiohttp.ClientSession, config: LoadtestConfig, start_epoch_s: float, log: Log
) -> None:
    """PUT the profile's rate steps, from ``start_epoch_s``, to ``/allocator/forecast``."""
    steps = [[start_epoch_s + t, r] for t, r in config.profile.rate_steps()]
    url = f"{config.base_url}/allocator/forecast"
    async with session.put(url, json={"steps": steps}) as resp:
        if resp.status != 200:
            raise LoadtestError(f"PUT {url} answered {resp.status}: {_detail(await resp.text())}")
    log(f"loadtest: announced {len(steps)} rate step(s) to {url}")


async def _preflight(session: aiohttp.ClientSession, config: LoadtestConfig) -> dict[str, Any]:
    """The allocator's state before the run; a clear error if nothing answers."""
    try:
        return await _get_json(session, f"{config.base_url}/allocator/state",
                               min(config.request_timeout_s, PREFLIGHT_TIMEOUT_S))  # fmt: skip
    except Exception as exc:  # any failure means: cannot start
        raise LoadtestError(
            f"no allocator answers at {config.base_url}/allocator/state ({_describe(exc)}); "
            "start it with `greenflow serve` first"
        ) from exc


async def _get_json(session: aiohttp.ClientSession, url: str, timeout_s: float) -> dict[str, Any]:
    import aiohttp

    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:200]}")
        doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    return doc


async def _fetch_after(
    session: aiohttp.ClientSession, config: LoadtestConfig, since: float
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """(closed windows since ``since``, state, errors): a failed fetch leaves it empty."""
    errors: list[str] = []
    windows: list[dict[str, Any]] = []
    state: dict[str, Any] = {}
    timeout_s = config.request_timeout_s
    try:
        doc = await _get_json(
            session, f"{config.base_url}/allocator/windows?since={since:.6f}", timeout_s
        )
        windows = [w for w in doc.get("windows", []) if _is_window(w)]
        if len(windows) < len(doc.get("windows", [])):
            errors.append("ignored /allocator/windows entries without numeric t, spend, budget")
        windows.sort(key=lambda w: float(w["t"]))
    except Exception as exc:  # the run's records are still worth keeping
        errors.append(f"could not read /allocator/windows: {_describe(exc)}")
    try:
        state = await _get_json(session, f"{config.base_url}/allocator/state", timeout_s)
    except Exception as exc:  # same: keep the records
        errors.append(f"could not read /allocator/state: {_describe(exc)}")
    return windows, state, errors


def _is_window(w: object) -> bool:
    """A window the document can use: numeric t (s), spend and budget (FLOPs)."""
    if not isinstance(w, dict):
        return False
    return all(isinstance(w.get(k), int | float) for k in ("t", "spend", "budget"))


@dataclass
class _Progress:
    """Counters the progress line reads while the run is going."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    dropped: int = 0
    in_flight: int = 0


async def _send_all(
    session: aiohttp.ClientSession,
    config: LoadtestConfig,
    rows: Sequence[ReplayRow],
    times: np.ndarray,
    order: np.ndarray,
    log: Log,
    start_epoch_s: float | None = None,
) -> tuple[list[RequestRecord], float, float]:
    """Send every scheduled request at its time from ``start_epoch_s`` (Unix s; default
    now); returns (records, start epoch, duration s)."""
    loop = asyncio.get_running_loop()
    progress = _Progress()
    records: list[RequestRecord] = []
    tasks: set[asyncio.Task[None]] = set()
    t0, start_epoch = loop.time(), time.time()
    if start_epoch_s is not None:  # an announced start: wait for it
        t0, start_epoch = (
            t0 + max(0.0, start_epoch_s - start_epoch),
            max(start_epoch_s, start_epoch),
        )
    deadline = t0 + config.wall_limit_s
    reporter = asyncio.create_task(_report(progress, config.progress_every_s, t0, log))
    for seq, (t_s, r) in enumerate(zip(times.tolist(), order.tolist(), strict=True)):
        row = rows[r]
        rec = RequestRecord(seq, f"{row.request_id}-{seq}", row.user_id, float(t_s))
        records.append(rec)
        delay = t0 + t_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if loop.time() >= deadline:
            _drop(rec, progress, "max_duration_s reached before its send time")
        elif len(tasks) >= config.max_in_flight:
            _drop(rec, progress, f"{config.max_in_flight} requests already in flight")
        else:
            task = asyncio.create_task(_send_one(session, config, row, rec, progress))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=max(0.0, deadline - loop.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    reporter.cancel()
    await asyncio.gather(reporter, return_exceptions=True)
    for rec in records:
        if rec.sent_epoch_s is not None and rec.status is None and rec.error is None:
            rec.error, rec.error_kind = "cancelled: max_duration_s reached", "cancelled"
    return records, start_epoch, loop.time() - t0


def _drop(rec: RequestRecord, progress: _Progress, why: str) -> None:
    rec.dropped_client, rec.error, rec.error_kind = True, why, "dropped_client"
    progress.dropped += 1


async def _send_one(
    session: aiohttp.ClientSession,
    config: LoadtestConfig,
    row: ReplayRow,
    rec: RequestRecord,
    progress: _Progress,
) -> None:
    """POST one request and fill ``rec``; every failure becomes an error on the record."""
    payload: dict[str, Any] = {"user_id": row.user_id, "history": list(row.history),
                               "request_id": rec.request_id}  # fmt: skip
    if config.k is not None:
        payload["k"] = config.k
    progress.sent += 1
    progress.in_flight += 1
    rec.sent_epoch_s = time.time()
    start = time.perf_counter()
    try:
        async with session.post(f"{config.base_url}/recommend", json=payload) as resp:
            status, body = resp.status, await resp.text()
        # No await from here on: a cancelled request never looks half answered.
        rec.latency_ms = (time.perf_counter() - start) * 1e3
        rec.status = status
        _parse(rec, body, row.positives)
    except TimeoutError:  # aiohttp's ServerTimeoutError is one too
        rec.error = f"timeout after {config.request_timeout_s:g} s"
        rec.error_kind = "timeout"
    except Exception as exc:  # a load test records failures, never crashes
        import aiohttp

        rec.error = _describe(exc)
        rec.error_kind = "connection" if isinstance(exc, aiohttp.ClientError) else "client"
    finally:
        progress.in_flight -= 1
        if rec.ok:
            progress.ok += 1
        elif rec.error is not None or rec.status is not None:
            progress.errors += 1


def _parse(rec: RequestRecord, body: str, positives: frozenset[int]) -> None:
    """Fill the record from a response body (status already set)."""
    if rec.status != 200:
        rec.error, rec.error_kind = f"HTTP {rec.status}: {_detail(body)}", "http"
        return
    try:
        doc = json.loads(body)
        items = [int(i) for i in doc["items"]]
        rec.chain_id = str(doc["chain"]["id"])
        rec.flops = float(doc["flops"])
        rec.dual_price = float(doc["dual_price"])
        rec.guarded = bool(doc.get("guarded", False))
        rec.degraded = bool(doc.get("degraded", False))
    except (ValueError, KeyError, TypeError) as exc:
        rec.error, rec.error_kind = f"bad response: {_describe(exc)}", "bad_response"
        return
    rec.clicks = len(positives.intersection(items))  # a repeated item is one click


def _detail(body: str) -> str:
    """The ``detail`` of a JSON error body, else the start of the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200]
    return str(doc.get("detail", doc))[:200] if isinstance(doc, dict) else body[:200]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _report(progress: _Progress, every_s: float, t0: float, log: Log) -> None:
    """A progress line every ``every_s`` seconds until cancelled."""
    loop = asyncio.get_running_loop()
    last_sent, last_t = 0, t0
    while True:
        await asyncio.sleep(every_s)
        now = loop.time()
        rate = (progress.sent - last_sent) / max(now - last_t, 1e-9)
        log(
            f"  {now - t0:6.1f} s: sent {progress.sent}, ok {progress.ok}, errors "
            f"{progress.errors}, dropped {progress.dropped}, in flight {progress.in_flight}, "
            f"{rate:.1f} req/s"
        )
        last_sent, last_t = progress.sent, now


def _summary_line(run: LoadtestRun) -> str:
    ok = sum(r.ok for r in run.records)
    dropped = sum(r.dropped_client for r in run.records)
    return (
        f"loadtest done in {run.duration_s:.1f} s: {len(run.records)} scheduled, {ok} ok, "
        f"{len(run.records) - ok - dropped} error(s), {dropped} dropped by the client, "
        f"{len(run.windows)} allocator window(s)"
    )
