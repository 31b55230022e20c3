"""What an allocator replica loads and how it resolves requests, without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.data.store import load_requests
from greenflow.platform.reward.store import predict_rewards
from greenflow.platform.serving import (
    RequestError,
    RewardScorer,
    UnknownUserError,
    load_serving_assets,
)

pytestmark = pytest.mark.usefixtures("no_ray")


@pytest.fixture(scope="module")
def assets(serve_run):
    return load_serving_assets(serve_run.run_dir)


def test_assets_line_up_with_the_simulation(assets, serve_run) -> None:
    assert len(assets.chains) == len(assets.q) == len(assets.train_mean)
    assert assets.joules_per_flop and assets.joules_per_flop > 0
    assert assets.allocator_flops_per_request > 0
    assert assets.exposed_k == serve_run.chains.exposed_k


def test_resolve_known_user_uses_the_latest_history(assets) -> None:
    user = next(u for u, h in assets.histories.items() if h)
    req = assets.resolve(user, None, None)
    assert req.history == assets.histories[user] and req.k == assets.exposed_k
    assert (req.user_feats == assets.users[user]).all()


@pytest.mark.parametrize(
    ("user", "history", "k", "message"),
    [
        (10**6, None, None, "unknown user"),
        (1, [0], None, "outside"),
        (1, [10**6], None, "outside"),
        (1, None, 0, "k must be"),
        (1, None, 10**3, "k must be"),
        (0, [1], None, "user_id must be"),
    ],
)
def test_resolve_refuses_what_it_cannot_serve(assets, user, history, k, message) -> None:
    with pytest.raises(RequestError, match=message):
        assets.resolve(user, history, k)


def test_unknown_user_without_history_is_its_own_error(assets) -> None:
    with pytest.raises(UnknownUserError):
        assets.resolve(10**6, None, None)


def test_unknown_user_with_history_gets_unknown_features(assets) -> None:
    req = assets.resolve(10**6, [1, 2], 1)
    assert not req.user_feats.any() and req.activity == 2


def test_policy_chains(assets) -> None:
    assert assets.policy_chain("greenflow", 1e9) is None
    chain = assets.chains[3].id
    assert assets.policy_chain(f"fixed:{chain}", 0.0) == 3
    cheap = assets.policy_chain("equal", 0.0)  # nothing fits: the cheapest chain
    assert assets.q[cheap] == assets.q.min()
    rich = assets.policy_chain("equal", float(assets.q.max()))
    assert assets.train_mean[rich] == assets.train_mean.max()
    for bad in ("oracle", "fixed:nope"):
        with pytest.raises(ValueError):
            assets.policy_chain(bad, 1.0)


def test_fallback_avoids_every_failed_model_at_the_least_cost(assets) -> None:
    # the tiny space: recall dssm, pre-rank youtube_dnn, rank din or dien
    full = int(np.argmax(assets.q))
    dien = [j for j, c in enumerate(assets.chains) if c.actions[-1].model == "dien"]
    assert assets.fallback_chain({"din"}, full) == min(dien, key=lambda j: assets.q[j])
    # every chain needs the recall and the pre-rank model: the same chain again
    assert assets.fallback_chain({"dssm"}, full) == full
    assert assets.fallback_chain({"din", "youtube_dnn"}, 3) == 3
    assert assets.fallback_chain({"din", "dien"}, 3) == 3


def test_reward_scorer_matches_the_offline_estimates(assets, serve_run) -> None:
    frame = load_requests(serve_run.data_dir, "eval").head(6)
    expected = predict_rewards(serve_run.run_dir, "full", frame)
    got = RewardScorer(assets.reward)(
        [
            assets.resolve(int(r.user_id), list(r.history), None, int(r.activity))
            for r in frame.itertuples()
        ]  # fmt: skip
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
