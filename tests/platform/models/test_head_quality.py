from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.models.head_quality import head_quality, hits_and_ndcg, top_k_of_corpus
from greenflow.platform.models.item_stats import cosine_neighbours
from greenflow.platform.models.reference_rankers import ItemKNNRanker, PopularityRanker


def test_top_k_skips_history_and_padding_and_breaks_ties_by_id() -> None:
    scores = np.array([9.0, 1.0, 5.0, 5.0, 7.0, 5.0])  # item 0 is padding
    assert top_k_of_corpus(scores, history=[4], k=3).tolist() == [2, 3, 5]
    assert top_k_of_corpus(scores, history=[], k=2).tolist() == [4, 2]
    assert top_k_of_corpus(scores, history=[1, 2, 3, 4, 5], k=3).tolist() == []


def test_hits_and_ndcg_by_hand() -> None:
    # ranks 1..3 = items 7, 3, 9; positives {3, 9, 11}: hits at ranks 2 and 3
    hits, ndcg = hits_and_ndcg(np.array([7, 3, 9]), [3, 9, 11], k=3)
    dcg = 1 / np.log2(3) + 1 / np.log2(4)
    idcg = 1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert hits == 2 and ndcg == pytest.approx(dcg / idcg)
    # one positive found at rank 1 with k = 3: ideal is one hit at rank 1
    assert hits_and_ndcg(np.array([3, 7, 9]), [3], k=3) == (1.0, 1.0)
    assert hits_and_ndcg(np.array([3, 7]), [], k=2) == (0.0, 0.0)  # no positives: 0


def test_head_quality_of_the_reference_rankers_on_a_tiny_case() -> None:
    seqs = {1: np.array([1, 2]), 2: np.array([1, 2]), 3: np.array([3, 4]), 4: np.array([1])}
    pop = PopularityRanker(np.array([0, 3, 2, 1, 1.0]))
    knn = ItemKNNRanker(cosine_neighbours(seqs, num_items=4, top_m=4))
    user_feats = np.zeros((2, 1), np.int64)
    history = np.array([[0, 3], [0, 2]])  # request 1 saw item 3, request 2 saw item 2
    histories, positives = [[3], [2]], [[4], [3]]
    # popularity ranks 1, 2, 3|4 (k = 1): misses both
    q = head_quality(pop, user_feats, history, histories, positives, k=1)
    assert (q.hits, q.ndcg, q.requests) == (0.0, 0.0, 2)
    # item-kNN: 3's only neighbour is 4 (hit); 2's only neighbour is 1 (miss)
    q = head_quality(knn, user_feats, history, histories, positives, k=1)
    assert (q.hits, q.ndcg) == (0.5, 0.5)
    assert q.to_json() == {"val_hits_at_1": 0.5, "val_ndcg_at_1": 0.5}
