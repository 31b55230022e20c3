"""``greenflow evaluate``: the offline budget sweep."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config, config_to_dict
from greenflow.platform.run_dir import (
    CHAIN_CURVE_PNG,
    OFFLINE_CLICKS_PNG,
    OFFLINE_DUAL_PRICE_PNG,
    OFFLINE_EVAL,
)

if TYPE_CHECKING:
    from greenflow.platform.offline_evaluation import EvaluateConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="offline budget sweep of GreenFlow and the baselines, tables, plots, PFEC"
    )
    common.add_run_options(evaluate)
    evaluate.add_argument("--budgets", type=int, default=12, help="sweep points (default 12)")
    evaluate.set_defaults(func=_command)


def run(config: Config, evaluation: EvaluateConfig, log: Log = common.log) -> None:
    """Sweep every policy over the budgets; print the summary and the headline."""
    from greenflow.platform.evaluation_report import format_headline, format_summary
    from greenflow.platform.offline_evaluation import run_evaluation

    doc = run_evaluation(config.run_dir, evaluation, log, config_to_dict(config))
    run_dir = config.run_dir
    full = doc.full_chain or {}
    log(f"\nclicks and Return% (vs ORACLE) at fractions of the full cost "
        f"({full['id']}, {full['clicks']:.0f} clicks); "
        f"saving = FLOPs saved at the full chain's clicks")  # fmt: skip
    log(format_summary(doc))
    log("")
    log(format_headline(doc))
    names = (OFFLINE_EVAL, OFFLINE_CLICKS_PNG, OFFLINE_DUAL_PRICE_PNG, CHAIN_CURVE_PNG)
    log("-> " + ", ".join(run_dir.show(name) for name in names))


def _command(args: argparse.Namespace) -> None:
    from greenflow.platform.offline_evaluation import EvaluateConfig

    config = common.load(args)
    run(config, common.from_options(EvaluateConfig, budgets=args.budgets))
