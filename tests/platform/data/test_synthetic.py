from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greenflow.platform.data.requests import RequestConfig, build_requests
from greenflow.platform.data.synthetic import (
    GroundTruth,
    SyntheticConfig,
    config_for_requests,
    generate,
)

SMALL = SyntheticConfig(users=3000, items=800, dim=8, mean_events=20.0, seed=7)


@pytest.fixture(scope="module")
def small() -> tuple:
    return generate(SMALL)


def test_same_seed_same_data_other_seed_other_data(small: tuple) -> None:
    ds, truth = small
    again, truth_again = generate(SMALL)
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(getattr(ds, name), getattr(again, name))
    assert np.array_equal(truth.user_latent, truth_again.user_latent)
    assert np.array_equal(truth.item_latent, truth_again.item_latent)
    other, _ = generate(replace(SMALL, seed=8))
    assert not ds.interactions["item_id"].equals(other.interactions["item_id"])


def test_sizes_and_canonical_form(small: tuple) -> None:
    ds, truth = small
    assert ds.num_users == SMALL.users and len(ds.users) == SMALL.users
    assert ds.num_items == SMALL.items and len(ds.items) == SMALL.items
    events = ds.interactions.groupby("user_id").size()
    assert len(events) == SMALL.users  # min_events >= 1: every user is active
    assert events.min() >= SMALL.min_events and events.max() <= SMALL.max_events
    assert events.mean() == pytest.approx(SMALL.mean_events, rel=0.15)
    assert truth.user_latent.shape == (SMALL.users + 1, SMALL.dim)
    assert truth.item_latent.shape == (SMALL.items + 1, SMALL.dim)
    assert not truth.user_latent[0].any() and not truth.item_latent[0].any()
    assert ds.user_feature_names() == ["segment", "region"]
    assert ds.item_feature_names() == ["category", "brand"]
    assert ds.users["segment"].between(1, SMALL.segments).all()
    assert ds.items["category"].between(1, SMALL.categories).all()
    assert ds.users["segment"].nunique() > 1 and ds.items["category"].nunique() > 1


def test_timestamps_strictly_increase_per_user(small: tuple) -> None:
    inter = small[0].interactions
    assert inter["user_id"].is_monotonic_increasing
    same_user = inter["user_id"].diff() == 0
    assert (inter["ts"].diff()[same_user] > 0).all()
    assert inter["ts"].min() >= SMALL.start_ts
    assert inter["ts"].max() < SMALL.start_ts + SMALL.span_s


def test_activity_is_heavy_tailed() -> None:
    ds, _ = generate(replace(SMALL, activity_sigma=1.2))
    events = ds.interactions.groupby("user_id").size()
    assert events.max() / events.median() > 8
    flat, _ = generate(replace(SMALL, users=200, activity_sigma=0.0))
    assert flat.interactions.groupby("user_id").size().nunique() == 1


def test_clicks_follow_ground_truth(small: tuple) -> None:
    ds, truth = small
    inter = ds.interactions
    users, items = inter["user_id"].to_numpy(), inter["item_id"].to_numpy()
    labels = inter["label"].to_numpy()
    affinity = truth.affinity(users, items)
    assert np.corrcoef(affinity, labels)[0, 1] > 0.3
    # the click model is calibrated: predicted and observed click rates agree
    assert truth.click_probability(users, items).mean() == pytest.approx(labels.mean(), abs=0.01)
    assert 0.1 < labels.mean() < 0.7


def test_items_met_follow_popularity_and_affinity() -> None:
    cfg = replace(SMALL, users=2000, items=200, affinity_weight=0.0)
    ds, truth = generate(cfg)
    share = np.bincount(ds.interactions["item_id"], minlength=cfg.items + 1)[1:]
    share = share / share.sum()
    expected = np.exp(truth.item_log_popularity[1:])
    assert expected.sum() == pytest.approx(1.0)
    top = np.argsort(expected)[-5:]
    assert np.allclose(share[top], expected[top], rtol=0.1)
    neutral = truth.affinity(ds.interactions["user_id"], ds.interactions["item_id"]).mean()
    tilted, truth_t = generate(replace(cfg, affinity_weight=1.0))
    chosen = truth_t.affinity(tilted.interactions["user_id"], tilted.interactions["item_id"])
    assert abs(neutral) < 0.05
    assert chosen.mean() > 0.7  # exp(a·x) tilting of a unit normal shifts its mean by a


def test_ground_truth_round_trip(small: tuple, tmp_path: Path) -> None:
    truth = small[1]
    truth.save(tmp_path / "truth")
    loaded = GroundTruth.load(tmp_path / "truth")
    assert np.array_equal(loaded.user_latent, truth.user_latent)
    assert np.array_equal(loaded.item_log_popularity, truth.item_log_popularity)
    assert (loaded.click_weight, loaded.click_bias) == (truth.click_weight, truth.click_bias)


def test_config_for_requests_reaches_the_target() -> None:
    cfg = config_for_requests(6000, requests_per_user=5, items=500, dim=8)
    assert (cfg.items, cfg.dim) == (500, 8)
    ds, _ = generate(cfg)
    log = build_requests(
        ds.interactions, ds.users["user_id"].to_numpy(), RequestConfig(requests_per_user=5)
    )
    assert 6000 <= len(log) <= 6000 * 1.1


@pytest.mark.parametrize(
    "bad",
    [
        {"users": 0},
        {"mean_events": 0.0},
        {"min_events": 5, "max_events": 4},
        {"span_s": 10, "max_events": 100},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)


def test_config_for_requests_rejects_unknown_fields_and_users() -> None:
    with pytest.raises(ValueError, match="unknown"):
        config_for_requests(100, itmes=5)
    with pytest.raises(ValueError, match="derived"):
        config_for_requests(100, users=5)
