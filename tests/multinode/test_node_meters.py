"""Per-node metering on a real cluster of three nodes (a head and two workers, each a raylet
started with `ray start`): one meter per node, each on its own node and tagging its series
with that node's id; a killed worker takes only its own meter with it; a node that joins
gets a meter from the supervisor."""

from __future__ import annotations

import json

import pytest

from tests.local_cluster import LocalCluster
from tests.waiting import wait_for

pytestmark = [pytest.mark.multinode, pytest.mark.slow]

METER_INTERVAL_S = 0.25
WATCH_S = 1.0

DRIVER = """
import json, sys, time
import ray
from greenflow.simulators.node_meter import node_meter_stats, start_node_meters, stop_node_meters
ray.init(address="auto", namespace="greenflow-test", log_to_driver=False)
action = {action!r}
if action == "start":
    start_node_meters(interval_s={interval}, watch_s={watch}, timeout_s=60)
if action == "stop":
    print("RESULT " + json.dumps({{"stopped": stop_node_meters()}}))
    sys.exit(0)
first = node_meter_stats()
time.sleep(1.0)
second = node_meter_stats()
alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
print("RESULT " + json.dumps({{"alive": alive, "stats": {{
    k: {{"node": v["node"], "runs_on": v["runs_on"],
         "new_samples": v["samples"] - first[k]["samples"] if k in first else None}}
    for k, v in second.items()}}}}))
"""


def driver(cluster: LocalCluster, action: str) -> dict:
    code = DRIVER.format(action=action, interval=METER_INTERVAL_S, watch=WATCH_S)
    return cluster.driver(code, timeout=120)


def meters_on_every_node(cluster: LocalCluster) -> dict | None:
    """The observation once every alive node has a meter seen in both of its snapshots (a
    meter that started between them has no sample count to compare yet)."""
    doc = driver(cluster, "observe")
    seen_twice = all(s["new_samples"] is not None for s in doc["stats"].values())
    return doc if sorted(doc["stats"]) == doc["alive"] and seen_twice else None


def node_lost(cluster: LocalCluster, before: set[str]) -> dict | None:
    doc = driver(cluster, "observe")
    return doc if set(doc["alive"]) != before else None


def test_one_meter_per_node_survives_a_lost_worker_and_comes_to_a_new_one() -> None:
    with LocalCluster(head_cpus=1) as cluster:
        cluster.add_worker("worker_a")
        cluster.add_worker("worker_b")
        doc = driver(cluster, "start")
        try:
            assert len(doc["alive"]) == 3, doc
            assert sorted(doc["stats"]) == doc["alive"]  # exactly one meter per node
            for node_id, stats in doc["stats"].items():
                # it runs on the node it is named for, and tags its series with that id
                assert stats["node"] == stats["runs_on"] == node_id
                assert stats["new_samples"] > 0  # and it is sampling

            before = set(doc["alive"])
            assert cluster.kill_worker("worker_b") > 0
            after = wait_for("the cluster to see the lost node",
                             lambda: node_lost(cluster, before), 90, period_s=1.0)  # fmt: skip
            assert len(after["alive"]) == 2
            assert sorted(after["stats"]) == after["alive"]  # the two others still meter
            assert all(s["new_samples"] > 0 for s in after["stats"].values()), after

            cluster.add_worker("worker_c")
            joined = wait_for("a meter on the new node",
                              lambda: meters_on_every_node(cluster), 60, period_s=1.0)  # fmt: skip
            assert len(joined["alive"]) == 3
            (new,) = set(joined["alive"]) - before
            assert joined["stats"][new]["runs_on"] == new
            assert joined["stats"][new]["new_samples"] > 0, json.dumps(joined)
        finally:
            stopped = driver(cluster, "stop")
        assert stopped["stopped"] == 3
