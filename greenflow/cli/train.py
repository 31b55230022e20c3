"""``greenflow train-cascade`` and ``greenflow train-reward``."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import TYPE_CHECKING

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config, config_to_dict
from greenflow.platform.run_dir import MODEL_POOL, REWARD_MODEL, REWARD_TUNED

if TYPE_CHECKING:
    from greenflow.platform.reward import RewardModelConfig, RewardTrainConfig


def add_cascade_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train-cascade", help="train the cascade model pool, measure FLOPs and validation AUC"
    )
    common.add_run_options(train)
    train.add_argument("--epochs", type=int, default=None, help="override training epochs")
    train.set_defaults(func=_cascade_command)


def add_reward_parser(sub: argparse._SubParsersAction) -> None:
    train_reward = sub.add_parser(
        "train-reward",
        help="train the reward model (or its ablations) on the simulated reward samples",
    )
    common.add_run_options(train_reward)
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
    train_reward.set_defaults(func=_reward_command)


def with_pool_epochs(config: Config, epochs: int | None) -> Config:
    """``config`` with the cascade models' training epochs overridden (None: unchanged)."""
    if epochs is None:
        return config
    train = common.from_options(dataclasses.replace, config.pool.train, epochs=epochs)
    return dataclasses.replace(config, pool=dataclasses.replace(config.pool, train=train))


def cascade(config: Config, log: Log = common.log) -> None:
    """Train the model pool; print its table."""
    from greenflow.platform.models.pool import format_pool_table
    from greenflow.platform.models.run import train_and_save_pool

    doc = train_and_save_pool(config.run_dir, config.pool, config.chains, log,
                              extra={"config": config_to_dict(config)})  # fmt: skip
    log(f"\nmodel pool ({config.dataset}, validation AUC; hits and NDCG of each model ranking "
        f"the whole corpus for {doc.extra['head_requests']} validation requests, horizon "
        f"{doc.horizon}; measured FLOPs) -> {config.run_dir.show(MODEL_POOL)}")  # fmt: skip
    log(format_pool_table(doc))


def reward_configs(
    config: Config, use_tuned: bool, epochs: int | None, log: Log = common.log
) -> tuple[RewardModelConfig, RewardTrainConfig, str | None]:
    """(model config, train config, tuned file or None): defaults and YAML, then the
    Tune result (when ``use_tuned`` and present), then ``epochs``."""
    from greenflow.platform.reward.store import configs_from_params, read_tuned

    model_cfg, train_cfg, tuned_from = config.reward_model, config.reward, None
    tuned = read_tuned(config.run_dir) if use_tuned else None
    if tuned is not None:
        model_cfg, train_cfg = configs_from_params(tuned["params"], model_cfg, train_cfg)
        tuned_from = config.run_dir.show(REWARD_TUNED)
        log(f"using the tuned configuration from {tuned_from} (Tune val_loss "
            f"{tuned['val_loss']:.4f}; --no-tuned to ignore)")  # fmt: skip
    if epochs is not None:
        train_cfg = common.from_options(dataclasses.replace, train_cfg, epochs=epochs)
    return model_cfg, train_cfg, tuned_from


def reward(
    config: Config,
    variant: str = "full",
    epochs: int | None = None,
    seeds: int = 1,
    use_tuned: bool = True,
    log: Log = common.log,
) -> None:
    """Train ``variant`` of the reward model (all: the four ablations) on the configured
    or, with ``use_tuned``, the tuned configuration; print the ablation table and the
    overhead."""
    from greenflow.platform.reward import VARIANTS
    from greenflow.platform.reward.run import format_ablation_table, train_reward_variants

    model_cfg, train_cfg, tuned_from = reward_configs(config, use_tuned, epochs, log)
    if tuned_from is None and use_tuned:
        log("no tuned configuration (greenflow tune reward): using the configured defaults")
    variants = list(VARIANTS) if variant == "all" else [variant]
    t0 = time.perf_counter()
    doc = train_reward_variants(
        config.run_dir, variants, model_cfg, train_cfg, log, tuned_from,
        extra={"dataset": config.dataset}, seeds=seeds,
    )  # fmt: skip
    log(f"\nreward models ({config.dataset}, {doc.extra['loss']} loss; validation = held-out users "
        f"of the reward split, eval = eval split, all chains) in "
        f"{time.perf_counter() - t0:.0f} s -> {config.run_dir.show(REWARD_MODEL)}")  # fmt: skip
    log(format_ablation_table(doc))
    default = doc.extra["default_chain"]
    log(
        f"overhead: the full reward model scores all {doc.extra['data']['chains']} chains in "
        f"{(doc.overhead_flops_per_request or 0.0) / 1e6:.3f} MFLOPs per request = "
        f"{doc.overhead_flops_ratio:.3%} of the default chain "
        f"{default['id']} ({default['flops'] / 1e6:.2f} MFLOPs)"
    )


def _cascade_command(args: argparse.Namespace) -> None:
    cascade(with_pool_epochs(common.load(args), args.epochs))


def _reward_command(args: argparse.Namespace) -> None:
    reward(common.load(args), args.variant, args.epochs, args.seeds, not args.no_tuned)
