"""Head quality of a ranker: hits@k and NDCG@k over the whole corpus (DESIGN.md §2).

A cascade is only worth allocating if its dearer, later stages are better at the head of
the ranking than the cheap ones. So every model (and the two non-learned baselines of
``reference_rankers.py``) ranks the *whole corpus minus the request's history* for each
validation request, and its top k is compared with the request's ground-truth positives
(cut by the run's horizon):

  hits@k  = |top k ∩ positives|                        (the reward R of that ranking)
  NDCG@k  = Σ_{r ≤ k} 1[item_r ∈ positives] / log2(r + 1)  /  Σ_{r ≤ min(k, |positives|)} 1 / log2(r + 1)

Ties go to the smaller item id, as in the cascade (``cascade.top_k``). A request with no
positives (possible with a ``window`` horizon) has hits 0 and NDCG 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import make_context

# (user_feats (B, F_u), padded history (B, L)) -> scores (B, N + 1); column 0 is ignored
CorpusScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class HeadQuality:
    """Mean hits@k and NDCG@k over requests."""

    hits: float
    ndcg: float
    requests: int
    k: int

    def to_json(self, prefix: str = "val") -> dict[str, float]:
        return {f"{prefix}_hits_at_{self.k}": round(self.hits, 4),
                f"{prefix}_ndcg_at_{self.k}": round(self.ndcg, 4)}  # fmt: skip


def top_k_of_corpus(scores: np.ndarray, history: Sequence[int], k: int) -> np.ndarray:
    """The k best item ids of ``scores`` (N + 1,) outside ``history`` and item 0."""
    s = np.asarray(scores, dtype=np.float64).copy()
    s[0] = -np.inf
    s[np.asarray(history, dtype=np.int64)] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    # a full sort: argpartition would pick an arbitrary item among ties at the k-th score
    return np.lexsort((np.arange(len(s)), -s))[:k]


def hits_and_ndcg(top: np.ndarray, positives: Sequence[int], k: int) -> tuple[float, float]:
    """(hits, NDCG) of one ranked list ``top`` (best first) against ``positives``."""
    pos = np.asarray(positives, dtype=np.int64)
    rel = np.isin(top[:k], pos).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discount[: min(k, len(np.unique(pos)))].sum()
    return float(rel.sum()), float((rel * discount[: len(rel)]).sum() / ideal) if ideal else 0.0


def head_quality(
    scorer: CorpusScorer,
    user_feats: np.ndarray,
    history: np.ndarray,
    histories: Sequence[Sequence[int]],
    positives: Sequence[Sequence[int]],
    k: int = 10,
    batch_size: int = 32,
) -> HeadQuality:
    """hits@k and NDCG@k of ``scorer`` on requests (padded ``history`` feeds the scorer,
    ``histories`` are excluded from the ranking)."""
    if not len(histories) == len(positives) == len(history) == len(user_feats):
        raise ValueError("user_feats, history, histories and positives differ in length")
    hits, ndcg = [], []
    for start in range(0, len(history), batch_size):
        stop = start + batch_size
        scores = scorer(user_feats[start:stop], history[start:stop])
        for row, (hist, pos) in enumerate(zip(histories[start:stop], positives[start:stop],
                                              strict=True)):  # fmt: skip
            h, n = hits_and_ndcg(top_k_of_corpus(scores[row], hist, k), pos, k)
            hits.append(h)
            ndcg.append(n)
    return HeadQuality(float(np.mean(hits)) if hits else 0.0,
                       float(np.mean(ndcg)) if ndcg else 0.0, len(hits), k)  # fmt: skip


def model_scorer(model: CascadeModel) -> CorpusScorer:
    """Scores of ``model`` (eval mode) for every item of the corpus."""

    @torch.no_grad()
    def score(user_feats: np.ndarray, history: np.ndarray) -> np.ndarray:
        model.eval()
        ctx = make_context(user_feats, history)
        corpus = torch.arange(model.features.num_items + 1).expand(len(history), -1)
        return model(ctx, corpus).to(torch.float64).numpy()

    return score
