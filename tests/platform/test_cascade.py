from __future__ import annotations

import numpy as np
import pytest
import torch

from greenflow.platform.cascade import candidate_corpus, reward, run_chain, top_k
from greenflow.platform.chains import Action, Chain
from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import FeatureSet, FeatureSpec, make_context


class TableModel(CascadeModel):
    """Scores item i with table[i], whatever the user: orderings are fully controlled."""

    stage = "test"
    paper = "none"

    def __init__(self, features: FeatureSet, table: list[float]) -> None:
        super().__init__(features)
        self.table = torch.tensor(table)
        self.encoded = 0

    def encode_user(self, ctx):
        self.encoded += 1
        return {"n": ctx["history"].shape[0]}

    def score(self, state, items):
        return self.table[items]


FEATURES = FeatureSet((FeatureSpec("f", 2),), (FeatureSpec("g", 2),), num_items=8, max_history=4)
CTX = make_context(np.zeros((1, 1), np.int64), np.array([[0, 0, 2, 5]]))


def test_top_k_breaks_ties_by_smaller_item_id() -> None:
    items = np.array([7, 3, 5, 1])
    scores = np.array([0.5, 0.9, 0.5, 0.5], dtype=np.float32)
    assert top_k(items, scores, 3).tolist() == [3, 1, 5]
    assert top_k(items, scores, 10).tolist() == [3, 1, 5, 7]  # k beyond the list


def test_candidate_corpus_excludes_history() -> None:
    assert candidate_corpus(6, [2, 5, 5]).tolist() == [1, 3, 4, 6]


def test_run_chain_follows_each_stage_ordering() -> None:
    #            item: 0    1    2    3    4    5    6    7    8
    recall = TableModel(FEATURES, [0, 8.0, 9.0, 7.0, 6.0, 9.5, 5.0, 1.0, 0.5])
    prerank = TableModel(FEATURES, [0, 1.0, 0, 2.0, 3.0, 0, 9.0, 0, 0])
    rank = TableModel(FEATURES, [0, 5.0, 0, 5.0, 1.0, 0, 0, 0, 0])
    models = {"r": recall, "p": prerank, "k": rank}
    chain = Chain((Action("r", 4), Action("p", 3), Action("k", 2)))
    # recall scores {1,3,4,6,7,8} (2 and 5 are history) and passes 1,3,4,6;
    # prerank passes 6 (9.0), 4 (3.0), 3 (2.0); rank orders 3 (5.0), 4 (1.0), 6 (0.0).
    exposed = run_chain(models, CTX, [2, 5], chain, num_items=8, exposed_k=2)
    assert exposed.tolist() == [3, 4]
    assert reward(exposed, [4, 8, 4]) == 1


def test_k_larger_than_the_remaining_corpus_passes_everything() -> None:
    flat = TableModel(FEATURES, [0.0] * 9)  # all ties: item id order decides
    chain = Chain((Action("a", 100), Action("a", 50)))
    exposed = run_chain({"a": flat}, CTX, [2, 5], chain, num_items=8, exposed_k=3)
    assert exposed.tolist() == [1, 3, 4]


def test_run_chain_takes_one_request() -> None:
    ctx = make_context(np.zeros((2, 1), np.int64), np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="one request"):
        run_chain({}, ctx, [], Chain((Action("a", 1),)), 8, 1)


def test_run_chain_with_real_models_exposes_k_new_items() -> None:
    from greenflow.platform.models.pool import MODEL_KINDS

    torch.manual_seed(0)
    models = {name: kind.model_cls(FEATURES).eval() for name, kind in MODEL_KINDS.items()}
    chain = Chain((Action("dssm", 6), Action("youtube_dnn", 4), Action("dien", 3)))
    exposed = run_chain(models, CTX, [2, 5], chain, num_items=8, exposed_k=3)
    assert len(exposed) == 3 and len(set(exposed.tolist())) == 3
    assert not set(exposed.tolist()) & {2, 5}
    # deterministic: the same request through the same chain gives the same items
    assert run_chain(models, CTX, [2, 5], chain, 8, 3).tolist() == exposed.tolist()
