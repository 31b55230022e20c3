"""Reference cascade execution: one request through one action chain.

This is the ground truth the fast all-chain simulator must reproduce exactly.

recall scores the corpus minus the request's history -> top k_1 -> pre-rank scores those
-> top k_2 -> rank scores those -> the top K are exposed. Ordering is deterministic:
higher score first, ties broken by the smaller item id (``top_k``).

Scores are computed in float64 and rounded to float32 (``scoring_model``, ``item_scores``).
In float32, a request's scores change in the last bits with the batch they are computed
in (BLAS blocking), which would make a batched simulator disagree with this reference on
near-ties; rounded float64 scores are the same whatever the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from greenflow.platform.chains import Chain
from greenflow.platform.models.base import CascadeModel, State
from greenflow.platform.models.features import Context


def scoring_model(model: CascadeModel) -> CascadeModel:
    """A float64, eval-mode copy of ``model`` ready for exact cascade scoring."""
    exact = copy.deepcopy(model).double().eval()
    exact.prepare_for_serving()  # rebuild any serving index in float64
    return exact


def item_scores(model: CascadeModel, state: State, items: torch.Tensor) -> torch.Tensor:
    """Scores (B, n) as float32 rounded from the float64 model, batch-independent."""
    return model.score(state, items).to(torch.float32)


def top_k(items: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """The k best items, best first: score descending, then item id ascending."""
    if items.shape != scores.shape:
        raise ValueError(f"items {items.shape} and scores {scores.shape} differ in shape")
    order = np.lexsort((items, -scores.astype(np.float64)))
    return items[order[:k]]


def candidate_corpus(num_items: int, history: Sequence[int]) -> np.ndarray:
    """Item ids 1..N minus the history, ascending."""
    return np.setdiff1d(np.arange(1, num_items + 1, dtype=np.int64), np.asarray(history, np.int64))


@torch.no_grad()
def run_chain(
    models: Mapping[str, CascadeModel],
    ctx: Context,
    history: Sequence[int],
    chain: Chain,
    num_items: int,
    exposed_k: int,
) -> np.ndarray:
    """Exposed item ids (at most K, best first) for a single request (ctx batch of 1).

    ``models`` must be scoring copies (``scoring_model``) for results that match the
    batched simulator bit for bit.
    """
    if ctx["history"].shape[0] != 1:
        raise ValueError(f"run_chain takes one request; got batch {tuple(ctx['history'].shape)}")
    candidates = candidate_corpus(num_items, history)
    for action in chain.actions:
        model = models[action.model]
        state = model.encode_user(ctx)
        scores = item_scores(model, state, torch.from_numpy(candidates).unsqueeze(0))[0].numpy()
        candidates = top_k(candidates, scores, action.k)
    return candidates[:exposed_k]


def reward(exposed: np.ndarray, positives: Sequence[int]) -> int:
    """R_ij: exposed items the user actually clicked."""
    return int(np.isin(exposed, np.asarray(positives, dtype=np.int64)).sum())
