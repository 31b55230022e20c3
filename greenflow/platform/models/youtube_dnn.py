"""YouTube DNN, used as the pre-ranking model.

Covington, Adams & Sargin, "Deep Neural Networks for YouTube Recommendations", RecSys 2016.

Input: user feature embeddings, the mean of history item embeddings (the paper's "watch
vector") and the candidate's id and feature embeddings, through a ReLU tower. The first
layer is split into a user half (computed once per request) and an item half (per
candidate), which is the usual pre-ranking optimisation and keeps per-item cost small.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from greenflow.platform.models.base import (
    CascadeModel,
    FieldEmbedding,
    ItemEmbedding,
    State,
    masked_mean,
    mlp,
)
from greenflow.platform.models.features import Context, FeatureSet


@dataclass(frozen=True)
class YoutubeDNNConfig:
    embed_dim: int = 16
    hidden: tuple[int, ...] = (128, 64)


class YoutubeDNN(CascadeModel):
    paper = "Covington et al., RecSys 2016"
    traceable = True

    def __init__(self, features: FeatureSet, config: YoutubeDNNConfig = YoutubeDNNConfig()) -> None:
        super().__init__(features)
        self.config = config
        e = config.embed_dim
        self.item_emb = ItemEmbedding(features, e, e)
        self.user_fields = FieldEmbedding([f.vocab_size for f in features.user], e)
        h1 = config.hidden[0]
        self.user_proj = nn.Linear(self.user_fields.out_dim + e, h1)
        self.item_proj = nn.Linear(self.item_emb.out_dim, h1, bias=False)
        self.tower = mlp([*config.hidden, 1])

    def encode_user(self, ctx: Context) -> State:
        hist = ctx["history"]
        pooled = masked_mean(self.item_emb.ids(hist), hist > 0)
        user_in = torch.cat([self.user_fields(ctx["user_feats"]), pooled], -1)
        return {"u": self.user_proj(user_in)}  # (B, h1)

    def score(self, state: State, items: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.item_proj(self.item_emb(items)) + state["u"].unsqueeze(1))  # (B, n, h1)
        return self.tower(h).squeeze(-1)  # (B, n)
