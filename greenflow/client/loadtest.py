"""``greenflow loadtest``: replay evaluation requests against the Serve HTTP endpoint with
a rate profile (issue #7 item 5), and report what each policy spent and earned.

An HTTP client, not a Ray job: no Ray import, nothing runs at import time. The requests
are the evaluation split of the request log (``load_replay_requests``); arrival times are
``TrafficProfile.arrivals()`` (seeded Poisson, base rate with a spike), truncated to
``max_requests`` and to the wall bound; the rows come from ``request_order``.

Open loop: every request is sent at its scheduled time whatever the earlier ones are
doing, so a slow server meets the offered load rather than a politely reduced one. At most
``max_in_flight`` requests are outstanding; a request due while the cap is reached is
counted as ``dropped_client`` (never sent) instead of delaying the schedule. Every request
has a timeout and the whole run a hard wall bound; a timeout or connection error is
recorded as an error, never raised.

After the run the client reads the allocator's closed windows
(``GET /allocator/windows?since=...``) and state (``GET /allocator/state``);
``loadtest_doc`` turns records and windows into the ``loadtest.json`` document
(DESIGN.md §5), ``write_loadtest`` writes it with ``loadtest.png`` (the paper's Figure 5
analogue) and ``format_loadtest_table`` prints the online analogue of Table 5.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from greenflow.errors import GreenflowError, InputError
from greenflow.platform.allocation.adherence import budget_adherence
from greenflow.platform.run_dir import LOADTEST, LOADTEST_PNG, RunDir
from greenflow.platform.traffic import OVER_BUDGET_SLACK, TrafficProfile, request_order

if TYPE_CHECKING:
    import aiohttp
    import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
REQUEST_COLUMNS = ("request_id", "user_id", "history", "positives")
WALL_GRACE_S = 5.0  # default wall bound: profile + one request timeout + this
ANNOUNCE_LEAD_S = 0.5  # an announced run starts this long after its plan is sent
PARTIAL_TOLERANCE_S = 0.05  # clock jitter allowed when deciding a window is partial
PREFLIGHT_TIMEOUT_S = 5.0

Log = Callable[[str], None]


def default_profile() -> TrafficProfile:
    """10 req/s for 30 s, 3× over the middle third."""
    return TrafficProfile(base_rate=10.0, duration_s=30.0, spike_factor=3.0)


class LoadtestError(GreenflowError, RuntimeError):
    """The load test cannot start (e.g. no allocator answers at the URL)."""


@dataclass(frozen=True)
class LoadtestConfig:
    """What to replay, against which endpoint, and the bounds of the run."""

    url: str = DEFAULT_URL
    profile: TrafficProfile = field(default_factory=default_profile)
    max_requests: int = 2000
    max_duration_s: float | None = None  # hard wall bound; None: profile + timeout + grace
    request_timeout_s: float = 10.0
    max_in_flight: int = 64
    k: int | None = None  # exposed items; None: the server's default
    seed: int = 0  # request order (the profile's own seed draws the arrivals)
    progress_every_s: float = 5.0
    # PUT the profile to /allocator/forecast before sending, as an operator announces a
    # planned spike: the driver then solves λ for each next window's planned arrivals
    announce: bool = False

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or parts.hostname not in LOCAL_HOSTS:
            raise ValueError(
                f"loadtest only targets 127.0.0.1 (or localhost), got {self.url!r}: "
                "it replays traffic, so it must not be pointed at someone else's service"
            )
        if self.max_requests < 1 or self.max_in_flight < 1:
            raise ValueError("max_requests and max_in_flight must be positive")
        if not (self.request_timeout_s > 0 and self.progress_every_s > 0):
            raise ValueError("request_timeout_s and progress_every_s must be positive")
        if self.max_duration_s is not None and not self.max_duration_s > 0:
            raise ValueError(f"max_duration_s must be positive, got {self.max_duration_s}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be positive, got {self.k}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    @property
    def wall_limit_s(self) -> float:
        """Seconds the whole run may take, draining included."""
        if self.max_duration_s is not None:
            return self.max_duration_s
        return self.profile.duration_s + self.request_timeout_s + WALL_GRACE_S


@dataclass
class RequestRecord:
    """One scheduled request and what came back. Times: ``scheduled_s`` from the run
    start, ``sent_epoch_s`` Unix seconds; ``status`` None when no HTTP answer arrived."""

    seq: int
    request_id: str
    user_id: int
    scheduled_s: float
    sent_epoch_s: float | None = None
    latency_ms: float | None = None
    status: int | None = None
    error: str | None = None
    error_kind: str | None = None  # "http", "timeout", "connection", "bad_response", ...
    chain_id: str | None = None
    flops: float | None = None
    dual_price: float | None = None
    guarded: bool = False
    degraded: bool = False
    clicks: int | None = None  # returned items among the row's ground-truth positives
    dropped_client: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def error_key(self) -> str | None:
        """How ``errors_by_status`` counts it: the HTTP status, else the failure kind."""
        if self.ok or self.dropped_client:
            return None
        if self.status is not None and self.status != 200:
            return str(self.status)
        return self.error_kind or "unknown"


@dataclass(frozen=True)
class ReplayRow:
    """One request of the log, as the client sends it and scores it."""

    request_id: int
    user_id: int
    history: tuple[int, ...]
    positives: frozenset[int]


@dataclass(frozen=True)
class LoadtestRun:
    """Everything one run observed: per-request records and the allocator's view."""

    config: LoadtestConfig
    records: tuple[RequestRecord, ...]
    start_epoch_s: float  # Unix seconds of scheduled t = 0
    duration_s: float  # from t = 0 to the last answer (or the wall bound)
    windows: tuple[dict[str, Any], ...]  # closed allocator windows, as served
    state: dict[str, Any]  # /allocator/state after the run
    state_before: dict[str, Any]
    fetch_errors: tuple[str, ...] = ()

    def doc(
        self,
        policy: str | None = None,
        budget_flops_per_s: float | None = None,
        pfec: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``loadtest_doc`` of this run; policy and budget default to the server's."""
        state = self.state or self.state_before
        policy = policy if policy is not None else str(state.get("policy", "unknown"))
        if budget_flops_per_s is None:
            budget_flops_per_s = budget_rate_from_state(state)
        return loadtest_doc(
            policy, budget_flops_per_s, self.records, self.windows, pfec,
            start_epoch_s=self.start_epoch_s, duration_s=self.duration_s,
            profile=self.config.profile, window_s=_window_s(state), state=self.state,
            config=self.config, fetch_errors=self.fetch_errors,
        )  # fmt: skip


def budget_rate_from_state(state: Mapping[str, Any]) -> float:
    """FLOPs per second of the allocator's current window budget (0.0 if unknown)."""
    window_s = _window_s(state)
    budget = state.get("budget_flops")
    if window_s is None or budget is None:
        return 0.0
    return float(budget) / window_s


def _window_s(state: Mapping[str, Any]) -> float | None:
    value = state.get("window_s")
    return float(value) if value is not None and float(value) > 0 else None


# --- input ------------------------------------------------------------------------------


def load_replay_requests(run_dir: RunDir) -> pd.DataFrame:
    """The evaluation split of ``<run_dir>/data``'s request log, the rows a load test sends."""
    from greenflow.platform.data.store import load_requests

    return load_requests(run_dir.data, "eval")


def replay_rows(requests: pd.DataFrame) -> list[ReplayRow]:
    """Plain-Python rows (ids, history, positives) of a request-log frame."""
    missing = [c for c in REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise ValueError(f"request frame lacks column(s) {missing}; needs {REQUEST_COLUMNS}")
    if len(requests) == 0:
        raise InputError("no requests to replay (empty evaluation split?)")
    columns = (requests[c] for c in REQUEST_COLUMNS)
    return [
        ReplayRow(int(rid), int(uid), tuple(int(i) for i in hist), frozenset(int(i) for i in pos))
        for rid, uid, hist, pos in zip(*columns, strict=True)
    ]


def schedule(config: LoadtestConfig, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(send times in s from the start, row index of each): the profile's arrivals, cut at
    ``max_requests`` and at the wall bound, rows in ``request_order``."""
    t = config.profile.arrivals()
    t = t[t < config.wall_limit_s][: config.max_requests]
    return t, request_order(n_rows, t.size, config.seed)


# --- the client ------------------------------------------------------------------------


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
        since = start_epoch - max(1.0, _window_s(state_before) or 1.0)
        windows, state, errors = await _fetch_after(session, config, since)
    window_s = _window_s(state) or _window_s(state_before) or _infer_window_s(windows) or 1.0
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


# --- the document ------------------------------------------------------------------------


def loadtest_doc(
    policy: str,
    budget_flops_per_s: float,
    records: Sequence[RequestRecord],
    windows: Sequence[Mapping[str, Any]],
    pfec: Mapping[str, Any] | None,
    *,
    start_epoch_s: float,
    duration_s: float,
    profile: TrafficProfile,
    window_s: float | None = None,
    state: Mapping[str, Any] | None = None,
    config: LoadtestConfig | None = None,
    fetch_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The ``loadtest.json`` document of one policy's run (DESIGN.md §5 keys and more).

    Counting: ``requests`` = scheduled = ``ok`` + ``errors`` + ``dropped_client`` (sent
    but failed: HTTP ≠ 200, timeout, connection, bad body; dropped: never sent because
    ``max_in_flight`` was reached). ``clicks``, ``flops`` (FLOPs) and latency (ms) come
    from the ``ok`` answers only; the per-request ratios divide by ``ok``.

    Windows: ``t`` is seconds from the run start (``t_epoch`` the server's Unix time);
    ``window_s`` defaults to the median gap between windows. A window is *partial* when it
    began before the run start or ends after the run end (``duration_s``), beyond a small
    clock tolerance; only the first and the last window can be. Partial windows carry only
    part of the traffic, so ``over_budget_windows_pct`` (spend > budget ×
    ``OVER_BUDGET_SLACK``) counts the full windows only — or every window when none is full.
    MaRCA's ``utilisation_pct`` μ and ``over_utilisation_pct`` ν are over the same windows
    that served requests (``platform/allocation/adherence.py``).
    """
    window_s = window_s or _infer_window_s(windows)
    ok = [r for r in records if r.ok]
    wins = [_window_row(w, start_epoch_s, duration_s, window_s, profile) for w in windows]
    counted = [w for w in wins if not w["partial"]] or wins
    over = sum(w["over_budget"] for w in counted)
    adherence = budget_adherence([w["spend"] for w in counted], [w["budget"] for w in counted],
                                 [w["requests"] for w in counted])  # fmt: skip
    clicks = float(sum(r.clicks or 0 for r in ok))
    flops = float(sum(r.flops or 0.0 for r in ok))
    dropped = sum(r.dropped_client for r in records)
    errors_by = Counter(k for r in records if (k := r.error_key) is not None)
    return {
        "policy": policy,
        "budget_flops_per_s": float(budget_flops_per_s),
        "windows": wins,
        "window_s": window_s,
        "over_budget_windows_pct": 100.0 * over / len(counted) if counted else None,
        "over_budget_windows": int(over),
        "windows_counted": len(counted),
        "over_budget_slack": OVER_BUDGET_SLACK,
        "utilisation_pct": adherence.to_json()["utilisation_pct"],
        "over_utilisation_pct": adherence.to_json()["over_utilisation_pct"],
        "clicks": clicks,
        "requests": len(records),
        "sent": len(records) - dropped,
        "ok": len(ok),
        "errors": sum(errors_by.values()),
        "errors_by_status": dict(sorted(errors_by.items())),
        "error_examples": _error_examples(records),
        "dropped_client": dropped,
        "flops": flops,
        "flops_per_request": flops / len(ok) if ok else None,
        "clicks_per_request": clicks / len(ok) if ok else None,
        "throughput_rps": len(ok) / duration_s if duration_s > 0 else None,
        "latency_ms": _latency_stats([r.latency_ms for r in ok if r.latency_ms is not None]),
        "send_lag_ms": _lag_stats(records, start_epoch_s),
        "guard_requests": sum(r.guarded for r in ok),
        "server_guard_requests": int(sum(int(w.get("guard_requests", 0)) for w in windows)),
        "degraded": sum(r.degraded for r in ok),
        "chains": dict(Counter(r.chain_id for r in ok if r.chain_id is not None).most_common()),
        "pfec": dict(pfec or {}),
        "profile": asdict(profile),
        "duration_s": float(duration_s),
        "start_epoch_s": float(start_epoch_s),
        "state": dict(state or {}),
        "client": _client_settings(config),
        "fetch_errors": list(fetch_errors),
    }


def _infer_window_s(windows: Sequence[Mapping[str, Any]]) -> float | None:
    t = np.array([float(w["t"]) for w in windows])
    gaps = np.diff(np.sort(t))
    return float(np.median(gaps)) if gaps.size and np.median(gaps) > 0 else None


def _window_row(
    w: Mapping[str, Any],
    start_epoch_s: float,
    duration_s: float,
    window_s: float | None,
    profile: TrafficProfile,
) -> dict[str, Any]:
    """One server window with run-relative time, rates, phase and the partial flag."""
    t_epoch, spend, budget = float(w["t"]), float(w["spend"]), float(w["budget"])
    t = t_epoch - start_epoch_s
    requests = int(w.get("requests", 0))
    partial = window_s is not None and (
        t < -PARTIAL_TOLERANCE_S or t + window_s > duration_s + PARTIAL_TOLERANCE_S
    )
    mid = t + (window_s or 0.0) / 2
    return {
        "t": t,
        "t_epoch": t_epoch,
        "spend": spend,
        "budget": budget,
        "dual_price": float(w.get("dual_price", 0.0)),
        "requests": requests,
        "guard_requests": int(w.get("guard_requests", 0)),
        "overspend": float(w.get("overspend", 0.0)),
        "spend_flops_per_s": spend / window_s if window_s else None,
        "requests_per_s": requests / window_s if window_s else None,
        "utilisation": spend / budget if budget > 0 else None,
        "over_budget": spend > budget * OVER_BUDGET_SLACK,
        "partial": bool(partial),
        "phase": profile.phase(mid),
    }


def _latency_stats(latency_ms: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 (linear interpolation), mean and max, in ms; None when empty."""
    if not latency_ms:
        return dict.fromkeys(("p50", "p90", "p99", "mean", "max"))
    x = np.asarray(latency_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(x.mean()),
            "max": float(x.max())}  # fmt: skip


def _lag_stats(records: Sequence[RequestRecord], start_epoch_s: float) -> dict[str, float | None]:
    """How late the client sent (ms after schedule): open loop only holds if this is small."""
    lag = [
        (r.sent_epoch_s - start_epoch_s - r.scheduled_s) * 1e3
        for r in records
        if r.sent_epoch_s is not None
    ]
    if not lag:
        return {"p50": None, "max": None}
    return {"p50": float(np.median(lag)), "max": float(np.max(lag))}


def _error_examples(records: Sequence[RequestRecord], per_key: int = 3) -> dict[str, list[str]]:
    """A few error texts per ``errors_by_status`` key, to say what went wrong."""
    out: dict[str, list[str]] = {}
    for r in records:
        key = r.error_key
        if key is not None and len(out.setdefault(key, [])) < per_key:
            out[key].append(r.error or "")
    return out


def _client_settings(config: LoadtestConfig | None) -> dict[str, Any]:
    if config is None:
        return {}
    return {"url": config.base_url, "max_requests": config.max_requests,
            "max_in_flight": config.max_in_flight, "request_timeout_s": config.request_timeout_s,
            "wall_limit_s": config.wall_limit_s, "k": config.k, "seed": config.seed,
            "announce": config.announce}  # fmt: skip


# --- table, plot, files ------------------------------------------------------------------


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_loadtest_table(docs: Mapping[str, Mapping[str, Any]]) -> str:
    """Policies side by side: the online analogue of the paper's Table 5 (energy in J,
    carbon in g and the allocator's share of the FLOPs from each doc's ``pfec``)."""
    head = (
        f"{'policy':<14}{'requests':>9}{'errors':>7}{'clicks':>9}{'clicks/req':>11}"
        f"{'FLOPs/req':>11}{'over-budget':>12}{'μ %':>7}{'ν %':>6}{'p50 ms':>8}{'p99 ms':>8}{'energy J':>10}"
        f"{'carbon g':>10}{'alloc FLOPs':>12}"
    )
    lines = [head, "-" * len(head)]
    for name, d in docs.items():
        pfec, lat = d.get("pfec") or {}, d["latency_ms"]
        pct = d["over_budget_windows_pct"]
        lines.append(
            f"{name:<14.14}{d['requests']:>9d}{d['errors']:>7d}{d['clicks']:>9.0f}"
            f"{_fmt(d.get('clicks_per_request'), '.3f', 11)}"
            f"{_fmt(d.get('flops_per_request'), '.3g', 11)}"
            f"{_fmt(pct, '.1f', 11)}{'%' if pct is not None else ' '}"
            f"{_fmt(d.get('utilisation_pct'), '.1f', 7)}{_fmt(d.get('over_utilisation_pct'), '.2f', 6)}"
            f"{_fmt(lat.get('p50'), '.1f', 8)}{_fmt(lat.get('p99'), '.1f', 8)}"
            f"{_fmt(pfec.get('energy_j'), '.3g', 10)}{_fmt(pfec.get('carbon_g'), '.3g', 10)}"
            f"{_fmt(_pct(pfec.get('allocator_flops_ratio')), '.2f', 11)}"
            f"{'%' if pfec.get('allocator_flops_ratio') is not None else ' '}"
        )
    return "\n".join(lines)


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else 100.0 * ratio


def plot_loadtest(docs: Mapping[str, Mapping[str, Any]], run_dir: RunDir) -> str:
    """The paper's Figure 5 analogue: spend per window against the budget, λ, and the
    request rate, over time, the spike shaded. Writes ``loadtest.png``; returns where."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_spend, ax_price, ax_rate) = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
    first = next(iter(docs.values()), None)
    profile = TrafficProfile(**first["profile"]) if first else None
    if profile is not None:
        start, end = profile.spike_interval_s()
        for ax in (ax_spend, ax_price, ax_rate):
            ax.axvspan(start, end, color="tab:orange", alpha=0.12, lw=0,
                       label="spike" if ax is ax_spend else None)  # fmt: skip
    for name, d in docs.items():
        wins, window_s = d["windows"], d.get("window_s")
        width = 2.2 if name == "greenflow" else 1.3
        spend = [_spend_rate(w, d) / 1e9 for w in wins]
        ax_spend.plot(*_steps(wins, spend, window_s), drawstyle="steps-post", lw=width, label=name)
        rate = [w["requests_per_s"] for w in wins]
        if all(r is not None for r in rate):
            ax_rate.plot(*_steps(wins, rate, window_s), drawstyle="steps-post", lw=width,
                         label=name)  # fmt: skip
    for budget in sorted({float(d["budget_flops_per_s"]) for d in docs.values()}):
        ax_spend.axhline(budget / 1e9, color="black", ls="--", lw=1.0, label="budget")
    priced = ["greenflow"] if "greenflow" in docs else list(docs)
    for name in priced:
        wins = docs[name]["windows"]
        price = [w["dual_price"] for w in wins]
        ax_price.plot(*_steps(wins, price, docs[name].get("window_s")), drawstyle="steps-post",
                      label=name)  # fmt: skip
    if profile is not None:
        grid = np.linspace(0.0, profile.duration_s, 400)
        ax_rate.plot(grid, profile.rate(grid), color="grey", ls="--", lw=1.0, label="offered")
    ax_spend.set_ylabel("spend per window (GFLOP/s)")
    ax_price.set_ylabel("dual price λ (clicks per FLOP)")
    ax_rate.set_ylabel("requests per window (req/s)")
    ax_rate.set_xlabel("time since load-test start (s)")
    ax_spend.set_title("Online allocation under a traffic spike")
    for ax in (ax_spend, ax_price, ax_rate):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    where = run_dir.write_figure(LOADTEST_PNG, fig)
    plt.close(fig)
    return where


def _steps(
    windows: Sequence[Mapping[str, Any]], values: Sequence[float], window_s: float | None
) -> tuple[list[float], list[float]]:
    """(times, values) for a steps-post line: window starts (s), plus the last window's end
    when its length is known, so the plot shows every window whole."""
    t, y = [float(w["t"]) for w in windows], list(values)
    if t and window_s:
        return [*t, t[-1] + window_s], [*y, y[-1]]
    return t, y


def _spend_rate(w: Mapping[str, Any], doc: Mapping[str, Any]) -> float:
    """FLOPs/s of a window; without a window length, the budget share × the budget rate."""
    if w.get("spend_flops_per_s") is not None:
        return float(w["spend_flops_per_s"])
    share = w["spend"] / w["budget"] if w["budget"] > 0 else 0.0
    return share * float(doc["budget_flops_per_s"])


def write_loadtest(
    run_dir: RunDir,
    docs: Mapping[str, Mapping[str, Any]],
    horizon: str,
    repeats: Mapping[str, Any] | None = None,
) -> tuple[str, str]:
    """Write ``loadtest.json`` (the greenflow doc — else the first — at top level, plus
    ``"policies"``: every doc, with several policies ``"pfec"``: policy → record, the
    ground-truth ``horizon`` the clicks counted, and ``"repeats"``: the summary of repeated
    runs when given) atomically, and ``loadtest.png``; returns where both went."""
    if not docs:
        raise ValueError("no load-test documents to write")
    main = docs.get("greenflow") or next(iter(docs.values()))
    out = {**main, "policies": {name: dict(d) for name, d in docs.items()}}
    out["horizon"] = horizon
    if repeats is not None:
        out["repeats"] = dict(repeats)
    if len(docs) > 1:  # one PFEC record per policy, so `greenflow pfec report` lists each
        out["pfec"] = {name: d["pfec"] for name, d in docs.items() if d.get("pfec")}
    run_dir.write_loadtest(out)
    return run_dir.show(LOADTEST), plot_loadtest(docs, run_dir)


def replay_running_app(
    config: LoadtestConfig, run_dir: RunDir, log: Log = print
) -> tuple[dict[str, Any], tuple[str, str]]:
    """``greenflow loadtest --url``: replay ``run_dir``'s evaluation requests against the
    app already serving at ``config.url``, write loadtest.json/.png with its document
    (the dataset's ground-truth horizon beside it); returns the document and both paths."""
    from greenflow.platform.data.store import read_horizon

    doc = run_loadtest(config, load_replay_requests(run_dir), log).doc()
    horizon = read_horizon(run_dir.data)
    return doc, write_loadtest(run_dir, {doc["policy"]: doc}, horizon)


__all__ = [
    "DEFAULT_URL",
    "LoadtestConfig",
    "LoadtestError",
    "LoadtestRun",
    "ReplayRow",
    "RequestRecord",
    "budget_rate_from_state",
    "default_profile",
    "format_loadtest_table",
    "load_replay_requests",
    "loadtest_doc",
    "plot_loadtest",
    "replay",
    "replay_rows",
    "replay_running_app",
    "run_loadtest",
    "schedule",
    "write_loadtest",
]
