"""Two non-learned rankers every cascade model must be compared with (DESIGN.md §2).

Both are counted on the cascade-training split only (``item_stats.py``):

  popularity  score(c) = number of cascade-training users who clicked c (same for everyone)
  item-kNN    score(c) = Σ_{h ∈ history} cos(h, c), the cosine co-occurrence of
              ``item_stats.cosine_neighbours`` (Sarwar et al., WWW 2001)

A learned ranker below popularity has not learned personalisation; one below item-kNN
has not learned what the co-occurrence counts already say.
"""

from __future__ import annotations

import numpy as np

from greenflow.platform.models.item_stats import ItemGraph


class PopularityRanker:
    """Ranks by the number of cascade-training users who clicked each item."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = np.asarray(counts, dtype=np.float64)  # (N + 1,)

    def __call__(self, user_feats: np.ndarray, history: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(history), len(self.counts)))


class ItemKNNRanker:
    """Ranks by summed cosine co-occurrence with the request's history."""

    def __init__(self, graph: ItemGraph) -> None:
        self.graph = graph

    def __call__(self, user_feats: np.ndarray, history: np.ndarray) -> np.ndarray:
        b = len(history)
        out = np.zeros((b, self.graph.num_items + 1), dtype=np.float64)
        nbr = self.graph.ids[history].reshape(b, -1)  # padding (item 0) has no neighbours
        sims = self.graph.sims[history].reshape(b, -1).astype(np.float64)
        np.add.at(out, (np.repeat(np.arange(b), nbr.shape[1]), nbr.ravel()), sims.ravel())
        out[:, 0] = 0.0
        return out
