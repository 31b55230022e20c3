"""The shared-prefix simulator must equal the reference one-chain-at-a-time cascade exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenflow.platform.cascade import reward, run_chain, scoring_model
from greenflow.platform.chains import ChainSpace, StageSpace, chain_costs, generate_chains
from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import FeatureSet, FeatureSpec, make_context, pad_histories
from greenflow.platform.models.flops import ModelFlops, measure_model_flops
from greenflow.platform.models.pool import MODEL_KINDS, probe_context
from greenflow.platform.simulation import AllChainSimulator, _batched_unique, tie_sort

FEATURES = FeatureSet((FeatureSpec("f", 3),), (FeatureSpec("g", 4),), num_items=40, max_history=8)
SPACE = ChainSpace(
    (
        StageSpace("recall", ("dssm",), (5, 10, 20, 50)),  # 50 > corpus left after history
        StageSpace("prerank", ("youtube_dnn",), (3, 5, 10)),
        StageSpace("rank", ("din", "dien"), (3,)),
    ),
    exposed_k=3,
)


def reference_rewards(models, ctx, histories, positives, chains, num_items, k) -> np.ndarray:
    out = np.zeros((len(histories), len(chains)), dtype=np.int16)
    for i, (hist, pos) in enumerate(zip(histories, positives, strict=True)):
        one = {key: v[i : i + 1] for key, v in ctx.items()}
        for j, chain in enumerate(chains):
            out[i, j] = reward(run_chain(models, one, hist, chain, num_items, k), pos)
    return out


@pytest.fixture(scope="module")
def pool():
    torch.manual_seed(0)
    models = {}
    for name, kind in MODEL_KINDS.items():
        model = kind.model_cls(FEATURES)
        model.item_emb.item_feats.copy_(torch.randint(0, 4, (41, 1)))
        models[name] = scoring_model(model)
    flops = {n: measure_model_flops(m, probe_context(FEATURES)) for n, m in models.items()}
    return models, flops


def requests(rng: np.random.Generator, n: int):
    histories = [
        rng.choice(np.arange(1, 41), rng.integers(0, 30), replace=False).tolist() for _ in range(n)
    ]
    histories[0] = list(range(1, 37))  # only 4 items left: every k_1 exceeds the corpus
    positives = [rng.choice(np.arange(1, 41), rng.integers(0, 12)).tolist() for _ in range(n)]
    positives[1] = []  # a user with no positives
    ctx = make_context(rng.integers(0, 3, (n, 1)), pad_histories(histories, 8))
    return ctx, histories, positives


def test_fast_path_equals_reference_on_every_request_and_chain(pool) -> None:
    models, flops = pool
    chains = generate_chains(SPACE)
    ctx, histories, positives = requests(np.random.default_rng(1), 24)
    fast = AllChainSimulator(models, flops, SPACE, chains, 40, item_chunk=7).run(
        ctx, histories, positives
    )
    expected = reference_rewards(models, ctx, histories, positives, chains, 40, 3)
    np.testing.assert_array_equal(fast.rewards, expected)
    assert expected.sum() > 0  # the comparison is not vacuous
    # and it spends far less than running every chain separately
    assert fast.simulation_flops < chain_costs(chains, flops, 40).sum() * 24
    assert set(fast.flops_by_model) == set(models)
    assert sum(fast.flops_by_model.values()) == pytest.approx(fast.simulation_flops)


class TieModel(CascadeModel):
    """Integer scores from a small table: lots of exact ties across items."""

    stage = "test"
    paper = "none"

    def __init__(self, table: torch.Tensor, user_shift: bool) -> None:
        super().__init__(FEATURES)
        self.register_buffer("table", table.double())
        self.user_shift = user_shift

    def encode_user(self, ctx):
        return {"u": ctx["user_feats"][:, :1].double()}

    def score(self, state, items):
        base = self.table[items]
        return base + state["u"] * (items % 2) if self.user_shift else base


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    levels=st.integers(1, 4),
    n_requests=st.integers(1, 6),
    scales=st.sampled_from([((2, 6, 45), (2, 4)), ((1, 40), (1,)), ((3, 9), (2, 3))]),
)
def test_fast_path_equals_reference_with_ties(seed, levels, n_requests, scales) -> None:
    rng = np.random.default_rng(seed)
    models = {
        name: TieModel(
            torch.from_numpy(rng.integers(0, levels, 41)).float(), user_shift=bool(i % 2)
        )
        for i, name in enumerate(("r", "p", "a", "b"))
    }
    k1, k2 = scales
    space = ChainSpace(
        (StageSpace("recall", ("r",), k1), StageSpace("prerank", ("p",), k2),
         StageSpace("rank", ("a", "b"), (min(k2),))),
        exposed_k=min(k2),
    )  # fmt: skip
    chains = generate_chains(space)
    flops = dict.fromkeys(models, ModelFlops(1.0, 1.0))
    ctx, histories, positives = requests(rng, max(n_requests, 2))
    fast = AllChainSimulator(models, flops, space, chains, 40).run(ctx, histories, positives)
    expected = reference_rewards(models, ctx, histories, positives, chains, 40, space.exposed_k)
    np.testing.assert_array_equal(fast.rewards, expected)


@pytest.mark.parametrize("seed", range(5))
def test_tie_sort_orders_by_score_then_item_id_whether_or_not_rows_are_in_id_order(seed) -> None:
    rng = np.random.default_rng(seed)
    ascending = torch.arange(1, 31).repeat(3, 1)  # a recall corpus: rows in id order
    shuffled = torch.from_numpy(np.stack([rng.permutation(30) + 1 for _ in range(3)]))
    for items in (ascending, shuffled):
        scores = torch.from_numpy(rng.integers(0, 4, (3, 30)).astype(np.float32))  # ties
        scores[0, :5] = float("-inf")
        order = items.gather(1, tie_sort(items, scores)).numpy()
        for row in range(3):
            it, sc = items[row].numpy(), scores[row].numpy().astype(np.float64)
            assert order[row].tolist() == it[np.lexsort((it, -sc))].tolist()


def test_batched_unique() -> None:
    items = torch.tensor([[5, 3, 5, 9], [2, 2, 2, 2]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, True]])
    assert _batched_unique(items, valid, sentinel=99).tolist() == [[3, 5], [2, 99]]


def test_batch_mismatch_is_an_error(pool) -> None:
    models, flops = pool
    ctx, histories, positives = requests(np.random.default_rng(0), 3)
    sim = AllChainSimulator(models, flops, SPACE, generate_chains(SPACE), 40)
    with pytest.raises(ValueError, match="batch mismatch"):
        sim.run(ctx, histories[:2], positives[:2])


def test_expected_rewards_sum_the_click_probabilities_of_each_chains_exposed_items(pool) -> None:
    from greenflow.platform.data.click_model import ClickModel

    models, flops = pool
    chains = generate_chains(SPACE)
    rng = np.random.default_rng(4)
    ctx, histories, positives = requests(rng, 10)
    users = np.arange(1, 11)
    truth = ClickModel(
        user_latent=rng.normal(size=(11, 4)).astype(np.float32),
        item_latent=rng.normal(size=(41, 4)).astype(np.float32),
        item_seq_latent=rng.normal(size=(41, 4)).astype(np.float32),
        user_bias=rng.normal(size=11).astype(np.float32),
        item_bias=rng.normal(size=41).astype(np.float32),
        user_seq_weight=rng.random(11).astype(np.float32),
        item_log_popularity=np.zeros(41), click_weight=1.5, log_bias=-1.0,
        response_bias=-2.0, recent=3, recency_decay=0.6,
    )  # fmt: skip
    sim = AllChainSimulator(models, flops, SPACE, chains, 40)
    fast = sim.run(ctx, histories, positives, users, truth.response)
    assert fast.expected is not None and fast.expected.shape == (10, len(chains))
    for i in range(10):
        one = {key: v[i : i + 1] for key, v in ctx.items()}
        for j, chain in enumerate(chains):
            exposed = run_chain(models, one, histories[i], chain, 40, SPACE.exposed_k)
            padded = np.zeros((1, SPACE.exposed_k), np.int64)
            padded[0, : len(exposed)] = exposed  # request 0 has fewer items than K left
            hand = truth.expected_reward(users[i : i + 1], [histories[i]], padded)[0]
            assert fast.expected[i, j] == pytest.approx(hand, rel=1e-5)
    assert sim.run(ctx, histories, positives).expected is None  # logged data: none
    with pytest.raises(ValueError, match="user ids"):
        sim.run(ctx, histories, positives, None, truth.response)
