"""One cascade stage for serving: a batch of requests, each with its own candidates and k.

A serving stage receives, per request, the user's features and history and either a
candidate list (pre-rank, rank) or nothing (recall: the corpus minus the history), and
returns the top k. Requests of one batch may ask for different candidates and k — the
chain of each request is its own — so candidates are padded to the batch's widest list and
the padding masked out.

Results are exactly ``cascade.run_chain``'s stage by stage: the same float32-rounded
float64 scores (``scoring_model``), the same order (score descending, ties to the smaller
item id), so serving exposes the items whose clicks the simulation counted.

FLOPs are charged as the chain cost model does (``chains.chain_cost``): the model's
per-request cost plus its per-item cost times the items scored, where recall scores the
whole corpus (N items) and a ranking stage its candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from greenflow.platform.cascade import item_scores
from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import make_context, pad_histories, random_context
from greenflow.platform.models.flops import ModelFlops
from greenflow.platform.models.scripted import exact_trace
from greenflow.platform.simulation import tie_sort

TRACE_CHECK_BATCHES = (1, 3, 16)  # batch sizes a stage trace must reproduce exactly


@dataclass(frozen=True)
class StageRequest:
    """One request's work for a stage."""

    user_feats: Sequence[int]  # (F_u,) feature codes
    history: Sequence[int]  # clicked item ids, oldest first (all of them, not truncated)
    candidates: Sequence[int] | None  # item ids to score; None = the corpus minus history
    k: int  # items to return

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    def to_wire(self, stage: str) -> dict[str, Any]:
        """The request as one dict of builtins, with the ``stage`` it is for: the one
        argument of a Serve stage call (``from_wire`` reads it back).

        Ray sends builtins with msgpack, but a dataclass through pickle, and each argument
        of a call on its own: a dataclass and a second argument cost ~0.1 ms each per hop
        (measured on 3-hop Serve chains, one client), paid at every stage of every request.
        """
        return {"stage": stage, "user_feats": self.user_feats, "history": self.history,
                "candidates": self.candidates, "k": self.k}  # fmt: skip

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> tuple[StageRequest, str]:
        """The request and its stage name from ``to_wire``'s dict."""
        request = cls(wire["user_feats"], wire["history"], wire["candidates"], wire["k"])
        return request, wire["stage"]


@dataclass(frozen=True)
class StageResult:
    items: list[int]  # at most k item ids, best first
    flops: float  # FLOPs this request cost the stage
    compute_ms: float = 0.0  # wall time of the model on the batch this request was in, ms
    batch: int = 1  # requests in that batch

    def to_wire(self) -> dict[str, Any]:
        """The result as a dict of builtins, the answer of a Serve stage call."""
        return {"items": self.items, "flops": self.flops, "compute_ms": self.compute_ms,
                "batch": self.batch}  # fmt: skip

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> StageResult:
        return cls(wire["items"], wire["flops"], wire["compute_ms"], wire["batch"])


class StageScorer:
    """Scores batches of ``StageRequest`` with one model (a ``scoring_model`` copy)."""

    def __init__(
        self,
        model: CascadeModel,
        flops: ModelFlops,
        num_items: int,
        max_history: int,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model.to(device)
        self.flops = flops
        self.num_items = num_items
        self.max_history = max_history
        self.device = torch.device(device)
        # encode_user + score as one TorchScript graph where that is exact (``traceable``
        # models scored in one call): one GIL release per batch instead of one per op
        self._traced: Callable[..., torch.Tensor] | None = None
        if model.traceable and model.item_chunk is None:
            self._traced = self._trace()

    @torch.inference_mode()
    def _trace(self) -> Callable[..., torch.Tensor] | None:
        features = dataclasses.replace(self.model.features, max_history=self.max_history)
        gen = torch.Generator().manual_seed(0)

        def example(batch: int, items: int) -> tuple[torch.Tensor, ...]:
            user, history = random_context(features, batch, gen, self.device)
            ids = torch.randint(1, self.num_items + 1, (batch, items), generator=gen)
            return user, history, ids.to(self.device)

        checks = [example(b, n) for b in TRACE_CHECK_BATCHES for n in (1, 10, self.num_items)]
        traced, exact = exact_trace(_Scores(self.model), example(2, 7), checks,
                                    f"stage model {type(self.model).__name__}")  # fmt: skip
        return traced if exact else None

    @torch.inference_mode()  # serving only: no autograd bookkeeping per op
    def __call__(self, requests: Sequence[StageRequest]) -> list[StageResult]:
        if not requests:
            return []
        b, n = len(requests), self.num_items
        user_feats = np.asarray([r.user_feats for r in requests], dtype=np.int64)
        history = pad_histories([r.history for r in requests], self.max_history)
        ctx = {k: v.to(self.device) for k, v in make_context(user_feats, history).items()}
        width = max(n if r.candidates is None else len(r.candidates) for r in requests)
        items = np.zeros((b, max(width, 1)), dtype=np.int64)  # 0 = padding item
        valid = np.zeros_like(items, dtype=bool)
        scored = np.zeros(b)
        for row, r in enumerate(requests):
            if r.candidates is None:
                items[row, :n] = np.arange(1, n + 1)
                valid[row, :n] = True
                valid[row, np.asarray(r.history, dtype=np.int64) - 1] = False
                scored[row] = n
            else:
                cand = np.asarray(r.candidates, dtype=np.int64)
                items[row, : len(cand)] = cand
                valid[row, : len(cand)] = True
                scored[row] = len(cand)
        items_t = torch.from_numpy(items).to(self.device)
        if self._traced is not None:
            scores = self._traced(ctx["user_feats"], ctx["history"], items_t)
        else:
            state = self.model.encode_user(ctx)
            chunk = self.model.item_chunk or items_t.shape[1]  # CascadeModel.item_chunk
            scores = torch.cat(
                [
                    item_scores(self.model, state, items_t[:, i : i + chunk])
                    for i in range(0, items_t.shape[1], chunk)
                ],
                dim=1,
            )  # (B, width) float32
        valid_t = torch.from_numpy(valid).to(self.device)
        scores = scores.masked_fill(~valid_t, float("-inf"))
        perm = tie_sort(items_t, scores)
        ordered = items_t.gather(1, perm).cpu().numpy()
        ordered_valid = valid_t.gather(1, perm).cpu().numpy()
        out = []
        for row, r in enumerate(requests):
            top = ordered[row][ordered_valid[row]][: r.k]
            out.append(StageResult(top.tolist(), self.flops.cost(scored[row])))
        return out


class _Scores(nn.Module):
    """float32 scores (B, n) of ``model`` for (user_feats, history, items): what a stage
    computes in one call, as one module to trace."""

    def __init__(self, model: CascadeModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, user_feats: torch.Tensor, history: torch.Tensor, items: torch.Tensor
                ) -> torch.Tensor:  # fmt: skip
        state = self.model.encode_user({"user_feats": user_feats, "history": history})
        return item_scores(self.model, state, items)


def validate_items(items: Sequence[int], num_items: int, what: str) -> None:
    """Raise ValueError unless every id is in 1..num_items."""
    arr = np.asarray(items, dtype=np.int64)
    bad = arr[(arr < 1) | (arr > num_items)]
    if bad.size:
        raise ValueError(f"{what}: item id {int(bad[0])} outside 1..{num_items}")
