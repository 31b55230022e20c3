"""``greenflow train-cascade``: train the model pool on a prepared dataset and write
``model_pool.json`` (``pool.py``'s document plus the ground-truth horizon, the training
wall time and whatever the caller adds, such as the resolved configuration)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from greenflow.platform.chains import ChainSpace
from greenflow.platform.data.store import (
    load_dataset,
    load_requests,
    load_user_splits,
    read_horizon,
    read_meta,
)
from greenflow.platform.models.features import FeatureSet
from greenflow.platform.models.pool import POOL_FILE, PoolConfig, save_pool, train_pool


def train_and_save_pool(
    data_dir: Path,
    run_dir: Path,
    config: PoolConfig,
    space: ChainSpace,
    log: Callable[[str], None] = print,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train every model of ``config`` stage by stage on the dataset prepared in
    ``data_dir`` (head quality on its validation requests), save the weights under
    ``run_dir`` and write ``run_dir/model_pool.json``; returns that document."""
    meta = read_meta(data_dir)
    dataset = load_dataset(data_dir)
    splits = load_user_splits(data_dir)
    features = FeatureSet.from_meta(meta, config.max_history)
    t0 = time.perf_counter()
    val_requests = load_requests(data_dir, "validation")
    pool = train_pool(dataset, features, splits, config, space, val_requests, log)
    doc = save_pool(pool, run_dir)
    doc["horizon"] = read_horizon(data_dir)
    doc["train_wall_s"] = round(time.perf_counter() - t0, 1)
    doc.update(extra or {})
    (Path(run_dir) / POOL_FILE).write_text(json.dumps(doc, indent=2))
    return doc
