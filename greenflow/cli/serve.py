"""``greenflow serve`` and ``greenflow loadtest``: the Ray Serve app and its HTTP load test."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config
from greenflow.errors import ConfigError

if TYPE_CHECKING:
    from greenflow.client.config import LoadtestConfig
    from greenflow.platform.traffic import TrafficProfile
    from greenflow.serve_apps.app import AppArgs

# AppArgs fields that have a command-line option of the same name
APP_FIELDS = ("budget_flops_per_s", "budget_power_w", "budget_carbon_g_per_h", "budget_fraction",
              "window_s", "guard_tolerance", "allocator_replicas", "stage_replicas",
              "rank_num_gpus", "stage_num_gpus", "step_method", "carbon_schedule_csv",
              "stage_resources", "allocator_resources", "driver_resources", "pacing")  # fmt: skip


def _json_object(text: str) -> dict[str, object]:
    """An argparse type: a JSON object (never evaluated as Python)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _app_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--no-pacing", dest="pacing", action="store_const", const=False,
                        default=None, help="price each window at the nearline λ alone, "
                        "without in-window pacing (for comparisons)")  # fmt: skip
    parser.add_argument("--step-method", choices=("gradient", "exact"), default=None,
                        help="nearline λ update: exact re-solve (default) or gradient steps")  # fmt: skip
    parser.add_argument("--allocator-replicas", type=int, default=None)
    parser.add_argument("--stage-replicas", type=int, default=None)
    parser.add_argument("--rank-num-gpus", type=float, default=None,
                        help="GPU per replica of the last stage (rank)")  # fmt: skip
    parser.add_argument("--stage-num-gpus", type=_json_object, default=None,
                        help="""GPU per replica by stage name, as JSON, e.g. '{"rank": 0.25}'""")  # fmt: skip
    for who in ("stage", "allocator", "driver"):
        parser.add_argument(f"--{who}-resources", type=_json_object, default=None,
                            help=f"custom Ray resources per {who} replica/actor, as JSON, "
                                 """e.g. '{"model_node": 0.01}' (placement)""")  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="deploy the Ray Serve app (allocator + stage models)")
    common.add_run_options(serve)
    serve.add_argument("--policy", default="greenflow", help="greenflow | equal | fixed:<chain>")
    serve.add_argument("--expected-rate", type=float, default=10.0,
                       help="req/s the default budget is sized for (10)")  # fmt: skip
    serve.add_argument("--detach", action="store_true",
                       help="return after deploying (needs a running cluster)")  # fmt: skip
    _app_options(serve)
    serve.set_defaults(func=_serve_command)

    loadtest = sub.add_parser(
        "loadtest", help="replay eval requests over HTTP: steady, 3x spike, steady (Figure 5)"
    )
    common.add_run_options(loadtest)
    loadtest.add_argument("--policies", default="greenflow,equal",
                          help="policies deployed and replayed in turn (greenflow,equal)")  # fmt: skip
    loadtest.add_argument("--url", default=None,
                          help="replay against a running app instead (127.0.0.1 only; "
                               "PFEC from the run's `pfec calibrate`)")  # fmt: skip
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
    _app_options(loadtest)
    loadtest.set_defaults(func=_loadtest_command)


def app_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """AppArgs fields given on the command line (None = the builder's default)."""
    return {f: getattr(args, f) for f in APP_FIELDS if getattr(args, f, None) is not None}


def serve(app_args: AppArgs, port: int, detach: bool, log: Log = common.log) -> None:
    """Deploy the app; unless ``detach``, keep it up until Ctrl-C, then tear it down."""
    from greenflow.ray_support.cluster import connect
    from greenflow.serve_apps.app import deploy, teardown

    if detach and "RAY_ADDRESS" not in os.environ:
        raise ConfigError("--detach needs a running cluster (set RAY_ADDRESS); without one the "
                         "app stops with this command")  # fmt: skip
    connect()
    url = deploy(app_args, port=port)
    log(f"serving policy {app_args.policy!r} at {url}  (POST /recommend, GET /healthz, "
        f"GET /allocator/state, GET /allocator/windows)")  # fmt: skip
    log(f"try: curl -s -X POST {url}/recommend -H 'Content-Type: application/json' "
        "-d '{\"user_id\": 1}'")  # fmt: skip
    if detach:
        return
    log("Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        teardown(app_args.app_name)


def replay_url(config: Config, loadtest: LoadtestConfig, log: Log = common.log) -> None:
    """Replay the run's evaluation requests against an app already serving at the URL."""
    from greenflow.client.loadtest import replay_running_app
    from greenflow.client.table import format_loadtest_table

    doc, paths = replay_running_app(loadtest, config.run_dir, log)
    log(format_loadtest_table({doc.policy: doc}))
    log(f"-> {paths[0]}, {paths[1]}")


def compare(
    config: Config,
    policies: Sequence[str],
    profile: TrafficProfile,
    port: int,
    overrides: dict[str, Any],
    max_requests: int,
    repeats: int,
    announce: bool = False,
    log: Log = common.log,
) -> None:
    """Deploy, replay and tear down each policy in turn on the cluster (RAY_ADDRESS, else
    a local one); ``announce``: each run first PUTs its traffic profile to the app."""
    from greenflow.ray_support.cluster import connect
    from greenflow.serve_apps.online_eval import run_online_comparison

    connect()
    run_online_comparison(config.run_dir, policies, profile, port=port, app_overrides=overrides,
                          max_requests=max_requests, repeats=repeats, announce=announce,
                          log=log)  # fmt: skip


def _serve_command(args: argparse.Namespace) -> None:
    from greenflow.serve_apps.app import AppArgs

    config = common.load(args)
    app_args = AppArgs.model_validate({
        "run_dir": config.run_dir.portable, "policy": args.policy,
        "expected_rate_rps": args.expected_rate, **app_overrides(args),
    })  # fmt: skip
    serve(app_args, args.port, args.detach)


def _loadtest_command(args: argparse.Namespace) -> None:
    from greenflow.platform.traffic import TrafficProfile

    config = common.load(args)
    profile = common.from_options(TrafficProfile, base_rate=args.base_rate,
                                  duration_s=args.duration, spike_factor=args.spike_factor,
                                  seed=args.seed)  # fmt: skip
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.url and args.repeats != 1:
        raise ConfigError("--repeats redeploys each policy: run it without --url")
    if args.url:
        from greenflow.client.config import LoadtestConfig

        loadtest = common.from_options(LoadtestConfig, url=args.url, profile=profile,
                                       max_requests=args.max_requests,
                                       announce=args.announce_traffic)  # fmt: skip
        replay_url(config, loadtest)
        return
    compare(config, policies, profile, args.port, app_overrides(args), args.max_requests,
            args.repeats, args.announce_traffic)  # fmt: skip
