"""``greenflow loadtest``'s files (``loadtest.json`` and the Figure 5 plot) and
``greenflow loadtest --url`` against the fake allocator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from greenflow.client.loadtest import write_loadtest
from greenflow.platform.run_dir import RunDir
from tests.client.fakes import CONTRACT_KEYS, requests_frame, sample_doc

JOULES_PER_FLOP = 2e-9
OVERHEAD_FLOPS_PER_REQUEST = 500.0  # the reward model's FLOPs per request


def _calibrated(run_dir: Path) -> None:
    """The two files a load test's PFEC reads: the J/FLOP calibration and the reward
    model's FLOPs overhead."""
    calibration = {"joules_per_flop": JOULES_PER_FLOP, "device": "cpu:0", "source": "rapl"}
    (run_dir / "pfec_calibration.json").write_text(json.dumps(calibration))
    overhead = {
        "variants": {},
        "overhead_flops_ratio": 1e-3,
        "overhead_flops_per_request": OVERHEAD_FLOPS_PER_REQUEST,
    }
    (run_dir / "reward_model.json").write_text(json.dumps(overhead))


@pytest.fixture()
def url_argv(allocator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``greenflow loadtest --url`` against the fake allocator, the run's requests faked."""
    _, server = allocator
    monkeypatch.setattr("greenflow.client.loadtest.load_replay_requests",
                        lambda run_dir: requests_frame([4, 5, 10, 11]))  # fmt: skip
    monkeypatch.setattr("greenflow.platform.data.store.read_horizon", lambda data_dir: "next:5")
    return ["loadtest", "--url", server.url, "--run-dir", str(tmp_path), "--base-rate", "8",
            "--duration", "1"]  # fmt: skip


def test_cli_url_replays_the_run_against_a_running_app(
    url_argv: list[str], tmp_path: Path, capsys
) -> None:
    from greenflow.cli import main

    _calibrated(tmp_path)
    assert main(url_argv) == 0
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    assert doc["policy"] == "greenflow" and doc["horizon"] == "next:5" and doc["requests"] > 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'loadtest.json'}, {tmp_path / 'loadtest.png'}" in out
    row = next(line for line in out.splitlines() if line.startswith("greenflow"))
    assert "-" not in row.split()  # every column filled, the PFEC ones included
    assert main([*url_argv, "--repeats", "2"]) == 2  # repeats redeploy: not with --url
    assert "--repeats redeploys each policy" in capsys.readouterr().err


def test_cli_url_computes_pfec_like_the_in_process_load_test(
    url_argv: list[str], tmp_path: Path
) -> None:
    """FLOPs of the answered requests plus GreenFlow's reward-model FLOPs, priced at the
    run's calibrated J/FLOP and the default PUE and carbon intensity."""
    from greenflow.cli import main
    from greenflow.platform.energy.carbon import PFECConfig

    _calibrated(tmp_path)
    assert main(url_argv) == 0
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    pfec, config = doc["pfec"], PFECConfig()
    assert doc["ok"] > 0 and doc["flops"] > 0
    allocator_flops = OVERHEAD_FLOPS_PER_REQUEST * doc["ok"]  # the server says greenflow
    flops = doc["flops"] + allocator_flops
    assert pfec["flops"] == pytest.approx(flops)
    assert pfec["allocator_flops"] == pytest.approx(allocator_flops)
    assert pfec["allocator_flops_ratio"] == pytest.approx(allocator_flops / doc["flops"])
    assert pfec["it_energy_j"] == pytest.approx(flops * JOULES_PER_FLOP)
    assert pfec["energy_j"] == pytest.approx(config.pue * flops * JOULES_PER_FLOP)
    assert pfec["carbon_g"] == pytest.approx(config.carbon_g(flops * JOULES_PER_FLOP))
    assert pfec["sources"] == {"cpu:0": "rapl"} and pfec["basis"].startswith("estimate")
    assert pfec["performance"]["clicks"] == doc["clicks"]
    assert pfec["duration_s"] == doc["duration_s"]
    assert doc["policies"]["greenflow"]["pfec"] == pfec


def test_cli_url_without_calibration_fails_before_sending(
    allocator, url_argv: list[str], tmp_path: Path, capsys
) -> None:
    from greenflow.cli import main

    fake, _ = allocator
    assert main(url_argv) == 2
    assert "run `greenflow pfec calibrate` first" in capsys.readouterr().err
    assert fake.served == [] and not (tmp_path / "loadtest.json").exists()


def test_module_imports_no_ray() -> None:
    code = ("import sys, greenflow.client.loadtest, greenflow.platform.traffic; "
            "assert 'ray' not in sys.modules, 'ray imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.usefixtures("no_ray")
def test_write_loadtest_puts_greenflow_on_top_and_draws_the_figure(tmp_path: Path) -> None:
    docs = {"equal": sample_doc("equal"), "greenflow": sample_doc()}
    json_path, png_path = write_loadtest(RunDir(tmp_path / "run"), docs, horizon="next:5")
    saved = json.loads(Path(json_path).read_text())
    assert saved["policy"] == "greenflow" and set(saved["policies"]) == {"equal", "greenflow"}
    assert set(saved) >= CONTRACT_KEYS and saved["policies"]["equal"]["policy"] == "equal"
    assert not list((tmp_path / "run").glob(".*tmp"))
    assert Path(png_path).name == "loadtest.png" and Path(png_path).stat().st_size > 10_000
    only = write_loadtest(RunDir(tmp_path / "other"), {"equal": sample_doc("equal")}, "all")[0]
    assert json.loads(Path(only).read_text())["policy"] == "equal"
    assert saved["horizon"] == "next:5"
    assert np.isfinite(saved["over_budget_windows_pct"])
