from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from greenflow.platform.data.requests import (
    Horizon,
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


# Horizons on user 1's timeline: clicks (ts, item) (10,1) (20,3) (30,4) (30,5) (50,7).
@pytest.mark.parametrize(
    ("horizon", "positives"),
    [
        ("all", [[3, 4, 5, 7], [4, 5, 7], [7], [7]]),
        ("next:1", [[3], [4, 5], [7], [7]]),  # items 4 and 5 share ts 30: both count
        ("next:2", [[3, 4, 5], [4, 5], [7], [7]]),  # the 2nd click (4) ties with 5
        ("next:3", [[3, 4, 5], [4, 5, 7], [7], [7]]),
        ("window:10", [[3], [4, 5], [], [7]]),  # [t, t + 10): ts 40 sees nothing until 50
        ("window:20.5", [[3, 4, 5], [4, 5, 7], [7], [7]]),
    ],
)
def test_horizon_cuts_the_positives(horizon: str, positives: list[list[int]]) -> None:
    log = requests_of(RequestConfig(requests_per_user=10, horizon=horizon))
    assert log["ts"].tolist() == [20, 30, 40, 50]  # the same requests whatever the horizon
    assert log["positives"].tolist() == positives
    assert log["history"].tolist() == [[1], [1, 3], [1, 3, 4, 5], [1, 3, 4, 5]]


def test_next_n_keeps_every_click_of_the_nth_clicks_second_on_a_random_log() -> None:
    rng = np.random.default_rng(1)
    n = 2000
    frame = pd.DataFrame({"user_id": rng.integers(1, 20, n), "item_id": rng.integers(1, 300, n),
                          "ts": rng.integers(0, 60, n), "label": rng.integers(0, 2, n)})  # fmt: skip
    full = build_requests(frame, np.arange(1, 20), RequestConfig(requests_per_user=4))
    cut = build_requests(frame, np.arange(1, 20), RequestConfig(requests_per_user=4,
                                                                horizon="next:3"))  # fmt: skip
    clicks = frame[frame["label"] == 1].sort_values(["ts", "item_id"])
    assert full["request_id"].tolist() == cut["request_id"].tolist()
    ties = 0
    for req in cut.itertuples():
        mine = clicks[(clicks["user_id"] == req.user_id) & (clicks["ts"] >= req.ts)]
        if len(mine) <= 3:
            assert list(req.positives) == mine["item_id"].tolist()
            continue
        third_ts = mine["ts"].iloc[2]
        assert list(req.positives) == mine[mine["ts"] <= third_ts]["item_id"].tolist()
        ties += len(req.positives) > 3
    assert ties > 0  # the random log does exercise same-second ties


@pytest.mark.parametrize(
    ("text", "horizon"),
    [
        ("all", Horizon()),
        ("next:5", Horizon("next", 5)),
        ("window:86400", Horizon("window", 86400)),
    ],
)
def test_horizon_parse_round_trip(text: str, horizon: Horizon) -> None:
    assert Horizon.parse(text) == horizon
    assert str(horizon) == text


@pytest.mark.parametrize("bad", ["", "next", "next:0", "next:2.5", "window:0", "window:-3",
                                 "next:x", "last:5", "all:3"])  # fmt: skip
def test_bad_horizons_are_refused_with_the_value_named(bad: str) -> None:
    with pytest.raises(ValueError, match="horizon"):
        RequestConfig(horizon=bad)
