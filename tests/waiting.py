"""Bounded polling for tests that wait on a real cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, period_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns a truthy value (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(period_s)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s")
