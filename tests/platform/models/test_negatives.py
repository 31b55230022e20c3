from __future__ import annotations

import numpy as np
import pytest
import torch

from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import FeatureSet, FeatureSpec
from greenflow.platform.models.negatives import (
    CandidateNegatives,
    UniformNegatives,
    exclusions,
    stage_candidates,
)

FEATURES = FeatureSet((FeatureSpec("f", 2),), (FeatureSpec("g", 2),), num_items=12, max_history=3)


class FixedScores(CascadeModel):
    """Scores item i as weights[i], the same for every request."""

    stage = "recall"
    paper = "test"

    def __init__(self, weights: list[float]) -> None:
        super().__init__(FEATURES)
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def encode_user(self, ctx):  # type: ignore[no-untyped-def]
        return {"b": ctx["history"].shape[0]}

    def score(self, state, items):  # type: ignore[no-untyped-def]
        return self.weights[items]


def test_stage_candidates_run_the_prefix_and_never_pass_history_or_clicks() -> None:
    recall = FixedScores([0] + list(range(12, 0, -1)))  # items 1..12 best first
    prerank = FixedScores([0] + list(range(1, 13)))  # reverses the order
    user_feats = np.zeros((2, 1), np.int64)
    history = np.array([[0, 1, 2], [0, 0, 0]])
    exclude = [np.array([3, 9]), np.array([], np.int64)]
    (top,) = stage_candidates([(recall, 6)], user_feats, history, exclude, num_items=12)
    assert top.tolist() == [[4, 5, 6, 7, 8, 10], [1, 2, 3, 4, 5, 6]]
    first, two = stage_candidates([(recall, 6), (prerank, 3)], user_feats, history, exclude, 12)
    assert first.tolist() == top.tolist()
    assert two.tolist() == [[10, 8, 7], [6, 5, 4]]  # pre-rank's top 3 of recall's 6


def test_stage_candidates_pad_when_too_few_items_are_eligible() -> None:
    recall = FixedScores([0] + list(range(12, 0, -1)))
    history = np.array([[10, 11, 12]])
    exclude = [np.arange(1, 8)]  # only 8 and 9 left
    (top,) = stage_candidates([(recall, 4)], np.zeros((1, 1), np.int64), history, exclude, 12)
    assert top.tolist() == [[8, 9, 0, 0]]


def test_candidate_negatives_mix_previous_stage_and_corpus() -> None:
    candidates = np.array([[5, 6, 0, 0], [0, 0, 0, 0], [7, 8, 9, 10]])
    sampler = CandidateNegatives((candidates,), num_items=1000, hard_fraction=0.5)
    rng = np.random.default_rng(0)
    draws = np.concatenate([sampler.sample(rng, np.array([0, 1, 2]), 8) for _ in range(200)])
    hard, corpus = draws[:, :4], draws[:, 4:]
    rows = np.tile([0, 1, 2], 200)
    assert set(hard[rows == 0].ravel()) == {5, 6}  # only the valid candidates, both drawn
    assert set(hard[rows == 2].ravel()) == {7, 8, 9, 10}
    assert (hard[rows == 1] >= 1).all()  # no candidates: corpus negatives instead
    assert len(np.unique(hard[rows == 1])) > 50 and len(np.unique(corpus)) > 500


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_candidate_negatives_fraction_bounds(fraction: float) -> None:
    sampler = CandidateNegatives((np.array([[3, 4]]),), num_items=1000, hard_fraction=fraction)
    draws = sampler.sample(np.random.default_rng(1), np.zeros(100, np.int64), 4)
    assert np.isin(draws, [3, 4]).all() == (fraction == 1.0)


def test_uniform_negatives_cover_the_corpus_only() -> None:
    draws = UniformNegatives(7).sample(np.random.default_rng(0), np.arange(500), 3)
    assert draws.shape == (500, 3) and set(draws.ravel()) == set(range(1, 8))


def test_no_leakage_a_users_clicked_items_are_never_hard_negatives() -> None:
    rng = np.random.default_rng(3)
    recall = FixedScores([0.0, *rng.random(12)])
    users = np.array([1, 1, 2])
    clicked = {1: np.array([2, 4, 6]), 2: np.array([1])}
    history = np.array([[0, 0, 2], [0, 2, 4], [0, 0, 0]])
    (pools,) = stage_candidates([(recall, 12)], np.zeros((3, 1), np.int64), history,
                                exclusions(users, clicked), 12)  # fmt: skip
    draws = CandidateNegatives((pools,), 12, hard_fraction=1.0).sample(rng, np.arange(3), 50)
    for row, u in enumerate(users):
        assert not np.isin(draws[row], clicked[u]).any()
        assert (pools[row] > 0).sum() == 12 - len(clicked[u])


def test_hard_negatives_split_equally_over_the_earlier_stages() -> None:
    recall_pool = np.full((4, 3), 7)
    prerank_pool = np.full((4, 2), 9)
    sampler = CandidateNegatives((recall_pool, prerank_pool), num_items=1000, hard_fraction=0.5)
    draws = sampler.sample(np.random.default_rng(0), np.arange(4), 8)
    assert (draws[:, :2] == 7).all() and (draws[:, 2:4] == 9).all()
    assert not np.isin(draws[:, 4:], [7, 9]).all()
