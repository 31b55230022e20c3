"""Action chains and their cost (DESIGN.md §2).

Stage s has a model pool M_s and a set K_s of item scales: the number of items the
stage passes on. Stage 1 scores the whole corpus (N items), stage s > 1 scores the
k_{s-1} items passed to it, and the top K of the last stage are exposed. A chain picks
one (model, k) per stage subject to k_1 >= k_2 >= ... >= k_S >= K.

Cost (nominal, independent of the request): q_j = Σ_s f_item(m_s) · n_s + f_request(m_s)
with n_1 = N and n_s = k_{s-1}, from the FLOPs measured in ``model_pool.json``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from greenflow.errors import ConfigError, UnknownModelError
from greenflow.platform.models.flops import ModelFlops


@dataclass(frozen=True)
class StageSpace:
    """One stage's choices: model names and item scales (items passed on)."""

    name: str
    models: tuple[str, ...]
    item_scales: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.models or not self.item_scales:
            raise ValueError(f"stage {self.name!r}: needs at least one model and one item scale")
        if any(k < 1 for k in self.item_scales) or list(self.item_scales) != sorted(
            set(self.item_scales)
        ):
            raise ValueError(f"stage {self.name!r}: item scales must be positive, sorted, unique")


@dataclass(frozen=True)
class ChainSpace:
    """The action space: stages in cascade order and the number of exposed items K.

    It is also what assigns every model its stage: a model belongs to the one stage whose
    pool names it (models carry no stage of their own), so it is trained, calibrated,
    metered and served as that stage.
    """

    stages: tuple[StageSpace, ...]
    exposed_k: int = 10

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a chain space needs at least one stage")
        if self.exposed_k < 1:
            raise ValueError("exposed_k must be >= 1")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        seen: dict[str, str] = {}
        for stage in self.stages:
            for model in stage.models:
                if model in seen:
                    # one stage per model: it is trained on that stage's candidates
                    raise ValueError(f"model {model!r} is in stages {seen[model]!r} and "
                                     f"{stage.name!r}; a model belongs to one stage")  # fmt: skip
                seen[model] = stage.name

    def stage_index(self, model: str, default: int | None = None) -> int:
        """Index (0-based, cascade order) of the stage whose pool names ``model``;
        ``default`` for a model outside the space, else UnknownModelError."""
        for s, stage in enumerate(self.stages):
            if model in stage.models:
                return s
        if default is None:
            raise UnknownModelError(f"model {model!r} is in no stage of the chain space")
        return default


@dataclass(frozen=True)
class Action:
    model: str
    k: int  # items this stage passes on


@dataclass(frozen=True)
class Chain:
    """One action chain: an action per stage."""

    actions: tuple[Action, ...]

    @property
    def id(self) -> str:
        """Readable identifier, e.g. ``dssm@400>youtube_dnn@50>din@10``."""
        return ">".join(f"{a.model}@{a.k}" for a in self.actions)

    @classmethod
    def parse(cls, text: str) -> Chain:
        """Inverse of ``id``; raises ValueError on a malformed identifier."""
        actions = []
        for part in text.split(">"):
            model, sep, k = part.partition("@")
            if not sep or not model or not k.isdigit():
                raise ValueError(f"malformed chain {text!r}: expected model@k>model@k>...")
            actions.append(Action(model, int(k)))
        return cls(tuple(actions))

    def scored_items(self, corpus_size: int) -> tuple[int, ...]:
        """n_s: items each stage scores (N for the first stage)."""
        return (corpus_size, *(a.k for a in self.actions[:-1]))

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "stages": [{"model": a.model, "k": a.k} for a in self.actions]}


def generate_chains(space: ChainSpace) -> list[Chain]:
    """All chains of the space that satisfy k_1 >= ... >= k_S >= K, cheapest-first order
    within each stage (Cartesian product order over the sorted pools and scales)."""
    per_stage = [
        [Action(m, k) for m in stage.models for k in stage.item_scales] for stage in space.stages
    ]
    chains = []
    for actions in itertools.product(*per_stage):
        ks = [a.k for a in actions]
        if all(a >= b for a, b in itertools.pairwise(ks)) and ks[-1] >= space.exposed_k:
            chains.append(Chain(tuple(actions)))
    if not chains:
        raise ConfigError(f"no chain satisfies k_1 >= ... >= k_S >= K={space.exposed_k}")
    return chains


def chain_cost(chain: Chain, flops: Mapping[str, ModelFlops], corpus_size: int) -> float:
    """q_j in FLOPs for one request."""
    total = 0.0
    for action, n in zip(chain.actions, chain.scored_items(corpus_size), strict=True):
        if action.model not in flops:
            raise UnknownModelError(f"no measured FLOPs for model {action.model!r}")
        total += flops[action.model].cost(n)
    return total


def chain_costs(
    chains: Sequence[Chain], flops: Mapping[str, ModelFlops], corpus_size: int
) -> np.ndarray:
    """q (J,) in FLOPs per request for every chain."""
    return np.array([chain_cost(c, flops, corpus_size) for c in chains], dtype=np.float64)


def stage_costs(
    chains: Sequence[Chain], flops: Mapping[str, ModelFlops], corpus_size: int
) -> np.ndarray:
    """(J, S) FLOPs per request spent by each stage of each chain; rows sum to q_j."""
    return np.array(
        [
            [
                flops[a.model].cost(n)
                for a, n in zip(c.actions, c.scored_items(corpus_size), strict=True)
            ]
            for c in chains
        ],
        dtype=np.float64,
    )


def default_space(rank_models: tuple[str, ...] = ("din", "dien")) -> ChainSpace:
    """The default ML-100k action space of the foundation issue: 5 × 4 × 2 scales/models."""
    return ChainSpace(
        stages=(
            StageSpace("recall", ("dssm",), (50, 100, 200, 400, 800)),
            StageSpace("prerank", ("youtube_dnn",), (10, 20, 50, 100)),
            StageSpace("rank", rank_models, (10,)),
        ),
        exposed_k=10,
    )


def format_cost_table(chains: Sequence[Chain], costs: np.ndarray, rows: int = 6) -> str:
    """The cheapest, a spread of middle, and the most expensive chains with q_j in MFLOPs."""
    order = np.argsort(costs, kind="stable")
    picks = np.unique(np.linspace(0, len(order) - 1, num=min(rows, len(order))).round().astype(int))
    lines = [f"{'chain':<34} {'MFLOPs/request':>15} {'x cheapest':>11}"]
    for p in picks:
        j = order[p]
        lines.append(
            f"{chains[j].id:<34} {costs[j] / 1e6:>15.2f} {costs[j] / costs[order[0]]:>11.1f}"
        )
    return "\n".join(lines)
