"""The ``greenflow`` command. Thin: parses arguments, loads the config, calls the layers below.

Every subcommand prints a human summary and writes machine-readable JSON under the run
directory (default ``runs/<dataset>/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from greenflow.config import DATASETS, Config, config_to_dict, load_config

if TYPE_CHECKING:
    from greenflow.platform.energy import PFECConfig
    from greenflow.platform.reward import RewardModelConfig, RewardTrainConfig


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="movielens-100k",
        help="data source (default: the embedded movielens-100k)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="output directory (default: runs/<dataset>)"
    )
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file overriding configuration defaults")  # fmt: skip


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.dataset, args.run_dir)


def _log(message: str) -> None:
    print(message, flush=True)


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from greenflow.platform.data.sources import fetch_movielens

    config = _config(args)
    if config.dataset != "movielens-100k":
        raise ValueError(f"{config.dataset} is not downloaded: use `greenflow data prepare`")
    folder = fetch_movielens(config.cache_dir)
    _log(f"movielens-100k files in {folder}")


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from greenflow.platform.data import synthetic
    from greenflow.platform.data.sources import prepare

    config = _config(args)
    synth = None
    if config.dataset == "synthetic":
        given = {k: v for k, v in (("users", args.users), ("items", args.items),
                                   ("seed", args.seed)) if v is not None}  # fmt: skip
        synth = dataclasses.replace(config.synthetic, **given)
        if args.requests is not None:
            overrides = {k: v for k, v in dataclasses.asdict(synth).items() if k != "users"}
            synth = synthetic.config_for_requests(
                args.requests, config.requests.requests_per_user, config.requests.min_history,
                **overrides)  # fmt: skip
    t0 = time.perf_counter()
    meta = prepare(config.dataset, config.data_dir, config.cache_dir, config.requests,
                   args.path or (), synth)  # fmt: skip
    _log(f"prepared {config.dataset} in {time.perf_counter() - t0:.1f} s -> {config.data_dir}")
    _log(f"  users {meta['users']:,}  items {meta['items']:,}  interactions "
         f"{meta['interactions']:,}  clicks {meta['clicks']:,}  requests {meta['requests']:,}")  # fmt: skip
    _log(
        "  requests per split: "
        + ", ".join(f"{k} {v:,}" for k, v in meta["requests_per_split"].items())
    )


def cmd_train_cascade(args: argparse.Namespace) -> None:
    import dataclasses

    from greenflow.platform.data.store import (
        load_dataset,
        load_requests,
        load_user_splits,
        read_horizon,
        read_meta,
    )
    from greenflow.platform.models.features import FeatureSet
    from greenflow.platform.models.pool import format_pool_table, save_pool, train_pool

    config = _config(args)
    if args.epochs is not None:
        train = dataclasses.replace(config.pool.train, epochs=args.epochs)
        config = dataclasses.replace(config, pool=dataclasses.replace(config.pool, train=train))
    meta = read_meta(config.data_dir)
    dataset = load_dataset(config.data_dir)
    splits = load_user_splits(config.data_dir)
    features = FeatureSet.from_meta(meta, config.pool.max_history)
    t0 = time.perf_counter()
    val_requests = load_requests(config.data_dir, "validation")
    pool = train_pool(dataset, features, splits, config.pool, config.chains, val_requests, _log)
    doc = save_pool(pool, config.run_dir)
    doc["horizon"] = read_horizon(config.data_dir)
    doc["train_wall_s"] = round(time.perf_counter() - t0, 1)
    doc["config"] = config_to_dict(config)
    (config.run_dir / "model_pool.json").write_text(json.dumps(doc, indent=2))
    _log(f"\nmodel pool ({config.dataset}, validation AUC; hits and NDCG of each model ranking "
         f"the whole corpus for {doc['head_requests']} validation requests, horizon "
         f"{doc['horizon']}; measured FLOPs) -> {config.run_dir / 'model_pool.json'}")  # fmt: skip
    _log(format_pool_table(doc))


def cmd_simulate(args: argparse.Namespace) -> None:
    from greenflow.platform.simulation import ChainSampling
    from greenflow.simulators.simulate import SimulateConfig, run_simulation

    config = _config(args)
    sim = SimulateConfig(
        actors=args.actors,
        batch_size=args.batch_size,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        splits=tuple(args.splits.split(",")),
        sampling=ChainSampling(fraction=args.chain_fraction, seed=args.seed),
    )
    doc = run_simulation(config, sim, _log)
    _log(
        f"simulated {doc['requests']:,} requests x {doc['num_chains']} chains in {doc['wall_s']:.1f} s "
        f"({doc['requests_per_s']:.1f} requests/s) -> {doc['output']}"
    )
    _log(
        f"  simulation spent {doc['simulation_flops'] / 1e9:,.1f} GFLOPs; one chain at a time "
        f"would have spent {doc['reference_flops'] / 1e9:,.1f} GFLOPs "
        f"({doc['reference_flops'] / max(doc['simulation_flops'], 1.0):.1f}x more)"
    )
    for bad in doc["malformed"][:20]:
        _log(f"  malformed request {bad['request_id']}: {bad['error']}")
    if doc["malformed"]:
        _log(f"  {len(doc['malformed'])} malformed request(s) reported in simulation.json")


def _reward_configs(
    config: Config, use_tuned: bool, epochs: int | None
) -> tuple[RewardModelConfig, RewardTrainConfig, str | None]:
    """(model config, train config, tuned file or None): defaults and YAML, then the
    Tune result (when ``use_tuned`` and present), then ``epochs``."""
    import dataclasses

    from greenflow.platform.reward.store import configs_from_params, read_tuned, tuned_path

    model_cfg, train_cfg, tuned_from = config.reward_model, config.reward, None
    tuned = read_tuned(config.run_dir) if use_tuned else None
    if tuned is not None:
        model_cfg, train_cfg = configs_from_params(tuned["params"], model_cfg, train_cfg)
        tuned_from = str(tuned_path(config.run_dir))
        _log(f"using the tuned configuration from {tuned_from} (Tune val_loss "
             f"{tuned['val_loss']:.4f}; --no-tuned to ignore)")  # fmt: skip
    if epochs is not None:
        train_cfg = dataclasses.replace(train_cfg, epochs=epochs)
    return model_cfg, train_cfg, tuned_from


def cmd_train_reward(args: argparse.Namespace) -> None:
    from greenflow.platform.reward import VARIANTS
    from greenflow.platform.reward.run import format_ablation_table, train_reward_variants

    config = _config(args)
    model_cfg, train_cfg, tuned_from = _reward_configs(config, not args.no_tuned, args.epochs)
    if tuned_from is None and not args.no_tuned:
        _log("no tuned configuration (greenflow tune reward): using the configured defaults")
    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    t0 = time.perf_counter()
    doc = train_reward_variants(
        config.run_dir, variants, model_cfg, train_cfg, _log, tuned_from,
        extra={"dataset": config.dataset}, seeds=args.seeds,
    )  # fmt: skip
    _log(f"\nreward models ({config.dataset}, {doc['loss']} loss; validation = held-out users "
         f"of the reward split, eval = eval split, all chains) in "
         f"{time.perf_counter() - t0:.0f} s -> {config.run_dir / 'reward_model.json'}")  # fmt: skip
    _log(format_ablation_table(doc))
    _log(
        f"overhead: the full reward model scores all {doc['data']['chains']} chains in "
        f"{doc['overhead_flops_per_request'] / 1e6:.3f} MFLOPs per request = "
        f"{doc['overhead_flops_ratio']:.3%} of the default chain "
        f"{doc['default_chain']['id']} ({doc['default_chain']['flops'] / 1e6:.2f} MFLOPs)"
    )


def cmd_tune_reward(args: argparse.Namespace) -> None:
    from greenflow.tune_configs.reward import RewardTuneConfig, format_best, run_reward_tune

    config = _config(args)
    # The search starts from the configured defaults, never from an earlier search.
    model_cfg, train_cfg, _ = _reward_configs(config, use_tuned=False, epochs=None)
    tune_cfg = RewardTuneConfig(
        num_samples=args.num_samples,
        variant=args.variant,
        cpus_per_trial=args.cpus_per_trial,
        searcher=args.searcher,
        seed=args.seed,
    )
    doc = run_reward_tune(config.run_dir, tune_cfg, model_cfg, train_cfg, _log)
    _log(f"\n{format_best(doc)}")
    _log(
        f"{len(doc['trials'])} trial(s) in {doc['wall_s']:.0f} s; best config -> "
        f"{config.run_dir / 'tune' / 'reward_best.json'} (train-reward uses it; --no-tuned ignores it)"
    )


def cmd_tune_step_size(args: argparse.Namespace) -> None:
    from greenflow.tune_configs.step_size import (
        StepSizeProblem,
        StepSizeTuneConfig,
        format_best,
        run_step_size_tune,
        step_size_path,
    )

    config = _config(args)
    tune_cfg = StepSizeTuneConfig(
        num_samples=args.num_samples,
        cpus_per_trial=args.cpus_per_trial,
        searcher=args.searcher,
        seed=args.seed,
    )
    problem = StepSizeProblem(budget_fraction=args.budget_fraction)
    doc = run_step_size_tune(config.run_dir, tune_cfg, problem, _log)
    _log(f"\n{format_best(doc)}")
    _log(
        f"{len(doc['trials'])} trial(s) in {doc['wall_s']:.0f} s; best config -> "
        f"{step_size_path(config.run_dir)}"
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from greenflow.simulators.evaluate import (
        EvaluateConfig,
        format_headline,
        format_summary,
        run_evaluation,
    )

    config = _config(args)
    doc = run_evaluation(config, EvaluateConfig(budgets=args.budgets), _log)
    run = config.run_dir
    _log(f"\nclicks and Return% (vs ORACLE) at fractions of the full cost "
         f"({doc['full_chain']['id']}, {doc['full_chain']['clicks']:.0f} clicks); "
         f"saving = FLOPs saved at the full chain's clicks")  # fmt: skip
    _log(format_summary(doc))
    _log("")
    _log(format_headline(doc))
    _log(f"-> {run / 'offline_eval.json'}, {run / 'offline_clicks.png'}, "
         f"{run / 'offline_dual_price.png'}, {run / 'chain_curve.png'}")  # fmt: skip


DEMO_LOADTEST_REPEATS = 3  # a live win must hold in every repeat, not one lucky run


def cmd_demo(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    if args.dataset == "synthetic":
        _log(f"== 1/8 data: generate a synthetic dataset of {args.requests:,} requests "
             "(known click model)")  # fmt: skip
        args.path, args.users, args.items, args.seed = None, None, None, None
    else:
        _log("== 1/8 data: fetch and prepare movielens-100k")
        args.path, args.users, args.items, args.requests, args.seed = None, None, None, None, 0
    cmd_data_prepare(args)
    _log("\n== 2/8 cascade model pool: train, measure FLOPs and AUC")
    cmd_train_cascade(args)
    _log("\n== 3/8 reward samples: every chain of every reward/eval request on Ray Data")
    args.actors, args.batch_size, args.num_cpus, args.num_gpus = 2, 32, 1.0, 0.0
    args.splits, args.chain_fraction = "reward,eval", 1.0
    cmd_simulate(args)
    _log("\n== 4/8 reward model: the four ablation variants (tuned config if present)")
    args.variant, args.no_tuned, args.seeds = "all", False, 1
    cmd_train_reward(args)
    _log("\n== 5/8 PFEC calibration: joules per FLOP of each model on this machine")
    args.seconds, args.idle_seconds, args.batch_size, args.model = 3.0, 1.0, 32, None
    args.pue, args.carbon_intensity, args.cpu_tdp_w = 1.67, 615.0, None
    cmd_pfec_calibrate(args)
    _log("\n== 6/8 offline evaluation: every policy along a budget sweep")
    args.budgets = 12
    cmd_evaluate(args)
    _log("\n== 7/8 online: Serve load test, GreenFlow vs EQUAL at one budget, 3x spike, "
         f"{DEMO_LOADTEST_REPEATS} repeats of the same schedule, the spike announced")  # fmt: skip
    from greenflow.platform.traffic import TrafficProfile
    from greenflow.serve_apps.online_eval import run_online_comparison

    run_online_comparison(_config(args).run_dir, ["greenflow", "equal"],
                          TrafficProfile(base_rate=8.0, duration_s=30.0, spike_factor=3.0),
                          port=args.port, repeats=DEMO_LOADTEST_REPEATS, announce=True,
                          log=_log)  # fmt: skip
    _log("\n== 8/8 PFEC report of the run")
    args.pue, args.carbon_intensity, args.prometheus = None, None, None
    cmd_pfec_report(args)
    _log(
        f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs under {_config(args).run_dir}/"
    )


def _app_overrides(args: argparse.Namespace) -> dict[str, object]:
    """AppArgs fields given on the command line (None = the builder's default)."""
    fields = ("budget_flops_per_s", "budget_power_w", "budget_carbon_g_per_h", "budget_fraction",
              "window_s", "guard_tolerance", "allocator_replicas", "stage_replicas",
              "rank_num_gpus", "step_method", "carbon_schedule_csv", "stage_resources",
              "allocator_resources", "driver_resources")  # fmt: skip
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def _tune_options(parser: argparse.ArgumentParser) -> None:
    """Options every `greenflow tune` search shares."""
    parser.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    parser.add_argument(
        "--cpus-per-trial", type=float, default=0.5, help="CPUs per trial (default 0.5)"
    )
    parser.add_argument(
        "--searcher",
        choices=["optuna", "random"],
        default="optuna",
        help="optuna (TPE, default) or random (Ray's BasicVariantGenerator)",
    )
    parser.add_argument("--seed", type=int, default=0, help="searcher seed")


def _json_object(text: str) -> dict[str, object]:
    """An argparse type: a JSON object (never evaluated as Python)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8000, help="HTTP port on 127.0.0.1 (8000)")
    parser.add_argument("--budget-flops-per-s", type=float, default=None, help="FLOPs/s budget")
    parser.add_argument("--budget-power-w", type=float, default=None,
                        help="facility watts budget (needs `pfec calibrate`)")  # fmt: skip
    parser.add_argument("--budget-carbon-g-per-h", type=float, default=None,
                        help="gCO2eq per hour budget (needs `pfec calibrate`)")  # fmt: skip
    parser.add_argument("--budget-fraction", type=float, default=None,
                        help="default budget: this fraction of everyone-full (0.5)")  # fmt: skip
    parser.add_argument("--carbon-schedule-csv", default=None,
                        help="daily carbon intensity CSV (time,g_per_kwh) for carbon budgets")  # fmt: skip
    parser.add_argument("--window-s", type=float, default=None, help="window length (s)")
    parser.add_argument("--guard-tolerance", type=float, default=None, help="guard ε (0)")
    parser.add_argument("--step-method", choices=("gradient", "exact"), default=None,
                        help="nearline λ update: exact re-solve (default) or gradient steps")  # fmt: skip
    parser.add_argument("--allocator-replicas", type=int, default=None)
    parser.add_argument("--stage-replicas", type=int, default=None)
    parser.add_argument("--rank-num-gpus", type=float, default=None, help="GPU per rank replica")
    for who in ("stage", "allocator", "driver"):
        parser.add_argument(f"--{who}-resources", type=_json_object, default=None,
                            help=f"custom Ray resources per {who} replica/actor, as JSON, "
                                 """e.g. '{"model_node": 0.01}' (placement)""")  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> None:
    from greenflow.serve_apps.app import AppArgs, deploy, teardown
    from greenflow.simulators.cluster import connect

    config = _config(args)
    app_args = AppArgs.model_validate({
        "run_dir": str(config.run_dir.resolve()), "policy": args.policy,
        "expected_rate_rps": args.expected_rate, **_app_overrides(args),
    })  # fmt: skip
    if args.detach and "RAY_ADDRESS" not in os.environ:
        raise ValueError("--detach needs a running cluster (set RAY_ADDRESS); without one the "
                         "app stops with this command")  # fmt: skip
    connect()
    url = deploy(app_args, port=args.port)
    _log(f"serving policy {args.policy!r} at {url}  (POST /recommend, GET /healthz, "
         f"GET /allocator/state, GET /allocator/windows)")  # fmt: skip
    _log(f"try: curl -s -X POST {url}/recommend -H 'Content-Type: application/json' "
         "-d '{\"user_id\": 1}'")  # fmt: skip
    if args.detach:
        return
    _log("Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        teardown(app_args.app_name)


def cmd_loadtest(args: argparse.Namespace) -> None:
    from greenflow.platform.traffic import TrafficProfile

    config = _config(args)
    profile = TrafficProfile(base_rate=args.base_rate, duration_s=args.duration,
                             spike_factor=args.spike_factor, seed=args.seed)  # fmt: skip
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.url and args.repeats != 1:
        raise ValueError("--repeats redeploys each policy: run it without --url")
    if args.url:
        from greenflow.platform.data.store import read_horizon
        from greenflow.simulators.loadtest import (
            LoadtestConfig,
            format_loadtest_table,
            load_replay_requests,
            run_loadtest,
            write_loadtest,
        )

        lt = LoadtestConfig(url=args.url, profile=profile, max_requests=args.max_requests,
                            announce=args.announce_traffic)  # fmt: skip
        doc = run_loadtest(lt, load_replay_requests(config.run_dir), _log).doc()
        horizon = read_horizon(config.data_dir)
        paths = write_loadtest(config.run_dir, {doc["policy"]: doc}, horizon)
        _log(format_loadtest_table({doc["policy"]: doc}))
        _log(f"-> {paths[0]}, {paths[1]}")
        return
    from greenflow.serve_apps.online_eval import run_online_comparison
    from greenflow.simulators.cluster import connect

    connect()
    run_online_comparison(config.run_dir, policies, profile, port=args.port,
                          app_overrides=_app_overrides(args), max_requests=args.max_requests,
                          repeats=args.repeats, announce=args.announce_traffic,
                          log=_log)  # fmt: skip


def _pfec_config(args: argparse.Namespace) -> PFECConfig:
    from greenflow.platform.energy import PFECConfig

    return PFECConfig(pue=args.pue, carbon_intensity_g_per_kwh=args.carbon_intensity)


def cmd_pfec_report(args: argparse.Namespace) -> None:
    from greenflow.simulators.pfec_jobs import pfec_report

    config = _config(args)
    # Nothing to report yet is not an error: the report says so and exits 0.
    _log(
        pfec_report(
            config.run_dir,
            pue=args.pue,
            carbon_intensity_g_per_kwh=args.carbon_intensity,
            prometheus=args.prometheus or (),
        )
    )


def cmd_pfec_calibrate(args: argparse.Namespace) -> None:
    from greenflow.platform.energy import EstimateConfig
    from greenflow.simulators.pfec_jobs import (
        CALIBRATION_FILE,
        CalibrationConfig,
        format_calibration_table,
        run_calibration,
    )

    config = _config(args)
    calibration = CalibrationConfig(
        seconds=args.seconds,
        idle_seconds=args.idle_seconds,
        batch_size=args.batch_size,
        models=tuple(args.model or ()),
    )
    doc = run_calibration(
        config.run_dir,
        calibration,
        _pfec_config(args),
        estimate=EstimateConfig(cpu_tdp_w=args.cpu_tdp_w),
        log=_log,
    )
    _log(
        f"\nJ/FLOP on {doc['device']} ({doc['hardware']}, source {doc['source']}) "
        f"-> {config.run_dir / CALIBRATION_FILE}"
    )
    _log(format_calibration_table(doc))
    _log(
        f"PUE {doc['pue']:g}, carbon intensity {doc['carbon_intensity_g_per_kwh']:g} gCO2eq/kWh: "
        f"{doc['carbon_g_per_gflop']:.3g} gCO2eq per GFLOP"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenflow",
        description="GreenFlow on Ray: per-request computation allocation for cascade "
        "recommenders (Lu et al., IJCAI 2023).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="fetch or prepare a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download the embedded MovieLens-100k into the cache")
    _common(fetch)
    fetch.set_defaults(func=cmd_data_fetch)
    prep = data_sub.add_parser(
        "prepare", help="write canonical Parquet tables and the request log under <run-dir>/data"
    )
    _common(prep)
    prep.add_argument(
        "--path",
        type=Path,
        action="append",
        help="ali-ccp: a preprocessed CSV file (repeat for train and test)",
    )
    prep.add_argument(
        "--users",
        type=int,
        default=None,
        help="synthetic: number of users (default: the config's, 10,000)",
    )
    prep.add_argument("--items", type=int, default=None,
                      help="synthetic: number of items (default: the config's)")  # fmt: skip
    prep.add_argument(
        "--requests",
        type=int,
        default=None,
        help="synthetic: target number of requests (derives --users)",
    )
    prep.add_argument("--seed", type=int, default=None,
                      help="synthetic: random seed (default: the config's, 0)")  # fmt: skip
    prep.set_defaults(func=cmd_data_prepare)

    train = sub.add_parser(
        "train-cascade", help="train the cascade model pool, measure FLOPs and validation AUC"
    )
    _common(train)
    train.add_argument("--epochs", type=int, default=None, help="override training epochs")
    train.set_defaults(func=cmd_train_cascade)

    pfec = sub.add_parser("pfec", help="PFEC (performance, FLOPs, energy, carbon) of a run")
    pfec_sub = pfec.add_subparsers(dest="pfec_command", required=True, metavar="ACTION")
    report = pfec_sub.add_parser(
        "report", help="print the PFEC table of the run directory's results (exit 0 if none yet)"
    )
    _common(report)
    report.add_argument(
        "--pue",
        type=float,
        default=None,
        help="re-price every row at this PUE (default: as recorded; live rows 1.67)",
    )
    report.add_argument(
        "--carbon-intensity",
        type=float,
        default=None,
        metavar="G_PER_KWH",
        help="re-price at this gCO2eq/kWh (default: as recorded; live rows 615)",
    )
    report.add_argument(
        "--prometheus",
        action="append",
        metavar="URL",
        help="add a live row from a metrics endpoint, e.g. a Ray node's "
        "http://127.0.0.1:8080/metrics (repeatable)",
    )
    report.set_defaults(func=cmd_pfec_report)
    calibrate = pfec_sub.add_parser(
        "calibrate", help="measure joules per FLOP of each pool model on this CPU"
    )
    _common(calibrate)
    calibrate.add_argument(
        "--seconds", type=float, default=5.0, help="workload time per model (default 5)"
    )
    calibrate.add_argument(
        "--idle-seconds",
        type=float,
        default=1.0,
        help="idle baseline measured before each model and subtracted (default 1; 0: none)",
    )
    calibrate.add_argument("--batch-size", type=int, default=32, help="requests per call")
    calibrate.add_argument(
        "--model", action="append", help="calibrate only this model (repeatable)"
    )
    calibrate.add_argument("--pue", type=float, default=1.67, help="PUE recorded (default 1.67)")
    calibrate.add_argument(
        "--carbon-intensity",
        type=float,
        default=615.0,
        metavar="G_PER_KWH",
        help="gCO2eq/kWh recorded (default 615)",
    )
    calibrate.add_argument(
        "--cpu-tdp-w",
        type=float,
        default=None,
        help="CPU TDP in W for the estimate when RAPL is unreadable "
        "(default 12 W per physical core)",
    )
    calibrate.set_defaults(func=cmd_pfec_calibrate)

    simulate = sub.add_parser(
        "simulate", help="Ray Data job: reward samples for every chain of every request"
    )
    _common(simulate)
    simulate.add_argument("--actors", type=int, default=2, help="actor pool size (default 2)")
    simulate.add_argument("--batch-size", type=int, default=32, help="requests per batch")
    simulate.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    simulate.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs per actor (> 0 runs the models on CUDA)"
    )
    simulate.add_argument(
        "--splits",
        default="reward,eval",
        help="comma-separated request splits to simulate (default reward,eval)",
    )
    simulate.add_argument(
        "--chain-fraction",
        type=float,
        default=1.0,
        help="keep this random fraction of chains per reward-split request "
        "(the paper's data-sparsity setting); eval keeps all",
    )
    simulate.add_argument("--seed", type=int, default=0, help="seed of the chain sampling")  # fmt: skip
    simulate.set_defaults(func=cmd_simulate)

    train_reward = sub.add_parser(
        "train-reward",
        help="train the reward model (or its ablations) on the simulated reward samples",
    )
    _common(train_reward)
    train_reward.add_argument(
        "--variant",
        choices=["full", "no-recursion", "no-basis", "plain", "all"],
        default="full",
        help="ablation to train (default full; all: the four, for the ablation table)",
    )
    train_reward.add_argument("--epochs", type=int, default=None, help="override training epochs")
    train_reward.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="also train this many seeds in all and report mean ± std per metric (default 1)",
    )
    train_reward.add_argument(
        "--no-tuned",
        action="store_true",
        help="ignore <run-dir>/tune/reward_best.json from `greenflow tune reward`",
    )
    train_reward.set_defaults(func=cmd_train_reward)

    tune = sub.add_parser("tune", help="Ray Tune hyperparameter searches")
    tune_sub = tune.add_subparsers(dest="tune_command", required=True, metavar="ACTION")
    tune_reward = tune_sub.add_parser(
        "reward", help="search reward-model hyperparameters (ASHA + Optuna); best -> tune/"
    )
    _common(tune_reward)
    _tune_options(tune_reward)
    tune_reward.add_argument(
        "--variant",
        choices=["full", "no-recursion", "no-basis", "plain"],
        default="full",
        help="variant whose sizes are tuned (default full)",
    )
    tune_reward.set_defaults(func=cmd_tune_reward)
    tune_step = tune_sub.add_parser(
        "step-size",
        help="search Algorithm 1's step size, window and smoothing on a spiky replay; best -> tune/",
    )
    _common(tune_step)
    _tune_options(tune_step)
    tune_step.add_argument(
        "--budget-fraction",
        type=float,
        default=0.5,
        help="FLOPs/s budget as a fraction of the full chain for everyone at the base rate "
        "(default 0.5)",
    )
    tune_step.set_defaults(func=cmd_tune_step_size)

    evaluate = sub.add_parser(
        "evaluate", help="offline budget sweep of GreenFlow and the baselines, tables, plots, PFEC"
    )
    _common(evaluate)
    evaluate.add_argument("--budgets", type=int, default=12, help="sweep points (default 12)")
    evaluate.set_defaults(func=cmd_evaluate)

    serve = sub.add_parser("serve", help="deploy the Ray Serve app (allocator + stage models)")
    _common(serve)
    serve.add_argument("--policy", default="greenflow", help="greenflow | equal | fixed:<chain>")
    serve.add_argument("--expected-rate", type=float, default=10.0,
                       help="req/s the default budget is sized for (10)")  # fmt: skip
    serve.add_argument("--detach", action="store_true",
                       help="return after deploying (needs a running cluster)")  # fmt: skip
    _serve_options(serve)
    serve.set_defaults(func=cmd_serve)

    loadtest = sub.add_parser(
        "loadtest", help="replay eval requests over HTTP: steady, 3x spike, steady (Figure 5)"
    )
    _common(loadtest)
    loadtest.add_argument("--policies", default="greenflow,equal",
                          help="policies deployed and replayed in turn (greenflow,equal)")  # fmt: skip
    loadtest.add_argument("--url", default=None,
                          help="replay against a running app instead (127.0.0.1 only)")  # fmt: skip
    loadtest.add_argument("--base-rate", type=float, default=10.0, help="req/s outside the spike")
    loadtest.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (30)")
    loadtest.add_argument("--spike-factor", type=float, default=3.0, help="spike rate multiple")
    loadtest.add_argument("--max-requests", type=int, default=5000, help="bound on requests")
    loadtest.add_argument("--seed", type=int, default=0, help="arrival-time seed")
    loadtest.add_argument("--repeats", type=int, default=1,
                          help="replay the same schedule this many times per policy (1)")  # fmt: skip
    loadtest.add_argument("--announce-traffic", action="store_true",
                          help="PUT the traffic profile to /allocator/forecast first, as an "
                               "operator announces a planned spike")  # fmt: skip
    _serve_options(loadtest)
    loadtest.set_defaults(func=cmd_loadtest)

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
    demo.add_argument("--run-dir", type=Path, default=None, help="output directory")
    demo.add_argument("--config", type=Path, default=None, help="YAML configuration overrides")
    demo.add_argument("--epochs", type=int, default=None, help="override training epochs")
    demo.add_argument("--port", type=int, default=8000, help="Serve HTTP port for the load test")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # DataError is a ValueError
        print(f"greenflow: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
