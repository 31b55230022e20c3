from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from greenflow.cli import build_parser, main
from greenflow.errors import ConfigError, InputError
from greenflow.platform.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]


def _subcommands() -> list[list[str]]:
    return [[], ["data"], ["data", "fetch"], ["data", "prepare"], ["train-cascade"], ["demo"],
            ["serve"], ["loadtest"]]  # fmt: skip


@pytest.mark.parametrize("words", _subcommands())
def test_every_command_explains_itself(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*words, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: greenflow" in out and len(out.splitlines()) > 3


def test_missing_ali_ccp_file_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "greenflow.cli", "data", "prepare", "--dataset", "ali-ccp",
         "--path", "missing.csv", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["greenflow: error: missing.csv: file not found"]


def test_train_cascade_without_data_says_what_to_run(tmp_path: Path, capsys) -> None:
    assert main(["train-cascade", "--run-dir", str(tmp_path)]) == 2
    assert "greenflow data prepare" in capsys.readouterr().err


def test_serve_detach_without_a_cluster_refuses(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, no_ray
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", "--run-dir", str(tmp_path), "--detach"]) == 2
    assert "--detach needs a running cluster" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_and_train_cascade_on_small_synthetic_data(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text("pool:\n  max_history: 10\n  train: {epochs: 1, batch_size: 128}\n"
                      "synthetic: {dim: 4, seq_weight_alpha: 2.0}\n")  # fmt: skip
    run = tmp_path / "run"
    common = ["--dataset", "synthetic", "--run-dir", str(run), "--config", str(config)]
    assert main(["data", "prepare", *common, "--users", "150", "--items", "80", "--seed", "3"]) == 0
    meta = json.loads((run / "data" / "meta.json").read_text())
    assert meta["users"] == 150 and meta["requests"] > 150
    generator = meta["synthetic_config"]  # the config file's generator, the flags' sizes
    assert (generator["dim"], generator["seq_weight_alpha"], generator["items"]) == (4, 2.0, 80)

    assert main(["train-cascade", *common]) == 0
    doc = json.loads((run / "model_pool.json").read_text())
    assert doc["dataset"] == "synthetic" and "multiply-add" in doc["flops_convention"]
    assert [m["name"] for m in doc["models"]] == ["dssm", "youtube_dnn", "din", "dien"]
    for m in doc["models"]:
        assert {"name", "stage", "flops_per_item", "flops_per_request", "params", "val_auc",
                "weights", "sha256"} <= set(m)  # fmt: skip
        assert m["flops_per_item"] > 0 and 0.0 <= m["val_auc"] <= 1.0
        assert (run / m["weights"]).is_file()
        assert 0.0 <= m["val_hits_at_10"] <= 10 and 0.0 <= m["val_ndcg_at_10"] <= 1.0
    assert doc["config"]["pool"]["train"]["epochs"] == 1  # the resolved config is saved
    assert set(doc["baselines"]) == {"popularity", "item_knn"}
    for b in doc["baselines"].values():
        assert set(b) == {"val_hits_at_10", "val_ndcg_at_10"}
    assert doc["horizon"] == "response" and doc["head_requests"] > 0
    # stage by stage: recall on corpus negatives, later stages on earlier stages' candidates
    stages = {m["name"]: m["train"] for m in doc["models"]}
    assert [stages[m]["stage_index"] for m in ("dssm", "youtube_dnn", "din", "dien")] == [
        0,
        1,
        2,
        2,
    ]
    assert stages["dssm"]["negatives"] == "corpus"
    # each model's stage is the default chain space's, by name
    assert [m["stage"] for m in doc["models"]] == ["recall", "prerank", "rank", "rank"]
    assert stages["din"]["negatives"].startswith("earlier stages' candidates")

    from greenflow.platform.models.pool import load_pool

    pool = load_pool(RunDir(run))
    assert set(pool.models) == {"dssm", "youtube_dnn", "din", "dien"}
    assert pool.entries["din"].head is not None and set(pool.baselines) == {
        "popularity",
        "item_knn",
    }
    # the rank models carry their item-to-item graphs in the weights: not empty after loading
    graph = pool.entries["din"].model.graph
    assert graph is not None and int((graph.ids > 0).sum()) > 0
    (run / doc["models"][0]["weights"]).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        load_pool(RunDir(run))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("bad option"), 2),
        (InputError("bad file"), 2),
        (FileNotFoundError("x.json: run `greenflow simulate` first"), 2),
        (KeyError("a bug"), None),
        (TypeError("a bug"), None),
        (ValueError("a bug"), None),
    ],
)
def test_only_user_errors_become_one_line(
    error: Exception, code: int | None, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> str:
        raise error

    monkeypatch.setattr("greenflow.simulators.pfec_jobs.pfec_report", fail)
    argv = ["pfec", "report", "--run-dir", str(tmp_path)]
    if code is None:  # a bug: its traceback, not "greenflow: error"
        with pytest.raises(type(error)):
            main(argv)
        assert "greenflow: error" not in capsys.readouterr().err
    else:
        assert main(argv) == code
        assert capsys.readouterr().err == f"greenflow: error: {error}\n"


def test_a_bad_option_is_one_line_before_anything_runs(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--run-dir", str(tmp_path), "--chain-fraction", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "greenflow: error: chain fraction must be in (0, 1], got 0.0"
    )


def test_demo_calls_each_steps_command_function_with_its_defaults(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from greenflow.cli import data, evaluate, pfec, simulate, train, tune
    from greenflow.platform.energy.pool_calibration import CalibrationConfig
    from greenflow.platform.offline_evaluation import EvaluateConfig
    from greenflow.simulators.simulate import SimulateConfig
    from greenflow.tune_configs.step_size import StepSizeProblem, StepSizeTuneConfig

    calls: list[tuple[str, tuple, dict]] = []

    def record(name: str):
        def step(*args: object, **kwargs: object) -> None:
            calls.append((name, args, kwargs))

        return step

    for module, name in ((data, "prepare"), (train, "cascade"), (simulate, "run"),
                         (train, "reward"), (pfec, "calibrate"), (evaluate, "run"),
                         (tune, "step_size"), (pfec, "report")):  # fmt: skip
        monkeypatch.setattr(module, name, record(f"{module.__name__.split('.')[-1]}.{name}"))
    monkeypatch.setattr("greenflow.serve_apps.online_eval.run_online_comparison",
                        record("run_online_comparison"))  # fmt: skip

    assert main(["demo", "--run-dir", str(tmp_path), "--epochs", "1", "--port", "8123"]) == 0
    assert [c[0] for c in calls] == [
        "data.prepare", "train.cascade", "simulate.run", "train.reward", "pfec.calibrate",
        "evaluate.run", "tune.step_size", "run_online_comparison", "pfec.report",
    ]  # fmt: skip
    steps = {name: (args, kwargs) for name, args, kwargs in calls}
    config = steps["data.prepare"][0][0]
    assert config.run_dir == RunDir(tmp_path) and config.dataset == "movielens-100k"
    assert steps["data.prepare"][0][1:3] == ((), None)  # no --path, no synthetic generator
    assert steps["train.cascade"][0][0].pool.train.epochs == 1
    assert steps["simulate.run"][0][1] == SimulateConfig()  # `greenflow simulate`'s defaults
    assert steps["train.reward"][0][1:] == ("all", 1)
    assert steps["train.reward"][1]["seeds"] == 1 and steps["train.reward"][1]["use_tuned"]
    assert steps["pfec.calibrate"][0][1] == CalibrationConfig(seconds=3.0)
    assert steps["evaluate.run"][0][1] == EvaluateConfig()
    # `greenflow tune step-size`'s defaults, on the reward split: the load test serves them
    assert steps["tune.step_size"][0][1:3] == (StepSizeTuneConfig(), StepSizeProblem())
    online_args, online_kwargs = steps["run_online_comparison"]
    assert online_args[1] == ["greenflow", "equal"] and online_kwargs["port"] == 8123
    assert online_kwargs["repeats"] == 3 and online_kwargs["announce"] is True
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("== ")]
    assert [h.split()[1] for h in headers] == [f"{i}/9" for i in range(1, 10)]
    assert f"outputs under {tmp_path}/" in out
