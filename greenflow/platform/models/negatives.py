"""Negative samplers for cascade training: what each stage learns to rank its positives above.

A recall model faces the whole corpus, so it learns on corpus (uniform) negatives. A later
stage only ever sees what the stages before it pass on, so, as in industrial cascades and
the RecFlow study (Liu et al., 2024), it learns on negatives drawn from the *candidates
the earlier stages pass on* for the same event, mixed with corpus negatives so that it
still ranks the rare bad candidate low (``CandidateNegatives``). Stage s draws from the
output of every earlier stage, in equal shares: the pre-rank model from recall's top k₁;
the rank model from recall's top k₁ and from pre-rank's top k₂, because a chain may hand
it anything from the pre-ranker's favourites (small k₂) to most of recall's list (large
k₂). (Measured on ML-100k: rank negatives from pre-rank's top k₂ alone made DIN's head
over the whole corpus *worse* than popularity; from both, better than item-kNN.)

Each earlier stage's output for an event is computed once, by running the trained earlier
stages on the event's context (``stage_candidates``): the recall model's top k₁ of the
corpus, then the pre-rank model's top k₂ of those, ... with k_s the stage's largest item
scale. Items the user clicked (at any time) and the history are never candidates: they
would be false negatives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import make_context


class NegativeSampler(Protocol):
    """Draws negatives for training events."""

    def sample(self, rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
        """(len(rows), count) item ids for the events at indices ``rows``."""
        ...


@dataclass(frozen=True)
class UniformNegatives:
    """Items drawn uniformly from the corpus 1..num_items."""

    num_items: int

    def sample(self, rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
        return rng.integers(1, self.num_items + 1, size=(len(rows), count))


@dataclass(frozen=True)
class CandidateNegatives:
    """round(count · hard_fraction) negatives from each event's earlier-stage candidates,
    split equally over the ``pools`` (uniformly among each pool's valid entries), the rest
    uniform from the corpus.

    pools: one (E, M_p) int64 array per earlier stage, item ids packed at the front of
    each row, 0 = no candidate (fewer than M_p eligible items).
    """

    pools: tuple[np.ndarray, ...]
    num_items: int
    hard_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {self.hard_fraction}")
        if not self.pools or any(p.ndim != 2 for p in self.pools):
            raise ValueError(
                f"pools must be (events, M) arrays, got {[p.shape for p in self.pools]}"
            )

    def sample(self, rng: np.random.Generator, rows: np.ndarray, count: int) -> np.ndarray:
        out = rng.integers(1, self.num_items + 1, size=(len(rows), count))
        hard = int(round(count * self.hard_fraction))
        shares = np.diff(np.linspace(0, hard, len(self.pools) + 1).round().astype(int))
        start = 0
        for candidates, share in zip(self.pools, shares, strict=True):
            if share == 0:
                continue
            pool = candidates[rows]  # (R, M)
            valid = (pool > 0).sum(axis=1)
            has = valid > 0  # an event without candidates keeps corpus negatives
            pick = (rng.random((len(rows), share)) * np.maximum(valid, 1)[:, None]).astype(np.int64)
            out[has, start : start + share] = np.take_along_axis(pool, pick, axis=1)[has]
            start += share
        return out


@torch.no_grad()
def stage_candidates(
    stages: Sequence[tuple[CascadeModel, int]],
    user_feats: np.ndarray,
    history: np.ndarray,
    exclude: Sequence[np.ndarray],
    num_items: int,
    batch_size: int = 256,
) -> list[np.ndarray]:
    """What each stage of the cascade prefix ``stages`` [(model, k), ...] passes on per
    event: one (E, k_s) array per stage.

    The first model scores the corpus; each next one scores the previous top k. Each
    event's history and ``exclude[e]`` (e.g. all its user's clicks) are never passed on;
    an event with fewer eligible items than k gets 0s at the end of its row.
    """
    if not stages:
        raise ValueError("stage_candidates needs at least one stage")
    events = len(history)
    outs = [np.zeros((events, k), dtype=np.int64) for _, k in stages]
    corpus = torch.arange(num_items + 1)
    for start in range(0, events, batch_size):
        stop = min(start + batch_size, events)
        ctx = make_context(user_feats[start:stop], history[start:stop])
        b = stop - start
        blocked = torch.zeros(b, num_items + 1, dtype=torch.bool)
        blocked[:, 0] = True
        blocked.scatter_(1, ctx["history"], True)
        for row, items in enumerate(exclude[start:stop]):
            blocked[row, torch.tensor(items, dtype=torch.int64)] = True
        items = corpus.expand(b, -1)
        valid = ~blocked
        for (model, k), out in zip(stages, outs, strict=True):
            model.eval()
            scores = model(ctx, items).to(torch.float64)
            scores = scores.masked_fill(~valid, float("-inf"))
            top = torch.topk(scores, min(k, items.shape[1]), dim=1)
            valid = torch.isfinite(top.values)
            items = items.gather(1, top.indices)
            out[start:stop, : items.shape[1]] = torch.where(valid, items, 0).numpy()
    return outs


def exclusions(users: np.ndarray, clicked: Mapping[int, np.ndarray]) -> list[np.ndarray]:
    """Per event, the items its user ever clicked (never negatives)."""
    empty = np.zeros(0, dtype=np.int64)
    return [clicked.get(int(u), empty) for u in users]
