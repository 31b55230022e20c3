"""``greenflow simulate``: reward samples for every action chain of every request, on Ray Data.

The request log is read as Parquet and sharded across an actor pool; each actor loads the
model pool once (``SimulateStage.__init__``) and turns batches of requests into reward
samples with the shared-prefix simulator of the domain core (``__call__``).

Output: ``<run-dir>/samples/`` — a Parquet dataset, one row per request with the list of
chain indices kept and their rewards (``simulation.SAMPLE_SCHEMA``); the chain order is
``simulation.json["chains"]``. One row per request keeps the file 10–40× smaller than a
row per (request, chain), and the reward model reads whole requests anyway.

Re-running replaces the output atomically: Ray writes into a hidden temporary directory
which is renamed into place only after every block is written, so a crash never leaves a
half-written ``samples/`` that looks complete.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import ray
import torch
from ray.data import ActorPoolStrategy
from ray.data.expressions import col

from greenflow.config import Config, config_to_dict
from greenflow.errors import ConfigError
from greenflow.platform.cascade import scoring_model
from greenflow.platform.chains import chain_costs, generate_chains
from greenflow.platform.data.store import (
    has_click_model,
    load_click_model,
    load_dataset,
    read_horizon,
    requests_location,
)
from greenflow.platform.documents import ChainCost, SimulationDoc
from greenflow.platform.energy import PFECConfig, make_node_meter, pfec_record
from greenflow.platform.models.features import user_feature_table
from greenflow.platform.models.pool import load_pool
from greenflow.platform.run_dir import SAMPLES_DIR, RunDir
from greenflow.platform.simulation import AllChainSimulator, ChainSampling, simulate_table
from greenflow.ray_support.cluster import connect
from greenflow.ray_support.metrics import FlopsMetric

REQUEST_COLUMNS = ["request_id", "user_id", "split", "ts", "activity", "history", "positives"]


@dataclass(frozen=True)
class SimulateConfig:
    """How the job runs: actor pool, batching, resources, chain sampling."""

    actors: int = 2
    batch_size: int = 32  # requests per batch handed to an actor
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor; > 0 runs the models on CUDA
    torch_threads: int = 1  # intra-op threads per actor; actors give the parallelism
    splits: tuple[str, ...] = ("reward", "eval")
    sampling: ChainSampling = ChainSampling()

    def __post_init__(self) -> None:
        if self.actors < 1 or self.batch_size < 1:
            raise ValueError("actors and batch_size must be >= 1")


class SimulateStage:
    """Ray Data callable class: loads the model pool once per actor, simulates batches."""

    def __init__(self, run_dir: RunDir, config: Config, sim: SimulateConfig) -> None:
        torch.set_num_threads(sim.torch_threads)
        device = "cuda" if sim.num_gpus > 0 else "cpu"
        pool = load_pool(run_dir)
        data = load_dataset(config.data_dir)
        truth = load_click_model(config.data_dir)  # synthetic runs: expected rewards too
        self.response = truth.response if truth is not None else None
        self.user_table = user_feature_table(data.users, pool.features)
        self.max_history = pool.features.max_history
        self.sampling = sim.sampling
        models = {name: scoring_model(m.to(device)) for name, m in pool.models.items()}
        # the FLOPs metric's stage tag: the stage the chain space puts each model in
        self.stages = {m: st.name for st in config.chains.stages for m in st.models}
        self.flops_metric = FlopsMetric(app="simulate")
        self.simulator = AllChainSimulator(
            models, pool.flops, config.chains, generate_chains(config.chains),
            pool.features.num_items, device=device,
        )  # fmt: skip

    def __call__(self, batch: pa.Table) -> pa.Table:
        spent: dict[str, float] = {}
        out = simulate_table(self.simulator, self.user_table, self.max_history, batch,
                             self.sampling, spent, self.response)  # fmt: skip
        for name, flops in spent.items():  # ray_greenflow_flops_total{app="simulate"}
            self.flops_metric.record(flops, stage=self.stages[name], model=name)
        return out


# Read and write tasks are I/O: a small CPU share, so they are scheduled even when the
# actor pool holds most CPUs of a small cluster.
IO_CPUS = 0.1
# Logical CPUs left free of the actor pool for Ray Data's own tasks (ListFiles asks for a
# whole CPU whatever the read's num_cpus). Logical CPUs only drive scheduling: two actors
# of 0.5 CPU on a 2-core machine still run on both cores.
RESERVED_CPUS = 1.0


def fit_to_cluster(
    sim: SimulateConfig, cluster_cpus: float, log: Callable[[str], None] = print
) -> SimulateConfig:
    """Shrink the per-actor CPU request so the pool leaves room for read/write tasks.

    An actor pool that takes every logical CPU starves Ray Data's own tasks and the job
    waits forever (e.g. 2 actors x 1 CPU on a 2-CPU laptop).
    """
    room = cluster_cpus - RESERVED_CPUS
    if sim.actors * sim.num_cpus <= room:
        return sim
    if room <= 0:
        raise ConfigError(f"a cluster of {cluster_cpus} CPU is too small for the simulation job")
    per_actor = room / sim.actors
    log(f"  {sim.actors} actors x {sim.num_cpus} CPU do not fit {cluster_cpus:g} CPUs with room for "
        f"I/O tasks: using {per_actor:.2f} CPU per actor")  # fmt: skip
    return dataclasses.replace(sim, num_cpus=per_actor)


def run_simulation(
    config: Config, sim: SimulateConfig, log: Callable[[str], None] = print
) -> SimulationDoc:
    """Run the job on the connected (or a new local) Ray cluster; returns simulation.json."""
    run_dir = config.run_dir  # pickles as an absolute path or URI: actors may run elsewhere
    requests_path, requests_fs = requests_location(config.data_dir)
    pool = load_pool(run_dir)  # fails early, on the driver, if the pool is missing
    chains = generate_chains(config.chains)
    costs = chain_costs(chains, pool.flops, pool.features.num_items)
    connect()
    sim = fit_to_cluster(sim, float(ray.cluster_resources().get("CPU", 1.0)), log)
    splits = list(sim.splits)
    log(f"simulating {len(chains)} chains for splits {splits} with {sim.actors} actor(s)")
    # Energy of this node over the job (whole node: on one machine that is the job; on a
    # multi-node cluster the per-node meters' metrics cover the other nodes).
    meter = make_node_meter()
    meter.sample()  # opens the window
    start = time.perf_counter()
    ds = ray.data.read_parquet(requests_path, filesystem=requests_fs, columns=REQUEST_COLUMNS,
                               num_cpus=IO_CPUS)  # fmt: skip
    ds = ds.filter(expr=col("split").is_in(splits))
    # A prepared request log is one Parquet file, read as one block: split it so every
    # actor of the pool gets work (several blocks each, for balance).
    ds = ds.repartition(sim.actors * 4)
    ds = ds.map_batches(
        SimulateStage,
        fn_constructor_kwargs={"run_dir": run_dir, "config": config, "sim": sim},
        batch_size=sim.batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=sim.actors),
        num_cpus=sim.num_cpus,
        num_gpus=sim.num_gpus,
    )
    staged = run_dir.samples_staging()
    try:
        ds.write_parquet(staged, filesystem=run_dir.fs, ray_remote_args={"num_cpus": IO_CPUS})
        wall_s = time.perf_counter() - start
        measurements = meter.sample()
        run_dir.publish_samples(staged)
    finally:
        run_dir.discard_staging(staged)
    summary = run_dir.read_samples(
        columns=["request_id", "split", "error", "simulation_flops", "reward"]
    )
    errors = summary.filter(pads.field("error").is_valid())
    malformed = [
        {"request_id": r, "error": e}
        for r, e in zip(errors["request_id"].to_pylist(), errors["error"].to_pylist(), strict=True)
    ]
    n = summary.num_rows
    reward_lengths = np.array([len(r) for r in summary["reward"].to_pylist()])
    simulation_flops = float(np.sum(summary["simulation_flops"].to_numpy()))
    doc = SimulationDoc(
        requests=n,
        chains=tuple(ChainCost(c.id, float(q)) for c, q in zip(chains, costs, strict=True)),
        num_chains=len(chains),
        rows=n,
        malformed=tuple(malformed),
        wall_s=round(wall_s, 2),
        requests_per_s=round(n / wall_s, 1),
        simulation_flops=simulation_flops,
        reference_flops=float(costs.sum() * (n - len(malformed))),
        output=run_dir.show(SAMPLES_DIR),
        config=config_to_dict(config),
        extra={
            "chain_rewards": int(reward_lengths.sum()),
            "layout": "one row per request: chain_idx (list) and reward (list), see SAMPLE_SCHEMA",
            "requests_per_split": {
                s: int(np.sum(summary["split"].to_numpy(zero_copy_only=False) == s)) for s in splits
            },
            "pfec": pfec_record(
                "simulate",
                measurements,
                flops=simulation_flops,
                config=PFECConfig(),
                performance={"requests": float(n)},
            ).to_dict()
            | {"scope": "the driver's node"},
            "actors": sim.actors,
            "batch_size": sim.batch_size,
            "chain_fraction": sim.sampling.fraction,
            "horizon": read_horizon(config.data_dir),
            # synthetic runs: the samples carry E[R] from the known click model beside R
            "expected_rewards": has_click_model(config.data_dir),
        },
    )
    run_dir.write_simulation(doc)
    return doc
