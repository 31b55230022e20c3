"""``greenflow tune reward`` and ``greenflow tune step-size``: the Ray Tune searches."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config
from greenflow.platform.run_dir import REWARD_TUNED, STEP_SIZE_TUNED

if TYPE_CHECKING:
    from greenflow.tune_configs.reward import RewardTuneConfig
    from greenflow.tune_configs.step_size import StepSizeProblem, StepSizeTuneConfig


def _search_options(parser: argparse.ArgumentParser) -> None:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    tune = sub.add_parser("tune", help="Ray Tune hyperparameter searches")
    tune_sub = tune.add_subparsers(dest="tune_command", required=True, metavar="ACTION")
    tune_reward = tune_sub.add_parser(
        "reward", help="search reward-model hyperparameters (ASHA + Optuna); best -> tune/"
    )
    common.add_run_options(tune_reward)
    _search_options(tune_reward)
    tune_reward.add_argument(
        "--variant",
        choices=["full", "no-recursion", "no-basis", "plain"],
        default="full",
        help="variant whose sizes are tuned (default full)",
    )
    tune_reward.set_defaults(func=_reward_command)
    tune_step = tune_sub.add_parser(
        "step-size",
        help="search Algorithm 1's step size, window and smoothing on a spiky replay; best -> tune/",
    )
    common.add_run_options(tune_step)
    _search_options(tune_step)
    tune_step.add_argument(
        "--budget-fraction",
        type=float,
        default=0.5,
        help="FLOPs/s budget as a fraction of the full chain for everyone at the base rate "
        "(default 0.5)",
    )
    tune_step.set_defaults(func=_step_size_command)


def reward(config: Config, search: RewardTuneConfig, log: Log = common.log) -> None:
    """Search the reward model's hyperparameters; print the best trial."""
    from greenflow.tune_configs.reward import format_best, run_reward_tune

    # The search starts from the configured defaults, never from an earlier search.
    doc = run_reward_tune(config.run_dir, search, config.reward_model, config.reward, log)
    log(f"\n{format_best(doc)}")
    log(
        f"{len(doc['trials'])} trial(s) in {doc['wall_s']:.0f} s; best config -> "
        f"{config.run_dir.show(REWARD_TUNED)} (train-reward uses it; --no-tuned ignores it)"
    )


def step_size(
    config: Config, search: StepSizeTuneConfig, problem: StepSizeProblem, log: Log = common.log
) -> None:
    """Search Algorithm 1's step size, window and smoothing; print the best trial."""
    from greenflow.tune_configs.step_size import format_best, run_step_size_tune

    doc = run_step_size_tune(config.run_dir, search, problem, log)
    log(f"\n{format_best(doc)}")
    log(
        f"{len(doc['trials'])} trial(s) in {doc['wall_s']:.0f} s; best config -> "
        f"{config.run_dir.show(STEP_SIZE_TUNED)}"
    )


def _reward_command(args: argparse.Namespace) -> None:
    from greenflow.tune_configs.reward import RewardTuneConfig

    config = common.load(args)
    search = common.from_options(
        RewardTuneConfig,
        num_samples=args.num_samples,
        variant=args.variant,
        cpus_per_trial=args.cpus_per_trial,
        searcher=args.searcher,
        seed=args.seed,
    )
    reward(config, search)


def _step_size_command(args: argparse.Namespace) -> None:
    from greenflow.tune_configs.step_size import StepSizeProblem, StepSizeTuneConfig

    config = common.load(args)
    search = common.from_options(
        StepSizeTuneConfig,
        num_samples=args.num_samples,
        cpus_per_trial=args.cpus_per_trial,
        searcher=args.searcher,
        seed=args.seed,
    )
    problem = common.from_options(StepSizeProblem, budget_fraction=args.budget_fraction)
    step_size(config, search, problem)
