"""What a load test replays, against which endpoint, and the bounds of the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from greenflow.errors import GreenflowError
from greenflow.platform.traffic import TrafficProfile

DEFAULT_URL = "http://127.0.0.1:8000"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
WALL_GRACE_S = 5.0  # default wall bound: profile + one request timeout + this

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
