"""`greenflow train-reward`: reward_model.json (DESIGN.md §5), saving, loading, predicting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from greenflow.cli import build_parser, main
from greenflow.platform.reward import (
    VARIANTS,
    RewardModelConfig,
    RewardTrainConfig,
    load_reward_model,
    predict_rewards,
)
from greenflow.platform.reward.run import (
    format_ablation_table,
    load_training_data,
    train_reward_variants,
)
from greenflow.platform.reward.store import configs_from_params
from greenflow.platform.reward.training import predict
from greenflow.platform.run_dir import REWARD_TUNED, RunDir

pytestmark = pytest.mark.usefixtures("no_ray")
TINY = RewardTrainConfig(epochs=2, batch_size=16)


@pytest.fixture()
def run_dir(reward_run, tmp_path: Path) -> RunDir:
    """A private copy: these tests write reward_model.json, weights and tune files."""
    target = tmp_path / "run"
    shutil.copytree(reward_run.run_dir.local_path, target)
    return RunDir(target)


def cli(run_dir: RunDir, *words: str) -> int:
    return main([*words, "--dataset", "synthetic", "--run-dir", str(run_dir)])


def test_variant_all_writes_every_contract_key(run_dir: RunDir, capsys) -> None:
    assert cli(run_dir, "train-reward", "--variant", "all", "--epochs", "1") == 0
    out = capsys.readouterr().out
    assert "no tuned configuration" in out and "overhead" in out
    doc = json.loads((run_dir.local_path / "reward_model.json").read_text())
    assert set(doc["variants"]) == set(VARIANTS)
    for name, entry in doc["variants"].items():
        assert {"val_loss", "mae", "field_rce"} <= set(entry), name
        assert set(entry["field_rce"]) == {"chain", "activity"}
        assert entry["val_loss"] == entry["val"]["loss"]
        assert {"loss", "mae", "field_rce"} <= set(entry["eval"])  # all chains of eval
        assert entry["eval"]["pairs"] == entry["eval"]["requests"] * doc["data"]["chains"]
        assert entry["epochs_run"] == 1 and entry["train_config"]["epochs"] == 1
        assert entry["model_config"]["recursive"] == VARIANTS[name].recursive
        assert (run_dir.local_path / entry["weights"]).is_file()
        assert (run_dir.local_path / "reward" / f"{name}.json").is_file()
        assert name in out
    assert 0 < doc["overhead_flops_ratio"] < 1
    assert doc["overhead_flops_ratio"] == pytest.approx(
        doc["variants"]["full"]["overhead_flops_ratio"], rel=1e-4
    )
    sim = json.loads((run_dir.local_path / "simulation.json").read_text())
    assert doc["default_chain"]["flops"] == max(c["flops"] for c in sim["chains"])
    assert len(doc["activity_bucket_edges"]) <= 4
    assert "chain_mean" in doc["baselines"]


def test_training_one_variant_keeps_the_others(run_dir: RunDir) -> None:
    base = RewardModelConfig()
    train_reward_variants(run_dir, ["plain", "full"], base, TINY, log=lambda _: None)
    before = json.loads((run_dir.local_path / "reward_model.json").read_text())
    doc = train_reward_variants(
        run_dir, ["full"], base, RewardTrainConfig(epochs=1), log=lambda _: None
    )
    assert set(doc.variants) == {"plain", "full"}
    assert doc.variants["plain"].to_json() == before["variants"]["plain"]
    assert doc.variants["full"].extra["epochs_run"] == 1
    with pytest.raises(ValueError, match="unknown reward-model variant"):
        train_reward_variants(run_dir, ["best"], base, TINY, log=lambda _: None)


def test_load_and_predict_round_trip(run_dir: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_training_data(run_dir, TINY)
    train_reward_variants(run_dir, ["full"], RewardModelConfig(), TINY, log=lambda _: None)

    calls: list[dict[str, object]] = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs)
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "load", spy)
    loaded = load_reward_model(run_dir, "full")
    assert calls and all(c.get("weights_only") is True for c in calls)
    model, encoding, chains, features, meta = loaded  # unpacks as a tuple
    assert not model.training
    assert encoding.chain_ids == chains.ids and meta["variant"] == "full"
    assert meta["train_config"]["epochs"] == TINY.epochs

    assert data.eval is not None
    q = predict_rewards(run_dir, "full", "eval")
    assert q.shape == (len(data.eval), len(chains.chains))
    assert np.isfinite(q).all() and (q >= 0).all()
    np.testing.assert_allclose(q, predict(model, encoding, data.eval), rtol=1e-6)

    # request-log rows, any order: same numbers for the same requests
    log = pd.read_parquet(run_dir.local_path / "data" / "requests.parquet").set_index("request_id")
    rows = log.loc[data.eval.request_id[::-1]].reset_index()
    np.testing.assert_allclose(predict_rewards(run_dir, "full", rows), q[::-1], rtol=1e-6)
    with pytest.raises(ValueError, match="user_id"):
        predict_rewards(run_dir, "full", rows.assign(user_id=10_000))


def test_loading_refuses_missing_tampered_or_stale_models(run_dir: RunDir) -> None:
    with pytest.raises(FileNotFoundError, match="train-reward"):
        load_reward_model(run_dir, "plain")
    train_reward_variants(run_dir, ["plain"], RewardModelConfig(), TINY, log=lambda _: None)
    sim_path = run_dir.local_path / "simulation.json"
    sim = json.loads(sim_path.read_text())
    sim["chains"] = sim["chains"][::-1]
    sim_path.write_text(json.dumps(sim))
    with pytest.raises(ValueError, match="differ"):
        load_reward_model(run_dir, "plain")
    (run_dir.local_path / "reward" / "plain.pt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        load_reward_model(run_dir, "plain")


def test_train_reward_uses_the_tuned_config_unless_told_not_to(run_dir: RunDir, capsys) -> None:
    params = {"lr": 0.004, "state_dim": 8, "bases": "log1p,exp", "epochs": 1}
    run_dir.write_reward_tuned({"params": params, "val_loss": 0.5})
    assert cli(run_dir, "train-reward") == 0
    assert "using the tuned configuration" in capsys.readouterr().out
    side = json.loads((run_dir.local_path / "reward" / "full.json").read_text())
    assert (
        side["model_config"]["bases"] == ["log1p", "exp"] and side["model_config"]["state_dim"] == 8
    )
    assert side["train_config"]["lr"] == 0.004 and side["tuned_from"] == run_dir.show(REWARD_TUNED)

    assert cli(run_dir, "train-reward", "--no-tuned", "--epochs", "1") == 0
    assert "using the tuned" not in capsys.readouterr().out
    side = json.loads((run_dir.local_path / "reward" / "full.json").read_text())
    assert side["model_config"]["state_dim"] == RewardModelConfig().state_dim
    assert side["tuned_from"] is None


def test_configs_from_params_rejects_unknown_and_ablation_keys() -> None:
    model, train = configs_from_params(
        {"bases": "sqrt", "batch_size": 8}, RewardModelConfig(), RewardTrainConfig()
    )
    assert model.bases == ("sqrt",) and train.batch_size == 8
    for bad in ({"dropout": 0.1}, {"recursive": False}):
        with pytest.raises(ValueError, match="unknown reward parameter"):
            configs_from_params(bad, RewardModelConfig(), RewardTrainConfig())


def test_ablation_table_lists_every_trained_variant(run_dir: RunDir) -> None:
    doc = train_reward_variants(run_dir, list(VARIANTS), RewardModelConfig(), TINY, lambda _: None)
    table = format_ablation_table(doc)
    for name in (*VARIANTS, "chain-mean"):
        assert sum(line.startswith(name + " ") for line in table.splitlines()) == 2  # val, eval


def test_without_samples_the_error_says_what_to_run(tmp_path: Path, capsys) -> None:
    assert cli(tmp_path, "train-reward") == 2
    assert "greenflow" in capsys.readouterr().err


@pytest.mark.parametrize("words", [["train-reward"], ["tune"], ["tune", "reward"]])
def test_reward_commands_explain_themselves(words: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: greenflow" in out and len(out.splitlines()) > 3


def test_seeds_record_the_spread_and_keep_the_first_model(run_dir: RunDir) -> None:
    doc = train_reward_variants(
        run_dir, ["plain"], RewardModelConfig(), TINY, log=lambda _: None, seeds=2
    )
    entry = doc.variants["plain"]
    spread = entry.extra["seeds"]
    assert spread["n"] == 2 and spread["seeds"] == [TINY.seed, TINY.seed + 1]
    assert spread["val_loss"]["values"][0] == pytest.approx(entry.val_loss, rel=1e-5)
    assert spread["eval_field_rce_chain"]["std"] >= 0
    assert "across seeds" in format_ablation_table(doc)
    with pytest.raises(ValueError, match="seeds"):
        train_reward_variants(run_dir, ["plain"], RewardModelConfig(), TINY, seeds=0)


def test_yaml_overrides_reward_settings(tmp_path: Path) -> None:
    from greenflow.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        "reward: {epochs: 3, loss: mse}\nreward_model: {state_dim: 8, bases: [log1p, exp]}\n"
    )
    config = load_config(path, "movielens-100k")
    assert config.reward.epochs == 3 and config.reward.loss == "mse"
    assert config.reward_model.state_dim == 8 and config.reward_model.bases == ("log1p", "exp")
    path.write_text("reward: {epoch: 3}\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_config(path, "movielens-100k")
    path.write_text("reward: {loss: huber}\n")
    with pytest.raises(ValueError, match="loss"):
        load_config(path, "movielens-100k")
