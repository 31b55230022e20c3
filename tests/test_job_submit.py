"""`ray job submit` end to end, as a user runs it: a real head started with `ray start`
(token authentication on), `greenflow simulate` submitted with `--working-dir` of the
repository, polled with `ray job status` until it succeeds, its outputs checked.

The head is started in its own temp dir (so it never becomes the /tmp/ray cluster that a
bare `ray.init()` would join) with its own ports and its own token file (so ~/.ray/auth_token
is neither read nor written). It is torn down by killing only the processes that carry this
test's marker environment variable: `ray stop` would kill every Ray process of the user on
the machine, including other test sessions' clusters.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from greenflow.config import config_to_dict, load_config
from greenflow.platform.data.store import load_requests
from tests.local_cluster import BIN, REPO, cluster_env, free_port, kill_marked, run

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 300
SIMULATION_KEYS = {"requests", "chains", "rows", "wall_s", "requests_per_s", "simulation_flops",
                   "output"}  # fmt: skip
# What `--working-dir .` must not upload besides the git-ignored paths (.venv, runs/).
RUNTIME_ENV = {"excludes": [".git"]}


def job_state(address: str, job_id: str, env: dict[str, str]) -> tuple[str, str]:
    """(state, CLI output) from `ray job status`."""
    out = run([str(BIN / "ray"), "job", "status", "--address", address, job_id], env)
    text = out.stdout + out.stderr
    for state, pattern in (("SUCCEEDED", "succeeded"), ("FAILED", "failed"),
                           ("STOPPED", "was stopped")):  # fmt: skip
        if f"Job '{job_id}' {pattern}" in text:
            return state, text
    match = re.search(rf"Status for job '{re.escape(job_id)}': (\w+)", text)
    return (match.group(1) if match else "UNKNOWN"), text


def test_greenflow_simulate_runs_under_ray_job_submit(tiny_run, tmp_path: Path) -> None:
    # a private copy of the tiny run: inputs only, so the outputs checked below are the job's
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("data", "models"):
        shutil.copytree(tiny_run.run_dir.local_path / name, run_dir / name)
    shutil.copy(tiny_run.run_dir.local_path / "model_pool.json", run_dir / "model_pool.json")
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({"requests": config_to_dict(tiny_run.requests),
                                           "chains": config_to_dict(tiny_run.chains)}))  # fmt: skip
    assert load_config(config_file, "synthetic", run_dir).chains == tiny_run.chains

    # short: the head's Unix socket paths live under it (108-byte limit)
    temp_dir = Path(tempfile.mkdtemp(prefix="gfj", dir="/tmp"))
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    marker = uuid.uuid4().hex
    env = cluster_env(token_path, marker)
    ray = str(BIN / "ray")
    dashboard_port = free_port()
    address = f"http://127.0.0.1:{dashboard_port}"
    job_id = f"greenflow-test-{marker[:8]}"
    gcs_port = free_port()
    try:
        started = run(
            [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
             "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={temp_dir / 'ray'}",
             f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
            env, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stdout + started.stderr
        # the head is only ours: the address file lands in its temp dir, not /tmp/ray
        own = (temp_dir / "ray" / "ray_current_cluster").read_text()
        assert own.endswith(f":{gcs_port}")
        default = Path("/tmp/ray/ray_current_cluster")  # what a bare ray.init() would join
        assert not (default.is_file() and default.read_text().strip() == own.strip())

        # token auth is really on: a client without RAY_AUTH_MODE=token is refused
        no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        refused = run([ray, "job", "list", "--address", address], no_token)
        assert refused.returncode != 0
        assert "Missing authentication token" in refused.stdout + refused.stderr
        got = run([ray, "get-auth-token"], env)  # the CLI reads RAY_AUTH_TOKEN_PATH
        assert got.returncode == 0 and got.stdout.strip() == token_path.read_text()

        submitted = run(
            [ray, "job", "submit", "--address", address, "--submission-id", job_id,
             "--working-dir", str(REPO), "--runtime-env-json", json.dumps(RUNTIME_ENV),
             "--no-wait", "--",
             "greenflow", "simulate", "--dataset", "synthetic", "--run-dir", str(run_dir),
             "--config", str(config_file), "--actors", "1", "--batch-size", "8",
             "--num-cpus", "0.5"],
            env, timeout=120,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr

        deadline = time.monotonic() + JOB_TIMEOUT_S
        state, status = job_state(address, job_id, env)
        while state not in {"SUCCEEDED", "FAILED", "STOPPED"} and time.monotonic() < deadline:
            time.sleep(2)
            state, status = job_state(address, job_id, env)
        if state != "SUCCEEDED":
            logs = run([ray, "job", "logs", "--address", address, job_id], env)
            pytest.fail(f"job {job_id} ended {state}:\n{status}\n--- job logs ---\n"
                        f"{logs.stdout}{logs.stderr}")  # fmt: skip
    finally:
        kill_marked(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)

    doc = json.loads((run_dir / "simulation.json").read_text())
    assert set(doc) >= SIMULATION_KEYS
    expected_rows = load_requests(run_dir / "data")["split"].isin(["reward", "eval"]).sum()
    assert doc["rows"] == doc["requests"] == expected_rows > 0 and doc["num_chains"] == 8
    assert Path(doc["output"]) == run_dir.resolve() / "samples"
    assert list((run_dir / "samples").glob("*.parquet"))
