"""A load test's PFEC: its FLOPs (plus GreenFlow's reward-model FLOPs) at the calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenflow.platform.documents import LatencyMs, LoadtestDoc
from greenflow.platform.energy.carbon import PFECConfig
from greenflow.platform.energy.online import online_pfec, read_calibration
from greenflow.platform.run_dir import RunDir


def _run_dir(tmp_path: Path) -> RunDir:
    calibration = {"joules_per_flop": 1e-9, "device": "cpu:0", "source": "estimate"}
    (tmp_path / "pfec_calibration.json").write_text(json.dumps(calibration))
    (tmp_path / "reward_model.json").write_text(
        json.dumps(
            {"variants": {}, "overhead_flops_ratio": 1e-3, "overhead_flops_per_request": 10.0}
        )
    )
    return RunDir(tmp_path)


def _doc(policy: str) -> LoadtestDoc:
    return LoadtestDoc(policy=policy, budget_flops_per_s=1e3, windows=(), clicks=3.0,
                       over_budget_windows_pct=0.0, requests=4, ok=4, errors=0, flops=1000.0,
                       latency_ms=LatencyMs(p50=5.0, p99=9.0), utilisation_pct=50.0,
                       over_utilisation_pct=0.0, pfec={}, duration_s=2.0)  # fmt: skip


@pytest.mark.parametrize(("policy", "allocator_flops"), [("greenflow", 40.0), ("equal", 0.0)])
def test_only_greenflow_pays_for_its_reward_model(
    tmp_path: Path, policy: str, allocator_flops: float
) -> None:
    record = online_pfec(_doc(policy), _run_dir(tmp_path), PFECConfig(pue=2.0))
    assert record["allocator_flops"] == allocator_flops
    assert record["flops"] == 1000.0 + allocator_flops
    assert record["energy_j"] == pytest.approx(2.0 * (1000.0 + allocator_flops) * 1e-9)
    assert record["performance"] == {"clicks": 3.0, "latency_p50_ms": 5.0, "latency_p99_ms": 9.0}


def test_without_a_calibration_the_error_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="greenflow pfec calibrate"):
        read_calibration(RunDir(tmp_path))
