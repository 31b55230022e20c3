"""Saving and loading trained reward models; Q (N, J) for the allocator.

Layout under a run directory::

    reward/<variant>.pt     state dict (torch.load(..., weights_only=True))
    reward/<variant>.json   resolved RewardModelConfig + RewardTrainConfig, FeatureSet,
                            chain space and chain order, activity bucket edges, sha256
    tune/reward_best.json   the best Ray Tune configuration (flat parameters), if tuned

The side file is enough to rebuild the model without the training code or the config
that trained it, and the chain order is checked against ``simulation.json`` on load, so
Q's columns always mean what the allocator thinks they mean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from greenflow.errors import ConfigError, InputError
from greenflow.platform.chains import Chain
from greenflow.platform.models.features import FeatureSet
from greenflow.platform.reward.data import (
    RewardData,
    SimulatedChains,
    chain_space_from_dict,
    load_reward_data,
    load_simulated_chains,
    request_contexts,
    user_table,
)
from greenflow.platform.reward.encoding import ChainEncoding, encode_chains
from greenflow.platform.reward.model import VARIANTS, RewardModel, RewardModelConfig, VariantName
from greenflow.platform.reward.training import RewardTrainConfig, predict
from greenflow.platform.run_dir import REWARD_TUNED, RunDir


def check_variant(variant: str) -> VariantName:
    if variant not in VARIANTS:
        raise ConfigError(
            f"unknown reward-model variant {variant!r}; expected one of {list(VARIANTS)}"
        )
    return variant  # type: ignore[return-value]  # checked against the Literal's values


def save_reward_model(
    run_dir: RunDir,
    model: RewardModel,
    features: FeatureSet,
    chains: SimulatedChains,
    train_config: RewardTrainConfig,
    activity_edges: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``reward/<variant>.pt`` and its side file; returns the side file's content."""
    variant = model.config.variant
    weights = run_dir.reward_weights(variant)
    sha256 = run_dir.write_weights(weights, model.state_dict())
    doc = {
        "variant": variant,
        "weights": weights,
        "sha256": sha256,
        "model_config": dataclasses.asdict(model.config),
        "train_config": dataclasses.asdict(train_config),
        "features": features.to_dict(),
        "chain_space": dataclasses.asdict(chains.space),
        "chain_ids": list(chains.ids),
        "activity_bucket_edges": [float(e) for e in activity_edges],
        **(extra or {}),
    }
    run_dir.write_json(run_dir.reward_side_file(variant), doc)
    return doc


def model_config_from_dict(data: dict[str, Any]) -> RewardModelConfig:
    """Inverse of ``dataclasses.asdict(RewardModelConfig)`` (JSON lists back to tuples)."""
    return RewardModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class LoadedRewardModel(NamedTuple):
    """What the allocator needs: the model, the encoded chains in ``simulation.json`` order,
    those chains with their FLOPs, the FeatureSet and the side file."""

    model: RewardModel
    encoding: ChainEncoding
    chains: SimulatedChains
    features: FeatureSet
    meta: dict[str, Any]


def load_reward_model(run_dir: RunDir, variant: str = "full") -> LoadedRewardModel:
    """Rebuild a trained reward model (eval mode) from ``reward/<variant>.{pt,json}``.

    Raises FileNotFoundError when it was never trained, ValueError when the weights do
    not match their sha256 or the chains no longer match ``simulation.json``.
    """
    variant = check_variant(variant)
    side = run_dir.reward_side_file(variant)
    if not run_dir.is_file(side):
        raise FileNotFoundError(
            f"{run_dir.show(side)}: no trained {variant!r} reward model; run `greenflow "
            f"train-reward --variant {variant}`"
        )
    meta = run_dir.read_json(side)
    state = run_dir.read_weights(meta["weights"], meta["sha256"])
    features = FeatureSet.from_dict(meta["features"])
    space = chain_space_from_dict(meta["chain_space"])
    simulated = load_simulated_chains(run_dir)
    if list(simulated.ids) != meta["chain_ids"]:
        raise InputError(
            f"{run_dir.show(side)}: trained on {len(meta['chain_ids'])} chains that differ from "
            f"simulation.json's {len(simulated.ids)}; retrain with `greenflow train-reward`"
        )
    model = RewardModel(features, space, model_config_from_dict(meta["model_config"]))
    model.load_state_dict(state)
    model.eval()
    encoding = encode_chains(space, [Chain.parse(c) for c in meta["chain_ids"]])
    return LoadedRewardModel(model, encoding, simulated, features, meta)


def predict_rewards(
    run_dir: RunDir, variant: str, requests: pd.DataFrame | str, batch_size: int = 512
) -> np.ndarray:
    """Q (N, J) in estimated clicks, columns in ``simulation.json["chains"]`` order.

    ``requests`` is either request-log rows (columns user_id, history, activity; rows
    kept in order) or a split name ('reward', 'eval'): then the split's simulated
    requests sorted by request id, the row order of ``load_reward_data(run_dir, split)``,
    so Q lines up with the simulated rewards R.
    """
    loaded = load_reward_model(run_dir, variant)
    j = loaded.encoding.num_chains
    if isinstance(requests, str):
        data = load_reward_data(run_dir, requests, loaded.features, j)
    else:
        feats, history, activity = request_contexts(
            requests, user_table(run_dir, loaded.features), loaded.features
        )
        n = len(requests)
        data = RewardData(
            np.arange(n), requests["user_id"].to_numpy(np.int64), feats, history, activity,
            np.zeros((n, j), np.float32), np.ones((n, j), bool),
        )  # fmt: skip
    return predict(loaded.model, loaded.encoding, data, batch_size)


def configs_from_params(
    params: dict[str, Any], model: RewardModelConfig, train: RewardTrainConfig
) -> tuple[RewardModelConfig, RewardTrainConfig]:
    """Apply flat parameters (Tune's search space, ``reward_best.json``) to both configs.

    Keys are field names of RewardModelConfig or RewardTrainConfig; ``bases`` may be a
    comma-separated string (search spaces hold strings). The ablation switches
    (``recursive``, ``multi_basis``) are not tunable: the variant decides them.
    """
    model_fields = {f.name for f in dataclasses.fields(RewardModelConfig)} - {
        "recursive",
        "multi_basis",
    }
    train_fields = {f.name for f in dataclasses.fields(RewardTrainConfig)}
    unknown = set(params) - model_fields - train_fields
    if unknown:
        raise InputError(
            f"unknown reward parameter(s) {sorted(unknown)}; expected some of "
            f"{sorted(model_fields | train_fields)}"
        )
    model_changes = {k: v for k, v in params.items() if k in model_fields}
    if isinstance(model_changes.get("bases"), str):
        model_changes["bases"] = tuple(model_changes["bases"].split(","))
    elif "bases" in model_changes:
        model_changes["bases"] = tuple(model_changes["bases"])
    train_changes = {k: v for k, v in params.items() if k in train_fields}
    return (
        dataclasses.replace(model, **model_changes),
        dataclasses.replace(train, **train_changes),
    )


def read_tuned(run_dir: RunDir) -> dict[str, Any] | None:
    """``tune/reward_best.json`` if present (its "params" are the flat best parameters)."""
    doc = run_dir.read_reward_tuned()
    if doc is not None and not isinstance(doc.get("params"), dict):
        raise InputError(
            f"{run_dir.show(REWARD_TUNED)}: no 'params' mapping; re-run `greenflow tune reward`"
        )
    return doc
