"""Shared fixtures. One Ray cluster per test session, started only by tests that ask for it;
a tiny prepared run directory (synthetic data + an untrained model pool) and, built from it
without Ray, one with reward samples."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from greenflow.platform.chains import ChainSpace, StageSpace

if TYPE_CHECKING:
    from greenflow.config import Config
    from greenflow.platform.models.pool import ModelPool

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

TINY_SPACE = ChainSpace(
    (
        StageSpace("recall", ("dssm",), (10, 30)),
        StageSpace("prerank", ("youtube_dnn",), (5, 10)),
        StageSpace("rank", ("din", "dien"), (5,)),
    ),
    exposed_k=5,
)
# Reward-split requests of ``reward_run`` keep this fraction of the chains (the paper's
# data-sparsity setting), so training on sampled chains is exercised everywhere.
REWARD_CHAIN_FRACTION = 0.5


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A real local Ray cluster with a few logical CPUs, shared by the whole session.

    Deployments and actors in tests must ask for fractional CPUs so they do not starve
    each other on 2-core machines.
    """
    import ray

    ray.init(
        address="local",  # never join a cluster left by `ray start` (tests/test_job_submit.py)
        num_cpus=6,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        log_to_driver=False,
        ignore_reinit_error=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests of pure code refuse to start Ray."""
    import ray

    def _refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("this unit test must not start Ray")

    monkeypatch.setattr(ray, "init", _refuse)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Config:
    from greenflow.config import default_config
    from greenflow.platform.data.requests import RequestConfig, SplitFractions
    from greenflow.platform.data.store import load_dataset, read_meta, write_prepared
    from greenflow.platform.data.synthetic import SyntheticConfig, generate
    from greenflow.platform.models.features import FeatureSet, item_feature_table
    from greenflow.platform.models.pool import save_pool, untrained_pool

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    data, _ = generate(SyntheticConfig(users=80, items=50, dim=4, mean_events=20.0, seed=5))
    requests = RequestConfig(requests_per_user=3, fractions=SplitFractions(0.4, 0.1, 0.3, 0.2))
    write_prepared(data, run_dir / "data", requests)
    config = dataclasses.replace(
        default_config("synthetic", run_dir), requests=requests, chains=TINY_SPACE
    )
    features = FeatureSet.from_meta(read_meta(config.data_dir), max_history=10)
    items = item_feature_table(load_dataset(config.data_dir).items, features)
    save_pool(untrained_pool("synthetic", features, items, space=TINY_SPACE), config.run_dir)
    return config


@pytest.fixture(scope="session")
def reward_run(tiny_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A copy of ``tiny_run`` with reward samples and simulation.json, simulated in-process
    by the domain core (no Ray): 'reward' requests keep a sampled half of the chains,
    'eval' requests all of them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from greenflow.config import config_to_dict
    from greenflow.platform.cascade import scoring_model
    from greenflow.platform.chains import chain_costs, generate_chains
    from greenflow.platform.data.store import load_dataset
    from greenflow.platform.documents import ChainCost, SimulationDoc
    from greenflow.platform.models.features import user_feature_table
    from greenflow.platform.models.pool import load_pool
    from greenflow.platform.simulation import AllChainSimulator, ChainSampling, simulate_table

    run_dir = tmp_path_factory.mktemp("reward") / "run"
    run_dir.mkdir()
    for name in ("data", "models"):
        shutil.copytree(tiny_run.run_dir.local_path / name, run_dir / name)
    shutil.copy(tiny_run.run_dir.local_path / "model_pool.json", run_dir / "model_pool.json")
    config = dataclasses.replace(tiny_run, run_dir=run_dir)
    pool = load_pool(config.run_dir)
    chains = generate_chains(config.chains)
    sim = AllChainSimulator(
        {n: scoring_model(m) for n, m in pool.models.items()}, pool.flops, config.chains,
        chains, pool.features.num_items,
    )  # fmt: skip
    users = user_feature_table(load_dataset(config.data_dir).users, pool.features)
    requests = pq.read_table(config.data_dir.local_path / "requests.parquet")
    requests = requests.filter(pa.compute.is_in(requests["split"], pa.array(["reward", "eval"])))
    samples = simulate_table(
        sim, users, pool.features.max_history, requests,
        ChainSampling(fraction=REWARD_CHAIN_FRACTION, seed=1),
    )  # fmt: skip
    (run_dir / "samples").mkdir()
    pq.write_table(samples, run_dir / "samples" / "part-0.parquet")
    costs = chain_costs(chains, pool.flops, pool.features.num_items)
    # a whole simulation.json (DESIGN.md §5): what `greenflow simulate` would have written
    config.run_dir.write_simulation(SimulationDoc(
        requests=samples.num_rows,
        chains=tuple(ChainCost(c.id, float(q)) for c, q in zip(chains, costs, strict=True)),
        num_chains=len(chains),
        rows=samples.num_rows,
        wall_s=1.0,
        requests_per_s=float(samples.num_rows),
        simulation_flops=float(pa.compute.sum(samples["simulation_flops"]).as_py()),
        output=config.run_dir.show("samples"),
        config=config_to_dict(config),
    ))  # fmt: skip
    return config


@pytest.fixture(scope="session")
def serve_run(reward_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """``reward_run`` (a copy) plus a trained 'full' reward model and a J/FLOP calibration."""
    from greenflow.platform.energy import PFECConfig
    from greenflow.platform.energy.pool_calibration import CalibrationConfig
    from greenflow.platform.reward import RewardModelConfig
    from greenflow.platform.reward.run import train_reward_variants
    from greenflow.platform.reward.training import RewardTrainConfig
    from greenflow.platform.run_dir import RunDir
    from greenflow.simulators.pfec_jobs import run_calibration

    run_dir = tmp_path_factory.mktemp("serve") / "run"
    shutil.copytree(reward_run.run_dir.local_path, run_dir)
    train_reward_variants(RunDir(run_dir), ["full"], RewardModelConfig(),
                          RewardTrainConfig(epochs=2, batch_size=16), log=lambda _: None)  # fmt: skip
    run_calibration(RunDir(run_dir), CalibrationConfig(seconds=0.2, idle_seconds=0.0), PFECConfig(),
                    reward_run.chains, log=lambda _: None)  # fmt: skip
    return dataclasses.replace(reward_run, run_dir=run_dir)


@pytest.fixture(scope="session")
def tiny_pool() -> ModelPool:
    """Every model kind, untrained, on a 30-item corpus, with measured FLOPs."""
    import torch

    from greenflow.platform.models.features import FeatureSet, FeatureSpec
    from greenflow.platform.models.pool import untrained_pool

    features = FeatureSet(
        user=(FeatureSpec("age", 5), FeatureSpec("gender", 3)),
        item=(FeatureSpec("genre", 4),),
        num_items=30,
        max_history=6,
    )
    items = (torch.arange(features.num_items + 1) % 4).unsqueeze(1)  # (N+1, F_i) genre codes
    return untrained_pool("tiny", features, items)


# Four stages, one model kind each, on tiny_run's data: 2 x 2 x 2 x 1 = 8 chains.
FOUR_STAGE_SPACE = ChainSpace(
    (
        StageSpace("recall", ("dssm",), (20, 40)),
        StageSpace("prerank", ("youtube_dnn",), (10, 20)),
        StageSpace("rank", ("din",), (5, 10)),
        StageSpace("rerank", ("dien",), (5,)),
    ),
    exposed_k=5,
)


@pytest.fixture(scope="session")
def four_stage_run(tiny_run: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """tiny_run's data with a 4-stage chain space and its pool trained for it (1 epoch):
    each model's stage, and the candidates it trains on, come from the space alone."""
    from greenflow.platform.models.pool import PoolConfig
    from greenflow.platform.models.run import train_and_save_pool
    from greenflow.platform.models.training import CascadeTrainConfig

    run_dir = tmp_path_factory.mktemp("four") / "run"
    shutil.copytree(tiny_run.run_dir.local_path / "data", run_dir / "data")
    pool = PoolConfig(max_history=10, train=CascadeTrainConfig(epochs=1, batch_size=128),
                      graph_folds=2, baseline_top_m=20, head_requests=40)  # fmt: skip
    config = dataclasses.replace(tiny_run, run_dir=run_dir, pool=pool, chains=FOUR_STAGE_SPACE)
    train_and_save_pool(config.run_dir, config.pool, config.chains, log=lambda _: None)
    return config


@pytest.fixture(scope="session")
def four_stage_simulated(
    four_stage_run: Config, ray_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> Config:
    """A copy of ``four_stage_run`` simulated by the Ray Data job (every chain of every
    reward/eval request), with a trained 'full' reward model and a J/FLOP calibration:
    what evaluation and the Serve app read."""
    from greenflow.platform.energy import PFECConfig
    from greenflow.platform.energy.pool_calibration import CalibrationConfig
    from greenflow.platform.reward import RewardModelConfig
    from greenflow.platform.reward.run import train_reward_variants
    from greenflow.platform.reward.training import RewardTrainConfig
    from greenflow.simulators.pfec_jobs import run_calibration
    from greenflow.simulators.simulate import SimulateConfig, run_simulation

    run_dir = tmp_path_factory.mktemp("four-sim") / "run"
    shutil.copytree(four_stage_run.run_dir.local_path, run_dir)
    config = dataclasses.replace(four_stage_run, run_dir=run_dir)
    run_simulation(config, SimulateConfig(actors=1, batch_size=32, num_cpus=0.5),
                   log=lambda _: None)  # fmt: skip
    train_reward_variants(config.run_dir, ["full"], RewardModelConfig(),
                          RewardTrainConfig(epochs=2, batch_size=16), log=lambda _: None)  # fmt: skip
    run_calibration(config.run_dir, CalibrationConfig(seconds=0.1, idle_seconds=0.0),
                    PFECConfig(), config.chains, log=lambda _: None)  # fmt: skip
    return config
