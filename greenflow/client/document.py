"""The ``loadtest.json`` document (DESIGN.md §5) of one policy's run: counts, latency,
the allocator's windows with their partial flags, and budget adherence.

``LoadtestRun`` is everything one run observed (records and the allocator's view);
``loadtest_doc`` turns records and windows into the document, a ``LoadtestDoc``
(``platform/documents``). No HTTP here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from greenflow.client.config import LoadtestConfig
from greenflow.client.records import RequestRecord
from greenflow.platform.allocation.adherence import budget_adherence
from greenflow.platform.documents import LatencyMs, LoadtestDoc, Window
from greenflow.platform.traffic import OVER_BUDGET_SLACK, TrafficProfile

PARTIAL_TOLERANCE_S = 0.05  # clock jitter allowed when deciding a window is partial


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
    ) -> LoadtestDoc:
        """``loadtest_doc`` of this run; policy and budget default to the server's."""
        state = self.state or self.state_before
        policy = policy if policy is not None else str(state.get("policy", "unknown"))
        if budget_flops_per_s is None:
            budget_flops_per_s = budget_rate_from_state(state)
        return loadtest_doc(
            policy, budget_flops_per_s, self.records, self.windows, pfec,
            start_epoch_s=self.start_epoch_s, duration_s=self.duration_s,
            profile=self.config.profile, window_s=state_window_s(state), state=self.state,
            config=self.config, fetch_errors=self.fetch_errors,
        )  # fmt: skip


def budget_rate_from_state(state: Mapping[str, Any]) -> float:
    """FLOPs per second of the allocator's current window budget (0.0 if unknown)."""
    window_s = state_window_s(state)
    budget = state.get("budget_flops")
    if window_s is None or budget is None:
        return 0.0
    return float(budget) / window_s


def state_window_s(state: Mapping[str, Any]) -> float | None:
    """The allocator's window length (s) from its state; None when unknown."""
    value = state.get("window_s")
    return float(value) if value is not None and float(value) > 0 else None


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
) -> LoadtestDoc:
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
    window_s = window_s or infer_window_s(windows)
    ok = [r for r in records if r.ok]
    wins = [_window_row(w, start_epoch_s, duration_s, window_s, profile) for w in windows]
    counted = [w for w in wins if not w["partial"]] or wins
    over = sum(w["over_budget"] for w in counted)
    adherence = budget_adherence([w["spend"] for w in counted], [w["budget"] for w in counted],
                                 [w["requests"] for w in counted]).to_json()  # fmt: skip
    clicks = float(sum(r.clicks or 0 for r in ok))
    flops = float(sum(r.flops or 0.0 for r in ok))
    dropped = sum(r.dropped_client for r in records)
    errors_by = Counter(k for r in records if (k := r.error_key) is not None)
    latency = _latency_stats([r.latency_ms for r in ok if r.latency_ms is not None])
    return LoadtestDoc(
        policy=policy,
        budget_flops_per_s=float(budget_flops_per_s),
        windows=tuple(Window.from_json(w) for w in wins),
        over_budget_windows_pct=100.0 * over / len(counted) if counted else None,
        utilisation_pct=adherence["utilisation_pct"],
        over_utilisation_pct=adherence["over_utilisation_pct"],
        clicks=clicks,
        requests=len(records),
        ok=len(ok),
        errors=sum(errors_by.values()),
        flops=flops,
        latency_ms=LatencyMs.from_json(latency),
        pfec=dict(pfec or {}),
        profile=asdict(profile),
        duration_s=float(duration_s),
        extra={
            "window_s": window_s,
            "over_budget_windows": int(over),
            "windows_counted": len(counted),
            "over_budget_slack": OVER_BUDGET_SLACK,
            "sent": len(records) - dropped,
            "errors_by_status": dict(sorted(errors_by.items())),
            "error_examples": _error_examples(records),
            "dropped_client": dropped,
            "flops_per_request": flops / len(ok) if ok else None,
            "clicks_per_request": clicks / len(ok) if ok else None,
            "throughput_rps": len(ok) / duration_s if duration_s > 0 else None,
            "send_lag_ms": _lag_stats(records, start_epoch_s),
            "guard_requests": sum(r.guarded for r in ok),
            "server_guard_requests": int(sum(int(w.get("guard_requests", 0)) for w in windows)),
            "degraded": sum(r.degraded for r in ok),
            "chains": dict(Counter(r.chain_id for r in ok if r.chain_id is not None).most_common()),
            "start_epoch_s": float(start_epoch_s),
            "state": dict(state or {}),
            "client": _client_settings(config),
            "fetch_errors": list(fetch_errors),
        },
    )


def infer_window_s(windows: Sequence[Mapping[str, Any]]) -> float | None:
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
