"""Simulation benchmark (issue: reward-sample simulation).

(a) reference one-chain-at-a-time execution vs the shared-prefix simulator on the same
    ML-100k evaluation requests: requests/s ratio, with a check that rewards are identical;
(b) the Ray Data job with 1 vs 2 actors on the ML-100k reward+eval requests: scaling ratio;
(c) a synthetic run of >= 200,000 requests through the Ray Data job: peak RSS of the whole
    Ray process tree, sampled every 0.5 s, to show memory stays bounded while streaming.

Needs `make demo` (or `greenflow data prepare` + `greenflow train-cascade`) first for (a)/(b).

    .venv/bin/python bench/simulation.py            # (a) and (b)
    .venv/bin/python bench/simulation.py --scale    # also (c)
    .venv/bin/python bench/simulation.py --only-scale
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import ray
import torch

from greenflow.config import default_config
from greenflow.platform.cascade import reward, run_chain, scoring_model
from greenflow.platform.chains import ChainSpace, StageSpace, generate_chains
from greenflow.platform.data.requests import RequestConfig, SplitFractions
from greenflow.platform.data.sources import prepare
from greenflow.platform.data.store import load_dataset, load_requests, read_meta
from greenflow.platform.data.synthetic import config_for_requests
from greenflow.platform.models.features import (
    FeatureSet,
    item_feature_table,
    make_context,
    pad_histories,
    user_feature_table,
)
from greenflow.platform.models.pool import load_pool, save_pool, untrained_pool
from greenflow.platform.run_dir import RunDir
from greenflow.platform.simulation import AllChainSimulator
from greenflow.simulators.simulate import SimulateConfig, run_simulation


def bench_reference_vs_fast(run_dir: RunDir, n_fast: int, n_ref: int) -> dict[str, float]:
    config = default_config("movielens-100k", run_dir)
    torch.set_num_threads(1)  # one core each, so the ratio compares algorithms
    pool = load_pool(run_dir)
    models = {n: scoring_model(m) for n, m in pool.models.items()}
    chains = generate_chains(config.chains)
    users = user_feature_table(load_dataset(config.data_dir).users, pool.features)
    req = load_requests(config.data_dir, "eval").head(n_fast)
    hist, pos = req["history"].tolist(), req["positives"].tolist()
    ctx = make_context(
        users[req["user_id"].to_numpy()], pad_histories(hist, pool.features.max_history)
    )
    n_items = pool.features.num_items
    sim = AllChainSimulator(models, pool.flops, config.chains, chains, n_items)
    t0 = time.perf_counter()
    fast = np.concatenate([
        sim.run({k: v[i : i + 32] for k, v in ctx.items()}, hist[i : i + 32], pos[i : i + 32]).rewards
        for i in range(0, n_fast, 32)
    ])  # fmt: skip
    fast_rps = n_fast / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref = np.array([
        [reward(run_chain(models, {k: v[i : i + 1] for k, v in ctx.items()}, hist[i], c, n_items,
                          config.chains.exposed_k), pos[i]) for c in chains]
        for i in range(n_ref)
    ])  # fmt: skip
    ref_rps = n_ref / (time.perf_counter() - t0)
    identical = bool((ref == fast[:n_ref]).all())
    print(f"(a) reference {ref_rps:.2f} req/s ({n_ref} requests) | shared-prefix {fast_rps:.1f} req/s "
          f"({n_fast} requests) | ratio {fast_rps / ref_rps:.1f}x | rewards identical: {identical}")  # fmt: skip
    return {"reference_rps": ref_rps, "fast_rps": fast_rps, "ratio": fast_rps / ref_rps,
            "identical": identical}  # fmt: skip


def bench_actors(run_dir: RunDir) -> dict[str, float]:
    config = default_config("movielens-100k", run_dir)
    rates = {}
    for actors in (1, 2):
        doc = run_simulation(
            config, SimulateConfig(actors=actors, num_cpus=1.0), log=lambda _: None
        )
        rates[actors] = doc.requests_per_s
        print(f"(b) Ray Data, {actors} actor(s): {doc.requests} requests in {doc.wall_s:.1f} s "
              f"= {doc.requests_per_s:.1f} req/s")  # fmt: skip
    print(f"(b) scaling 1 -> 2 actors: {rates[2] / rates[1]:.2f}x")
    return {"one_actor_rps": rates[1], "two_actor_rps": rates[2], "scaling": rates[2] / rates[1]}


class PeakRss:
    """Samples the summed RSS of this process and all its descendants (Ray's too)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.peak_bytes, self._stop = interval_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a process may exit meanwhile
                    total += p.memory_info().rss
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_scale(requests: int, workdir: Path) -> dict[str, float]:
    """A synthetic run with a small corpus and untrained models: measures memory, not AUC."""
    run_dir = workdir / "synthetic-scale"
    shutil.rmtree(run_dir, ignore_errors=True)
    request_config = RequestConfig(
        requests_per_user=6, fractions=SplitFractions(0.0, 0.0, 1.0, 0.0)
    )
    synth = config_for_requests(requests, 6, items=300)
    meta = prepare("synthetic", RunDir(run_dir).data, workdir, request_config, (), synth)
    space = ChainSpace((StageSpace("recall", ("dssm",), (50, 100)),
                        StageSpace("prerank", ("youtube_dnn",), (10, 20)),
                        StageSpace("rank", ("din",), (10,))), exposed_k=10)  # fmt: skip
    config = dataclasses.replace(default_config("synthetic", run_dir), requests=request_config,
                                 chains=space)  # fmt: skip
    features = FeatureSet.from_meta(read_meta(config.data_dir), max_history=10)
    items = item_feature_table(load_dataset(config.data_dir).items, features)
    save_pool(untrained_pool("synthetic", features, items, ("dssm", "youtube_dnn", "din"),
                             space=space), config.run_dir)  # fmt: skip
    with PeakRss() as rss:
        doc = run_simulation(config, SimulateConfig(actors=2, batch_size=256, splits=("reward",)),
                             log=lambda _: None)  # fmt: skip
    print(f"(c) synthetic: {meta['requests']:,} requests ({meta['users']:,} users) simulated in "
          f"{doc.wall_s:.0f} s ({doc.requests_per_s:.0f} req/s); peak RSS of the whole Ray "
          f"process tree {rss.peak_bytes / 2**30:.2f} GiB")  # fmt: skip
    return {"requests": meta["requests"], "peak_rss_gib": rss.peak_bytes / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=RunDir, default=RunDir("runs/movielens-100k"))
    parser.add_argument("--fast-requests", type=int, default=256)
    parser.add_argument("--reference-requests", type=int, default=16)
    parser.add_argument("--scale", action="store_true", help="also run (c)")
    parser.add_argument("--scale-requests", type=int, default=200_000)
    parser.add_argument("--only-scale", action="store_true", help="run (c) alone")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not args.only_scale:
        bench_reference_vs_fast(args.run_dir, args.fast_requests, args.reference_requests)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    if not args.only_scale:
        bench_actors(args.run_dir)
    if args.scale or args.only_scale:
        bench_scale(args.scale_requests, Path("runs/bench"))
    ray.shutdown()


if __name__ == "__main__":
    main()
