"""The cascade model pool: building, stage-aware training, FLOPs, head quality, saving, loading.

Training goes stage by stage in cascade order (the chain space's stages). The first stage
(recall) learns on corpus negatives; every later stage learns on negatives drawn from what the trained
stages before it pass on for the same event, mixed with corpus negatives
(``negatives.py``), and early-stops on validation pairs drawn the same way. Rank models
read item-to-item features of the cascade-training split, cross-fitted while training
(``item_stats.py``, ``training.CrossFit``).

``model_pool.json`` (DESIGN.md §5) lists each model with its stage (the chain space's stage
whose pool names it: configuration, never the model class), measured FLOPs per
scored item and per request, parameter count, validation AUC (corpus negatives, the
paper's Table 1), head quality over the whole corpus (``val_hits_at_10``,
``val_ndcg_at_10``), weights file and sha256, and the two non-learned ``baselines``.
Weights are plain state dicts loaded with ``torch.load(weights_only=True)``; each model's
resolved config is saved beside them so a pool can be rebuilt without the training code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from greenflow.errors import ConfigError, UnknownModelError
from greenflow.platform.chains import ChainSpace, default_space
from greenflow.platform.data.schema import CanonicalDataset
from greenflow.platform.documents import ModelEntry, ModelPoolDoc, head_quality_of
from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.dien import DIEN, DIENConfig
from greenflow.platform.models.din import DIN, DINConfig
from greenflow.platform.models.dssm import DSSM, DSSMConfig
from greenflow.platform.models.features import (
    FeatureSet,
    item_feature_table,
    make_context,
    pad_histories,
    user_feature_table,
)
from greenflow.platform.models.flops import FLOPS_CONVENTION, ModelFlops, measure_model_flops
from greenflow.platform.models.head_quality import HeadQuality, head_quality, model_scorer
from greenflow.platform.models.item_stats import (
    click_sequences,
    cosine_neighbours,
    crossfit_folds,
    crossfit_graphs,
    item_graphs,
    popularity,
)
from greenflow.platform.models.negatives import (
    CandidateNegatives,
    NegativeSampler,
    UniformNegatives,
    exclusions,
    stage_candidates,
)
from greenflow.platform.models.reference_rankers import ItemKNNRanker, PopularityRanker
from greenflow.platform.models.training import (
    CascadeTrainConfig,
    CrossFit,
    TrainResult,
    auc,
    build_samples,
    predict,
    train_model,
)
from greenflow.platform.models.youtube_dnn import YoutubeDNN, YoutubeDNNConfig
from greenflow.platform.registry import Registry
from greenflow.platform.run_dir import RunDir


@dataclass(frozen=True)
class ModelKind:
    model_cls: type[CascadeModel]
    config_cls: type[Any]


# Explicit typed registry from pool names to model classes (no class lookup by string): a
# new model is its own module plus one line here.
MODEL_KINDS: Registry[ModelKind] = Registry("model", error=UnknownModelError)
MODEL_KINDS.register("dssm", ModelKind(DSSM, DSSMConfig))
MODEL_KINDS.register("youtube_dnn", ModelKind(YoutubeDNN, YoutubeDNNConfig))
MODEL_KINDS.register("din", ModelKind(DIN, DINConfig))
MODEL_KINDS.register("dien", ModelKind(DIEN, DIENConfig))


@dataclass(frozen=True)
class PoolConfig:
    """Which models make up the pool and how they are trained."""

    models: tuple[str, ...] = ("dssm", "youtube_dnn", "din", "dien")
    max_history: int = 50
    train: CascadeTrainConfig = field(default_factory=CascadeTrainConfig)
    graph_folds: int = 5  # cross-fitting folds of cascade-training users for the item graphs
    graph_window: int = 10  # clicks apart that still count as sequential co-occurrence
    # Neighbours per item of the item-kNN baseline's graph (capped at the corpus size): far
    # more than a rank model keeps, so the baseline is never weakened by the truncation.
    baseline_top_m: int = 1000
    head_k: int = 10  # hits@k / NDCG@k
    # Validation requests head quality ranks the corpus for (a seeded sample when there
    # are more): each costs a corpus scoring by every model.
    head_requests: int = 2000

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_KINDS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; known: {sorted(MODEL_KINDS.names())}")


@dataclass
class PoolEntry:
    name: str
    stage: str  # the chain space's stage whose pool names the model (configuration only)
    model: CascadeModel
    flops: ModelFlops
    val_auc: float
    weights: str = ""
    sha256: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    head: HeadQuality | None = None  # hits@k / NDCG@k over the corpus, validation requests

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass
class ModelPool:
    dataset: str
    features: FeatureSet
    entries: dict[str, PoolEntry]
    # Non-learned rankers' head quality on the same requests: "popularity", "item_knn".
    baselines: dict[str, HeadQuality] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, CascadeModel]:
        return {name: e.model for name, e in self.entries.items()}

    @property
    def flops(self) -> dict[str, ModelFlops]:
        return {name: e.flops for name, e in self.entries.items()}


def build_model(name: str, features: FeatureSet, items_table: torch.Tensor) -> CascadeModel:
    """A fresh model of kind ``name`` with the item feature table installed."""
    kind = MODEL_KINDS.get(name)
    model = kind.model_cls(features, kind.config_cls())
    model.item_emb.item_feats.copy_(items_table)
    return model


def probe_context(features: FeatureSet) -> dict[str, torch.Tensor]:
    """A single-request context with a full-length history, for FLOPs measurement."""
    history = [(np.arange(features.max_history) % features.num_items + 1).tolist()]
    return make_context(
        np.ones((1, len(features.user)), dtype=np.int64),
        pad_histories(history, features.max_history),
    )


def untrained_pool(
    dataset: str,
    features: FeatureSet,
    items_table: torch.Tensor,
    names: tuple[str, ...] = MODEL_KINDS.names(),
    seed: int = 0,
    space: ChainSpace | None = None,
) -> ModelPool:
    """Freshly initialised models with measured FLOPs (validation AUC recorded as 0.5), each
    in its stage of ``space`` (default: ``default_space()``; a model outside it: the first).

    For smoke tests and benchmarks that exercise the platform rather than model quality.
    """
    space = space or default_space()
    probe = probe_context(features)
    entries = {}
    for name in names:
        torch.manual_seed(seed)
        model = build_model(name, features, items_table).eval()
        stage = space.stages[space.stage_index(name, default=0)].name
        entries[name] = PoolEntry(name, stage, model, measure_model_flops(model, probe),
                                  val_auc=0.5)  # fmt: skip
    return ModelPool(dataset, features, entries)


@dataclass(frozen=True)
class HeadRequests:
    """Requests on which head quality is measured (validation split), ready for scoring."""

    user_feats: np.ndarray  # (R, F_u)
    history: np.ndarray  # (R, L) left-padded
    histories: list[list[int]]  # excluded from each ranking
    positives: list[list[int]]  # ground truth, cut by the run's horizon

    @classmethod
    def from_frame(cls, requests: pd.DataFrame, user_table: np.ndarray, max_history: int
                   ) -> HeadRequests:  # fmt: skip
        histories = [list(h) for h in requests["history"]]
        return cls(user_table[requests["user_id"].to_numpy()],
                   pad_histories(histories, max_history), histories,
                   [list(p) for p in requests["positives"]])  # fmt: skip

    def quality(self, scorer: Callable[[np.ndarray, np.ndarray], np.ndarray], k: int
                ) -> HeadQuality:  # fmt: skip
        return head_quality(scorer, self.user_feats, self.history, self.histories,
                            self.positives, k)  # fmt: skip


def _stage_order(names: tuple[str, ...], space: ChainSpace) -> list[tuple[str, int]]:
    """(model, stage index) in cascade order; a model outside the space trains as the first
    stage (on corpus negatives)."""
    return sorted(((n, space.stage_index(n, default=0)) for n in names), key=lambda p: p[1])


def _earlier_stages(
    name: str, stage: int, space: ChainSpace, trained: dict[str, PoolEntry]
) -> list[tuple[CascadeModel, int]]:
    """The cascade prefix a stage-``stage`` model learns on: the first model of each
    earlier stage, trained already, with the stage's largest item scale."""
    prefix = []
    for t in range(stage):
        first = space.stages[t].models[0]
        if first not in trained:
            raise ConfigError(f"{name} learns on {first}'s candidates: add {first} to the "
                              "pool's models")  # fmt: skip
        prefix.append((trained[first].model, max(space.stages[t].item_scales)))
    return prefix


def train_pool(
    dataset: CanonicalDataset,
    features: FeatureSet,
    splits: dict[int, str],
    config: PoolConfig,
    space: ChainSpace,
    val_requests: pd.DataFrame,
    log: Callable[[str], None] = print,
) -> ModelPool:
    """Train every model stage by stage (module docstring) on cascade-training users,
    early-stopped on validation users; head quality on ``val_requests``."""
    users = user_feature_table(dataset.users, features)
    items = item_feature_table(dataset.items, features)
    by_split = {
        s: np.array([u for u, v in splits.items() if v == s])
        for s in ("cascade_train", "validation")
    }
    tc = config.train
    inter = dataset.interactions
    train = build_samples(inter, users, by_split["cascade_train"], features, tc.negatives,
                          tc.seed, tc.max_events)  # fmt: skip
    val = build_samples(inter, users, by_split["validation"], features, tc.negatives,
                        tc.seed + 10_000, tc.max_events)  # fmt: skip
    # Item statistics from cascade-training clicks only; events never read their own fold.
    sequences = click_sequences(inter, by_split["cascade_train"])
    n = features.num_items
    fold_of = crossfit_folds(by_split["cascade_train"], config.graph_folds, tc.seed)
    graphs: dict[int, CrossFit] = {}  # by top_m

    def crossfit(top_m: int) -> CrossFit:
        if top_m not in graphs:
            w = config.graph_window
            graphs[top_m] = CrossFit(np.array([fold_of[int(u)] for u in train.users]),
                                     crossfit_graphs(sequences, fold_of, n, top_m, w),
                                     item_graphs(sequences, n, top_m, w))  # fmt: skip
        return graphs[top_m]

    if len(val_requests) > config.head_requests:
        val_requests = val_requests.sample(config.head_requests, random_state=tc.seed)
    heads = HeadRequests.from_frame(val_requests, users, features.max_history)
    baselines = {
        "popularity": heads.quality(PopularityRanker(popularity(sequences, n)), config.head_k),
        "item_knn": heads.quality(
            ItemKNNRanker(cosine_neighbours(sequences, n, min(config.baseline_top_m, n))),
            config.head_k),
    }  # fmt: skip
    log(f"training {len(config.models)} models stage by stage on {len(train)} events; "
        f"validating on {len(val)}; head quality on {len(val_requests)} validation requests")  # fmt: skip
    for name, q in baselines.items():
        log(f"  baseline {name:<10} hits@{q.k} {q.hits:.3f}  NDCG@{q.k} {q.ndcg:.4f}")

    clicked = {"train": sequences, "val": click_sequences(inter, by_split["validation"])}
    probe = probe_context(features)
    entries: dict[str, PoolEntry] = {}
    # what every earlier stage passes on, per event, by stage: (train pools, val pools)
    candidates: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for name, stage in _stage_order(config.models, space):
        sampler: NegativeSampler = UniformNegatives(n)
        val_stage = val
        if stage > 0:
            if stage not in candidates:
                prefix = _earlier_stages(name, stage, space, entries)
                candidates[stage] = (
                    stage_candidates(prefix, train.user_feats, train.history,
                                     exclusions(train.users, clicked["train"]), n),
                    stage_candidates(prefix, val.user_feats, val.history,
                                     exclusions(val.users, clicked["val"]), n),
                )  # fmt: skip
            train_pools, val_pools = candidates[stage]
            sampler = CandidateNegatives(tuple(train_pools), n, tc.hard_fraction)
            val_negatives = CandidateNegatives(tuple(val_pools), n, tc.hard_fraction).sample(
                np.random.default_rng(tc.seed + 20_000), np.arange(len(val)), tc.negatives
            )
            val_stage = val.with_negatives(val_negatives)  # fixed: every epoch, same pairs
        torch.manual_seed(tc.seed)
        model = build_model(name, features, items)
        fit = crossfit(model.graph.ids.shape[2]) if model.graph is not None else None
        result: TrainResult = train_model(model, train, val_stage, tc, log, sampler, fit)
        entries[name] = PoolEntry(
            name=name,
            stage=space.stages[stage].name,
            model=model,
            flops=measure_model_flops(model, probe),
            val_auc=auc(val.labels, predict(model, val)),
            head=heads.quality(model_scorer(model), config.head_k),
            train={
                "stage_index": stage,
                "negatives": "corpus"
                if stage == 0
                else f"earlier stages' candidates ({tc.hard_fraction:.0%}) + corpus",
                "val_auc_stage_pairs": round(result.val_auc, 4),
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "wall_s": round(result.wall_s, 2),
                "curve": result.curve,
            },  # fmt: skip
        )
        head = entries[name].head
        assert head is not None
        log(f"  {name:<11} val AUC {entries[name].val_auc:.4f}  hits@{head.k} {head.hits:.3f}"
            f"  NDCG@{head.k} {head.ndcg:.4f}")  # fmt: skip
    ordered = {name: entries[name] for name in config.models}
    return ModelPool(dataset.name, features, ordered, baselines)


def save_pool(pool: ModelPool, run_dir: RunDir) -> ModelPoolDoc:
    """Write every model's weights and ``model_pool.json`` to the run; returns the document."""
    rows = []
    for name, entry in pool.entries.items():
        entry.weights = run_dir.model_weights(name)
        entry.sha256 = run_dir.write_weights(entry.weights, entry.model.state_dict())
        row = {
            "name": name,
            "stage": entry.stage,
            "paper": entry.model.paper,
            "flops_per_item": entry.flops.flops_per_item,
            "flops_per_request": entry.flops.flops_per_request,
            "params": entry.params,
            "val_auc": round(entry.val_auc, 4),
            **(entry.head.to_json() if entry.head is not None else {}),
            "weights": entry.weights,
            "sha256": entry.sha256,
            "config": dataclasses.asdict(entry.model.config),
            "train": entry.train,
        }
        rows.append(ModelEntry.from_json(row))  # head-quality keys are named by their k
    doc = ModelPoolDoc(
        dataset=pool.dataset,
        flops_convention=FLOPS_CONVENTION,
        features=pool.features.to_dict(),
        models=tuple(rows),
        baselines={name: q.to_json() for name, q in pool.baselines.items()},
        head_k=next((q.k for q in pool.baselines.values()), 10),
        extra={"head_requests": next((q.requests for q in pool.baselines.values()), 0)},
    )
    run_dir.write_model_pool(doc)
    return doc


def load_pool(run_dir: RunDir) -> ModelPool:
    """Rebuild the pool from ``model_pool.json``; checks each weights file's sha256."""
    doc = run_dir.read_model_pool()
    features = FeatureSet.from_dict(doc.features)
    entries = {}
    for row in doc.models:
        state = run_dir.read_weights(row.weights, row.sha256)
        kind = MODEL_KINDS.get(row.name)
        config = kind.config_cls(**{
            k: tuple(v) if isinstance(v, list) else v for k, v in row.config.items()
        })  # fmt: skip
        model = kind.model_cls(features, config)
        model.load_state_dict(state)
        model.eval()
        head = row.head_quality(doc.k)  # None: a pool saved before head quality existed
        entries[row.name] = PoolEntry(
            row.name, row.stage, model, ModelFlops(row.flops_per_request, row.flops_per_item),
            row.val_auc, row.weights, row.sha256, row.train or {},
            None if head is None else HeadQuality(*head, 0, doc.k),
        )  # fmt: skip
    baselines = {name: HeadQuality(*head, 0, doc.k) for name, b in (doc.baselines or {}).items()
                 if (head := head_quality_of(b, doc.k)) is not None}  # fmt: skip
    return ModelPool(doc.dataset, features, entries, baselines)


def format_pool_table(doc: ModelPoolDoc) -> str:
    """The analogue of the paper's Table 1 (stage, model, AUC, FLOPs, params) with each
    model's head quality over the corpus and the two non-learned baselines below it."""
    k = doc.k
    lines = [
        f"{'stage':<8} {'model':<12} {'val AUC':>8} {f'hits@{k}':>8} {f'NDCG@{k}':>8}"
        f" {'FLOPs/item':>12} {'FLOPs/request':>14} {'params':>9}",
    ]
    for m in doc.models:
        h, n = m.head_quality(k) or (float("nan"), float("nan"))
        lines.append(
            f"{m.stage:<8} {m.name:<12} {m.val_auc:>8.4f} {h:>8.3f}"
            f" {n:>8.4f} {m.flops_per_item:>12,.0f}"
            f" {m.flops_per_request:>14,.0f} {m.params:>9,}"
        )
    for name, b in (doc.baselines or {}).items():
        h, n = head_quality_of(b, k) or (float("nan"), float("nan"))
        lines.append(f"{'baseline':<8} {name:<12} {'':>8} {h:>8.3f} {n:>8.4f}")
    return "\n".join(lines)
