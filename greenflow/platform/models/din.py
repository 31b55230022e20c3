"""DIN: Deep Interest Network, the ranking model.

Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018.

For each candidate c, an activation unit weighs every history item h_l by
a(h_l, c) = MLP([h_l, c, h_l - c, h_l * c]) (no softmax, as in the paper) and the
candidate-specific interest is Σ_l a_l h_l. The interest, the candidate, the user
features and the candidate's item-to-item features (``item_graph.py``: its co-occurrence
with the history, as industrial rankers add beside the embeddings) feed a ReLU tower; the
item-to-item features also add a wide logit (``GraphHead``). The activation unit's first layer is linear, so
W·[h, c, h-c, h*c] = (W1+W3)h + (W2-W3)c + W4(h*c): the h part is computed once per
request, only the c and h*c parts per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from greenflow.platform.models.base import (
    ATTENTION_ITEM_CHUNK,
    CascadeModel,
    FieldEmbedding,
    GraphHead,
    ItemEmbedding,
    State,
    masked_mean,
    mlp,
    tower_logits,
)
from greenflow.platform.models.features import Context, FeatureSet


@dataclass(frozen=True)
class DINConfig:
    embed_dim: int = 16
    attention_hidden: int = 36
    hidden: tuple[int, ...] = (80, 40)
    graph_top_m: int = 200  # neighbours per item of the item-to-item graph; 0: no graph


class DIN(CascadeModel):
    paper = "Zhou et al., KDD 2018"
    item_chunk = ATTENTION_ITEM_CHUNK

    def __init__(self, features: FeatureSet, config: DINConfig = DINConfig()) -> None:
        super().__init__(features)
        self.config = config
        e, a = config.embed_dim, config.attention_hidden
        self.item_emb = ItemEmbedding(features, e, e)
        d = self.item_emb.out_dim
        self.user_fields = FieldEmbedding([f.vocab_size for f in features.user], e)
        self.att_hist = nn.Linear(d, a)  # (W1 + W3) h  + bias
        self.att_cand = nn.Linear(d, a, bias=False)  # (W2 - W3) c
        self.att_prod = nn.Linear(d, a, bias=False)  # W4 (h * c)
        self.att_out = nn.Linear(a, 1)
        h1 = config.hidden[0]
        self.user_proj = nn.Linear(self.user_fields.out_dim + d, h1)  # user feats + mean history
        self.item_proj = nn.Linear(2 * d, h1, bias=False)  # interest + candidate
        self.tower = mlp([*config.hidden, 1])
        self.graph_head = (
            GraphHead(features, config.graph_top_m, h1) if config.graph_top_m else None
        )

    def encode_user(self, ctx: Context) -> State:
        hist_ids = ctx["history"]
        mask = hist_ids > 0  # (B, L)
        hist = self.item_emb(hist_ids)  # (B, L, d)
        user_in = torch.cat([self.user_fields(ctx["user_feats"]), masked_mean(hist, mask)], -1)
        state = {
            "hist": hist,
            "hist_att": self.att_hist(hist),  # (B, L, a)
            "mask": mask.to(hist.dtype),
            "u": self.user_proj(user_in),  # (B, h1)
        }
        if self.graph is not None:
            state.update(self.graph.profile(hist_ids))  # (B, G, N+1), (B, G, 1)
        return state

    def score(self, state: State, items: torch.Tensor) -> torch.Tensor:
        hist, mask = state["hist"], state["mask"]
        cand = self.item_emb(items)  # (B, n, d)
        prod = cand.unsqueeze(2) * hist.unsqueeze(1)  # (B, n, L, d)
        pre = (
            state["hist_att"].unsqueeze(1) + self.att_cand(cand).unsqueeze(2) + self.att_prod(prod)
        )
        weights = self.att_out(torch.relu(pre)).squeeze(-1) * mask.unsqueeze(1)  # (B, n, L)
        interest = torch.bmm(weights, hist)  # (B, n, d)
        pre_tower = self.item_proj(torch.cat([interest, cand], -1)) + state["u"].unsqueeze(1)
        return tower_logits(self.tower, pre_tower, self.graph_head, state, items)  # (B, n)
