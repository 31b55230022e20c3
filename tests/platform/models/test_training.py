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


def _tiny_log() -> tuple[pd.DataFrame, FeatureSet, np.ndarray]:
    rng = np.random.default_rng(1)
    rows = [(u, int(i), t, int(i % 2 == 0)) for u in range(1, 61)
            for t, i in enumerate(rng.choice(np.arange(1, 31), 8, replace=False))]  # fmt: skip
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "label"])
    features = FeatureSet((FeatureSpec("f", 2),), (FeatureSpec("g", 2),), num_items=30,
                          max_history=4)  # fmt: skip
    return inter, features, np.zeros((61, 1), np.int64)


def test_graph_models_train_cross_fitted_and_end_on_the_full_graph() -> None:
    from greenflow.platform.models.din import DIN, DINConfig
    from greenflow.platform.models.item_stats import (
        click_sequences,
        crossfit_folds,
        crossfit_graphs,
        item_graphs,
    )
    from greenflow.platform.models.training import CrossFit

    inter, features, users = _tiny_log()
    train = build_samples(inter, users, np.arange(1, 41), features, 3, seed=0)
    val = build_samples(inter, users, np.arange(41, 61), features, 3, seed=1)
    seqs = click_sequences(inter, np.arange(1, 41))
    fold_of = crossfit_folds(np.arange(1, 41), folds=2, seed=0)
    fit = CrossFit(np.array([fold_of[int(u)] for u in train.users]),
                   crossfit_graphs(seqs, fold_of, 30, 8, 2), item_graphs(seqs, 30, 8, 2))  # fmt: skip
    model = DIN(features, DINConfig(graph_top_m=8))
    config = CascadeTrainConfig(epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="crossfit"):
        train_model(model, train, val, config, log=lambda _: None)
    with pytest.raises(ValueError, match="crossfit"):
        train_model(YoutubeDNN(features), train, val, config, log=lambda _: None, crossfit=fit)
    seen: list[int] = []
    original = model.graph.load

    def spy(graphs):  # type: ignore[no-untyped-def]
        seen.append(next((f for f, g in enumerate(fit.graphs) if g is graphs), -1))
        original(graphs)

    model.graph.load = spy  # type: ignore[method-assign]
    train_model(model, train, val, config, log=lambda _: None, crossfit=fit)
    assert set(seen[:-1]) == {0, 1} and seen[-1] == -1  # fold graphs, then the full one
    np.testing.assert_array_equal(model.graph.ids[0].numpy(), fit.full[0].ids)


def test_softmax_loss_is_listwise_for_clicks_and_bce_for_non_clicks() -> None:
    import torch

    from greenflow.platform.models.training import event_loss

    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 3.0, -1.0]])
    labels = torch.tensor([[1.0, 0, 0], [0.0, 0, 0]])
    click = torch.logsumexp(logits[0], 0) - logits[0, 0]
    no_click = torch.nn.functional.softplus(logits[1, 0])
    assert event_loss(logits, labels, "softmax").item() == pytest.approx(
        ((click + no_click) / 2).item()
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert event_loss(logits, labels, "bce").item() == pytest.approx(bce.item())
    with pytest.raises(ValueError, match="loss"):
        CascadeTrainConfig(loss="hinge")
