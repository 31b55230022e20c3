from __future__ import annotations

from pathlib import Path

import pytest

from greenflow.config import config_to_dict, default_config, load_config
from greenflow.platform.chains import generate_chains
from greenflow.platform.run_dir import RunDir


def test_movielens_defaults_give_a_larger_evaluation_share() -> None:
    ml = default_config("movielens-100k")
    assert ml.requests.fractions.eval == pytest.approx(0.2)
    assert default_config("synthetic").requests.fractions.eval == pytest.approx(0.025)
    assert ml.run_dir == RunDir("runs/movielens-100k")


def test_yaml_overrides_nested_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
requests:
  requests_per_user: 3
  fractions: {cascade_train: 0.5, validation: 0.2, reward: 0.2, eval: 0.1}
pool:
  models: [dssm, din]
  train: {epochs: 2, lr: 1}
chains:
  exposed_k: 5
  stages:
    - {name: recall, models: [dssm], item_scales: [20, 40]}
    - {name: rank, models: [din], item_scales: [5]}
"""
    )
    config = load_config(path, "synthetic", tmp_path / "run")
    assert config.requests.requests_per_user == 3
    assert config.requests.fractions.eval == pytest.approx(0.1)
    assert config.pool.models == ("dssm", "din") and config.pool.train.epochs == 2
    assert config.pool.train.lr == 1.0 and isinstance(config.pool.train.lr, float)
    assert [c.id for c in generate_chains(config.chains)] == ["dssm@20>din@5", "dssm@40>din@5"]
    assert config_to_dict(config)["run_dir"] == str(tmp_path / "run")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("requests: {requests_per_usr: 3}", "unknown key"),
        ("pool: {train: {epochs: three}}", "expected int"),
        ("pool: {models: [dssm, gpt]}", "unknown model"),
        ("requests: {fractions: {cascade_train: 0.9}}", "sum to 1"),
        ("dataset: synthetic", "command line"),
        ("- a list", "mapping"),
    ],
)
def test_bad_yaml_is_rejected_with_a_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path, "movielens-100k")


def test_missing_config_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(Path("nope.yaml"), "movielens-100k")
