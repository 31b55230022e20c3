from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from greenflow.platform.models.features import FeatureSet, FeatureSpec
from greenflow.platform.models.training import CascadeTrainConfig, auc, build_samples, train_model
from greenflow.platform.models.youtube_dnn import YoutubeDNN


def test_auc_matches_pair_counting() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200).astype(float)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auc(labels, scores) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        auc(np.ones(3), np.arange(3.0))


def test_samples_history_is_clicks_strictly_before_the_event() -> None:
    inter = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1],
            "item_id": [3, 4, 5, 6],
            "ts": [10, 10, 20, 30],
            "label": [1, 1, 0, 1],
        }
    )
    features = FeatureSet(
        (FeatureSpec("f", 2),), (FeatureSpec("g", 2),), num_items=9, max_history=3
    )
    s = build_samples(
        inter, np.zeros((2, 1), np.int64), np.array([1]), features, negatives=2, seed=0
    )
    assert s.history.tolist() == [[0, 0, 0], [0, 0, 0], [0, 3, 4], [0, 3, 4]]
    assert s.items[:, 0].tolist() == [3, 4, 5, 6]
    assert s.labels[:, 0].tolist() == [1, 1, 0, 1] and (s.labels[:, 1:] == 0).all()
    assert ((s.items[:, 1:] >= 1) & (s.items[:, 1:] <= 9)).all()


def test_training_learns_a_preference_signal() -> None:
    # users like even items: a model must get well above chance
    rng = np.random.default_rng(0)
    n_users, n_items = 200, 40
    rows = []
    for u in range(1, n_users + 1):
        for t, i in enumerate(rng.choice(np.arange(1, n_items + 1), 12, replace=False)):
            rows.append((u, int(i), t, int(i % 2 == 0)))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "label"])
    features = FeatureSet(
        (FeatureSpec("f", 2),), (FeatureSpec("g", 2),), num_items=n_items, max_history=5
    )
    users = np.zeros((n_users + 1, 1), np.int64)
    train = build_samples(inter, users, np.arange(1, 151), features, 2, seed=0)
    val = build_samples(inter, users, np.arange(151, 201), features, 2, seed=1)
    model = YoutubeDNN(features)
    result = train_model(
        model, train, val, CascadeTrainConfig(epochs=6, batch_size=64, lr=1e-2), log=lambda _: None
    )
    assert result.val_auc > 0.75
    assert 1 <= result.best_epoch <= result.epochs_run <= 6
