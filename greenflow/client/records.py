"""One load-test request as scheduled, and what came back."""

from __future__ import annotations

from dataclasses import dataclass


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
