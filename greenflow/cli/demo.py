"""``greenflow demo``: the whole pipeline, each step the function its own command calls."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from greenflow.cli import common, data, evaluate, pfec, simulate, train, tune
from greenflow.cli.common import Log
from greenflow.config import Config
from greenflow.platform.run_dir import RunDir

DEMO_LOADTEST_REPEATS = 3  # a live win must hold in every repeat, not one lucky run


def add_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole pipeline on the embedded MovieLens-100k (or a synthetic benchmark)",
    )
    demo.add_argument("--dataset", choices=("movielens-100k", "synthetic"),
                      default="movielens-100k",
                      help="movielens-100k (default) or synthetic: the benchmark with a known "
                      "click model (`make bench-synthetic`)")  # fmt: skip
    demo.add_argument("--requests", type=int, default=100_000,
                      help="synthetic: requests to generate (default 100,000)")  # fmt: skip
    demo.add_argument("--run-dir", type=RunDir, default=None,
                      help="output directory: a local path or a filesystem URI")  # fmt: skip
    demo.add_argument("--config", type=Path, default=None, help="YAML configuration overrides")
    demo.add_argument("--epochs", type=int, default=None, help="override training epochs")
    demo.add_argument("--port", type=int, default=8000, help="Serve HTTP port for the load test")
    demo.set_defaults(func=_command)


def run(
    config: Config,
    requests: int = 100_000,
    epochs: int | None = None,
    port: int = 8000,
    log: Log = common.log,
) -> None:
    """The nine steps, each the function its own command calls, with the demo's settings;
    ``requests``: synthetic requests to generate; ``epochs``: override training epochs
    (cascade models and reward model); ``port``: Serve HTTP port of the load test."""
    from greenflow.platform.energy import EstimateConfig, PFECConfig
    from greenflow.platform.energy.pool_calibration import CalibrationConfig
    from greenflow.platform.offline_evaluation import EvaluateConfig
    from greenflow.platform.simulation import ChainSampling
    from greenflow.platform.traffic import TrafficProfile
    from greenflow.serve_apps.online_eval import run_online_comparison
    from greenflow.simulators.simulate import SimulateConfig
    from greenflow.tune_configs.step_size import StepSizeProblem, StepSizeTuneConfig

    t0 = time.perf_counter()
    if config.dataset == "synthetic":
        log(f"== 1/9 data: generate a synthetic dataset of {requests:,} requests "
            "(known click model)")  # fmt: skip
    else:
        log("== 1/9 data: fetch and prepare movielens-100k")
    data.prepare(config, (), data.synthetic_config(config, requests=requests), log)
    log("\n== 2/9 cascade model pool: train, measure FLOPs and AUC")
    train.cascade(train.with_pool_epochs(config, epochs), log)
    log("\n== 3/9 reward samples: every chain of every reward/eval request on Ray Data")
    sim = SimulateConfig(actors=2, batch_size=32, num_cpus=1.0, num_gpus=0.0,
                         splits=("reward", "eval"), sampling=ChainSampling(fraction=1.0))  # fmt: skip
    simulate.run(config, sim, log)
    log("\n== 4/9 reward model: the four ablation variants (tuned config if present)")
    train.reward(config, "all", epochs, seeds=1, use_tuned=True, log=log)
    log("\n== 5/9 PFEC calibration: joules per FLOP of each model on this machine")
    calibration = CalibrationConfig(seconds=3.0, idle_seconds=1.0, batch_size=32)
    pfec.calibrate(config, calibration, PFECConfig(pue=1.67, carbon_intensity_g_per_kwh=615.0),
                   EstimateConfig(cpu_tdp_w=None), log)  # fmt: skip
    log("\n== 6/9 offline evaluation: every policy along a budget sweep")
    evaluate.run(config, EvaluateConfig(budgets=12), log)
    log("\n== 7/9 Algorithm 1's step size, window and smoothing: Ray Tune on a replay of "
        "the reward split (what the load test then serves)")  # fmt: skip
    tune.step_size(config, StepSizeTuneConfig(), StepSizeProblem(), log)
    log("\n== 8/9 online: Serve load test, GreenFlow vs EQUAL at one budget, 3x spike, "
        f"{DEMO_LOADTEST_REPEATS} repeats of the same schedule, the spike announced")  # fmt: skip
    run_online_comparison(config.run_dir, ["greenflow", "equal"],
                          TrafficProfile(base_rate=8.0, duration_s=30.0, spike_factor=3.0),
                          port=port, repeats=DEMO_LOADTEST_REPEATS, announce=True,
                          log=log)  # fmt: skip
    log("\n== 9/9 PFEC report of the run")
    pfec.report(config, log=log)
    log(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs under {config.run_dir}/")


def _command(args: argparse.Namespace) -> None:
    run(common.load(args), args.requests, args.epochs, args.port)
