"""What a load test sends and when: the request log's rows as plain Python, and the send
times (``TrafficProfile.arrivals()``, seeded Poisson with a spike) cut at ``max_requests``
and the wall bound, rows in ``request_order``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from greenflow.client.config import LoadtestConfig
from greenflow.errors import InputError
from greenflow.platform.traffic import request_order

if TYPE_CHECKING:
    import pandas as pd

REQUEST_COLUMNS = ("request_id", "user_id", "history", "positives")


@dataclass(frozen=True)
class ReplayRow:
    """One request of the log, as the client sends it and scores it."""

    request_id: int
    user_id: int
    history: tuple[int, ...]
    positives: frozenset[int]


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
