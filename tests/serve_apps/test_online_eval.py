"""`greenflow loadtest` end to end: both policies deployed in turn on the real cluster,
replayed over HTTP, loadtest.json/.png written, PFEC rows for `greenflow pfec report`."""

from __future__ import annotations

import json

import pytest

from greenflow.cli import main
from greenflow.platform.energy.report import collect_pfec_records

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_loadtest_command_compares_policies(serve_run, serve_port, capsys) -> None:
    run_dir = serve_run.run_dir
    code = main(["loadtest", "--dataset", "synthetic", "--run-dir", str(run_dir),
                 "--base-rate", "6", "--duration", "4", "--port", str(serve_port),
                 "--window-s", "1", "--repeats", "2"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "greenflow" in out and "equal" in out
    doc = json.loads((run_dir.local_path / "loadtest.json").read_text())
    for key in ("policy", "budget_flops_per_s", "windows", "over_budget_windows_pct",
                "clicks", "requests", "errors", "latency_ms", "pfec"):  # fmt: skip
        assert key in doc, key
    assert doc["policy"] == "greenflow" and set(doc["policies"]) == {"greenflow", "equal"}
    for policy, d in doc["policies"].items():
        assert d["errors"] == 0, d["error_examples"]
        assert d["ok"] > 0 and d["latency_ms"]["p50"] > 0
        assert d["budget_flops_per_s"] == pytest.approx(doc["budget_flops_per_s"]), policy
        assert d["pfec"]["flops"] >= d["flops"] > 0
    # EQUAL serves one chain (the guard may still step in); GreenFlow pays for its allocator
    assert doc["policies"]["equal"]["pfec"]["allocator_flops"] == 0
    assert doc["policies"]["greenflow"]["pfec"]["allocator_flops"] > 0
    assert (run_dir.local_path / "loadtest.png").stat().st_size > 0
    # the same schedule twice per policy: the same requests sent, each run's clicks kept
    repeats = doc["repeats"]
    assert repeats["repeats"] == 2 and set(repeats["policies"]) == {"greenflow", "equal"}
    for policy, p in repeats["policies"].items():
        assert len(p["runs"]) == 2 and p["runs"][-1]["clicks"] == doc["policies"][policy]["clicks"]
    assert len(repeats["greenflow_minus_equal_clicks"]) == 2
    assert "greenflow won" in out
    names = {r.name for r in collect_pfec_records({"loadtest.json": doc})}
    assert names == {"loadtest/greenflow", "loadtest/equal"}


def test_loadtest_refuses_remote_urls(serve_run) -> None:
    code = main(["loadtest", "--dataset", "synthetic", "--run-dir", str(serve_run.run_dir),
                 "--url", "http://example.com:8000"])  # fmt: skip
    assert code == 2
