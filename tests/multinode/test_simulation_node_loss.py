"""`greenflow simulate` survives a lost worker node: submitted with `ray job submit` to a real
cluster (a head with no CPU for tasks, two workers that hold the actor pool), one worker is
SIGKILLed while the actors are simulating; the job succeeds, its samples equal row by row
those of the same job run on the same cluster without the kill (every column, the FLOPs
share of each row's batch included), and no partial `samples/` is visible at any time."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
import yaml

from greenflow.config import Config, config_to_dict, default_config
from greenflow.platform.chains import ChainSpace, StageSpace
from greenflow.platform.data.requests import RequestConfig, SplitFractions
from greenflow.platform.data.store import load_dataset, read_meta, write_prepared
from greenflow.platform.data.synthetic import SyntheticConfig, generate
from greenflow.platform.models.features import FeatureSet, item_feature_table
from greenflow.platform.models.pool import save_pool, untrained_pool
from tests.local_cluster import BIN, LocalCluster, run
from tests.test_job_submit import job_state
from tests.waiting import wait_for

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

ACTORS = 2
CHAIN_FRACTION = 0.5  # reward requests keep a seeded half of the chains: kept ids must match
SEED = 3
# Enough requests (~2,800 simulated) that a worker dies with blocks still to simulate.
SPACE = ChainSpace(
    (
        StageSpace("recall", ("dssm",), (40, 80, 160)),
        StageSpace("prerank", ("youtube_dnn",), (10, 20, 40)),
        StageSpace("rank", ("din", "dien"), (10,)),
    ),
    exposed_k=10,
)


def prepared_run(root: Path) -> tuple[Config, Path]:
    """A synthetic run with an untrained pool, and the YAML config the job is given."""
    run_dir = root / "run"
    data, truth = generate(SyntheticConfig(users=900, items=300, dim=4, mean_events=24.0,
                                           seed=11))  # fmt: skip
    requests = RequestConfig(requests_per_user=8, fractions=SplitFractions(0.3, 0.1, 0.3, 0.3))
    write_prepared(data, run_dir / "data", requests, truth=truth)
    config = dataclasses.replace(
        default_config("synthetic", run_dir), requests=requests, chains=SPACE
    )
    features = FeatureSet.from_meta(read_meta(config.data_dir), max_history=10)
    items = item_feature_table(load_dataset(config.data_dir).items, features)
    save_pool(untrained_pool("synthetic", features, items, space=SPACE), config.run_dir)
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump({"requests": config_to_dict(requests),
                                           "chains": config_to_dict(SPACE)}))  # fmt: skip
    return config, config_file


def submit(cluster: LocalCluster, job_id: str, config: Config, config_file: Path) -> None:
    submitted = run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard_address,
         "--submission-id", job_id, "--no-wait", "--", "greenflow", "simulate",
         "--dataset", "synthetic", "--run-dir", str(config.run_dir), "--config", str(config_file),
         "--actors", str(ACTORS), "--num-cpus", "1", "--batch-size", "16",
         "--chain-fraction", str(CHAIN_FRACTION), "--seed", str(SEED)],
        cluster.env(), timeout=120,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr


def wait_finished(cluster: LocalCluster, job_id: str) -> None:
    def finished() -> str | None:
        state, _ = job_state(cluster.dashboard_address, job_id, cluster.env())
        return state if state in {"SUCCEEDED", "FAILED", "STOPPED"} else None

    final = wait_for(f"job {job_id} to finish", finished, 300, period_s=1.0)
    if final != "SUCCEEDED":
        logs = run([str(BIN / "ray"), "job", "logs", "--address", cluster.dashboard_address,
                    job_id], cluster.env())  # fmt: skip
        pytest.fail(f"job {job_id} ended {final}:\n{logs.stdout}{logs.stderr}")


def differing_columns(got: pa.Table, expected: pa.Table) -> dict[str, int]:
    """Column -> how many rows differ, the tables ordered by request id."""
    got, expected = got.sort_by("request_id"), expected.sort_by("request_id")
    out = {}
    for name in expected.column_names:
        a, b = got[name].to_pylist(), expected[name].to_pylist()
        if a != b:
            out[name] = sum(x != y for x, y in zip(a, b, strict=True))
    return out


def test_simulation_job_survives_a_lost_worker_node(tmp_path: Path) -> None:
    config, config_file = prepared_run(tmp_path)
    samples = config.run_dir.local_path / "samples"
    with LocalCluster(head_cpus=0, dashboard=True) as cluster:
        for name in ("worker_a", "worker_b"):
            cluster.add_worker(name, num_cpus=2)
        # the reference: the same job on the same cluster, nothing killed
        submit(cluster, "simulate-reference", config, config_file)
        wait_finished(cluster, "simulate-reference")
        expected = pads.dataset(samples, format="parquet").to_table()
        reference_wall_s = config.run_dir.read_simulation().wall_s

        submit(cluster, "simulate-node-loss", config, config_file)

        def simulating_on_both() -> dict[str, str] | None:
            """actor id -> node name, once both workers hold a live simulation actor and
            the first blocks are written (the pool is at work)."""
            names = cluster.node_ids()
            actors = {a["actor_id"]: names.get(a["node_id"], "?")
                      for a in cluster.state("actors", {"state": "ALIVE"})
                      if "SimulateStage" in a["class_name"]}  # fmt: skip
            parts = list(config.run_dir.local_path.glob(".samples.tmp-*/*.parquet"))
            # the reference's samples/ stays whole until the new one is renamed over it
            assert pads.dataset(samples, format="parquet").count_rows() == expected.num_rows
            if sorted(actors.values()) == ["worker_a", "worker_b"] and parts:
                return actors
            return None

        placed = wait_for("simulation actors on both workers, first blocks written",
                          simulating_on_both, 180, period_s=0.1)  # fmt: skip
        state, _ = job_state(cluster.dashboard_address, "simulate-node-loss", cluster.env())
        assert state == "RUNNING", state  # the kill lands mid-run
        written_at_kill = len(list(config.run_dir.local_path.glob(".samples.tmp-*/*.parquet")))
        assert cluster.kill_worker("worker_b") > 0
        killed_at = time.monotonic()
        wait_finished(cluster, "simulate-node-loss")
        recovery_s = time.monotonic() - killed_at
        summary = config.run_dir.read_simulation()

    got = pads.dataset(samples, format="parquet").to_table()
    assert not list(config.run_dir.local_path.glob(".samples.tmp-*"))  # no temporary output left
    assert got.num_rows == expected.num_rows == summary.requests
    assert got.column_names == expected.column_names
    # nothing lost, nothing twice, the same values
    assert differing_columns(got, expected) == {}
    print("MULTINODE simulate: " + json.dumps({
        "requests": got.num_rows, "actors": placed, "parts_written_at_kill": written_at_kill,
        "job_s_after_kill": round(recovery_s, 1), "wall_s": summary.wall_s,
        "reference_wall_s": reference_wall_s}))  # fmt: skip
