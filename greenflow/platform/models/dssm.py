"""DSSM two-tower recall model.

Huang et al., "Learning Deep Structured Semantic Models for Web Search using Clickthrough
Data", CIKM 2013; two-tower form as used for recommendation recall.

User tower: user feature embeddings + mean of history item embeddings -> MLP -> u.
Item tower: item id + feature embeddings -> MLP -> v. Score = u · v.
Serving precomputes v for the whole corpus (``prepare_for_serving``), so scoring an item
costs one dot product: 2·out_dim FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
class DSSMConfig:
    embed_dim: int = 4
    hidden: int = 16
    out_dim: int = 4


class DSSM(CascadeModel):
    paper = "Huang et al., CIKM 2013"
    traceable = True

    def __init__(self, features: FeatureSet, config: DSSMConfig = DSSMConfig()) -> None:
        super().__init__(features)
        self.config = config
        e = config.embed_dim
        self.item_emb = ItemEmbedding(features, e, e)
        self.user_fields = FieldEmbedding([f.vocab_size for f in features.user], e)
        self.user_tower = mlp([self.user_fields.out_dim + e, config.hidden, config.out_dim])
        self.item_tower = mlp([self.item_emb.out_dim, config.hidden, config.out_dim])
        self.index: torch.Tensor | None = None  # (N+1, out_dim) when serving

    def encode_user(self, ctx: Context) -> State:
        hist = ctx["history"]  # (B, L)
        pooled = masked_mean(self.item_emb.ids(hist), hist > 0)  # (B, e)
        u = self.user_tower(torch.cat([self.user_fields(ctx["user_feats"]), pooled], -1))
        return {"u": u}  # (B, out_dim)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        if self.index is not None and not self.training:
            return self.index[items]
        return self.item_tower(self.item_emb(items))

    def score(self, state: State, items: torch.Tensor) -> torch.Tensor:
        v = self.item_vectors(items)  # (B, n, out_dim)
        return torch.bmm(v, state["u"].unsqueeze(-1)).squeeze(-1)  # (B, n)

    @torch.no_grad()
    def prepare_for_serving(self) -> None:
        self.index = None
        all_items = torch.arange(
            self.features.num_items + 1, device=self.item_emb.ids.weight.device
        )
        self.index = self.item_tower(self.item_emb(all_items))
