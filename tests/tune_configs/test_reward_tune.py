"""Ray Tune search for the reward model, for real: 2 trials x 1-2 epochs on tiny samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from greenflow.platform.reward import RewardModelConfig, RewardTrainConfig
from greenflow.platform.reward.store import configs_from_params, read_tuned
from greenflow.platform.run_dir import REWARD_TUNED, RunDir
from greenflow.tune_configs.reward import (
    RewardTuneConfig,
    format_best,
    run_reward_tune,
    search_space,
)


def test_every_searched_parameter_is_a_config_field() -> None:
    config = RewardTuneConfig()
    params = {key: dom.sample() for key, dom in search_space(config).items()}
    model, train = configs_from_params(params, RewardModelConfig(), RewardTrainConfig())
    assert train.epochs in config.epoch_choices
    assert set(model.bases) <= {"log1p", "sqrt", "exp", "frac"}
    with pytest.raises(ValueError, match="exceed"):
        RewardTuneConfig(epoch_choices=(80,), max_epochs=60)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_two_trials_write_the_best_config_for_train_reward(reward_run, tmp_path: Path) -> None:
    shutil.copytree(reward_run.run_dir.local_path, tmp_path / "run")
    run_dir = RunDir(tmp_path / "run")
    config = RewardTuneConfig(
        num_samples=2, max_epochs=2, epoch_choices=(1, 2), grace_period=1, seed=3
    )
    lines: list[str] = []
    doc = run_reward_tune(
        run_dir, config, RewardModelConfig(), RewardTrainConfig(batch_size=16), lines.append
    )
    saved = json.loads((tmp_path / "run" / REWARD_TUNED).read_text())
    assert saved == read_tuned(run_dir) and saved["params"] == doc["params"]
    assert len(doc["trials"]) == 2 and doc["errors"] == 0
    assert doc["val_loss"] == min(t["val_loss"] for t in doc["trials"])
    assert 1 <= doc["epochs_run"] <= 2 and doc["searcher"] == "optuna"
    assert set(doc["params"]) == set(search_space(config))
    assert Path(doc["experiment_path"]).is_dir()  # Tune's storage under <run-dir>/tune/
    assert Path(doc["experiment_path"]).parent == tmp_path / "run" / "tune"
    assert sum("trial" in line for line in lines) >= 2
    assert "val_loss" in format_best(doc)
    # the best parameters are valid configs for train-reward
    configs_from_params(doc["params"], RewardModelConfig(), RewardTrainConfig())
