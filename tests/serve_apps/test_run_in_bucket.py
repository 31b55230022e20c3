"""A run directory in object storage: a real S3 API (moto's standalone server) on 127.0.0.1.

The dataset is prepared into the bucket, the Ray Data simulation job reads its requests
and writes its samples there, the reward model and the calibration are written there,
and the Serve app (replicas and the dual-price driver, in their own processes) reads its
run from there and checkpoints into it. Credentials and the endpoint ride in the URI, so
every Ray worker opens the same filesystem whatever its environment.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pandas as pd
import pytest

from greenflow.config import Config
from greenflow.platform.run_dir import RunDir
from tests.serve_apps.conftest import call

BUCKET = "greenflow-runs"
KEY, SECRET = "testing", "testing"  # moto accepts any; never real credentials


@pytest.fixture(scope="module")
def bucket_uri() -> Iterator[str]:
    """``s3://…/runs/tiny?…`` on a fresh moto server with one empty bucket."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        admin = pafs.S3FileSystem(access_key=KEY, secret_key=SECRET, region="us-east-1",
                                  endpoint_override=endpoint, scheme="http",
                                  allow_bucket_creation=True)  # fmt: skip
        admin.create_dir(BUCKET)
        yield (f"s3://{KEY}:{SECRET}@{BUCKET}/runs/tiny?endpoint_override={endpoint}"
               "&scheme=http&region=us-east-1")  # fmt: skip
    finally:
        server.stop()


def _prepare_in_bucket(tiny_run: Config, run: RunDir) -> Config:
    """``tiny_run``'s dataset prepared into the bucket and its model pool saved there."""
    from greenflow.platform.data.store import write_prepared
    from greenflow.platform.data.synthetic import SyntheticConfig, generate
    from greenflow.platform.models.pool import load_pool, save_pool

    data, _ = generate(SyntheticConfig(users=80, items=50, dim=4, mean_events=20.0, seed=5))
    write_prepared(data, run.data, tiny_run.requests)  # as tests/conftest.py's tiny_run
    save_pool(load_pool(tiny_run.run_dir), run)
    return dataclasses.replace(tiny_run, run_dir=run)


def test_simulation_training_and_serving_from_a_bucket(
    bucket_uri: str, tiny_run: Config, reward_run: Config, serve_port: int
) -> None:
    from greenflow.platform.data.store import load_requests
    from greenflow.platform.energy import PFECConfig
    from greenflow.platform.energy.pool_calibration import CalibrationConfig
    from greenflow.platform.reward import RewardModelConfig
    from greenflow.platform.reward.run import train_reward_variants
    from greenflow.platform.reward.training import RewardTrainConfig
    from greenflow.serve_apps.app import AppArgs, deploy, teardown
    from greenflow.simulators.pfec_jobs import run_calibration
    from greenflow.simulators.simulate import SimulateConfig, run_simulation

    t0 = time.perf_counter()
    run = RunDir(bucket_uri)
    config = _prepare_in_bucket(tiny_run, run)
    pd.testing.assert_frame_equal(load_requests(run.data), load_requests(tiny_run.data_dir))

    doc = run_simulation(config, SimulateConfig(actors=2, batch_size=8, num_cpus=0.5),
                         log=lambda _: None)  # fmt: skip
    assert doc.output == f"s3://{BUCKET}/runs/tiny/samples" and doc.malformed == ()
    assert run.read_simulation().rows == doc.rows > 0
    assert not [name for name in run.listdir() if name.startswith(".samples")]
    # every chain of an eval request, as the in-process simulation of reward_run has them
    columns = ["request_id", "chain_idx", "reward"]
    split = [("split", "=", "eval")]
    got = run.read_samples(columns, split).to_pandas().set_index("request_id").sort_index()
    want = reward_run.run_dir.read_samples(columns, split).to_pandas()
    want = want.set_index("request_id").sort_index()
    assert [list(r) for r in got["reward"]] == [list(r) for r in want["reward"]]

    train_reward_variants(run, ["full"], RewardModelConfig(),
                          RewardTrainConfig(epochs=1, batch_size=16), log=lambda _: None)  # fmt: skip
    run_calibration(run, CalibrationConfig(seconds=0.2, idle_seconds=0.0), PFECConfig(),
                    reward_run.chains, log=lambda _: None)  # fmt: skip
    assert run.has_reward_model("full") and run.read_calibration() is not None
    prepared_s = time.perf_counter() - t0

    args = AppArgs(run_dir=run.portable, app_name="bucket", window_s=1.0,
                   expected_rate_rps=20.0, stage_num_cpus=0.2, allocator_num_cpus=0.2)  # fmt: skip
    url = deploy(args, port=serve_port)
    try:
        user = int(load_requests(run.data, "eval")["user_id"].iloc[0])
        status, body = call(f"{url}/recommend", {"user_id": user, "k": 5})
        assert status == 200, body
        assert len(body["items"]) == 5 and body["flops"] > 0
        deadline = time.monotonic() + 30.0  # the driver checkpoints into the bucket
        while run.read_dual_price("bucket") is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert run.read_dual_price("bucket") is not None
    finally:
        teardown(args.app_name)
    print(
        f"bucket run: prepared, simulated and trained in {prepared_s:.1f} s; "
        f"served in {time.perf_counter() - t0 - prepared_s:.1f} s"
    )
