"""Fixtures of the energy tests: a fake clock, and a guard that no test here starts Ray."""

from __future__ import annotations

import pytest


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, duration_s: float) -> None:
        self.now_s += duration_s


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _pure(no_ray: None) -> None:
    """Everything under greenflow.platform.energy is pure: refuse ray.init."""
