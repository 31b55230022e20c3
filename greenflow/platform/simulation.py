"""Shared-prefix all-chain simulation: the reward of every action chain for a batch of requests.

Running the cascade once per chain repeats most of the work: every chain with the same
recall model scores the same corpus, and a stage's output for item scale k is the first k
of one ordering. So, per batch of requests (tensors, no loop over chains):

  * stage 1: each recall model scores the corpus once per request;
  * stage s: the chain prefixes (actions of stages < s) form a tree. For each model of
    stage s, the candidates of every prefix that leads to it are merged (deduplicated per
    request) and scored once; each prefix's candidates are then ordered by those scores
    (ties to the smaller item id) and every item scale k_s takes the first k_s.

The result equals ``cascade.run_chain`` chain by chain (``tests/platform/test_simulation.py``)
because both order the same float32-rounded float64 scores with the same tie-break.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from greenflow.errors import UnknownModelError
from greenflow.platform.cascade import item_scores
from greenflow.platform.chains import Action, Chain, ChainSpace
from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import Context, make_context, pad_histories
from greenflow.platform.models.flops import ModelFlops

Prefix = tuple[Action, ...]


@dataclass
class _Node:
    """Candidates handed to the next stage by one chain prefix: ordered items and validity."""

    items: torch.Tensor  # (B, n) int64
    valid: torch.Tensor  # (B, n) bool; invalid entries sort last and never count


@dataclass(frozen=True)
class BatchRewards:
    """Per-request rewards of every chain, and the FLOPs this simulation spent."""

    rewards: np.ndarray  # (B, J) int16, R_ij = exposed items the user clicked
    simulation_flops: float  # FLOPs the models actually computed for this batch
    flops_by_model: dict[str, float]  # the same, per model name
    # (B, J) float32 E[R_ij] = Σ_{exposed} p(click) when the click model is known, else None
    expected: np.ndarray | None = None


# (B, N + 1) probability that each request's user clicks each item if exposed now
ResponseModel = Callable[[np.ndarray, Sequence[Sequence[int]]], np.ndarray]


def tie_sort(items: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Permutation (B, n): score descending, ties to the smaller item id."""
    if bool((items[:, 1:] >= items[:, :-1]).all()):  # rows in id order (a recall corpus):
        return torch.argsort(-scores, dim=1, stable=True)  # the id sort is the identity
    by_item = torch.argsort(items, dim=1, stable=True)
    by_score = torch.argsort(-scores.gather(1, by_item), dim=1, stable=True)
    return by_item.gather(1, by_score)


def _batched_unique(items: torch.Tensor, valid: torch.Tensor, sentinel: int) -> torch.Tensor:
    """Per-row sorted unique valid items (B, u), padded at the end with ``sentinel``."""
    keyed = torch.where(valid, items, torch.full_like(items, sentinel))
    ordered, _ = torch.sort(keyed, dim=1)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first &= ordered != sentinel
    slot = torch.cumsum(first.long(), dim=1) - 1
    width = max(int(first.sum(1).max()), 1)
    out = torch.full((items.shape[0], width), sentinel, dtype=items.dtype, device=items.device)
    rows = torch.arange(items.shape[0], device=items.device).unsqueeze(1).expand_as(ordered)
    out[rows[first], slot[first]] = ordered[first]
    return out


class AllChainSimulator:
    """Computes R_ij for all chains j of a chain space on batches of requests.

    ``models`` must be scoring copies (``cascade.scoring_model``); ``flops`` their measured
    costs, used to account what the simulation itself computes.
    """

    def __init__(
        self,
        models: Mapping[str, CascadeModel],
        flops: Mapping[str, ModelFlops],
        space: ChainSpace,
        chains: Sequence[Chain],
        num_items: int,
        item_chunk: int = 256,
        device: torch.device | str = "cpu",
    ) -> None:
        self.models = models
        self.device = torch.device(device)
        self.flops = flops
        self.space = space
        self.chains = list(chains)
        self.num_items = num_items
        self.item_chunk = item_chunk
        missing = {a.model for c in self.chains for a in c.actions} - set(models)
        if missing:
            raise UnknownModelError(f"chains use models not in the pool: {sorted(missing)}")
        # every prefix that some chain extends, per stage, and the (model -> scales) it leads to
        self._next: list[dict[Prefix, dict[str, list[int]]]] = []
        for s in range(len(space.stages)):
            level: dict[Prefix, dict[str, list[int]]] = {}
            for chain in self.chains:
                action = chain.actions[s]
                scales = level.setdefault(chain.actions[:s], {}).setdefault(action.model, [])
                if action.k not in scales:
                    scales.append(action.k)
            self._next.append(level)

    def _score(self, model: CascadeModel, ctx: Context, items: torch.Tensor) -> torch.Tensor:
        """float32 scores (B, u) computed in item chunks to bound attention memory."""
        state = model.encode_user(ctx)
        parts = [
            item_scores(model, state, items[:, i : i + self.item_chunk])
            for i in range(0, items.shape[1], self.item_chunk)
        ]
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def run(
        self,
        ctx: Context,
        histories: Sequence[Sequence[int]],
        positives: Sequence[Sequence[int]],
        user_ids: np.ndarray | None = None,
        response: ResponseModel | None = None,
    ) -> BatchRewards:
        """Rewards (B, J) for one batch; ctx holds the same B requests in the same order.

        With a known click model (``response``, and the requests' ``user_ids``), also the
        expected rewards: each chain's exposed items' click probabilities, summed.
        """
        b, n = len(histories), self.num_items
        if ctx["history"].shape[0] != b or len(positives) != b:
            raise ValueError(
                f"batch mismatch: ctx {tuple(ctx['history'].shape)}, {b} histories, "
                f"{len(positives)} positives"
            )
        ctx = {key: value.to(self.device) for key, value in ctx.items()}
        seen = torch.zeros(b, n + 1, dtype=torch.bool)
        clicked = torch.zeros(b, n + 1, dtype=torch.bool)
        for row, (hist, pos) in enumerate(zip(histories, positives, strict=True)):
            seen[row, list(hist)] = True
            clicked[row, list(pos)] = True
        seen, clicked = seen.to(self.device), clicked.to(self.device)
        corpus = torch.arange(1, n + 1, device=self.device).expand(b, n)
        nodes: dict[Prefix, _Node] = {(): _Node(corpus, ~seen[:, 1:])}
        spent: dict[str, float] = {}
        for level in self._next:
            children: dict[Prefix, _Node] = {}
            for model_name in sorted({m for follow in level.values() for m in follow}):
                parents = [p for p, follow in level.items() if model_name in follow]
                union = _batched_unique(
                    torch.cat([nodes[p].items for p in parents], dim=1),
                    torch.cat([nodes[p].valid for p in parents], dim=1),
                    sentinel=n + 1,
                )  # (B, u) ascending, sentinel-padded
                scorable = torch.where(
                    union > n, torch.zeros_like(union), union
                )  # sentinel padding -> padding item
                scores = self._score(self.models[model_name], ctx, scorable)
                cost = self.flops[model_name]
                spent[model_name] = spent.get(model_name, 0.0) + (
                    cost.flops_per_request * b + cost.flops_per_item * union.numel()
                )
                for parent in parents:
                    node = nodes[parent]
                    where = torch.searchsorted(union, node.items.contiguous()).clamp(
                        max=union.shape[1] - 1
                    )
                    s = scores.gather(1, where).masked_fill(~node.valid, float("-inf"))
                    perm = tie_sort(node.items, s)
                    items, valid = node.items.gather(1, perm), node.valid.gather(1, perm)
                    for k in level[parent][model_name]:
                        child = (*parent, Action(model_name, k))
                        children[child] = _Node(items[:, :k], valid[:, :k])
            nodes = children
        k_exposed = self.space.exposed_k
        rewards = np.zeros((b, len(self.chains)), dtype=np.int16)
        expected = None
        if response is not None:
            if user_ids is None:
                raise ValueError("expected rewards need the requests' user ids")
            prob = torch.as_tensor(response(np.asarray(user_ids), histories), device=self.device)
            expected = np.zeros((b, len(self.chains)), dtype=np.float32)
        for j, chain in enumerate(self.chains):
            node = nodes[chain.actions]
            exposed, valid = node.items[:, :k_exposed], node.valid[:, :k_exposed]
            rewards[:, j] = (clicked.gather(1, exposed) & valid).sum(1).cpu().numpy()
            if expected is not None:
                expected[:, j] = (prob.gather(1, exposed) * valid).sum(1).cpu().numpy()
        return BatchRewards(rewards, sum(spent.values()), spent, expected)


def validate_request(
    user_id: int, history: object, positives: object, num_users: int, num_items: int
) -> str | None:
    """Why a request cannot be simulated, or None when it is well formed."""
    if not 1 <= int(user_id) <= num_users:
        return f"user_id {user_id} outside 1..{num_users}"
    for name, values in (("history", history), ("positives", positives)):
        if values is None:
            return f"{name} is missing"
        bad = [v for v in values if v is None or not 1 <= int(v) <= num_items]
        if bad:
            return f"{name} has item ids outside 1..{num_items}: {bad[:5]}"
    return None


def sample_chains(request_id: int, num_chains: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the chains kept for one request (the paper's data-sparsity setting).

    Seeded by (seed, request_id) so a re-run keeps the same chains for the same request.
    """
    if fraction >= 1.0:
        return np.arange(num_chains, dtype=np.int16)
    keep = max(1, round(fraction * num_chains))
    rng = np.random.default_rng((seed, int(request_id)))
    return np.sort(rng.choice(num_chains, size=keep, replace=False)).astype(np.int16)


SAMPLE_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("split", pa.string()),
        ("ts", pa.int64()),
        ("activity", pa.int64()),
        ("chain_idx", pa.list_(pa.int16())),  # indices into simulation.json "chains"
        ("reward", pa.list_(pa.int16())),  # R_ij for those chains, same order
        # E[R_ij] for those chains when the click model is known (synthetic), else null
        ("expected_reward", pa.list_(pa.float32())),
        ("simulation_flops", pa.float64()),  # this row's share of its batch's FLOPs
        ("error", pa.string()),  # why the request could not be simulated, else null
    ]
)


@dataclass(frozen=True)
class ChainSampling:
    """Keep a random ``fraction`` of chains per request in ``splits`` (others keep all)."""

    fraction: float = 1.0
    splits: tuple[str, ...] = ("reward",)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"chain fraction must be in (0, 1], got {self.fraction}")
        if "eval" in self.splits:
            raise ValueError("the evaluation split always keeps every chain")


def simulate_table(
    sim: AllChainSimulator,
    user_table: np.ndarray,
    max_history: int,
    requests: pa.Table,
    sampling: ChainSampling,
    flops_by_model: dict[str, float] | None = None,
    response: ResponseModel | None = None,
) -> pa.Table:
    """Reward samples (SAMPLE_SCHEMA) for a table of request-log rows (with
    ``expected_reward`` when the click model, ``response``, is known).

    Malformed requests are kept as rows with ``error`` set and empty lists, so they are
    reported by id instead of silently dropped. FLOPs spent per model are added to
    ``flops_by_model`` when given.
    """
    cols = {name: requests.column(name).to_pylist() for name in
            ("request_id", "user_id", "split", "ts", "activity", "history", "positives")}  # fmt: skip
    num_users = len(user_table) - 1
    errors = [
        validate_request(u, h, p, num_users, sim.num_items)
        for u, h, p in zip(cols["user_id"], cols["history"], cols["positives"], strict=True)
    ]
    good = [i for i, e in enumerate(errors) if e is None]
    chain_idx: list[list[int]] = [[] for _ in errors]
    rewards: list[list[int]] = [[] for _ in errors]
    expected: list[list[float] | None] = [[] if response else None for _ in errors]
    flops = [0.0] * len(errors)
    if good:
        histories = [cols["history"][i] for i in good]
        ctx = make_context(
            user_table[[cols["user_id"][i] for i in good]], pad_histories(histories, max_history)
        )
        result = sim.run(ctx, histories, [cols["positives"][i] for i in good],
                         np.array([cols["user_id"][i] for i in good]), response)  # fmt: skip
        if flops_by_model is not None:
            for name, model_flops in result.flops_by_model.items():
                flops_by_model[name] = flops_by_model.get(name, 0.0) + model_flops
        for row, i in enumerate(good):
            rid, split = cols["request_id"][i], cols["split"][i]
            fraction = sampling.fraction if split in sampling.splits else 1.0
            keep = sample_chains(rid, len(sim.chains), fraction, sampling.seed)
            chain_idx[i], rewards[i] = keep.tolist(), result.rewards[row, keep].tolist()
            if result.expected is not None:
                expected[i] = result.expected[row, keep].tolist()
            flops[i] = result.simulation_flops / len(good)
    return pa.Table.from_pydict(
        {
            "request_id": cols["request_id"],
            "user_id": cols["user_id"],
            "split": cols["split"],
            "ts": cols["ts"],
            "activity": cols["activity"],
            "chain_idx": chain_idx,
            "reward": rewards,
            "expected_reward": expected,
            "simulation_flops": flops,
            "error": errors,
        },
        schema=SAMPLE_SCHEMA,
    )
