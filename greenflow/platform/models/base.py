"""The interface every cascade model implements, and shared building blocks.

A cascade model splits its work in two so that cost is measurable and reusable:
  encode_user(ctx) -> state       once per request (user towers, sequence encoders)
  score(state, items) -> logits   per scored item
The split is what the cost model q_j = Σ f_item(m)·n + f_request(m) charges.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from greenflow.platform.models.features import Context, FeatureSet
from greenflow.platform.models.item_graph import GRAPH_FEATURES, ItemGraphFeatures

State = dict[str, torch.Tensor]

# The wide part's initial weight on log(1 + Σ cos) (feature 0): over the usual range of
# that feature (0 to ~2.5) it spans ~10 logits, so an untrained model already ranks like
# item-kNN and the deep part learns corrections to it rather than rediscovering it.
WIDE_GRAPH_INIT = 4.0
ATTENTION_ITEM_CHUNK = 256  # candidates per serving call of an attention model (DIN, DIEN)


class CascadeModel(nn.Module, ABC):
    """A model that scores candidate items for a batch of requests."""

    paper: ClassVar[str]
    # Candidates a serving stage scores per ``score`` call (``stage.StageScorer``): models
    # whose per-item work is an attention over the history bound its (B, n, L) memory;
    # None scores them all in one call (a corpus of ~1,700 items: 7 calls -> 1 for DSSM).
    item_chunk: ClassVar[int | None] = None
    # Whether a serving stage may trace encode_user + score into one TorchScript graph
    # (``models.scripted.exact_trace``, used only where exact): no data-dependent Python
    # control flow in either. DIEN's AUGRU starts at the batch's first real step: not it.
    traceable: ClassVar[bool] = False

    def __init__(self, features: FeatureSet) -> None:
        super().__init__()
        self.features = features

    @property
    def graph(self) -> ItemGraphFeatures | None:
        """The item-to-item features this model reads (``item_graph.py``), or None."""
        head = getattr(self, "graph_head", None)
        return head.graph if head is not None else None

    @abstractmethod
    def encode_user(self, ctx: Context) -> State:
        """Per-request computation; returns tensors with leading dim B."""

    @abstractmethod
    def score(self, state: State, items: torch.Tensor) -> torch.Tensor:
        """Logits (B, n) for candidate item ids ``items`` (B, n)."""

    def forward(self, ctx: Context, items: torch.Tensor) -> torch.Tensor:
        return self.score(self.encode_user(ctx), items)

    def prepare_for_serving(self) -> None:
        """Precompute what serving reuses across requests (e.g. an item-embedding index)."""


class FieldEmbedding(nn.Module):
    """One embedding table per categorical field, concatenated: (..., F) -> (..., F*dim)."""

    def __init__(self, vocab_sizes: list[int], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, dim) for v in vocab_sizes)
        self.out_dim = dim * len(vocab_sizes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.shape[-1] != len(self.tables):
            raise ValueError(f"expected {len(self.tables)} fields, got codes {tuple(codes.shape)}")
        return torch.cat([t(codes[..., j]) for j, t in enumerate(self.tables)], dim=-1)


class ItemEmbedding(nn.Module):
    """Item id embedding concatenated with the item's feature embeddings."""

    def __init__(self, features: FeatureSet, id_dim: int, feat_dim: int) -> None:
        super().__init__()
        self.ids = nn.Embedding(features.num_items + 1, id_dim, padding_idx=0)
        self.fields = FieldEmbedding([f.vocab_size for f in features.item], feat_dim)
        self.register_buffer(
            "item_feats", torch.zeros(features.num_items + 1, len(features.item), dtype=torch.int64)
        )
        self.out_dim = id_dim + self.fields.out_dim

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.ids(items), self.fields(self.item_feats[items])], dim=-1)


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def masked_mean(seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions where mask is true: (B, L, d), (B, L) -> (B, d); 0 when empty."""
    weights = mask.to(seq.dtype).unsqueeze(-1)
    return (seq * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class GraphHead(nn.Module):
    """Item-to-item features of a rank model: a deep input and a wide logit (Wide & Deep,
    Cheng et al. 2016). ``hidden`` is the width of the layer the deep part adds into."""

    def __init__(self, features: FeatureSet, top_m: int, hidden: int) -> None:
        super().__init__()
        self.graph = ItemGraphFeatures(features.num_items, top_m)
        self.deep = nn.Linear(GRAPH_FEATURES, hidden, bias=False)
        self.wide = nn.Linear(GRAPH_FEATURES, 1)
        with torch.no_grad():
            self.wide.weight.zero_()
            self.wide.weight[0, 0] = WIDE_GRAPH_INIT
            self.wide.bias.zero_()

    def features(self, state: State, items: torch.Tensor) -> torch.Tensor:
        return self.graph.features(state, items)  # (B, n, GRAPH_FEATURES)


def tower_logits(
    tower: nn.Module,
    pre_tower: torch.Tensor,
    head: GraphHead | None,
    state: State,
    items: torch.Tensor,
) -> torch.Tensor:
    """Logits (B, n) of a rank model's tower on ReLU(pre_tower) (B, n, h1), with the
    item-to-item features' deep input added before the ReLU and their wide logit after."""
    if head is None:
        return tower(torch.relu(pre_tower)).squeeze(-1)
    graph = head.features(state, items)  # (B, n, GRAPH_FEATURES)
    deep = tower(torch.relu(pre_tower + head.deep(graph)))
    return (deep + head.wide(graph)).squeeze(-1)
