"""``greenflow pfec report`` and ``greenflow pfec calibrate`` on tiny pools and run dirs."""

from __future__ import annotations

import http.server
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenflow.cli import main
from greenflow.platform.chains import default_space
from greenflow.platform.energy import (
    EstimateMeter,
    PFECConfig,
    PFECRecord,
)
from greenflow.platform.energy.pool_calibration import CalibrationConfig, format_calibration_table
from greenflow.platform.models.pool import MODEL_KINDS, ModelPool, save_pool
from greenflow.platform.run_dir import CALIBRATION, RunDir
from greenflow.simulators.pfec_jobs import (
    live_record,
    parse_exposition,
    pfec_report,
    run_calibration,
)

pytestmark = pytest.mark.usefixtures("no_ray")


def test_run_calibration_on_a_saved_pool_with_the_estimate(
    tiny_pool: ModelPool, tmp_path: Path
) -> None:
    save_pool(tiny_pool, RunDir(tmp_path))
    config = CalibrationConfig(seconds=0.2, idle_seconds=0.0, batch_size=8)
    doc = run_calibration(RunDir(tmp_path), config, PFECConfig(), default_space(),
                          meter=EstimateMeter(), log=lambda _: None)  # fmt: skip
    written = json.loads((tmp_path / CALIBRATION).read_text())
    assert written == doc
    required = {"device", "source", "joules_per_flop", "per_model", "pue", "method"}
    assert required | {"carbon_intensity_g_per_kwh"} <= set(written)
    assert (written["source"], written["pue"]) == ("estimate", 1.67)
    assert written["carbon_intensity_g_per_kwh"] == 615.0
    assert set(written["per_model"]) == set(MODEL_KINDS)
    for row in written["per_model"].values():
        assert {"joules_per_flop", "flops_per_s", "energy_j", "duration_s", "source"} <= set(row)
        assert row["source"] == "estimate" and row["duration_s"] >= 0.2
        # J/FLOP is a machine-speed figure (bench/, README), so only its consistency is
        # tested: positive, finite, and the row's energy over the FLOPs it computed.
        assert row["joules_per_flop"] > 0.0 and math.isfinite(row["joules_per_flop"])
        assert row["joules_per_flop"] == pytest.approx(row["energy_j"] / row["flops"])
        assert row["flops_per_s"] == pytest.approx(row["flops"] / row["duration_s"])
    assert written["joules_per_flop"] > 0.0 and math.isfinite(written["joules_per_flop"])
    table = format_calibration_table(written)
    assert "J/GFLOP" in table and all(name in table for name in MODEL_KINDS)


def test_cli_calibrate_and_report(
    tiny_pool: ModelPool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_pool(tiny_pool, RunDir(tmp_path))
    argv = ["pfec", "calibrate", "--run-dir", str(tmp_path), "--seconds", "0.1"]
    assert main([*argv, "--idle-seconds", "0", "--model", "din", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert CALIBRATION in out and "din" in out and "gCO2eq per GFLOP" in out

    # model_pool.json and pfec_calibration.json carry no "pfec" block: nothing to tabulate.
    assert main(["pfec", "report", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"no PFEC results in {tmp_path} yet")
    assert "calibration (pfec_calibration.json" in out

    assert main([*argv, "--model", "nope"]) == 2
    assert "not in the pool" in capsys.readouterr().err
    assert main(["pfec", "report", "--run-dir", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def _block(it_energy_j: float) -> dict:
    return {
        "flops": 2e12,
        "it_energy_j": it_energy_j,
        "energy_j": 1.67 * it_energy_j,
        "carbon_g": 1.0,
        "pue": 1.67,
        "carbon_intensity_g_per_kwh": 615.0,
        "sources": {"cpu:0": "rapl"},
    }


def test_report_reads_pfec_blocks_and_reprices(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "model_pool.json").write_text(json.dumps({"models": []}))
    offline = {"pfec": {"greenflow": _block(3.6e6), "equal": _block(7.2e6)}}
    (tmp_path / "offline_eval.json").write_text(json.dumps(offline))
    (tmp_path / "loadtest.json").write_text(json.dumps({"clicks": 12, "pfec": _block(1.0)}))

    text = pfec_report(RunDir(tmp_path))
    assert "as recorded" in text
    for row in ("offline_eval/greenflow", "offline_eval/equal", "loadtest", "clicks=12"):
        assert row in text

    assert main(["pfec", "report", "--run-dir", str(tmp_path), "--pue", "2"]) == 0
    out = capsys.readouterr().out
    assert "re-priced at PUE 2, 615 gCO2eq/kWh" in out
    greenflow_row = next(line for line in out.splitlines() if "offline_eval/greenflow" in line)
    assert " 7.2e+06 " in greenflow_row  # 1 kWh of device energy × PUE 2, in J
    assert " 1230 " in greenflow_row  # 2 kWh × 615 gCO2eq/kWh

    (tmp_path / "broken.json").write_text("{not json")
    assert main(["pfec", "report", "--run-dir", str(tmp_path)]) == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err


EXPOSITION = """\
# HELP ray_greenflow_energy_joules_total Device energy in J (PUE not included).
# TYPE ray_greenflow_energy_joules_total counter
ray_greenflow_energy_joules_total{SessionName="s",WorkerId="a",device="cpu:0",node="n1",source="estimate"} 3000.0
ray_greenflow_energy_joules_total{SessionName="s",WorkerId="b",device="cpu:0",node="n1",source="estimate"} 600.0
ray_greenflow_energy_joules_total{SessionName="s",WorkerId="a",device="dram:0",node="n1",source="estimate"} 400.0 1700000000000
ray_greenflow_power_watts{device="cpu:0",node="n1",source="estimate"} 24.0
ray_greenflow_flops_total{app="serve",model="din",stage="rank"} 1e+12
ray_greenflow_flops_total{app="serve",model="dssm",stage="recall"} 3e+12
ray_greenflow_requests_total{app="serve",chain="dssm@400>youtube_dnn@50>din@10"} 500
ray_node_cpu_utilization{ip="10.0.0.1"} 55.0
"""


def test_live_record_from_exposition() -> None:
    samples = parse_exposition(EXPOSITION)
    assert len(samples) == 8 and samples[2][2] == 400.0  # the federate timestamp is dropped
    record = live_record("live", samples, PFECConfig(pue=1.5))
    assert isinstance(record, PFECRecord)
    assert record.energy_by_device_j == {"cpu:0": 3600.0, "dram:0": 400.0}  # restart: added
    assert (record.it_energy_j, record.energy_j, record.flops) == (4000.0, 6000.0, 4e12)
    assert record.carbon_g == pytest.approx(6000.0 / 3.6e6 * 615.0)
    assert record.performance == {"requests": 500.0}
    with pytest.raises(ValueError, match="node meters running"):
        live_record("live", parse_exposition("ray_node_cpu_utilization 1.0\n"), PFECConfig())


@pytest.fixture()
def metrics_url() -> Iterator[str]:
    """A local HTTP server answering /metrics with ``EXPOSITION``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = EXPOSITION.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_report_with_live_endpoint(tmp_path: Path, metrics_url: str) -> None:
    text = pfec_report(RunDir(tmp_path), prometheus=[metrics_url])
    row = next(line for line in text.splitlines() if line.startswith("live "))
    assert "requests=500" in row and "estimate(cpu:0,dram:0)" in row and "1.67" in row
    with pytest.raises(ValueError, match="cannot read metrics"):
        pfec_report(RunDir(tmp_path), prometheus=["http://127.0.0.1:9/metrics"], timeout_s=1.0)
