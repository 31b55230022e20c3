"""Feature specs and request-context tensors shared by the data pipeline and every model.

Features are declared once (name, vocabulary size, embedding dim) and read both by the
code that builds batches and by the models' embedding tables (DeepCTR/torchrec style).

A request context is a ``dict[str, Tensor]``:
  user_feats  (B, F_u) int64 codes, 0 = unknown
  history     (B, L)   int64 item ids, left-padded with 0 so the newest click is last
Item features are looked up inside the models from ``item_feats`` (N+1, F_i).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

# re-exported: the models' context is built from padded histories
from greenflow.platform.data.requests import pad_histories as pad_histories

Context = dict[str, torch.Tensor]


@dataclass(frozen=True)
class FeatureSpec:
    """One categorical feature: ``vocab_size`` counts code 0 (unknown)."""

    name: str
    vocab_size: int


@dataclass(frozen=True)
class FeatureSet:
    """Everything a model needs to know about its inputs."""

    user: tuple[FeatureSpec, ...]
    item: tuple[FeatureSpec, ...]
    num_items: int  # item ids are 1..num_items; 0 is padding
    max_history: int

    @classmethod
    def from_meta(cls, meta: dict[str, Any], max_history: int) -> FeatureSet:
        """Build from a prepared dataset's meta.json."""
        return cls(
            user=tuple(FeatureSpec(n, v) for n, v in meta["user_features"].items()),
            item=tuple(FeatureSpec(n, v) for n, v in meta["item_features"].items()),
            num_items=int(meta["items"]),
            max_history=max_history,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": {f.name: f.vocab_size for f in self.user},
            "item": {f.name: f.vocab_size for f in self.item},
            "num_items": self.num_items,
            "max_history": self.max_history,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSet:
        return cls(
            user=tuple(FeatureSpec(n, v) for n, v in data["user"].items()),
            item=tuple(FeatureSpec(n, v) for n, v in data["item"].items()),
            num_items=int(data["num_items"]),
            max_history=int(data["max_history"]),
        )


def item_feature_table(items: pd.DataFrame, features: FeatureSet) -> torch.Tensor:
    """(N+1, F_i) int64 item feature codes indexed by item id; row 0 is padding."""
    table = np.zeros((features.num_items + 1, len(features.item)), dtype=np.int64)
    ids = items["item_id"].to_numpy()
    for j, spec in enumerate(features.item):
        table[ids, j] = items[spec.name].to_numpy()
    return torch.from_numpy(table)


def user_feature_table(users: pd.DataFrame, features: FeatureSet) -> np.ndarray:
    """(U+1, F_u) int64 user feature codes indexed by user id; row 0 = all unknown."""
    table = np.zeros((int(users["user_id"].max()) + 1, len(features.user)), dtype=np.int64)
    ids = users["user_id"].to_numpy()
    for j, spec in enumerate(features.user):
        table[ids, j] = users[spec.name].to_numpy()
    return table


def make_context(user_feats: np.ndarray, history: np.ndarray) -> Context:
    """Wrap numpy arrays as a request context; validates shapes."""
    if user_feats.ndim != 2 or history.ndim != 2 or len(user_feats) != len(history):
        raise ValueError(
            f"context shapes mismatch: user_feats {user_feats.shape}, history {history.shape}"
        )
    return {
        "user_feats": torch.as_tensor(user_feats, dtype=torch.int64),
        "history": torch.as_tensor(history, dtype=torch.int64),
    }


def random_context(
    features: FeatureSet, batch: int, gen: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random valid (user_feats (B, F_u), history (B, L)) of ``batch`` requests: one full
    history, the others of random length down to empty, left-padded as ``pad_histories``
    pads (examples and checks for ``models.scripted.exact_trace``)."""
    vocab = torch.tensor([f.vocab_size for f in features.user])
    user = (torch.rand(batch, len(vocab), generator=gen) * vocab).long()
    length = features.max_history
    history = torch.randint(1, features.num_items + 1, (batch, length), generator=gen)
    real = torch.randint(0, length + 1, (batch,), generator=gen)
    real[0] = length
    history[torch.arange(length) < (length - real).unsqueeze(1)] = 0
    return user.to(device), history.to(device)


def slice_context(ctx: Context, index: slice | torch.Tensor) -> Context:
    return {k: v[index] for k, v in ctx.items()}
