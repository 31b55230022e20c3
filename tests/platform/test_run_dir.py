"""RunDir on local disk: paths, atomic writes, readers' errors, weights, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from greenflow.errors import InputError
from greenflow.platform.documents import (
    BenchServingDoc,
    LoadtestDoc,
    ModelPoolDoc,
    OfflineEvalDoc,
    RewardModelDoc,
    SimulationDoc,
)
from greenflow.platform.run_dir import (
    CALIBRATION,
    MODEL_POOL,
    SAMPLES_DIR,
    RunDir,
    is_portable,
)
from tests.platform.documents import samples

pytestmark = pytest.mark.usefixtures("no_ray")


def test_paths_and_display_of_a_local_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = RunDir("runs/x")
    assert run.uri == "runs/x" and run.is_local
    assert str(run) == str(tmp_path / "runs" / "x")
    assert run.portable == str(tmp_path / "runs" / "x")  # what other processes reopen
    assert run.local_path == tmp_path / "runs" / "x"
    assert run.show(MODEL_POOL) == str(tmp_path / "runs" / "x" / MODEL_POOL)
    assert run.data.local_path == tmp_path / "runs" / "x" / "data"
    assert RunDir.of(run) is run and RunDir.of("runs/x") == run


def test_json_round_trip_is_atomic_and_optional_readers_say_none(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.read_calibration() is None and run.read_reward_summary() is None
    run.write_calibration({"joules_per_flop": 1e-9})
    assert run.read_calibration() == {"joules_per_flop": 1e-9}
    assert (tmp_path / "run" / CALIBRATION).is_file()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    run.write_dual_price("app", {"dual_price": float("nan")})  # NaN survives the round trip
    assert run.read_dual_price("app")["dual_price"] != run.read_dual_price("app")["dual_price"]
    assert run.listdir() == sorted([CALIBRATION, "serve"])


def test_required_artifacts_name_the_command_to_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(FileNotFoundError, match="train-cascade"):
        run.read_model_pool()
    with pytest.raises(FileNotFoundError, match="greenflow simulate"):
        run.read_simulation()
    with pytest.raises(FileNotFoundError, match="greenflow simulate"):
        run.read_samples()


def test_contract_files_are_written_and_read_as_typed_documents(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cases = [
        (ModelPoolDoc, samples.model_pool(), run.write_model_pool, run.read_model_pool),
        (SimulationDoc, samples.simulation(), run.write_simulation, run.read_simulation),
        (RewardModelDoc, samples.reward_model(), run.write_reward_summary,
         run.read_reward_summary),
        (OfflineEvalDoc, samples.offline_eval(), run.write_offline_eval, run.read_offline_eval),
        (LoadtestDoc, samples.loadtest(), run.write_loadtest, run.read_loadtest),
        (BenchServingDoc, samples.bench_serving(), run.write_bench_serving,
         run.read_bench_serving),
    ]  # fmt: skip
    for cls, d, write, read in cases:
        write(cls.from_json(d))
        got = read()
        assert isinstance(got, cls) and got.to_json() == d
        assert (tmp_path / cls.WHERE).read_text() == json.dumps(d, indent=2)  # same bytes
    del d["floor"]["max_rps"]
    run.write_json("bench_serving.json", d)
    with pytest.raises(InputError, match=rf"{tmp_path}/bench_serving.json: floor: .*'max_rps'"):
        run.read_bench_serving()


def test_weights_are_checked_and_loaded_as_tensors_only(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    state = {"w": torch.arange(4.0)}
    sha = run.write_weights(run.model_weights("dssm"), state)
    loaded = run.read_weights("models/dssm.pt", sha)
    assert torch.equal(loaded["w"], state["w"])
    (tmp_path / "models" / "dssm.pt").write_bytes(b"tampered")
    with pytest.raises(InputError, match="sha256"):
        run.read_weights("models/dssm.pt", sha)


def test_samples_are_swapped_in_whole(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for value in (1, 2):
        staged = run.samples_staging()
        run.fs.create_dir(staged)
        table = pa.table({"split": ["reward"], "v": [value]})
        run.write_parquet(f"{Path(staged).name}/part-0.parquet", table)
        run.publish_samples(staged)
        run.discard_staging(staged)
    assert run.read_samples().column("v").to_pylist() == [2]
    assert run.listdir() == [SAMPLES_DIR]  # no staging or old output left


def test_a_run_dir_pickles_as_its_location(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    again = pickle.loads(pickle.dumps(run))
    assert again == run and again.local_path == run.local_path


def test_json_outputs_lists_top_level_objects_only(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.write_json("loadtest.json", {"pfec": {}})
    run.write_json("list.json", [1, 2])
    run.write_calibration({"joules_per_flop": 1.0})
    assert set(run.json_outputs()) == {"loadtest.json", CALIBRATION}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        run.json_outputs()


def test_a_uri_shows_without_its_credentials_or_options() -> None:
    run = RunDir("s3://key:secret@bucket/runs/x?region=us-east-1&scheme=http")
    assert str(run) == "s3://bucket/runs/x" and run.show("a.json") == "s3://bucket/runs/x/a.json"
    assert (
        run.root == "bucket/runs/x" and run.data.path("meta.json") == "bucket/runs/x/data/meta.json"
    )
    assert "region=us-east-1" in run.data.portable and str(run.data) == "s3://bucket/runs/x/data"


def test_portable_locations() -> None:
    assert is_portable("/abs/run") and is_portable("s3://bucket/run")
    assert not is_portable("runs/x")
