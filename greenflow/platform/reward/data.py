"""Reward-model training data: simulated rewards joined with the request log and users.

Inputs under a run directory (DESIGN.md §5):

  samples/             one row per request: chain_idx list, reward list (``SAMPLE_SCHEMA``)
  simulation.json      "chains" (order of chain_idx, FLOPs per request) and the chain space
  data/requests.parquet  history (clicked item ids before the request), activity
  data/users.parquet   user feature codes
  model_pool.json      the FeatureSet (vocabularies, max history)

A request's rewards become one row of a dense (N, J) matrix with an observed-mask, so a
simulation that kept only a sampled fraction of chains per request (the paper's
data-sparsity setting) trains the same way: the model scores all J chains of a request in
one pass and the loss gathers the observed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from greenflow.errors import InputError
from greenflow.platform.chains import Chain, ChainSpace, StageSpace
from greenflow.platform.data.store import read_table
from greenflow.platform.evaluation import mean_reward_per_chain
from greenflow.platform.models.features import (
    Context,
    FeatureSet,
    make_context,
    pad_histories,
    user_feature_table,
)
from greenflow.platform.run_dir import SAMPLES_DIR, SIMULATION, RunDir


class EmptySplitError(InputError):
    """The samples hold no simulated request of the split asked for."""


@dataclass(frozen=True)
class SimulatedChains:
    """The chains of a simulation, in the order of the samples' ``chain_idx``."""

    space: ChainSpace
    chains: tuple[Chain, ...]
    flops: np.ndarray  # (J,) cascade FLOPs per request of each chain

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.chains)


def chain_space_from_dict(data: dict[str, Any]) -> ChainSpace:
    """Inverse of ``config_to_dict(ChainSpace)``: {"stages": [{name, models, item_scales}], "exposed_k"}."""
    stages = data["stages"]
    if not isinstance(stages, list):
        raise InputError(f"chain space 'stages' must be a list, got {type(stages).__name__}")
    return ChainSpace(
        tuple(
            StageSpace(s["name"], tuple(s["models"]), tuple(int(k) for k in s["item_scales"]))
            for s in stages
        ),
        exposed_k=int(data["exposed_k"]),
    )


def load_simulated_chains(run_dir: RunDir) -> SimulatedChains:
    """Chains, their FLOPs and the chain space from ``simulation.json``."""
    doc = run_dir.read_simulation()
    if doc.config is None:
        raise InputError(f"{run_dir.show(SIMULATION)}: no 'config'; run `greenflow simulate` again")
    space = chain_space_from_dict(doc.config["chains"])
    chains = tuple(Chain.parse(c.id) for c in doc.chains)
    flops = np.array([float(c.flops) for c in doc.chains], dtype=np.float64)
    return SimulatedChains(space, chains, flops)


def load_features(run_dir: RunDir) -> FeatureSet:
    """The FeatureSet of the run's model pool (vocabularies and max history length)."""
    return FeatureSet.from_dict(run_dir.read_model_pool().features)


def load_train_mean(run_dir: RunDir, num_chains: int) -> np.ndarray:
    """(J,) mean true clicks of each chain over the reward (training) split's samples,
    failed simulations skipped: EQUAL's choice offline and in serving."""
    train = run_dir.read_samples(
        columns=["chain_idx", "reward"],
        filters=(pads.field("split") == "reward") & pads.field("error").is_null(),
    )
    return mean_reward_per_chain(
        [np.asarray(x) for x in train["chain_idx"].to_pylist()],
        [np.asarray(x) for x in train["reward"].to_pylist()],
        num_chains,
    )


@dataclass(frozen=True)
class RewardData:
    """N requests with their contexts and the rewards of the chains simulated for them."""

    request_id: np.ndarray  # (N,) int64
    user_id: np.ndarray  # (N,) int64
    user_feats: np.ndarray  # (N, F_u) int64 codes
    history: np.ndarray  # (N, L) int64 item ids, left-padded with 0
    activity: np.ndarray  # (N,) int64 interactions before the request
    reward: np.ndarray  # (N, J) float32 clicks R_ij; 0 where not observed
    mask: np.ndarray  # (N, J) bool: chain j was simulated for request i
    # (N, J) float32 E[R_ij] from the known click model (synthetic runs), else None
    expected: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.request_id)

    def subset(self, index: np.ndarray) -> RewardData:
        return RewardData(
            self.request_id[index],
            self.user_id[index],
            self.user_feats[index],
            self.history[index],
            self.activity[index],
            self.reward[index],
            self.mask[index],
            None if self.expected is None else self.expected[index],
        )

    def context(self, index: np.ndarray | slice) -> Context:
        """The reward model's context for rows ``index``: user_feats, history, activity."""
        ctx = make_context(self.user_feats[index], self.history[index])
        ctx["activity"] = torch.as_tensor(self.activity[index], dtype=torch.int64)
        return ctx


def user_table(run_dir: RunDir, features: FeatureSet) -> np.ndarray:
    """(U+1, F_u) user feature codes indexed by user id (only the users table is read)."""
    return user_feature_table(read_table(run_dir.data, "users"), features)


def request_contexts(
    requests: pd.DataFrame, users: np.ndarray, features: FeatureSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """user_feats (N, F_u), history (N, L) and activity (N,) for request-log rows.

    Raises ValueError naming the first user id outside the users table.
    """
    missing = [c for c in ("user_id", "history", "activity") if c not in requests.columns]
    if missing:
        raise ValueError(f"requests lack column(s) {missing}")
    user_ids = requests["user_id"].to_numpy(dtype=np.int64)
    bad = user_ids[(user_ids < 1) | (user_ids >= len(users))]
    if len(bad):
        raise ValueError(f"user_id {int(bad[0])} outside 1..{len(users) - 1}")
    history = pad_histories(list(requests["history"]), features.max_history)
    activity = np.array(requests["activity"], dtype=np.int64)  # a writable copy for torch
    return users[user_ids], history, activity


def load_reward_data(
    run_dir: RunDir, split: str, features: FeatureSet, num_chains: int
) -> RewardData:
    """Requests of ``split`` ('reward' or 'eval') with their rewards, sorted by request id.

    Rows whose simulation failed (``error`` set) are skipped: they have no rewards.
    """
    samples_dir = run_dir.show(SAMPLES_DIR)
    table = run_dir.read_samples(
        columns=["request_id", "user_id", "activity", "chain_idx", "reward", "expected_reward"],
        filters=(pads.field("split") == split) & pads.field("error").is_null(),
    )
    # One chunk, so the list parent indices below are row numbers of the whole table.
    table = table.sort_by("request_id").combine_chunks()
    n = table.num_rows
    if n == 0:
        raise EmptySplitError(f"{samples_dir}: no simulated requests in split {split!r}")
    # Flatten the per-request lists once: (row, chain) -> reward, no Python loop over rows.
    rows = pc.list_parent_indices(table["chain_idx"]).to_numpy()
    cols = pc.list_flatten(table["chain_idx"]).to_numpy().astype(np.int64)
    values = pc.list_flatten(table["reward"]).to_numpy()
    if len(cols) and (cols.min() < 0 or cols.max() >= num_chains):
        raise InputError(f"{samples_dir}: chain_idx outside 0..{num_chains - 1}")
    reward = np.zeros((n, num_chains), dtype=np.float32)
    mask = np.zeros((n, num_chains), dtype=bool)
    reward[rows, cols] = values
    mask[rows, cols] = True
    expected = None
    if table["expected_reward"].null_count == 0:  # synthetic: E[R] beside every R
        expected = np.zeros((n, num_chains), dtype=np.float32)
        expected[rows, cols] = pc.list_flatten(table["expected_reward"]).to_numpy()

    request_id = table["request_id"].to_numpy()
    log = read_table(
        run_dir.data,
        "requests",
        columns=["request_id", "user_id", "history", "activity"],
        filters=[("split", "=", split)],
    ).set_index("request_id")
    unknown = np.setdiff1d(request_id, log.index.to_numpy())
    if len(unknown):
        raise InputError(f"samples name request(s) not in the request log: {unknown[:5].tolist()}")
    log = log.loc[request_id]
    user_feats, history, activity = request_contexts(log, user_table(run_dir, features), features)
    return RewardData(
        request_id=request_id.astype(np.int64),
        user_id=log["user_id"].to_numpy(dtype=np.int64),
        user_feats=user_feats,
        history=history,
        activity=activity,
        reward=reward,
        mask=mask,
        expected=expected,
    )


def split_by_user(
    data: RewardData, val_fraction: float, seed: int
) -> tuple[RewardData, RewardData]:
    """(train, validation): a seeded ``val_fraction`` of the *users* goes to validation.

    By user, not by request, because a user's requests share features and most of their
    history; a request-level split would leak them and flatter the validation loss.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    users = np.unique(data.user_id)
    if len(users) < 2:
        raise InputError(f"need at least 2 users to hold some out, got {len(users)}")
    rng = np.random.default_rng(seed)
    n_val = min(max(1, round(val_fraction * len(users))), len(users) - 1)
    val_users = rng.choice(users, size=n_val, replace=False)
    is_val = np.isin(data.user_id, val_users)
    return data.subset(np.flatnonzero(~is_val)), data.subset(np.flatnonzero(is_val))
