"""Item-to-item features for rank models: how close a candidate is to the user's history.

Industrial rankers feed item-to-item scores (co-occurrence, "swing" and the like) to their
deep models beside the learned embeddings. Here the graphs are the cascade-training
split's whole-history cosine and sliding-window co-occurrence
(``item_stats.item_graphs``), kept as buffers so they travel with the weights and move to
the model's device.

Per request (``profile``, once), for each graph g a dense (B, N + 1) vector
p_g[c] = Σ_{h ∈ history} sim_g(h, c), scattered from each history item's top-M
neighbours (L · M additions), the same over the newest ``recent`` clicks, and the
request's maximum of p_g. Per candidate (``features``): gathers and a few elementwise
ops: log(1 + p_g[c]) over the whole history and over the newest clicks, and p_g[c]
relative to the request's maximum. log(1 + Σ cos) over the whole history *is* the
item-kNN score, so a rank model with these features can always fall back on item-kNN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from greenflow.platform.models.item_stats import ItemGraphs

GRAPHS = 2  # cosine, window
FEATURES_PER_GRAPH = 3  # log1p(all), log1p(recent), relative to the request's maximum
GRAPH_FEATURES = GRAPHS * FEATURES_PER_GRAPH


class ItemGraphFeatures(nn.Module):
    """Buffers ``ids``/``sims`` (GRAPHS, N + 1, M); empty (all zero) until ``load``."""

    def __init__(self, num_items: int, top_m: int, recent: int = 5) -> None:
        super().__init__()
        self.recent = recent
        self.register_buffer("ids", torch.zeros(GRAPHS, num_items + 1, top_m, dtype=torch.int64))
        self.register_buffer("sims", torch.zeros(GRAPHS, num_items + 1, top_m))

    def load(self, graphs: ItemGraphs) -> None:
        """Install graphs (training swaps in each cross-fitting fold's)."""
        shape = (len(graphs), *graphs[0].ids.shape)
        if shape != tuple(self.ids.shape):
            raise ValueError(f"graphs {shape} do not fit buffers {tuple(self.ids.shape)}")
        ids = np.stack([g.ids for g in graphs])
        sims = np.stack([g.sims for g in graphs])
        self.ids = torch.as_tensor(ids, device=self.ids.device)
        self.sims = torch.as_tensor(sims, dtype=self.sims.dtype, device=self.sims.device)

    def profile(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, GRAPHS, N + 1) summed similarity to the whole history and to its newest
        clicks, and (B, GRAPHS, 1) the request's maximum over items of the first."""
        whole = self._scatter(history)
        return {
            "graph_all": whole,
            "graph_recent": self._scatter(history[:, -self.recent :]),
            "graph_peak": whole.amax(dim=2, keepdim=True),
        }

    def _scatter(self, history: torch.Tensor) -> torch.Tensor:
        b = history.shape[0]
        out = []
        for g in range(self.ids.shape[0]):
            nbr = self.ids[g][history].reshape(b, -1)  # (B, L·M); padding rows are all 0
            sim = self.sims[g][history].reshape(b, -1)
            # item 0 collects padding and is never a candidate
            out.append(sim.new_zeros(b, self.ids.shape[1]).scatter_add(1, nbr, sim))
        return torch.stack(out, dim=1)

    def features(self, profile: dict[str, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """(B, n, GRAPH_FEATURES) for candidates ``items`` (B, n)."""
        index = items.unsqueeze(1).expand(-1, self.ids.shape[0], -1)  # (B, G, n)
        whole = profile["graph_all"].gather(2, index)
        recent = profile["graph_recent"].gather(2, index)
        relative = whole / (1.0 + profile["graph_peak"])
        feats = torch.cat([torch.log1p(whole), torch.log1p(recent), relative], dim=1)
        return feats.transpose(1, 2)  # (B, n, 3G): all graphs' log1p(all) first
