"""The training steps' documents: ``model_pool.json`` (``greenflow train-cascade``),
``simulation.json`` (``greenflow simulate``) and ``reward_model.json``
(``greenflow train-reward``), DESIGN.md §5."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from greenflow.platform.documents.base import JsonDocument, named, one, rows


def head_quality_of(values: Mapping[str, Any], k: int) -> tuple[float, float] | None:
    """(hits@k, NDCG@k) from a model row's or a baseline's ``val_hits_at_<k>`` and
    ``val_ndcg_at_<k>`` (``HeadQuality.to_json``); None when they were not measured."""
    if f"val_hits_at_{k}" not in values:
        return None
    return values[f"val_hits_at_{k}"], values[f"val_ndcg_at_{k}"]


@dataclass(frozen=True)
class ModelEntry(JsonDocument):
    """One trained model of the pool (a row of ``models``); head quality over the corpus
    is in ``extra`` as ``val_hits_at_<k>``/``val_ndcg_at_<k>`` (see ``head_quality``)."""

    name: str  # a registered model kind (``MODEL_KINDS``)
    stage: str  # its stage's name in the chain space it was trained in ("recall", ...)
    flops_per_item: float  # FLOPs to score one candidate item
    flops_per_request: float  # FLOPs once per request (user side), whatever the items
    params: int  # trainable parameters
    val_auc: float  # AUC on the validation pairs
    weights: str  # the state dict, relative to the run directory
    sha256: str  # of the weights file's bytes
    config: dict[str, Any]  # the model kind's config (``dataclasses.asdict``)
    train: dict[str, Any] | None = None  # how it was trained (epochs, curve, wall time)

    WHERE = "model_pool.json: models[]"
    OPTIONAL = frozenset({"train"})

    def head_quality(self, k: int) -> tuple[float, float] | None:
        """(hits@k, NDCG@k) on the validation requests; None for a pool saved without."""
        return head_quality_of(self.extra, k)


@dataclass(frozen=True)
class ModelPoolDoc(JsonDocument):
    """``model_pool.json``: the trained cascade models, their measured FLOPs and quality."""

    dataset: str
    flops_convention: str  # what one FLOP counts (a multiply-add is 2 FLOPs)
    features: dict[str, Any]  # the FeatureSet (vocabularies, max history) the models read
    models: tuple[ModelEntry, ...]
    baselines: dict[str, dict[str, float]] | None = None  # name -> val_hits/ndcg_at_<k>
    head_k: int | None = None  # the k of the head-quality keys (10 when absent)
    horizon: str | None = None  # what a click counts ("next:5"); added by train-cascade

    WHERE = "model_pool.json"
    ORDER = ("dataset", "flops_convention", "features", "models", "baselines", "head_k",
             "head_requests", "horizon", "train_wall_s", "config")  # fmt: skip
    OPTIONAL = frozenset({"baselines", "head_k", "horizon"})
    DECODE = {"models": rows(ModelEntry)}

    @property
    def k(self) -> int:
        """The k of hits@k and NDCG@k."""
        return 10 if self.head_k is None else self.head_k


@dataclass(frozen=True)
class ChainCost(JsonDocument):
    """One action chain and its cost (a row of ``simulation.json``'s ``chains``)."""

    id: str  # the chain's id, ``Chain.parse``-able ("dssm@800>youtube_dnn@100>din@10")
    flops: float  # FLOPs of one request served by this chain

    WHERE = "simulation.json: chains[]"


@dataclass(frozen=True)
class SimulationDoc(JsonDocument):
    """``simulation.json``: the reward-sample simulation job's summary."""

    requests: int  # requests simulated
    chains: tuple[ChainCost, ...]
    rows: int  # rows of ``samples/`` (one per request)
    wall_s: float  # seconds, reading to published samples
    requests_per_s: float
    simulation_flops: float  # FLOPs the job spent (shared prefixes computed once)
    output: str  # where the samples are
    num_chains: int | None = None
    malformed: tuple[dict[str, Any], ...] | None = None  # {"request_id", "error"} rows
    reference_flops: float | None = None  # FLOPs of every chain run on its own
    config: dict[str, Any] | None = None  # the resolved configuration (``config_to_dict``)

    WHERE = "simulation.json"
    ORDER = ("requests", "chains", "num_chains", "rows", "chain_rewards", "malformed",
             "wall_s", "requests_per_s", "simulation_flops", "reference_flops", "output",
             "layout", "requests_per_split", "pfec", "actors", "batch_size",
             "chain_fraction", "horizon", "expected_rewards", "config")  # fmt: skip
    OPTIONAL = frozenset({"num_chains", "malformed", "reference_flops", "config"})
    DECODE = {"chains": rows(ChainCost), "malformed": lambda v, _: tuple(v)}


@dataclass(frozen=True)
class FieldRce(JsonDocument):
    """Field-RCE (relative calibration error, a fraction) by field; None when undefined."""

    chain: float | None
    activity: float | None

    WHERE = "reward_model.json: field_rce"


@dataclass(frozen=True)
class RewardVariant(JsonDocument):
    """One trained reward-model variant (``variants[name]``); losses on the validation
    users, ``val``/``eval`` the full metric blocks of each split."""

    val_loss: float  # the training loss (Poisson or MSE) on validation pairs
    mae: float  # clicks per (request, chain) pair
    field_rce: FieldRce
    val: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None
    flops_per_request: float | None = None  # FLOPs of one request's Q̂ over every chain
    model_config: dict[str, Any] | None = None

    WHERE = "reward_model.json: variants[]"
    OPTIONAL = frozenset({"val", "eval", "flops_per_request", "model_config"})
    DECODE = {"field_rce": one(FieldRce)}


@dataclass(frozen=True)
class RewardModelDoc(JsonDocument):
    """``reward_model.json``: every trained variant and the allocator's FLOPs overhead."""

    variants: dict[str, RewardVariant]  # "full", "no-recursion", "no-basis", "plain"
    overhead_flops_ratio: float  # the full model's FLOPs over the full chain's
    overhead_flops_per_request: float | None = None  # FLOPs of Q̂ for one request
    horizon: str | None = None

    WHERE = "reward_model.json"
    ORDER = ("variants", "horizon", "overhead_flops_ratio", "overhead_flops_per_request",
             "default_chain", "loss", "field_rce_rule", "activity_bucket_edges", "data",
             "baselines")  # fmt: skip
    OPTIONAL = frozenset({"overhead_flops_per_request", "horizon"})
    DECODE = {"variants": named(RewardVariant)}


__all__ = [
    "ChainCost",
    "FieldRce",
    "ModelEntry",
    "ModelPoolDoc",
    "RewardModelDoc",
    "RewardVariant",
    "SimulationDoc",
]
