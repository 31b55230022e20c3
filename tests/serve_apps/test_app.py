"""The Serve app end to end over real HTTP: answers match the reference cascade, the state
and window endpoints, baselines served by the same app, and the typed builder's checks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pydantic import ValidationError

from greenflow.platform.cascade import run_chain, scoring_model
from greenflow.platform.chains import Chain
from greenflow.platform.data.store import load_dataset, load_requests
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.models.pool import load_pool
from greenflow.platform.reward.data import load_simulated_chains
from greenflow.serve_apps.app import AppArgs
from tests.serve_apps.conftest import call

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _reference(serve_run) -> Callable[[int, list[int], str], list[int]]:
    """The items ``run_chain`` exposes for (user, history, chain id)."""
    pool = load_pool(serve_run.run_dir)
    models = {n: scoring_model(m) for n, m in pool.models.items()}
    users = user_feature_table(load_dataset(serve_run.data_dir).users, pool.features)

    def items(user: int, history: list[int], chain_id: str) -> list[int]:
        ctx = make_context(users[[user]], pad_histories([history], pool.features.max_history))
        return run_chain(models, ctx, history, Chain.parse(chain_id), pool.features.num_items,
                         serve_run.chains.exposed_k).tolist()  # fmt: skip

    return items


def test_recommend_serves_the_reference_cascade_of_its_chain(app_url, serve_run) -> None:
    expected = _reference(serve_run)
    q = dict(zip(load_simulated_chains(serve_run.run_dir).ids,
                 load_simulated_chains(serve_run.run_dir).flops, strict=True))  # fmt: skip
    for row in load_requests(serve_run.data_dir, "eval").head(8).itertuples():
        history = [int(i) for i in row.history]
        status, doc = call(f"{app_url}/recommend",
                           {"user_id": int(row.user_id), "history": history, "request_id": f"r{row.request_id}"})  # fmt: skip
        assert status == 200, doc
        assert set(doc) >= {"items", "chain", "flops", "dual_price", "request_id"}
        assert doc["request_id"] == f"r{row.request_id}"
        assert doc["items"] == expected(int(row.user_id), history, doc["chain"]["id"])
        assert doc["flops"] == pytest.approx(q[doc["chain"]["id"]])
        assert doc["dual_price"] >= 0


def test_concurrent_requests_share_stage_calls_and_get_their_own_items(app_url, serve_run
                                                                       ) -> None:  # fmt: skip
    """Requests chosen together travel through the stages as one Serve call per model
    (``score_many``); each still gets the items of its own chain and history."""
    from ray import serve

    expected = _reference(serve_run)
    rows = list(load_requests(serve_run.data_dir, "eval").head(24).itertuples())
    bodies = [{"user_id": int(r.user_id), "history": [int(i) for i in r.history]} for r in rows]
    recall = serve.get_deployment_handle("stage-dssm", app_name="greenflow")
    before = recall.info.remote().result(timeout_s=30)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda b: call(f"{app_url}/recommend", b), bodies))
    after = recall.info.remote().result(timeout_s=30)
    for body, (status, doc) in zip(bodies, answers, strict=True):
        assert status == 200, doc
        assert doc["items"] == expected(body["user_id"], body["history"], doc["chain"]["id"])
    requests, calls = (after[k] - before[k] for k in ("requests", "calls"))
    assert requests == len(bodies)  # every chain starts with recall (one replica)
    assert calls < requests  # some of them shared a call


def test_known_user_without_history_and_smaller_k(app_url) -> None:
    status, doc = call(f"{app_url}/recommend", {"user_id": 1, "k": 2})
    assert status == 200 and len(doc["items"]) <= 2


def test_health_state_and_windows(app_url) -> None:
    status, health = call(f"{app_url}/healthz")
    assert status == 200 and health["status"] == "ok"
    for _ in range(5):
        call(f"{app_url}/recommend", {"user_id": 2})
    time.sleep(2.5)  # two 1 s windows close (plus the driver's grace)
    status, state = call(f"{app_url}/allocator/state")
    assert status == 200
    assert state["policy"] == "greenflow" and state["driver_alive"] is True
    assert {"dual_price", "spend_flops", "budget_flops", "utilisation"} <= set(state)
    assert state["share"] == state["static_share"] == 1.0  # one replica: the whole budget
    status, doc = call(f"{app_url}/allocator/windows?since=0")
    assert status == 200
    windows = doc["windows"]
    assert windows and {"t", "spend", "budget", "dual_price", "requests"} <= set(windows[0])
    assert sum(w["requests"] for w in windows) >= 5


def _put(url: str, body: object) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_announced_traffic_reaches_the_driver(app_url) -> None:
    import ray

    from greenflow.serve_apps.driver import NAMESPACE, driver_name

    now = time.time()
    for bad in ({"steps": [[now, 5.0], [now - 1, 5.0]]}, {"steps": [[now, -1.0]]},
                {"steps": [[now]]}, {"steps": "soon"}, {"steps": [], "extra": 1}, [1, 2]):  # fmt: skip
        status, detail = _put(f"{app_url}/allocator/forecast", bad)
        assert status == 422, (bad, status, detail)
    driver = ray.get_actor(driver_name("greenflow"), namespace=NAMESPACE)
    plan = {"steps": [[now, 10.0], [now + 10, 30.0], [now + 20, 10.0]]}
    assert _put(f"{app_url}/allocator/forecast", plan) == (200, {"steps": 3})
    assert ray.get(driver.state.remote(), timeout=30)["arrival_plan_steps"] == 3
    assert _put(f"{app_url}/allocator/forecast", {"steps": []}) == (200, {"steps": 0})
    assert ray.get(driver.state.remote(), timeout=30)["arrival_plan_steps"] == 0


def test_driver_sync_counts_a_report_once(serve_run, ray_cluster) -> None:
    """``sync`` (an allocator's poll: its reports, then the state) records each report id
    once, however often a retry sends it, and marks the replica alive."""
    import ray

    from greenflow.platform.allocation.budget import ComputeBudget
    from greenflow.platform.allocation.online import window_start
    from greenflow.serve_apps.driver import DriverConfig, kill_driver, start_driver

    q = load_simulated_chains(serve_run.run_dir).flops
    config = DriverConfig(run_dir=str(serve_run.run_dir), app_name="sync-test",
                          deployment_id="sync-test", budget=ComputeBudget("flops", 1e12),
                          window_s=60.0, expected_rate_rps=10.0, warm_start=False)  # fmt: skip
    driver = start_driver(config)
    try:
        ray.get(driver.ready.remote(), timeout=60)
        start = window_start(time.time(), 60.0)
        Q = np.full((2, len(q)), 0.5)
        report = ("replica-a:1", start, Q, np.array([0, 1]), float(q[0] + q[1]), 1)
        first = ray.get(driver.sync.remote("replica-a", [report]), timeout=30)
        again = ray.get(driver.sync.remote("replica-a", [report]), timeout=30)  # a retry
        assert again["duplicate_reports"] == first["duplicate_reports"] + 1
        assert again["syncs"] == first["syncs"] + 1
        if again["window_start_s"] == start:  # not across a minute boundary
            assert again["spend_flops"] == pytest.approx(q[0] + q[1])
        assert ray.get(driver.sync.remote("replica-b", []), timeout=30)["dual_price"] == 0.0
    finally:
        kill_driver("sync-test")


def test_idle_allocator_polls_the_driver_rarely(app_url) -> None:
    """Without traffic a replica calls the driver after each window close and at least
    every ``IDLE_POLL_S``, not ten times a second; with traffic its reports reach it."""
    import ray

    from greenflow.serve_apps.allocator import IDLE_POLL_S, POLL_S
    from greenflow.serve_apps.driver import NAMESPACE, driver_name

    driver = ray.get_actor(driver_name("greenflow"), namespace=NAMESPACE)
    assert call(f"{app_url}/recommend", {"user_id": 3})[0] == 200
    time.sleep(0.5)  # its report is sent
    before = ray.get(driver.state.remote(), timeout=30)
    time.sleep(3.0)
    after = ray.get(driver.state.remote(), timeout=30)
    idle = after["syncs"] - before["syncs"]
    window_closes = after["windows_closed"] - before["windows_closed"]  # 1 s windows: ~3
    assert 1 <= idle <= window_closes + 3.0 / IDLE_POLL_S + 2, (idle, window_closes)
    assert idle < 0.5 * 3.0 / POLL_S  # what a replica polling every POLL_S would make
    assert call(f"{app_url}/allocator/state")[1]["driver_alive"] is True


def test_baseline_policy_served_by_the_same_app(serve_run, serve_port) -> None:
    from greenflow.serve_apps.app import deploy, teardown

    chain = load_simulated_chains(serve_run.run_dir).ids[0]
    args = AppArgs(run_dir=str(serve_run.run_dir), app_name="fixed", policy=f"fixed:{chain}",
                   window_s=1.0, stage_num_cpus=0.1, allocator_num_cpus=0.1)  # fmt: skip
    url = deploy(args, port=serve_port)
    try:
        for user in (1, 2, 3):
            status, doc = call(f"{url}/recommend", {"user_id": user})
            assert status == 200 and doc["chain"]["id"] == chain
        assert call(f"{url}/allocator/state")[1]["fixed_chain"] == chain
    finally:
        teardown("fixed")


def test_two_allocator_replicas_share_the_window_budget(serve_run, serve_port) -> None:
    """Both replicas poll the driver with their id; it publishes shares summing to 1 per
    window, and each replica serves a window with the share published for it."""
    import ray

    from greenflow.serve_apps.app import deploy, teardown
    from greenflow.serve_apps.driver import NAMESPACE, driver_name

    args = AppArgs(run_dir=str(serve_run.run_dir), app_name="shared", window_s=1.0,
                   expected_rate_rps=20.0, allocator_replicas=2, stage_num_cpus=0.1,
                   allocator_num_cpus=0.1)  # fmt: skip
    url = deploy(args, port=serve_port)
    try:
        for user in range(1, 21):
            assert call(f"{url}/recommend", {"user_id": user})[0] == 200
        time.sleep(3.5)  # windows close; the shares of the window after next are published
        states = {}
        for _ in range(20):  # Serve routes these to both replicas
            state = call(f"{url}/allocator/state")[1]
            states[state["replica_id"]] = state
        driver = ray.get_actor(driver_name("shared"), namespace=NAMESPACE)
        shares = ray.get(driver.state.remote(), timeout=30)["shares"]
        assert shares
        for window in shares.values():
            assert len(window) == 2 and sum(window.values()) == pytest.approx(1.0)
            assert set(window) >= set(states)
        for state in states.values():
            assert state["static_share"] == 0.5 and 0 < state["share"] < 1
    finally:
        teardown("shared")


def test_app_args_are_checked(serve_run) -> None:
    with pytest.raises(ValidationError, match="absolute"):
        AppArgs(run_dir="runs/x")
    with pytest.raises(ValidationError, match="at most one"):
        AppArgs(run_dir=str(serve_run.run_dir), budget_flops_per_s=1.0, budget_power_w=2.0)
    with pytest.raises(ValidationError):
        AppArgs(run_dir=str(serve_run.run_dir), unknown=1)


def test_serve_config_yaml_builds_the_app(serve_run) -> None:
    from importlib import resources

    import yaml

    doc = yaml.safe_load(
        resources.files("greenflow.serve_apps").joinpath("serve_config.yaml").read_text()
    )
    (app,) = doc["applications"]
    assert app["import_path"] == "greenflow.serve_apps.app:build_app"
    args = {**app["args"], "run_dir": str(serve_run.run_dir)}
    AppArgs.model_validate(args)  # the YAML's args are valid builder arguments
    assert doc["http_options"]["host"] == "127.0.0.1"
    assert json.dumps(doc)  # plain data, nothing executable
    assert np.isfinite(1.0)
