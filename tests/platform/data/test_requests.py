from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from greenflow.platform.data.requests import (
    RequestConfig,
    SplitFractions,
    assign_splits,
    build_requests,
    iter_request_batches,
)
from greenflow.platform.data.schema import REQUEST_SCHEMA, SPLITS, DataError

# user 1's timeline (ts, item, label), with two ties in time: ts 20 and ts 30
TIMELINE = [(10, 1, 1), (20, 2, 0), (20, 3, 1), (30, 4, 1), (30, 5, 1), (40, 6, 0), (50, 7, 1)]


def timeline_frame(shuffle: bool = True) -> pd.DataFrame:
    rows = [(1, item, ts, label) for ts, item, label in TIMELINE]
    rows += [(2, 8, 15, 0), (2, 9, 25, 0)]  # user 2 never clicks: no requests
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "label"])
    return frame.sample(frac=1.0, random_state=3) if shuffle else frame


def requests_of(config: RequestConfig) -> pd.DataFrame:
    log = build_requests(timeline_frame(), np.array([1, 2]), config)
    return log.assign(
        history=log["history"].map(list), positives=log["positives"].map(list)
    ).reset_index(drop=True)


def test_history_strictly_before_and_positives_at_or_after_ts() -> None:
    log = requests_of(RequestConfig(requests_per_user=10, min_history=1))
    assert log["user_id"].tolist() == [1, 1, 1, 1]
    assert log["ts"].tolist() == [20, 30, 40, 50]
    # item 3 clicked at ts 20 is a positive of the request at ts 20, not its history
    assert log["history"].tolist() == [[1], [1, 3], [1, 3, 4, 5], [1, 3, 4, 5]]
    assert log["positives"].tolist() == [[3, 4, 5, 7], [4, 5, 7], [7], [7]]
    assert log["activity"].tolist() == [1, 3, 5, 6]  # events (clicked or not) before ts


def test_every_request_respects_time_on_a_random_log() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(1, 40, n),
            "item_id": rng.integers(1, 500, n),
            "ts": rng.integers(0, 200, n),  # many ties
            "label": rng.integers(0, 2, n),
        }
    )
    config = RequestConfig(requests_per_user=4, max_history=1000)
    log = build_requests(frame, np.arange(1, 40), config)
    assert len(log) > 100
    clicks = frame[frame["label"] == 1].sort_values(["ts", "item_id"])
    for req in log.itertuples():
        mine = clicks[clicks["user_id"] == req.user_id]
        assert list(req.history) == mine[mine["ts"] < req.ts]["item_id"].tolist()
        assert list(req.positives) == mine[mine["ts"] >= req.ts]["item_id"].tolist()
        assert req.activity == int(
            ((frame["user_id"] == req.user_id) & (frame["ts"] < req.ts)).sum()
        )


def test_max_history_keeps_the_most_recent_clicks() -> None:
    log = requests_of(RequestConfig(requests_per_user=10, max_history=2))
    assert log["history"].tolist() == [[1], [1, 3], [4, 5], [4, 5]]


def test_min_history_is_respected() -> None:
    log = requests_of(RequestConfig(requests_per_user=10, min_history=3))
    assert log["ts"].tolist() == [40, 50]
    assert all(len(h) >= 3 for h in log["history"])
    assert requests_of(RequestConfig(min_history=5)).empty


def test_requests_per_user_spreads_over_the_timeline() -> None:
    log = requests_of(RequestConfig(requests_per_user=2))
    assert log["ts"].tolist() == [20, 50]  # first and last eligible time


def test_min_history_zero_allows_a_cold_request() -> None:
    log = requests_of(RequestConfig(requests_per_user=10, min_history=0, min_positives=0))
    assert log[log["user_id"] == 1]["ts"].tolist() == [10, 20, 30, 40, 50]
    assert log["history"].iloc[0] == []
    assert log[log["user_id"] == 2]["positives"].tolist() == [[], []]


def test_split_fractions_partition_users() -> None:
    users = np.arange(1, 10_001)
    fractions = SplitFractions(0.5, 0.25, 0.2, 0.05)
    splits = assign_splits(users, fractions, seed=1)
    assert set(splits) == set(users.tolist())
    counts = pd.Series(splits).value_counts()
    for name, share in zip(SPLITS, fractions.as_tuple(), strict=True):
        assert counts[name] == pytest.approx(share * len(users), abs=1)
    assert assign_splits(users, fractions, seed=1) == splits
    assert assign_splits(users, fractions, seed=2) != splits


def test_split_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValueError):
        SplitFractions(0.5, 0.5, 0.5, 0.0)
    with pytest.raises(ValueError):
        SplitFractions(1.1, -0.1, 0.0, 0.0)


def many_users_log(n_users: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    per_user = 12
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(1, n_users + 1), per_user),
            "item_id": rng.integers(1, 100, n_users * per_user),
            "ts": np.tile(np.arange(per_user), n_users),
            "label": rng.integers(0, 2, n_users * per_user),
        }
    )


def test_each_user_in_one_split_and_request_ids_unique() -> None:
    frame = many_users_log()
    config = RequestConfig(requests_per_user=3, fractions=SplitFractions(0.4, 0.3, 0.2, 0.1))
    log = build_requests(frame, np.arange(1, 401), config)
    assert log["split"].isin(SPLITS).all()
    assert (log.groupby("user_id")["split"].nunique() == 1).all()
    assert log["request_id"].is_unique
    assert log["request_id"].tolist() == list(range(len(log)))
    users_per_split = log.groupby("split")["user_id"].nunique() / log["user_id"].nunique()
    for name, share in zip(SPLITS, config.fractions.as_tuple(), strict=True):
        assert users_per_split[name] == pytest.approx(share, abs=0.06)


def test_batches_continue_request_ids_and_match_schema() -> None:
    frame = many_users_log(50)
    config = RequestConfig(requests_per_user=3)
    splits = assign_splits(np.arange(1, 51), config.fractions, config.seed)
    batches = list(iter_request_batches(frame, splits, config, users_per_batch=7))
    assert len(batches) > 1
    assert all(b.schema.equals(REQUEST_SCHEMA) for b in batches)
    ids = pa.Table.from_batches(batches).column("request_id").to_pylist()
    assert ids == list(range(len(ids)))


def test_user_without_split_is_an_error() -> None:
    config = RequestConfig()
    with pytest.raises(DataError, match="no split"):
        list(iter_request_batches(timeline_frame(), {1: "eval"}, config))


def test_empty_log_has_the_request_columns() -> None:
    log = requests_of(RequestConfig(min_history=100))
    assert log.empty and list(log.columns) == REQUEST_SCHEMA.names


@pytest.mark.parametrize("bad", [{"requests_per_user": 0}, {"min_history": -1}, {"max_history": 0}])
def test_request_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        RequestConfig(**bad)
