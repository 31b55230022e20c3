"""The reward-model training loop on tiny simulated samples (sampled chains), no Ray."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from greenflow.platform.chains import generate_chains
from greenflow.platform.models.features import FeatureSet, FeatureSpec
from greenflow.platform.reward import (
    VARIANTS,
    RewardData,
    RewardModel,
    RewardTrainConfig,
    SimulatedChains,
    activity_bucket_edges,
    encode_chains,
)
from greenflow.platform.reward.data import load_reward_data, split_by_user
from greenflow.platform.reward.run import RewardDataset, fit_reward_model, load_training_data
from greenflow.platform.reward.training import loss_on, masked_loss, predict
from tests.conftest import REWARD_CHAIN_FRACTION, TINY_SPACE

pytestmark = pytest.mark.usefixtures("no_ray")


def test_samples_join_the_request_log_and_keep_sampled_chains(reward_run) -> None:
    data = load_training_data(reward_run.run_dir, RewardTrainConfig())
    j = len(data.chains.chains)
    assert j == 8 and data.eval is not None
    everything = np.concatenate([data.train.request_id, data.val.request_id])
    assert len(np.unique(everything)) == len(everything)
    # by user: no user on both sides
    assert not set(data.train.user_id) & set(data.val.user_id)
    # reward requests keep a sampled half of the chains, eval requests all of them
    assert (data.train.mask.sum(1) == round(REWARD_CHAIN_FRACTION * j)).all()
    assert data.eval.mask.all()
    assert (data.train.reward[~data.train.mask] == 0).all()
    assert data.train.history.shape[1] == data.features.max_history
    assert data.train.user_feats.shape[1] == len(data.features.user)


def test_split_by_user_is_seeded_and_rejects_bad_fractions(reward_run) -> None:
    data = load_training_data(reward_run.run_dir, RewardTrainConfig())
    features, j = data.features, len(data.chains.chains)
    reward = load_reward_data(reward_run.run_dir, "reward", features, j)
    a = split_by_user(reward, 0.3, seed=4)[1].request_id
    b = split_by_user(reward, 0.3, seed=4)[1].request_id
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_user(reward, 1.0, seed=0)


def test_masked_loss_ignores_unsimulated_chains() -> None:
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[True, False], [True, True]])
    a = masked_loss(q, torch.tensor([[1.0, 0.0], [2.0, 5.0]]), mask, "poisson")
    b = masked_loss(q, torch.tensor([[1.0, 99.0], [2.0, 5.0]]), mask, "poisson")
    assert a == b


def learnable_data(seed: int = 0) -> RewardDataset:
    """In-memory samples with a signal to learn: the click rate grows with activity and
    with the recall and pre-rank item scales; half of the chains observed per request."""
    rng = np.random.default_rng(seed)
    features = FeatureSet((FeatureSpec("age", 4),), (FeatureSpec("genre", 3),), 30, 6)
    chains = generate_chains(TINY_SPACE)
    encoding = encode_chains(TINY_SPACE, chains)
    n, j = 400, len(chains)
    activity = rng.integers(1, 200, size=n)
    scale_bits = encoding.thermometer.sum((1, 2)).numpy()  # (J,) grows with every k_s
    rate = 0.2 + 1.5 * (activity[:, None] > 80) + 0.3 * (scale_bits[None, :] - 3)
    reward = rng.poisson(rate).astype(np.float32)
    mask = np.zeros((n, j), bool)
    for i in range(n):
        mask[i, rng.choice(j, size=j // 2, replace=False)] = True
    data = RewardData(
        request_id=np.arange(n), user_id=np.arange(n) // 2,
        user_feats=rng.integers(0, 4, size=(n, 1)),
        history=rng.integers(0, 31, size=(n, 6)), activity=activity,
        reward=np.where(mask, reward, 0.0).astype(np.float32), mask=mask,
    )  # fmt: skip
    train, val = split_by_user(data, 0.25, seed)
    costs = np.arange(1, j + 1, dtype=np.float64)
    return RewardDataset(
        features, SimulatedChains(TINY_SPACE, tuple(chains), costs), train, val, None,
        activity_bucket_edges(train.activity),
    )  # fmt: skip


@pytest.mark.parametrize("variant", ["full", "plain"])
def test_training_reduces_loss_early_stops_and_keeps_the_best_weights(variant: str) -> None:
    data = learnable_data()
    config = RewardTrainConfig(epochs=300, batch_size=32, lr=1e-2, patience=3)
    torch.manual_seed(0)
    untrained = RewardModel(data.features, data.chains.space, VARIANTS[variant])
    before = loss_on(predict(untrained, data.encoding, data.val), data.val, "poisson")
    lines: list[str] = []
    reported: list[dict[str, float]] = []
    model, result = fit_reward_model(data, VARIANTS[variant], config, lines.append, reported.append)

    assert result.val_loss < before - 0.05  # validation loss went down clearly
    curve = [row["train_loss"] for row in result.curve]
    assert min(curve) < curve[0] - 0.05  # and the training loss
    assert result.epochs_run < config.epochs  # stopped early ...
    assert result.epochs_run == result.best_epoch + config.patience  # ... by patience
    assert any("early stop" in line for line in lines)
    # the best weights are the ones left loaded
    after = loss_on(predict(model, data.encoding, data.val), data.val, "poisson")
    assert after == pytest.approx(result.val_loss, rel=1e-5)
    # every epoch was reported, with the best-so-far val_loss
    assert [r["epoch"] for r in reported] == list(range(1, result.epochs_run + 1))
    assert reported[-1]["val_loss"] == pytest.approx(result.val_loss)
    assert all(a["val_loss"] >= b["val_loss"] for a, b in zip(reported, reported[1:], strict=False))
    # the learnt Q grows with the item scales, like the data (and by construction)
    q = predict(model, data.encoding, data.val).mean(0)
    bits = data.encoding.thermometer.sum((1, 2)).numpy()
    assert q[bits == bits.max()].mean() > q[bits == bits.min()].mean()


def test_training_is_reproducible(reward_run) -> None:
    config = RewardTrainConfig(epochs=2, batch_size=16)
    data = load_training_data(reward_run.run_dir, config)
    a, _ = fit_reward_model(data, VARIANTS["full"], config, lambda _: None)
    b, _ = fit_reward_model(data, VARIANTS["full"], config, lambda _: None)
    np.testing.assert_array_equal(
        predict(a, data.encoding, data.val), predict(b, data.encoding, data.val)
    )


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="loss"):
        RewardTrainConfig(loss="huber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 1"):
        dataclasses.replace(RewardTrainConfig(), epochs=0)


def test_known_expected_rewards_get_their_own_metrics() -> None:
    from greenflow.platform.reward.training import evaluate

    data = learnable_data().val
    edges = activity_bucket_edges(data.activity)
    truth = np.where(data.mask, 1.0, 0.0).astype(np.float32)  # E[R] = 1 on every pair
    known = dataclasses.replace(data, expected=truth)
    assert "expected" not in evaluate(np.ones_like(truth), data, edges, "poisson")
    exact = evaluate(np.ones_like(truth), known, edges, "poisson")["expected"]
    assert exact["mae"] == pytest.approx(0.0) and exact["field_rce"]["chain"] == pytest.approx(0.0)
    off = evaluate(np.full_like(truth, 1.5), known, edges, "poisson")["expected"]
    assert off["mae"] == pytest.approx(0.5) and off["field_rce"]["chain"] > 0.4
    assert known.subset(np.arange(3)).expected.shape == (3, truth.shape[1])  # kept by subsets
