from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from greenflow.platform.models.item_graph import ItemGraphFeatures
from greenflow.platform.models.item_stats import (
    ItemGraph,
    click_sequences,
    cosine_neighbours,
    crossfit_folds,
    crossfit_graphs,
    item_graphs,
    popularity,
    window_neighbours,
)

# users 1..3 click (item: users) 1: {1,2,3}, 2: {1,2}, 3: {1}, 4: {3}; user 1 clicks 2 twice
SEQUENCES = {1: np.array([1, 2, 3, 2]), 2: np.array([2, 1]), 3: np.array([1, 4])}


def test_popularity_counts_users_not_clicks() -> None:
    assert popularity(SEQUENCES, 5).tolist() == [0, 3, 2, 1, 1, 0]


def test_cosine_neighbours_by_hand() -> None:
    graph = cosine_neighbours(SEQUENCES, num_items=5, top_m=3)
    # co-clicks: (1,2) 2 users, (1,3) 1, (1,4) 1, (2,3) 1; n = [_, 3, 2, 1, 1, 0]
    dense = graph.dense()
    assert dense[1, 2] == pytest.approx(2 / np.sqrt(3 * 2))
    assert dense[1, 3] == pytest.approx(1 / np.sqrt(3 * 1))
    assert dense[2, 3] == pytest.approx(1 / np.sqrt(2 * 1))
    assert dense[3, 4] == 0 and dense[1, 1] == 0  # never co-clicked; no self-similarity
    np.testing.assert_allclose(dense, dense.T)
    # item 1's neighbours by similarity, ties (items 3 and 4: 1/sqrt 3) to the smaller id
    assert graph.ids[1].tolist() == [2, 3, 4]
    assert graph.ids[5].tolist() == [0, 0, 0] and graph.sims[5].tolist() == [0, 0, 0]
    assert graph.ids[0].tolist() == [0, 0, 0]  # padding row stays empty


def test_top_m_keeps_the_most_similar() -> None:
    graph = cosine_neighbours(SEQUENCES, num_items=5, top_m=1)
    assert graph.ids[:, 0].tolist() == [0, 2, 1, 2, 1, 0]


def test_click_sequences_keep_time_order_and_only_clicks_of_the_users() -> None:
    frame = pd.DataFrame({"user_id": [1, 1, 1, 2, 3], "item_id": [5, 4, 6, 7, 8],
                          "ts": [30, 10, 20, 5, 1], "label": [1, 1, 0, 1, 1]})  # fmt: skip
    seqs = click_sequences(frame, np.array([1, 2]))
    assert {u: s.tolist() for u, s in seqs.items()} == {1: [4, 5], 2: [7]}


def test_crossfit_graph_never_counts_its_own_fold() -> None:
    rng = np.random.default_rng(0)
    seqs = {u: rng.choice(np.arange(1, 30), 6, replace=False) for u in range(1, 41)}
    fold_of = crossfit_folds(np.arange(1, 41), folds=4, seed=0)
    assert sorted(set(fold_of.values())) == [0, 1, 2, 3]
    graphs = crossfit_graphs(seqs, fold_of, num_items=30, top_m=30, window=2)
    for f, (cosine, window) in enumerate(graphs):
        others = {u: s for u, s in seqs.items() if fold_of[u] != f}
        np.testing.assert_allclose(cosine.dense(), cosine_neighbours(others, 30, 30).dense())
        np.testing.assert_allclose(window.dense(), window_neighbours(others, 30, 30, 2).dense())
    # a pair clicked only by users of fold 0 is invisible to fold 0's graph
    fold0 = [u for u in seqs if fold_of[u] == 0]
    only0 = {u: s for u, s in seqs.items() if u in fold0}
    pairs = cosine_neighbours(only0, 30, 30).dense() > 0
    rest = cosine_neighbours({u: s for u, s in seqs.items() if u not in fold0}, 30, 30).dense() > 0
    assert (graphs[0][0].dense()[pairs & ~rest] == 0).all()


def test_window_neighbours_count_clicks_close_in_the_sequence() -> None:
    seqs = {1: np.array([1, 2, 3, 4]), 2: np.array([4, 1])}
    graph = window_neighbours(seqs, num_items=4, top_m=3, window=1)
    dense = graph.dense()
    n = np.array([0, 2, 1, 1, 2.0])  # clicks per item
    # adjacent pairs: (1,2) (2,3) (3,4) by user 1, (4,1) by user 2
    assert dense[1, 2] == pytest.approx(1 / np.sqrt(n[1] * n[2]))
    assert dense[1, 4] == pytest.approx(1 / np.sqrt(n[1] * n[4]))
    assert dense[1, 3] == 0  # two apart: outside a window of 1
    np.testing.assert_allclose(dense, dense.T)
    wider = window_neighbours(seqs, num_items=4, top_m=3, window=2).dense()
    assert wider[1, 3] == pytest.approx(1 / np.sqrt(n[1] * n[3]))


def test_graph_features_profile_is_the_item_knn_score() -> None:
    graphs = item_graphs(SEQUENCES, num_items=5, top_m=4, window=1)
    module = ItemGraphFeatures(num_items=5, top_m=4, recent=1)
    module.load(graphs)
    history = torch.tensor([[0, 0, 2, 3], [0, 0, 0, 4]])  # left-padded
    profile = module.profile(history)
    for g, graph in enumerate(graphs):
        dense = graph.dense()
        expected = dense[2] + dense[3]
        np.testing.assert_allclose(profile["graph_all"][0, g].numpy(), expected, rtol=1e-6)
        np.testing.assert_allclose(profile["graph_recent"][0, g].numpy(), dense[3], rtol=1e-6)
        np.testing.assert_allclose(profile["graph_all"][1, g].numpy(), dense[4], rtol=1e-6)
    feats = module.features(profile, torch.tensor([[1, 5], [1, 2]]))
    assert feats.shape == (2, 2, 6)
    knn = graphs[0].dense()[2] + graphs[0].dense()[3]
    assert feats[0, 0, 0].item() == pytest.approx(np.log1p(knn[1]), rel=1e-6)
    assert feats[0, 1].tolist() == [0.0] * 6  # item 5: never co-clicked


def test_graph_features_refuse_a_graph_of_another_shape() -> None:
    module = ItemGraphFeatures(num_items=5, top_m=4)
    wrong = ItemGraph(np.zeros((7, 4), np.int64), np.zeros((7, 4), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        module.load((wrong, wrong))
