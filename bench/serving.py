"""Serving benchmark (issue: Ray Serve platform, part 7), one cluster, one run.

(a) The allocator's added latency: the GreenFlow app and a fixed-chain app (no reward
    model, no choice: what a cascade without GreenFlow costs) get the same sequential
    requests. Reported: the time the GreenFlow allocator spends choosing (reward model
    on all chains + decision + guard, measured in the replica: ``allocation_ms``), p50 and
    p99, and the end-to-end p50/p99 of both apps (they differ by chain mix too).
(b) The allocator's FLOPs: the reward model's FLOPs per request over the cascade FLOPs per
    request GreenFlow served.
(c) Throughput at equal budget: closed loop, ``--clients`` concurrent clients for
    ``--seconds`` s against GreenFlow and EQUAL deployed with the same FLOPs budget.
Targets: added p99 ≤ 5 ms; allocator FLOPs ≤ 3% of the cascade's. (The spike target —
windows over budget by > 1% ≤ 0.5% — is measured by ``greenflow loadtest``.)

    .venv/bin/python bench/serving.py --run-dir runs/movielens-100k
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import ray

from greenflow.platform.data.store import load_requests
from greenflow.serve_apps.app import AppArgs, deploy, teardown


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url}/recommend", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p))


def sequential(url: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    latency, alloc, flops = [], [], []
    for body in bodies:
        t = time.perf_counter()
        doc = post(url, body)
        latency.append((time.perf_counter() - t) * 1e3)
        alloc.append(doc.get("allocation_ms", 0.0))
        flops.append(doc["flops"])
    return {"latency": latency, "allocation": alloc, "flops": flops}


def closed_loop(url: str, bodies: list[dict[str, Any]], clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.monotonic() + seconds

    def worker(c: int) -> None:
        i = c
        while time.monotonic() < stop:
            post(url, bodies[i % len(bodies)])
            done[c] += 1
            i += clients

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + 60)
    return sum(done) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/movielens-100k"))
    parser.add_argument("--requests", type=int, default=300, help="sequential requests (a)")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (c)")
    parser.add_argument("--seconds", type=float, default=20.0, help="closed-loop time (c)")
    parser.add_argument("--port", type=int, default=8021)
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    sim = json.loads((run_dir / "simulation.json").read_text())
    q = np.array([c["flops"] for c in sim["chains"]])
    # Big budget for (a): the guard never acts, so latency is the allocator's and the stages'.
    roomy = {"budget_flops_per_s": float(q.max()) * 1000.0, "window_s": 2.0}
    frame = load_requests(run_dir / "data", "eval").head(args.requests)
    bodies = [{"user_id": int(r.user_id), "history": [int(i) for i in r.history]}
              for r in frame.itertuples()]  # fmt: skip
    results: dict[str, Any] = {}
    for name, policy in (("greenflow", "greenflow"), ("fixed", f"fixed:{sim['chains'][-1]['id']}")):
        app = AppArgs(run_dir=str(run_dir), policy=policy, **roomy)
        url = deploy(app, port=args.port)
        try:
            for body in bodies[:20]:  # warm-up: first calls load code paths and caches
                post(url, body)
            results[name] = sequential(url, bodies)
        finally:
            teardown(app.app_name)
    g, f = results["greenflow"], results["fixed"]
    reward_doc = json.loads((run_dir / "reward_model.json").read_text())
    alloc_flops = float(reward_doc["overhead_flops_per_request"])
    table = {
        "allocation_ms": {"p50": pct(g["allocation"], 50), "p99": pct(g["allocation"], 99)},
        "greenflow_latency_ms": {"p50": pct(g["latency"], 50), "p99": pct(g["latency"], 99)},
        "fixed_latency_ms": {
            "p50": pct(f["latency"], 50),
            "p99": pct(f["latency"], 99),
            "chain": sim["chains"][-1]["id"],
        },  # fmt: skip
        "allocator_flops_per_request": alloc_flops,
        "cascade_flops_per_request": statistics.fmean(g["flops"]),
        "allocator_flops_pct": 100 * alloc_flops / statistics.fmean(g["flops"]),
    }
    # (c) equal budget: half of everyone-full at 10 req/s, as `greenflow loadtest` uses.
    budget = {"budget_flops_per_s": 0.5 * float(q.max()) * 10.0, "window_s": 2.0}
    throughput = {}
    for policy in ("greenflow", "equal"):
        app = AppArgs(run_dir=str(run_dir), policy=policy, **budget)
        url = deploy(app, port=args.port)
        try:
            throughput[policy] = closed_loop(url, bodies, args.clients, args.seconds)
        finally:
            teardown(app.app_name)
    table["throughput_rps_at_equal_budget"] = throughput
    print(json.dumps(table, indent=2))
    a = table["allocation_ms"]
    print(f"\n(a) allocator added latency: p50 {a['p50']:.2f} ms, p99 {a['p99']:.2f} ms "
          f"(target p99 <= 5 ms); end to end p50/p99: greenflow "
          f"{table['greenflow_latency_ms']['p50']:.1f}/{table['greenflow_latency_ms']['p99']:.1f} ms, "
          f"fixed {table['fixed_latency_ms']['p50']:.1f}/{table['fixed_latency_ms']['p99']:.1f} ms")  # fmt: skip
    print(f"(b) allocator FLOPs: {alloc_flops:,.0f} per request = "
          f"{table['allocator_flops_pct']:.3f}% of the cascade's {table['cascade_flops_per_request']:,.0f} "
          f"(target <= 3%)")  # fmt: skip
    print(f"(c) throughput at equal budget, {args.clients} clients: greenflow "
          f"{throughput['greenflow']:.1f} req/s, equal {throughput['equal']:.1f} req/s "
          f"({throughput['greenflow'] / throughput['equal']:.2f}x)")  # fmt: skip
    out = run_dir / "bench_serving.json"
    out.write_text(json.dumps(table, indent=2))
    print(f"-> {out}")
    ray.shutdown()


if __name__ == "__main__":
    main()
