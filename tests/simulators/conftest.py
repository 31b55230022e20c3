"""A tiny prepared run directory (synthetic data + an untrained model pool) for job tests."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from greenflow.config import Config, default_config
from greenflow.platform.chains import ChainSpace, StageSpace
from greenflow.platform.data.requests import RequestConfig, SplitFractions
from greenflow.platform.data.store import load_dataset, read_meta, write_prepared
from greenflow.platform.data.synthetic import SyntheticConfig, generate
from greenflow.platform.models.features import FeatureSet, item_feature_table
from greenflow.platform.models.flops import measure_model_flops
from greenflow.platform.models.pool import (
    MODEL_KINDS,
    ModelPool,
    PoolEntry,
    build_model,
    probe_context,
    save_pool,
)

TINY_SPACE = ChainSpace(
    (
        StageSpace("recall", ("dssm",), (10, 30)),
        StageSpace("prerank", ("youtube_dnn",), (5, 10)),
        StageSpace("rank", ("din", "dien"), (5,)),
    ),
    exposed_k=5,
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Config:
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    data, _ = generate(SyntheticConfig(users=80, items=50, dim=4, mean_events=20.0, seed=5))
    requests = RequestConfig(requests_per_user=3, fractions=SplitFractions(0.4, 0.1, 0.3, 0.2))
    write_prepared(data, run_dir / "data", requests)
    config = dataclasses.replace(
        default_config("synthetic", run_dir), requests=requests, chains=TINY_SPACE
    )
    features = FeatureSet.from_meta(read_meta(config.data_dir), max_history=10)
    items = item_feature_table(load_dataset(config.data_dir).items, features)
    torch.manual_seed(0)
    entries = {}
    for name in MODEL_KINDS:
        model = build_model(name, features, items).eval()
        entries[name] = PoolEntry(
            name, model, measure_model_flops(model, probe_context(features)), 0.5
        )
    save_pool(ModelPool("synthetic", features, entries), run_dir)
    return config
