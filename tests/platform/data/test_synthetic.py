from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greenflow.platform.data.click_model import ClickModel
from greenflow.platform.data.requests import RequestConfig, build_requests, pad_histories
from greenflow.platform.data.synthetic import (
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


def _log_probability(ds, truth: ClickModel) -> np.ndarray:
    """Each logged event's click probability under the model, from the clicks before it."""
    inter = ds.interactions
    p = np.empty(len(inter))
    for u, rows in inter.groupby("user_id").indices.items():
        items = inter["item_id"].to_numpy()[rows]
        labels = inter["label"].to_numpy()[rows]
        for k, row in enumerate(rows):
            recent = pad_histories([items[:k][labels[:k] == 1]], truth.recent)
            p[row] = truth.probability(np.array([u]), recent, items[k : k + 1][None, :],
                                       truth.log_bias)[0, 0]  # fmt: skip
    return p


def test_clicks_follow_the_click_model() -> None:
    ds, truth = generate(replace(SMALL, users=1200))
    labels = ds.interactions["label"].to_numpy()
    p = _log_probability(ds, truth)
    # calibrated: predicted and observed click rates agree, overall and by decile
    assert p.mean() == pytest.approx(labels.mean(), abs=0.01)
    decile = np.digitize(p, np.quantile(p, np.linspace(0.1, 0.9, 9)))
    for d in (0, 9):
        assert p[decile == d].mean() == pytest.approx(labels[decile == d].mean(), abs=0.05)
    assert 0.1 < labels.mean() < 0.7


def test_expected_reward_by_hand() -> None:
    # 1 user, 3 items, dim 2, recent 2 clicks, decay 0.5
    truth = ClickModel(
        user_latent=np.array([[0, 0], [1.0, 0.0]], np.float32),
        item_latent=np.array([[0, 0], [1.0, 0], [0, 1.0], [1.0, 1.0]], np.float32),
        item_seq_latent=np.array([[0, 0], [0, 1.0], [1.0, 0], [1.0, 1.0]], np.float32),
        user_bias=np.array([0, 0.2], np.float32),
        item_bias=np.array([0, 0.1, -0.4, 0.3], np.float32),
        user_seq_weight=np.array([0, 0.25], np.float32),
        item_log_popularity=np.zeros(4),
        click_weight=2.0, log_bias=-1.0, response_bias=-3.0, recent=2, recency_decay=0.5,
    )  # fmt: skip
    history = [3, 1, 2]  # newest two: 1 (older, g = 0.5), 2 (newest, g = 1)
    mean, sd = truth.max_moments
    # the max of X_1 + log 0.5 and X_2 over iid standard normals, by Monte Carlo
    x = np.random.default_rng(0).normal(size=(400_000, 2)) + np.log([0.5, 1.0])
    assert (mean, sd) == pytest.approx((x.max(1).mean(), x.max(1).std()), abs=0.01)
    w = 0.25
    expected = 0.0
    for item, c in ((1, 0.1), (3, 0.3)):
        s = np.array([1.0, 0]) @ truth.item_latent[item]
        z = truth.item_seq_latent
        q = (max(z[1] @ z[item] + np.log(0.5), z[2] @ z[item]) - mean) / sd
        a = ((1 - w) * s + w * q) / np.sqrt((1 - w) ** 2 + w**2)
        expected += 1 / (1 + np.exp(-(-3.0 + 0.2 + c + 2.0 * a)))
    got = truth.expected_reward(np.array([1]), [history], np.array([[1, 3, 0]]))  # 0 = none
    assert got[0] == pytest.approx(expected, rel=1e-6)
    full = truth.response(np.array([1]), [history])
    assert full[0, 0] == 0 and full[0, [1, 3]].sum() == pytest.approx(expected, rel=1e-6)


def test_sequential_weight_decides_what_history_is_worth() -> None:
    """In expectation, users with sequential weight 1 gain far more from ranking by their
    recent history (what only the rank stage can do) than users with weight 0."""
    ds, truth = generate(replace(SMALL, seq_weight_alpha=0.3, seq_weight_beta=0.3))
    log = build_requests(ds.interactions, ds.users["user_id"].to_numpy(), RequestConfig())
    users, histories = log["user_id"].to_numpy(), log["history"].tolist()
    p = truth.response(users, histories)
    # what a two-tower ranks by: taste and each item's appeal
    static = truth.click_weight * truth.user_latent[users] @ truth.item_latent[1:].T
    static += truth.item_bias[None, 1:]
    top_static = np.argsort(-static, axis=1)[:, :10] + 1
    by_taste = np.take_along_axis(p, top_static, axis=1).sum(axis=1)
    best = np.sort(p, axis=1)[:, -10:].sum(axis=1)  # the expected-reward-optimal top 10
    w = truth.user_seq_weight[users]
    gain = best - by_taste
    static_users, sequential_users = gain[w < 0.1], gain[w > 0.9]
    assert len(static_users) > 50 and len(sequential_users) > 50
    assert static_users.mean() < 0.05 * best[w < 0.1].mean()  # taste is all they need
    assert sequential_users.mean() > 0.6 * best[w > 0.9].mean()  # taste misses most of theirs


def test_items_met_follow_popularity_and_affinity() -> None:
    cfg = replace(SMALL, users=2000, items=200, affinity_weight=0.0, follow_prob=0.0)
    ds, truth = generate(cfg)
    share = np.bincount(ds.interactions["item_id"], minlength=cfg.items + 1)[1:]
    share = share / share.sum()
    expected = np.exp(truth.item_log_popularity[1:])
    assert expected.sum() == pytest.approx(1.0)
    top = np.argsort(expected)[-5:]
    assert np.allclose(share[top], expected[top], rtol=0.1)
    neutral = truth.static_affinity(ds.interactions["user_id"], ds.interactions["item_id"]).mean()
    tilted, truth_t = generate(replace(cfg, affinity_weight=1.0, follow_prob=0.0))
    chosen = truth_t.static_affinity(tilted.interactions["user_id"], tilted.interactions["item_id"])
    assert abs(neutral) < 0.05
    assert chosen.mean() > 0.7  # exp(a·x) tilting of a unit normal shifts its mean by a


def test_popular_items_appeal_more_by_popularity_weight() -> None:
    _, flat = generate(replace(SMALL, popularity_weight=0.0))
    assert not flat.item_bias.any()
    _, tilted = generate(replace(SMALL, popularity_weight=0.8))
    c, log_pop = tilted.item_bias[1:], tilted.item_log_popularity[1:]
    assert c.std() == pytest.approx(0.8, rel=1e-4) and c.mean() == pytest.approx(0, abs=1e-5)
    assert np.array_equal(np.argsort(c, kind="stable"), np.argsort(log_pop, kind="stable"))
    assert c.max() < 0.8 * 4  # a normal score: no item gets many sd of appeal


def test_click_model_round_trip(small: tuple, tmp_path: Path) -> None:
    truth = small[1]
    truth.save(tmp_path / "truth")
    loaded = ClickModel.load(tmp_path / "truth")
    for name in ("user_latent", "item_latent", "item_seq_latent", "user_bias", "item_bias",
                 "user_seq_weight", "item_log_popularity"):  # fmt: skip
        assert np.array_equal(getattr(loaded, name), getattr(truth, name)), name
    assert (loaded.click_weight, loaded.log_bias, loaded.response_bias, loaded.recent,
            loaded.recency_decay) == (truth.click_weight, truth.log_bias, truth.response_bias,
                                      truth.recent, truth.recency_decay)  # fmt: skip


def test_sequential_users_follow_on_from_their_last_click() -> None:
    ds, truth = generate(replace(SMALL, users=600, follow_prob=1.0))
    inter = ds.interactions
    w = truth.user_seq_weight[inter["user_id"].to_numpy()]
    z = truth.item_seq_latent
    items, users, labels = (inter[c].to_numpy() for c in ("item_id", "user_id", "label"))
    same_user = np.r_[False, users[1:] == users[:-1]]
    after_click = np.r_[False, labels[:-1] == 1] & same_user
    closeness = np.einsum("nd,nd->n", z[items[1:]], z[items[:-1]])
    close = np.r_[0.0, closeness]
    assert close[after_click & (w > 0.9)].mean() > 1.0  # near neighbours of the last click
    assert abs(close[after_click & (w < 0.1)].mean()) < 0.3  # taste draws: unrelated


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
