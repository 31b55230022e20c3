"""The cascade model pool: building, training, FLOPs measurement, saving and loading.

``model_pool.json`` (DESIGN.md §5) lists each model with its stage, measured FLOPs per
scored item and per request, parameter count, validation AUC, weights file and sha256.
Weights are plain state dicts loaded with ``torch.load(weights_only=True)``; each model's
resolved config is saved beside them so a pool can be rebuilt without the training code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greenflow.platform.data.schema import CanonicalDataset
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
from greenflow.platform.models.training import (
    CascadeTrainConfig,
    TrainResult,
    build_samples,
    train_model,
)
from greenflow.platform.models.youtube_dnn import YoutubeDNN, YoutubeDNNConfig

POOL_FILE = "model_pool.json"


@dataclass(frozen=True)
class ModelKind:
    model_cls: type[CascadeModel]
    config_cls: type[Any]


# Explicit typed mapping from pool names to model classes (no class lookup by string).
MODEL_KINDS: dict[str, ModelKind] = {
    "dssm": ModelKind(DSSM, DSSMConfig),
    "youtube_dnn": ModelKind(YoutubeDNN, YoutubeDNNConfig),
    "din": ModelKind(DIN, DINConfig),
    "dien": ModelKind(DIEN, DIENConfig),
}


@dataclass(frozen=True)
class PoolConfig:
    """Which models make up the pool and how they are trained."""

    models: tuple[str, ...] = ("dssm", "youtube_dnn", "din", "dien")
    max_history: int = 50
    train: CascadeTrainConfig = field(default_factory=CascadeTrainConfig)

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODEL_KINDS]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; known: {sorted(MODEL_KINDS)}")


@dataclass
class PoolEntry:
    name: str
    model: CascadeModel
    flops: ModelFlops
    val_auc: float
    weights: str = ""
    sha256: str = ""
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass
class ModelPool:
    dataset: str
    features: FeatureSet
    entries: dict[str, PoolEntry]

    @property
    def models(self) -> dict[str, CascadeModel]:
        return {name: e.model for name, e in self.entries.items()}

    @property
    def flops(self) -> dict[str, ModelFlops]:
        return {name: e.flops for name, e in self.entries.items()}


def build_model(name: str, features: FeatureSet, items_table: torch.Tensor) -> CascadeModel:
    """A fresh model of kind ``name`` with the item feature table installed."""
    kind = MODEL_KINDS[name]
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
    names: tuple[str, ...] = tuple(MODEL_KINDS),
    seed: int = 0,
) -> ModelPool:
    """Freshly initialised models with measured FLOPs (validation AUC recorded as 0.5).

    For smoke tests and benchmarks that exercise the platform rather than model quality.
    """
    probe = probe_context(features)
    entries = {}
    for name in names:
        torch.manual_seed(seed)
        model = build_model(name, features, items_table).eval()
        entries[name] = PoolEntry(name, model, measure_model_flops(model, probe), val_auc=0.5)
    return ModelPool(dataset, features, entries)


def train_pool(
    dataset: CanonicalDataset,
    features: FeatureSet,
    splits: dict[int, str],
    config: PoolConfig,
    log: Callable[[str], None] = print,
) -> ModelPool:
    """Train every model on cascade-training users, early-stopped on validation users."""
    users = user_feature_table(dataset.users, features)
    items = item_feature_table(dataset.items, features)
    by_split = {
        s: np.array([u for u, v in splits.items() if v == s])
        for s in ("cascade_train", "validation")
    }
    tc = config.train
    train = build_samples(dataset.interactions, users, by_split["cascade_train"], features,
                          tc.negatives, tc.seed, tc.max_events)  # fmt: skip
    val = build_samples(dataset.interactions, users, by_split["validation"], features,
                        tc.negatives, tc.seed + 10_000, tc.max_events)  # fmt: skip
    log(f"training {len(config.models)} models on {len(train)} events; validating on {len(val)}")
    probe = probe_context(features)
    entries = {}
    for name in config.models:
        torch.manual_seed(tc.seed)
        model = build_model(name, features, items)
        result: TrainResult = train_model(model, train, val, tc, log)
        entries[name] = PoolEntry(
            name=name,
            model=model,
            flops=measure_model_flops(model, probe),
            val_auc=result.val_auc,
            train={
                "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch,
                "wall_s": round(result.wall_s, 2),
                "curve": result.curve,
            },  # fmt: skip
        )
    return ModelPool(dataset.name, features, entries)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_pool(pool: ModelPool, run_dir: Path) -> dict[str, Any]:
    """Write weights under ``run_dir/models/`` and ``run_dir/model_pool.json``; returns the JSON."""
    model_dir = Path(run_dir) / "models"
    model_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, entry in pool.entries.items():
        path = model_dir / f"{name}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save(entry.model.state_dict(), tmp)
        tmp.replace(path)
        entry.weights, entry.sha256 = str(path.relative_to(run_dir)), _sha256(path)
        rows.append(
            {
                "name": name,
                "stage": entry.model.stage,
                "paper": entry.model.paper,
                "flops_per_item": entry.flops.flops_per_item,
                "flops_per_request": entry.flops.flops_per_request,
                "params": entry.params,
                "val_auc": round(entry.val_auc, 4),
                "weights": entry.weights,
                "sha256": entry.sha256,
                "config": dataclasses.asdict(entry.model.config),
                "train": entry.train,
            }
        )
    doc = {
        "dataset": pool.dataset,
        "flops_convention": FLOPS_CONVENTION,
        "features": pool.features.to_dict(),
        "models": rows,
    }
    (Path(run_dir) / POOL_FILE).write_text(json.dumps(doc, indent=2))
    return doc


def load_pool(run_dir: Path) -> ModelPool:
    """Rebuild the pool from ``model_pool.json``; checks each weights file's sha256."""
    path = Path(run_dir) / POOL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model pool; run `greenflow train-cascade` first")
    doc = json.loads(path.read_text())
    features = FeatureSet.from_dict(doc["features"])
    entries = {}
    for row in doc["models"]:
        weights = Path(run_dir) / row["weights"]
        if _sha256(weights) != row["sha256"]:
            raise ValueError(f"{weights}: sha256 does not match {POOL_FILE}")
        kind = MODEL_KINDS[row["name"]]
        config = kind.config_cls(**{
            k: tuple(v) if isinstance(v, list) else v for k, v in row["config"].items()
        })  # fmt: skip
        model = kind.model_cls(features, config)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.eval()
        entries[row["name"]] = PoolEntry(
            row["name"], model, ModelFlops(row["flops_per_request"], row["flops_per_item"]),
            row["val_auc"], row["weights"], row["sha256"], row.get("train", {}),
        )  # fmt: skip
    return ModelPool(doc["dataset"], features, entries)


def format_pool_table(doc: dict[str, Any]) -> str:
    """The analogue of the paper's Table 1: stage, model, AUC, FLOPs, params."""
    lines = [
        f"{'stage':<8} {'model':<12} {'val AUC':>8} {'FLOPs/item':>12} {'FLOPs/request':>14} {'params':>9}",
    ]
    for m in doc["models"]:
        lines.append(
            f"{m['stage']:<8} {m['name']:<12} {m['val_auc']:>8.4f} {m['flops_per_item']:>12,.0f}"
            f" {m['flops_per_request']:>14,.0f} {m['params']:>9,}"
        )
    return "\n".join(lines)
