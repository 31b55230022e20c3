"""Shared fixtures. One Ray cluster per test session, started only by tests that ask for it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A real local Ray cluster with a few logical CPUs, shared by the whole session.

    Deployments and actors in tests must ask for fractional CPUs so they do not starve
    each other on 2-core machines.
    """
    import ray

    ray.init(
        num_cpus=6,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
        ignore_reinit_error=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests of pure code refuse to start Ray."""
    import ray

    def _refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("this unit test must not start Ray")

    monkeypatch.setattr(ray, "init", _refuse)
