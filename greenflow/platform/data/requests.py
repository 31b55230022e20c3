"""Request log and user splits (DESIGN.md §3).

Each user gets several requests over time. A request at time t sees the user's clicks
strictly before t as its history, and the user's clicks at or after t, cut by the
ground-truth **horizon**, are its positives:

  ``all``             every click at or after t;
  ``next:N``          the next N clicks, plus every other click at the N-th click's
                      timestamp (ML-100k logs many clicks in the same second, and their
                      order within that second is arbitrary);
  ``window:SECONDS``  the clicks in [t, t + SECONDS).

Which requests exist does not depend on the horizon (a request needs ``min_positives``
clicks at or after t), so horizons compare on the same requests. Users (not requests)
are split into cascade-training, validation, reward-sample and evaluation groups so no
user's future leaks across splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from greenflow.platform.data.schema import REQUEST_SCHEMA, SPLITS, DataError


@dataclass(frozen=True)
class SplitFractions:
    """Share of users in each split; must sum to 1."""

    cascade_train: float = 0.5
    validation: float = 0.25
    reward: float = 0.225
    eval: float = 0.025

    def __post_init__(self) -> None:
        values = self.as_tuple()
        if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {values}")

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.cascade_train, self.validation, self.reward, self.eval)


HORIZON_KINDS: tuple[str, ...] = ("all", "next", "window")


@dataclass(frozen=True)
class Horizon:
    """Which future clicks of a request count as its ground truth (module docstring)."""

    kind: str = "all"
    value: float = 0.0  # N for ``next``, seconds for ``window``

    def __post_init__(self) -> None:
        if self.kind not in HORIZON_KINDS:
            raise ValueError(f"horizon kind {self.kind!r}: expected one of {HORIZON_KINDS}")
        if self.kind == "next" and (self.value < 1 or self.value != int(self.value)):
            raise ValueError(f"horizon next:N needs an integer N >= 1, got {self.value:g}")
        if self.kind == "window" and not self.value > 0:
            raise ValueError(f"horizon window:SECONDS needs SECONDS > 0, got {self.value:g}")

    @classmethod
    def parse(cls, text: str) -> Horizon:
        """``all``, ``next:N`` or ``window:SECONDS``; ValueError naming the problem."""
        kind, _, value = str(text).strip().partition(":")
        if kind == "all":
            if value:
                raise ValueError(f"horizon {text!r}: 'all' takes no value")
            return cls()
        if kind not in HORIZON_KINDS or not value:
            raise ValueError(f"horizon {text!r}: expected 'all', 'next:N' or 'window:SECONDS'")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"horizon {text!r}: {value!r} is not a number") from None
        return cls(kind, number)

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        return f"{self.kind}:{int(self.value) if self.kind == 'next' else f'{self.value:g}'}"

    def cut(self, items: np.ndarray, ts: np.ndarray, start_ts: int) -> np.ndarray:
        """The positives among the clicks ``items`` at times ``ts`` (sorted, all >= start)."""
        if self.kind == "next":
            n = int(self.value)
            if len(items) <= n:
                return items
            return items[ts <= ts[n - 1]]  # ties at the N-th click's second all count
        if self.kind == "window":
            return items[ts < start_ts + self.value]
        return items


@dataclass(frozen=True)
class RequestConfig:
    """How requests are cut from each user's timeline."""

    requests_per_user: int = 6
    min_history: int = 1  # clicks a user must have before their first request
    # Clicks a request must have ahead of it. Without this, a user's last cut point often
    # has no click at or after it, a request whose every chain trivially earns 0.
    min_positives: int = 1
    max_history: int = 50  # most recent clicks kept in a request's history
    fractions: SplitFractions = field(default_factory=SplitFractions)
    seed: int = 0
    horizon: str = "all"  # ground truth: all | next:N | window:SECONDS (Horizon)

    def __post_init__(self) -> None:
        Horizon.parse(self.horizon)  # fail at load time, naming the bad value
        if self.requests_per_user < 1:
            raise ValueError("requests_per_user must be >= 1")
        if self.min_history < 0 or self.max_history < 1 or self.min_positives < 0:
            raise ValueError("min_history, min_positives must be >= 0 and max_history >= 1")


def assign_splits(user_ids: np.ndarray, fractions: SplitFractions, seed: int) -> dict[int, str]:
    """Seeded random partition of users into the four splits by the given fractions."""
    users = np.sort(np.asarray(user_ids))
    perm = np.random.default_rng(seed).permutation(len(users))
    bounds = np.round(np.cumsum(fractions.as_tuple()) * len(users)).astype(int)
    names = np.empty(len(users), dtype=object)
    start = 0
    for name, stop in zip(SPLITS, bounds, strict=True):
        names[perm[start:stop]] = name
        start = stop
    return {int(u): str(s) for u, s in zip(users, names, strict=True)}


def user_requests(
    items: np.ndarray, ts: np.ndarray, labels: np.ndarray, config: RequestConfig
) -> list[tuple[int, list[int], list[int], int]]:
    """Cut one user's timeline (sorted by ts, then item) into (ts, history, positives, activity)."""
    clicks_before = np.cumsum(labels) - labels  # clicks strictly before each event
    clicks_after = labels.sum() - clicks_before  # clicks at or after each event
    _, first_index = np.unique(ts, return_index=True)  # first event of each distinct ts
    eligible = first_index[
        (clicks_before[first_index] >= config.min_history)
        & (clicks_after[first_index] >= config.min_positives)
    ]
    if len(eligible) == 0:
        return []
    picks = np.unique(
        np.linspace(0, len(eligible) - 1, num=min(config.requests_per_user, len(eligible)))
        .round()
        .astype(int)
    )
    out = []
    horizon = Horizon.parse(config.horizon)
    clicked, clicked_ts = items[labels == 1], ts[labels == 1]
    click_pos = np.flatnonzero(labels == 1)
    for start in eligible[picks]:
        n_hist = int(np.searchsorted(click_pos, start))  # clicks before this event index
        history = clicked[max(0, n_hist - config.max_history) : n_hist]
        positives = horizon.cut(clicked[n_hist:], clicked_ts[n_hist:], int(ts[start]))
        out.append((int(ts[start]), history.tolist(), positives.tolist(), int(start)))
    return out


def iter_request_batches(
    interactions: pd.DataFrame,
    splits: dict[int, str],
    config: RequestConfig,
    users_per_batch: int = 20_000,
) -> Iterator[pa.RecordBatch]:
    """Build the request log user-chunk by user-chunk, so memory stays bounded."""
    frame = interactions.sort_values(["user_id", "ts", "item_id"], kind="stable")
    user_col = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    ts = frame["ts"].to_numpy()
    labels = frame["label"].to_numpy().astype(np.int64)
    users, starts = np.unique(user_col, return_index=True)
    ends = np.append(starts[1:], len(user_col))
    next_request_id = 0
    for chunk in range(0, len(users), users_per_batch):
        rows: dict[str, list] = {name: [] for name in REQUEST_SCHEMA.names}
        for u, a, b in zip(
            users[chunk : chunk + users_per_batch],
            starts[chunk : chunk + users_per_batch],
            ends[chunk : chunk + users_per_batch],
            strict=True,
        ):
            split = splits.get(int(u))
            if split is None:
                raise DataError(f"interactions: user {u} has no split assignment")
            for t, history, positives, activity in user_requests(
                items[a:b], ts[a:b], labels[a:b], config
            ):
                rows["request_id"].append(next_request_id)
                rows["user_id"].append(int(u))
                rows["ts"].append(t)
                rows["history"].append(history)
                rows["positives"].append(positives)
                rows["activity"].append(activity)
                rows["split"].append(split)
                next_request_id += 1
        if rows["request_id"]:
            yield pa.RecordBatch.from_pydict(rows, schema=REQUEST_SCHEMA)


def build_requests(
    interactions: pd.DataFrame, user_ids: np.ndarray, config: RequestConfig
) -> pd.DataFrame:
    """The whole request log as one DataFrame (for small datasets and tests)."""
    splits = assign_splits(user_ids, config.fractions, config.seed)
    batches = list(iter_request_batches(interactions, splits, config))
    if not batches:
        return REQUEST_SCHEMA.empty_table().to_pandas()
    return pa.Table.from_batches(batches, schema=REQUEST_SCHEMA).to_pandas()


def pad_histories(histories: Sequence[Sequence[int]], max_len: int) -> np.ndarray:
    """Left-pad (and keep the newest ``max_len`` of) each history; (B, max_len) int64."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for b, hist in enumerate(histories):
        tail = np.asarray(hist, dtype=np.int64)[-max_len:]
        if len(tail):
            out[b, max_len - len(tail) :] = tail
    return out
