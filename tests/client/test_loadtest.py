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
from tests.client.fakes import CONTRACT_KEYS, requests_frame, sample_doc


def test_cli_url_replays_the_run_against_a_running_app(
    allocator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from greenflow.cli import main

    _, server = allocator
    monkeypatch.setattr("greenflow.client.loadtest.load_replay_requests",
                        lambda run_dir: requests_frame([4, 5, 10, 11]))  # fmt: skip
    monkeypatch.setattr("greenflow.platform.data.store.read_horizon", lambda data_dir: "next:5")
    argv = ["loadtest", "--url", server.url, "--run-dir", str(tmp_path), "--base-rate", "8",
            "--duration", "1"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((tmp_path / "loadtest.json").read_text())
    assert doc["policy"] == "greenflow" and doc["horizon"] == "next:5" and doc["requests"] > 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'loadtest.json'}, {tmp_path / 'loadtest.png'}" in out
    assert main([*argv, "--repeats", "2"]) == 2  # repeats redeploy: not with --url
    assert "--repeats redeploys each policy" in capsys.readouterr().err


def test_module_imports_no_ray() -> None:
    code = ("import sys, greenflow.client.loadtest, greenflow.platform.traffic; "
            "assert 'ray' not in sys.modules, 'ray imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.usefixtures("no_ray")
def test_write_loadtest_puts_greenflow_on_top_and_draws_the_figure(tmp_path: Path) -> None:
    docs = {"equal": sample_doc("equal"), "greenflow": sample_doc()}
    json_path, png_path = write_loadtest(tmp_path / "run", docs, horizon="next:5")
    saved = json.loads(json_path.read_text())
    assert saved["policy"] == "greenflow" and set(saved["policies"]) == {"equal", "greenflow"}
    assert set(saved) >= CONTRACT_KEYS and saved["policies"]["equal"]["policy"] == "equal"
    assert not list((tmp_path / "run").glob(".*tmp"))
    assert png_path.name == "loadtest.png" and png_path.stat().st_size > 10_000
    only = write_loadtest(tmp_path / "other", {"equal": sample_doc("equal")}, horizon="all")[0]
    assert json.loads(only.read_text())["policy"] == "equal"
    assert saved["horizon"] == "next:5"
    assert np.isfinite(saved["over_budget_windows_pct"])
