"""What an allocator replica needs from a run directory, and request resolution.

``load_serving_assets`` reads, once per replica: the chains and their FLOPs
(``simulation.json``), the trained reward model, the users' feature codes, each user's
latest click history and activity (for requests that send only a user id), the mean
training reward per chain (EQUAL's choice) and the measured joules per FLOP (PFEC).

``ServingAssets.resolve`` turns one request into the reward model's inputs and raises
``RequestError`` (a ``ValueError``, answered with a 4xx) for anything it cannot serve.
``RewardScorer`` computes Q (B, J) for a batch (a traced graph of the reward model where it is
exact: ``reward.traced``). No Ray here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from greenflow.platform.allocation.serving_policies import FixedChoice, serving_chain
from greenflow.platform.chains import Chain, ChainSpace
from greenflow.platform.data.store import load_dataset
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.reward.data import load_train_mean
from greenflow.platform.reward.store import LoadedRewardModel, load_reward_model
from greenflow.platform.reward.traced import trace_reward
from greenflow.platform.run_dir import RunDir

MAX_HISTORY_IDS = 10_000  # a longer history in one request is refused, not truncated


class RequestError(ValueError):
    """A request the allocator cannot serve; the message says why (HTTP 422)."""


class UnknownUserError(RequestError):
    """A user the allocator has no history for and the request sent none (HTTP 404)."""


@dataclass(frozen=True)
class ResolvedRequest:
    user_id: int
    user_feats: np.ndarray  # (F_u,) codes; all 0 for a user unknown to the users table
    history: list[int]  # clicked item ids, oldest first
    activity: int  # interactions before the request
    k: int  # items to expose


@dataclass(frozen=True)
class ServingAssets:
    space: ChainSpace
    chains: tuple[Chain, ...]
    q: np.ndarray  # (J,) FLOPs per request of each chain
    reward: LoadedRewardModel
    users: np.ndarray  # (U+1, F_u) feature codes by user id
    histories: dict[int, list[int]]  # latest clicked items per user, oldest first
    activity: dict[int, int]  # interactions per user in the log
    train_mean: np.ndarray  # (J,) mean true clicks per chain on the reward split
    num_items: int
    joules_per_flop: float | None  # measured by `greenflow pfec calibrate`, if run
    energy_source: str | None
    allocator_flops_per_request: float  # the reward model's FLOPs (reward_model.json)

    @property
    def exposed_k(self) -> int:
        return self.space.exposed_k

    def policy_chain(self, policy: str, per_request_flops: float) -> int | None:
        """The chain a baseline serves everyone (None for GreenFlow, which chooses).

        ``equal``: the best fixed chain by mean training clicks whose cost fits the budget
        per expected request (``EqualPolicy``); ``fixed:<chain id>``: that chain; the
        policies are registered in ``allocation/serving_policies.py``.
        """
        choice = FixedChoice(self.chains, self.q, self.train_mean, per_request_flops)
        return serving_chain(policy, choice)

    def fallback_chain(self, failed: set[str], current: int) -> int:
        """Where a request goes after stage models ``failed``: the cheapest chain that
        avoids all of them, or ``current`` again when every chain needs one (another
        replica of that model may answer: Serve routes around a replica that failed)."""
        ok = [j for j, c in enumerate(self.chains) if all(a.model not in failed for a in c.actions)]
        return min(ok, key=lambda j: float(self.q[j])) if ok else current

    def resolve(
        self,
        user_id: int,
        history: Sequence[int] | None,
        k: int | None,
        activity: int | None = None,
    ) -> ResolvedRequest:
        """Validate one request; RequestError says what is wrong."""
        k = self.exposed_k if k is None else k
        if not 1 <= k <= self.exposed_k:
            raise RequestError(f"k must be in 1..{self.exposed_k}, got {k}")
        if user_id < 1:
            raise RequestError(f"user_id must be >= 1, got {user_id}")
        known = user_id < len(self.users) and user_id in self.histories
        if history is None:
            if not known:
                raise UnknownUserError(
                    f"unknown user {user_id} and no history: send the user's clicked items"
                )
            history = self.histories[user_id]
        history = list(history)
        if len(history) > MAX_HISTORY_IDS:
            raise RequestError(f"history has {len(history)} items; at most {MAX_HISTORY_IDS}")
        arr = np.asarray(history, dtype=np.int64)
        bad = arr[(arr < 1) | (arr > self.num_items)]
        if bad.size:
            raise RequestError(f"history item id {int(bad[0])} outside 1..{self.num_items}")
        if activity is None:
            activity = self.activity.get(user_id, len(history))
        if activity < 0:
            raise RequestError(f"activity must be >= 0, got {activity}")
        feats = (
            self.users[user_id]
            if user_id < len(self.users)
            else np.zeros(self.users.shape[1], dtype=np.int64)
        )
        return ResolvedRequest(user_id, feats, history, int(activity), k)


def load_serving_assets(run_dir: RunDir, variant: str = "full") -> ServingAssets:
    """Everything an allocator replica serves from; clear errors for missing steps."""
    reward = load_reward_model(run_dir, variant)
    features = reward.features
    data = load_dataset(run_dir.data)
    users = user_feature_table(data.users, features)
    inter = data.interactions.sort_values(["user_id", "ts", "item_id"], kind="stable")
    clicked = inter[inter["label"] == 1]
    histories = {int(u): g.tolist() for u, g in clicked.groupby("user_id")["item_id"]}
    for u in inter["user_id"].unique():
        histories.setdefault(int(u), [])
    activity = {int(u): int(n) for u, n in inter.groupby("user_id").size().items()}
    train_mean = load_train_mean(run_dir, len(reward.chains.chains))
    calib: dict[str, Any] = run_dir.read_calibration() or {}
    summary = run_dir.read_reward_summary()
    return ServingAssets(
        space=reward.chains.space,
        chains=reward.chains.chains,
        q=reward.chains.flops,
        reward=reward,
        users=users,
        histories=histories,
        activity=activity,
        train_mean=train_mean,
        num_items=features.num_items,
        joules_per_flop=calib.get("joules_per_flop"),
        energy_source=calib.get("source"),
        allocator_flops_per_request=float((summary and summary.overhead_flops_per_request) or 0.0),
    )


class RewardScorer:
    """Q (B, J) estimated clicks of every chain for a batch of resolved requests."""

    def __init__(self, loaded: LoadedRewardModel) -> None:
        self.model = loaded.model.eval()
        self.encoding = loaded.encoding
        self.max_history = loaded.features.max_history
        # One TorchScript graph when it reproduces the model to the bit (``reward.traced``)
        self._forward, self.traced = trace_reward(self.model, self.encoding, loaded.features)

    @torch.no_grad()
    def __call__(self, requests: Sequence[ResolvedRequest]) -> np.ndarray:
        if not requests:
            return np.zeros((0, self.encoding.num_chains))
        feats = np.stack([r.user_feats for r in requests]).astype(np.int64)
        history = pad_histories([r.history for r in requests], self.max_history)
        ctx = make_context(feats, history)
        activity = torch.tensor([r.activity for r in requests], dtype=torch.int64)
        Q = self._forward(ctx["user_feats"], ctx["history"], activity)
        return Q.numpy().astype(np.float64)
