"""Item statistics of the cascade-training split: popularity and the item-to-item graph.

Both feed the non-learned baselines (popularity, item-kNN: ``reference_rankers.py``) and
the rank models' item-to-item features (``item_graph.py``).

**No leakage.** The statistics are counted on the clicks of cascade-training users only, so
no validation, reward or evaluation user ever contributes to them. A cascade-training
event must not see its own label or its user's later clicks either, so its features come
from a graph counted *without its user* (K-fold cross-fitting over cascade-training
users: an event of a user in fold f reads the graph of the other K − 1 folds).

Two item-to-item graphs, each normalised as a cosine (c_ij / sqrt(n_i n_j)):

  ``cosine``  whole-history co-occurrence, the classic item-kNN similarity (Sarwar et al.,
              WWW 2001; Deshpande & Karypis, TOIS 2004): c_ij = users who clicked both,
              n_i = users who clicked i;
  ``window``  sequential co-occurrence: c_ij = times i and j were clicked within
              ``window`` clicks of each other by the same user (sliding-window
              co-occurrence, as in item2vec / session-kNN), n_i = clicks of i. It says
              what tends to come *next*, which whole-history counts blur.

Each item keeps its ``top_m`` most similar items, which bounds memory at (N + 1) × top_m
whatever the corpus size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse


@dataclass(frozen=True)
class ItemGraph:
    """Each item's ``top_m`` nearest items by cosine co-occurrence; row 0 (padding) is empty.

    ids  (N + 1, M) int64 neighbour item ids, 0 where an item has fewer than M neighbours
    sims (N + 1, M) float32 cosine similarities in [0, 1], 0 where ids is 0
    """

    ids: np.ndarray
    sims: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.shape != self.sims.shape or self.ids.ndim != 2:
            raise ValueError(f"ids {self.ids.shape} and sims {self.sims.shape} must be (N+1, M)")

    @property
    def num_items(self) -> int:
        return self.ids.shape[0] - 1

    @property
    def top_m(self) -> int:
        return self.ids.shape[1]

    def dense(self) -> np.ndarray:
        """The (N + 1, N + 1) similarity matrix this graph keeps (for tests and small corpora)."""
        out = np.zeros((self.num_items + 1, self.num_items + 1), dtype=np.float32)
        rows = np.repeat(np.arange(self.num_items + 1), self.top_m)
        keep = self.ids.ravel() > 0
        out[rows[keep], self.ids.ravel()[keep]] = self.sims.ravel()[keep]
        return out


def click_sequences(interactions: pd.DataFrame, users: np.ndarray) -> dict[int, np.ndarray]:
    """Each user's clicked item ids in time order (ties by item id), for ``users``."""
    frame = interactions[(interactions["label"] == 1) & interactions["user_id"].isin(users)]
    frame = frame.sort_values(["user_id", "ts", "item_id"], kind="stable")
    return {int(u): g.to_numpy() for u, g in frame.groupby("user_id", sort=True)["item_id"]}


def popularity(sequences: Mapping[int, np.ndarray], num_items: int) -> np.ndarray:
    """(N + 1,) number of users who clicked each item (index 0 is padding and stays 0)."""
    counts = np.zeros(num_items + 1, dtype=np.float64)
    for items in sequences.values():
        counts[np.unique(items)] += 1
    return counts


def _click_matrix(sequences: Mapping[int, np.ndarray], num_items: int) -> sparse.csr_matrix:
    rows = np.concatenate([np.full(len(v), r) for r, v in enumerate(sequences.values())] or [[]])
    cols = np.concatenate(list(sequences.values()) or [[]]).astype(np.int64)
    data = np.ones(len(cols), dtype=np.float32)
    matrix = sparse.csr_matrix((data, (rows, cols)), shape=(len(sequences), num_items + 1))
    matrix.data[:] = 1.0  # a re-click is still one user
    return matrix


def cosine_neighbours(sequences: Mapping[int, np.ndarray], num_items: int, top_m: int) -> ItemGraph:
    """The ``top_m`` whole-history cosine neighbours of every item (module docstring)."""
    clicks = _click_matrix(sequences, num_items)
    counts = np.asarray(clicks.sum(axis=0)).ravel()  # (N + 1,) users per item
    return _top_neighbours((clicks.T @ clicks).tocsr(), counts, num_items, top_m)


def window_neighbours(
    sequences: Mapping[int, np.ndarray], num_items: int, top_m: int, window: int
) -> ItemGraph:
    """The ``top_m`` sequential neighbours: co-clicks within ``window`` clicks of each other."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    rows, cols = [], []
    for items in sequences.values():
        for lag in range(1, min(window, len(items) - 1) + 1):
            rows += [items[:-lag], items[lag:]]
            cols += [items[lag:], items[:-lag]]  # symmetric: i near j is j near i
    a = np.concatenate(rows or [np.zeros(0, np.int64)]).astype(np.int64)
    b = np.concatenate(cols or [np.zeros(0, np.int64)]).astype(np.int64)
    co = sparse.csr_matrix((np.ones(len(a)), (a, b)), shape=(num_items + 1, num_items + 1))
    counts = np.bincount(np.concatenate(list(sequences.values()) or [[]]).astype(np.int64),
                         minlength=num_items + 1).astype(np.float64)  # fmt: skip
    return _top_neighbours(co, counts, num_items, top_m)


def _top_neighbours(
    co: sparse.csr_matrix, counts: np.ndarray, num_items: int, top_m: int
) -> ItemGraph:
    """Each row's ``top_m`` largest c_ij / sqrt(n_i n_j), ties to the smaller item id."""
    if top_m < 1:
        raise ValueError(f"top_m must be >= 1, got {top_m}")
    co = co.tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    m = top_m  # rows stay top_m wide (zero-padded) even for a corpus of fewer items
    ids = np.zeros((num_items + 1, m), dtype=np.int64)
    sims = np.zeros((num_items + 1, m), dtype=np.float32)
    for item in range(1, num_items + 1):
        start, stop = co.indptr[item], co.indptr[item + 1]
        if start == stop:
            continue
        nbr = co.indices[start:stop]
        cos = co.data[start:stop] / np.sqrt(counts[item] * counts[nbr])
        order = np.lexsort((nbr, -cos))[:m]
        ids[item, : len(order)] = nbr[order]
        sims[item, : len(order)] = cos[order]
    return ItemGraph(ids, sims)


def crossfit_folds(users: np.ndarray, folds: int, seed: int) -> dict[int, int]:
    """A seeded partition of ``users`` into ``folds`` folds: user id -> fold."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    users = np.sort(np.asarray(users))
    fold = np.random.default_rng(seed).permutation(len(users)) % folds
    return {int(u): int(f) for u, f in zip(users, fold, strict=True)}


ItemGraphs = tuple[ItemGraph, ItemGraph]  # (cosine, window): what rank models read


def item_graphs(
    sequences: Mapping[int, np.ndarray], num_items: int, top_m: int, window: int
) -> ItemGraphs:
    """The (cosine, window) graphs of ``sequences``."""
    return (cosine_neighbours(sequences, num_items, top_m),
            window_neighbours(sequences, num_items, top_m, window))  # fmt: skip


def crossfit_graphs(
    sequences: Mapping[int, np.ndarray],
    fold_of: Mapping[int, int],
    num_items: int,
    top_m: int,
    window: int,
) -> list[ItemGraphs]:
    """Graphs f are counted on every user *not* in fold f (what fold f's events may read)."""
    folds = sorted(set(fold_of.values()))
    return [
        item_graphs({u: s for u, s in sequences.items() if fold_of.get(u) != f},
                    num_items, top_m, window)
        for f in folds
    ]  # fmt: skip
