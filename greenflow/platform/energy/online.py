"""PFEC of an online run (a load test's document): FLOPs are what the app computed — the
cascade FLOPs of every answered request plus, for GreenFlow, the allocator's reward-model
FLOPs (``overhead_flops_per_request`` of ``reward_model.json`` × answered requests);
energy is an *estimate*, those FLOPs × the joules per FLOP measured by
``greenflow pfec calibrate`` × PUE, and carbon that × the carbon intensity. Both the
in-process comparison (``serve_apps/online_eval.py``) and ``greenflow loadtest --url``
use it.
"""

from __future__ import annotations

from typing import Any

from greenflow.platform.documents import LoadtestDoc
from greenflow.platform.energy.carbon import PFECConfig
from greenflow.platform.energy.report import estimated_pfec
from greenflow.platform.run_dir import CALIBRATION, RunDir


def read_calibration(run_dir: RunDir) -> dict[str, Any]:
    """``run_dir``'s ``pfec_calibration.json`` (J/FLOP and its source); a
    FileNotFoundError that says how to make it when there is none."""
    calib = run_dir.read_calibration()
    if calib is None:
        raise FileNotFoundError(
            f"{run_dir.show(CALIBRATION)}: run `greenflow pfec calibrate` first"
        )
    return dict(calib)


def online_pfec(doc: LoadtestDoc, run_dir: RunDir, pfec: PFECConfig) -> dict[str, Any]:
    """PFEC record of one load-test document (estimate from calibrated J/FLOP)."""
    calib = read_calibration(run_dir)
    reward_doc = run_dir.read_reward_summary()
    overhead_per_request = float((reward_doc and reward_doc.overhead_flops_per_request) or 0.0)
    ok, flops = doc.ok or 0, doc.flops or 0.0
    allocator_flops = overhead_per_request * ok if doc.policy == "greenflow" else 0.0
    performance = {
        "clicks": doc.clicks,
        "latency_p50_ms": doc.latency_ms.p50,
        "latency_p99_ms": doc.latency_ms.p99,
    }
    record = estimated_pfec(performance, float(flops) + allocator_flops, calib, pfec)
    return {
        **record,
        "allocator_flops": allocator_flops,
        "allocator_flops_ratio": allocator_flops / flops if flops else 0.0,
        "duration_s": doc.duration_s,
    }
