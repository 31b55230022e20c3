"""Connecting a command to Ray: the running cluster when RAY_ADDRESS is set, else a local one."""

from __future__ import annotations

import os

import ray


def connect(num_cpus: int | None = None) -> None:
    """ray.init once: joins $RAY_ADDRESS (e.g. under `ray job submit`), else starts locally."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # Ray reads RAY_ADDRESS itself
    else:
        # "local": never join a cluster some other `ray start` left behind by accident.
        ray.init(address="local", num_cpus=num_cpus)
