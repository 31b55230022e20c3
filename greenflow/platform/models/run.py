"""``greenflow train-cascade``: train the model pool on a prepared dataset and write
``model_pool.json`` (``pool.py``'s document plus the ground-truth horizon, the training
wall time and whatever the caller adds, such as the resolved configuration)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from greenflow.platform.chains import ChainSpace
from greenflow.platform.data.store import (
    load_dataset,
    load_requests,
    load_user_splits,
    read_horizon,
    read_meta,
)
from greenflow.platform.documents import ModelPoolDoc
from greenflow.platform.models.features import FeatureSet
from greenflow.platform.models.pool import PoolConfig, save_pool, train_pool
from greenflow.platform.run_dir import RunDir


def train_and_save_pool(
    run_dir: RunDir,
    config: PoolConfig,
    space: ChainSpace,
    log: Callable[[str], None] = print,
    extra: Mapping[str, Any] | None = None,
) -> ModelPoolDoc:
    """Train every model of ``config`` stage by stage on the dataset prepared in
    the run's ``data/`` (head quality on its validation requests), save the weights and
    write ``model_pool.json``; returns that document."""
    data_dir = run_dir.data
    meta = read_meta(data_dir)
    dataset = load_dataset(data_dir)
    splits = load_user_splits(data_dir)
    features = FeatureSet.from_meta(meta, config.max_history)
    t0 = time.perf_counter()
    val_requests = load_requests(data_dir, "validation")
    pool = train_pool(dataset, features, splits, config, space, val_requests, log)
    doc = save_pool(pool, run_dir)
    doc = dataclasses.replace(
        doc,
        horizon=read_horizon(data_dir),
        extra={**doc.extra, "train_wall_s": round(time.perf_counter() - t0, 1), **(extra or {})},
    )
    run_dir.write_model_pool(doc)
    return doc
