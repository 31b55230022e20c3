"""``greenflow tune reward``: Ray Tune search over the reward model's hyperparameters.

The objective is the training function of ``train-reward`` itself
(``platform.reward.run.fit_reward_model``); the trainable only converts Tune's flat
parameters to the two configs and reports every epoch's metrics with ``tune.report``.
The data is loaded once on the driver and shipped to the trials through the object
store (``tune.with_parameters``), so trials read no files and may run on any node.

Scheduler: ASHA on ``val_loss`` per epoch (``training_iteration``), which stops the
poor half-or-more of the trials at each rung. The reported ``val_loss`` is the best so
far, the loss of the weights a trial keeps (early stopping restores them), so rungs
compare what each trial would deliver. Searcher: Optuna's TPE (a model of good and bad
regions, better than random for a 10-dimensional space after a few trials), with half of
the budget (at most 10 trials) as its random start-up phase; ``searcher="random"`` uses
Ray's BasicVariantGenerator instead, e.g. where optuna is not installed.

The best parameters go to ``<run-dir>/tune/reward_best.json``, which ``train-reward``
applies unless ``--no-tuned``. Trials' files live in ``<run-dir>/tune/reward-<time>/``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from greenflow.platform.reward import RewardModelConfig
from greenflow.platform.reward.run import (
    RewardDataset,
    fit_reward_model,
    load_training_data,
    overhead,
    variant_config,
)
from greenflow.platform.reward.store import check_variant, configs_from_params
from greenflow.platform.reward.training import RewardTrainConfig
from greenflow.platform.run_dir import TUNE_DIR, RunDir
from greenflow.ray_support.cluster import connect
from greenflow.tune_configs.common import TrialProgress, fit_best, make_searcher

SearcherName = Literal["optuna", "random"]

# Basis sets as strings: search spaces (and Optuna) hold scalars, not tuples.
BASIS_SETS = ("log1p,sqrt,exp,frac", "log1p,exp", "sqrt,frac", "log1p")


@dataclass(frozen=True)
class RewardTuneConfig:
    """How the search runs (the space itself is ``search_space``)."""

    num_samples: int = 8
    variant: str = "full"  # the ablation whose sizes are tuned; the switches stay fixed
    cpus_per_trial: float = 0.5  # fractional: several small trials share a core
    max_epochs: int = 60  # ASHA's max_t and the largest epoch count in the space
    epoch_choices: tuple[int, ...] = (20, 40, 60)
    grace_period: int = 5  # epochs before ASHA may stop a trial
    reduction_factor: int = 3
    searcher: SearcherName = "optuna"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.max_epochs < 1 or self.cpus_per_trial <= 0:
            raise ValueError("num_samples, max_epochs and cpus_per_trial must be positive")
        if max(self.epoch_choices) > self.max_epochs:
            raise ValueError(
                f"epoch choices {self.epoch_choices} exceed max_epochs {self.max_epochs}"
            )
        if self.searcher not in ("optuna", "random"):
            raise ValueError(f"unknown searcher {self.searcher!r}; use 'optuna' or 'random'")


def search_space(config: RewardTuneConfig) -> dict[str, Any]:
    """Flat parameters: field names of RewardTrainConfig / RewardModelConfig."""
    return {
        "lr": tune.loguniform(3e-4, 1e-2),
        "weight_decay": tune.loguniform(1e-6, 1e-2),
        "batch_size": tune.choice([32, 64, 128, 256]),
        "epochs": tune.choice(list(config.epoch_choices)),
        "user_embed_dim": tune.choice([2, 4, 8]),
        "item_embed_dim": tune.choice([4, 8, 16]),
        "model_embed_dim": tune.choice([2, 4, 8]),
        "context_hidden": tune.choice([16, 32, 64]),
        "state_dim": tune.choice([8, 16, 32]),
        "block_hidden": tune.choice([16, 32, 64]),
        "bases": tune.choice(list(BASIS_SETS)),
        "units_per_basis": tune.choice([1, 2, 4]),
    }


def reward_trainable(
    params: dict[str, Any],
    data: RewardDataset,
    model_config: RewardModelConfig,
    train_config: RewardTrainConfig,
) -> None:
    """One trial: the training function with ``params`` applied, reporting every epoch."""
    # Trials get a fraction of a CPU: intra-op threads would only fight each other.
    torch.set_num_threads(1)
    # The arrays arrive as read-only zero-copy views of the object store; training never
    # writes to them, so torch's warning about non-writable arrays is noise here.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    model_cfg, train_cfg = configs_from_params(params, model_config, train_config)
    fit_reward_model(data, model_cfg, train_cfg, log=lambda _: None, on_epoch=tune.report)


def _describe(trial: Any) -> str:
    result, c = trial.last_result or {}, trial.config
    return (
        f"val_loss {result.get('val_loss', float('nan')):.4f} after "
        f"{result.get('training_iteration', 0)} epoch(s) (lr {c['lr']:.2g}, "
        f"batch {c['batch_size']}, bases {c['bases']})"
    )


def run_reward_tune(
    run_dir: RunDir,
    config: RewardTuneConfig,
    model_config: RewardModelConfig,
    train_config: RewardTrainConfig,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the search on the connected (or a new local) cluster; writes and returns
    ``tune/reward_best.json``."""
    variant = check_variant(config.variant)
    base_model = variant_config(model_config, variant)
    data = load_training_data(run_dir, train_config)  # once, on the driver
    connect()
    storage, storage_fs = run_dir.tune_storage()  # an absolute path, as Tune needs
    name = f"reward-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment = run_dir.show(f"{TUNE_DIR}/{name}")
    log(
        f"tuning the {variant!r} reward model: {config.num_samples} trial(s), "
        f"{config.cpus_per_trial} CPU each, ASHA (grace {config.grace_period}, max "
        f"{config.max_epochs} epochs), {config.searcher} searcher -> {experiment}"
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            reward_trainable, data=data, model_config=base_model, train_config=train_config
        ),
        {"cpu": config.cpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(config),
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            num_samples=config.num_samples,
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=config.max_epochs,
                grace_period=config.grace_period,
                reduction_factor=config.reduction_factor,
            ),
            search_alg=make_searcher(config.searcher, config.seed, config.num_samples),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=storage_fs,
            verbose=0,
            callbacks=[TrialProgress(config.num_samples, log, _describe)],
        ),
    )
    results, best, wall_s = fit_best(tuner, "val_loss", "min", log, experiment)
    params = dict(best.config)
    best_model, _ = configs_from_params(params, base_model, train_config)
    flops, ratio, _ = overhead(best_model, data)
    trials = []
    for result in results:
        if result.metrics is None or result.config is None:
            continue
        trials.append(
            {
                "params": dict(result.config),
                "val_loss": result.metrics.get("val_loss"),
                "epochs": result.metrics.get("training_iteration"),
            }
        )
    trials.sort(key=lambda t: float("inf") if t["val_loss"] is None else t["val_loss"])
    doc = {
        "variant": variant,
        "params": params,
        "val_loss": best.metrics["val_loss"],
        "epochs_run": best.metrics.get("training_iteration"),
        "flops_per_request": flops,
        "overhead_flops_ratio": ratio,
        "num_samples": config.num_samples,
        "searcher": config.searcher,
        "scheduler": {
            "name": "asha",
            "grace_period": config.grace_period,
            "reduction_factor": config.reduction_factor,
            "max_t": config.max_epochs,
        },
        "cpus_per_trial": config.cpus_per_trial,
        "wall_s": round(wall_s, 1),
        "experiment_path": experiment,
        "trials": trials,
        "errors": len(results.errors),
    }
    run_dir.write_reward_tuned(doc)
    return doc


def format_best(doc: dict[str, Any]) -> str:
    """The best parameters, one per line."""
    lines = [f"best of {len(doc['trials'])} trial(s): val_loss {doc['val_loss']:.4f} "
             f"after {doc['epochs_run']} epoch(s)"]  # fmt: skip
    for key, value in doc["params"].items():
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<16} {shown}")
    return "\n".join(lines)


__all__ = [
    "BASIS_SETS",
    "RewardTuneConfig",
    "format_best",
    "reward_trainable",
    "run_reward_tune",
    "search_space",
]
