"""Serving survives a lost worker node, and the dual-price driver moves to another node.

A real cluster: the head holds Serve's controller, the HTTP proxy and the allocator
(`allocator_resources={"head": …}`); two workers hold the stage replicas (two of each
model, spread, `stage_resources={"model_node": …}`) and the driver (`driver_resources=
{"nearline": …}`, a resource both workers offer). Under a steady open-loop load, the worker
that hosts the driver and a rank replica is SIGKILLed. Then:

- no response has status ≥ 500 (a request whose stage fails retries on a chain that
  avoids the failed models, or on another replica);
- every closed window kept its budget (the predictive guard's bound);
- the lost replicas are replaced on the surviving worker and serve again (time reported);
- the driver restarts on the surviving worker and restores λ and its windows from the
  checkpoint in the run directory (shared storage: on one host, the same path).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from greenflow.platform.run_dir import RunDir
from tests.local_cluster import LocalCluster
from tests.serve_apps.conftest import free_port
from tests.serve_apps.test_faults import Load, accounting, call, report
from tests.waiting import wait_for

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

APP = "nodeloss"
MODELS = ("dssm", "youtube_dnn", "din", "dien")

DEPLOY = """
import json
import ray
from ray import serve
from greenflow.serve_apps.app import AppArgs, deploy
ray.init(address="auto", log_to_driver=False)
# every node of this cluster is 127.0.0.1: one proxy (on the head), not one per node
serve.start(proxy_location="HeadOnly", http_options={{"host": "127.0.0.1", "port": {port}}})
url = deploy(AppArgs.model_validate(json.loads({args!r})), port={port}, timeout_s=180)
print("RESULT " + json.dumps({{"url": url}}))
"""


DRIVER_STATE = f"""
import json
import ray
from greenflow.serve_apps.driver import NAMESPACE, driver_name
ray.init(address="auto", log_to_driver=False)
state = ray.get(ray.get_actor(driver_name("{APP}"), namespace=NAMESPACE).state.remote(), timeout=30)
print("RESULT " + json.dumps({{"restored": state["restored"], "price": state["dual_price"]}}))
"""


def placement(cluster: LocalCluster) -> dict[str, list[str]]:
    """Node name -> the alive actors of the app on it (stage models, allocator, driver)."""
    names = cluster.node_ids()
    out: dict[str, list[str]] = {}
    for actor in cluster.state("actors", {"state": "ALIVE"}):
        cls = actor["class_name"]
        if cls.startswith(f"ServeReplica:{APP}:"):
            what = cls.split(":")[-1].removeprefix("stage-")
        elif cls == "DualPriceDriver":
            what = "driver"
        else:
            continue
        out.setdefault(names.get(actor["node_id"], "?"), []).append(what)
    return {k: sorted(v) for k, v in out.items()}


def test_serving_survives_a_lost_worker_and_the_driver_moves(serve_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(serve_run.run_dir.local_path, run_dir)
    args = {"run_dir": str(run_dir), "app_name": APP, "window_s": 1.0, "expected_rate_rps": 10,
            "stage_replicas": 2, "stage_num_cpus": 0.2, "allocator_num_cpus": 0.2,
            "stage_resources": {"model_node": 1}, "allocator_resources": {"head": 0.1},
            "driver_resources": {"nearline": 0.1}}  # fmt: skip
    with LocalCluster(head_cpus=1, dashboard=True) as cluster:
        for name in ("worker_a", "worker_b"):
            cluster.add_worker(name, num_cpus=2, resources={"model_node": 10, "nearline": 1})
        port = free_port()
        url = cluster.driver(DEPLOY.format(port=port, args=json.dumps(args)), timeout=240)["url"]

        before = placement(cluster)
        assert before["head"] == ["Allocator"], before
        for worker in ("worker_a", "worker_b"):  # one replica of each model on each worker
            assert [m for m in before[worker] if m != "driver"] == sorted(MODELS), before
        (home,) = [w for w in ("worker_a", "worker_b") if "driver" in before[w]]
        (other,) = {"worker_a", "worker_b"} - {home}
        ckpt = run_dir / "serve" / APP / "dual_price.json"

        load_start = time.time()
        with Load(url, rps=10.0, max_s=150.0) as load:
            wait_for("a driver checkpoint", ckpt.is_file, 30)
            time.sleep(2.0)
            assert cluster.kill_worker(home) > 0  # the driver's node, with a din and a dien
            t_kill = time.time()
            doc = json.loads(ckpt.read_text())

            def driver_moved() -> dict[str, Any] | None:
                now = placement(cluster)
                return now if "driver" in now.get(other, []) else None

            wait_for("the driver restarted on the other worker", driver_moved, 120, 0.5)
            t_driver = time.time()

            def replaced() -> dict[str, Any] | None:
                now = placement(cluster)
                stages = [m for m in now.get(other, []) if m != "driver"]
                return now if stages == sorted(MODELS * 2) else None

            after = wait_for("the lost replicas replaced on the other worker", replaced, 120, 0.5)
            t_replaced = time.time()

            def served_again() -> float | None:  # undegraded answers from the new set
                ok = [r.t for r in load.done() if r.t >= t_replaced and r.status == 200
                      and not r.doc["degraded"]]  # fmt: skip
                return min(ok) if len(ok) >= 10 else None

            t_served = wait_for("undegraded answers after the replacement", served_again, 60)
            time.sleep(3.0)  # windows close with the moved driver
        results = load.results
        state = call(f"{url}/allocator/state")[1]
        acc = accounting(url, SimpleNamespace(guard_tolerance=0.0), RunDir(run_dir), load_start - 1,
                         results)  # fmt: skip
        driver = cluster.driver(DRIVER_STATE)

    failed = [r for r in results if r.status >= 500 or r.status == 0]
    outage = [r for r in results if t_kill <= r.t < t_replaced]
    report("node-loss", requests=len(results), status_ge_500=len(failed),
           outage_requests=len(outage),
           outage_degraded=sum(r.status == 200 and r.doc["degraded"] for r in outage),
           driver_restarted_s=round(t_driver - t_kill, 1),
           replicas_replaced_s=round(t_replaced - t_kill, 1),
           served_again_s=round(t_served - t_kill, 1), windows=len(acc.rows),
           max_utilisation=max(w["spend"] / w["budget"] for w in acc.rows),
           price_at_kill=doc["dual_price"], placement_before=before,
           placement_after=after)  # fmt: skip
    assert not failed, [(r.status, r.doc) for r in failed[:5]]
    assert len(results) >= 0.7 * 10.0 * (results[-1].t - load_start)  # the load really ran
    served = {}  # window start -> FLOPs of the 200 answers admitted in it
    for r in results:
        if r.status == 200:
            t = round(r.doc["window_start_s"], 6)
            served[t] = served.get(t, 0.0) + r.doc["flops"]
    over = [{**w, "answered": acc.answered.get(round(w["t"], 6)),
             "served_flops": served.get(round(w["t"], 6)), "t_kill": t_kill} for w in acc.over]  # fmt: skip
    assert not acc.over, (over, state)  # every closed window kept its budget
    # the moved driver restored its checkpoint: the windows it had closed are still there
    kept = {round(r["t_s"], 6) for r in doc["records"] if r["t_s"] >= load_start - 1}
    assert kept <= set(acc.counted)
    assert state["driver_alive"] is True and state["reports_dropped"] == 0
    assert driver["restored"] is True  # on `other` (driver_moved): λ from the checkpoint
