"""PFEC records and the PFEC table, from the JSON blocks runs write."""

from __future__ import annotations

import pytest

from greenflow.platform.energy import (
    EnergySource,
    Measurement,
    PFECConfig,
    PFECRecord,
    collect_pfec_records,
    format_pfec_table,
    pfec_record,
)

KWH_J = 3.6e6


def _record(name: str = "run") -> PFECRecord:
    measurements = [
        Measurement("cpu:0", EnergySource.RAPL, 0.6 * KWH_J, 30.0),
        Measurement("cpu:0", EnergySource.RAPL, 0.3 * KWH_J, 30.0),
        Measurement("dram:0", EnergySource.ESTIMATE, 0.1 * KWH_J, 60.0),
    ]
    return pfec_record(name, measurements, 2e12, PFECConfig(), performance={"clicks": 812})


def test_pfec_record_aggregates_windows_and_applies_pue() -> None:
    r = _record()
    assert r.it_energy_j == pytest.approx(KWH_J)
    assert r.energy_j == pytest.approx(1.67 * KWH_J)
    assert r.carbon_g == pytest.approx(1.67 * 615.0)
    assert r.duration_s == pytest.approx(60.0)
    assert r.sources == {"cpu:0": "rapl", "dram:0": "estimate"}
    assert r.energy_by_device_j["cpu:0"] == pytest.approx(0.9 * KWH_J)
    assert r.it_joules_per_flop == pytest.approx(KWH_J / 2e12)
    assert PFECRecord.from_dict("run", r.to_dict()) == r


def test_one_device_two_sources_is_refused() -> None:
    with pytest.raises(ValueError, match="both rapl and estimate"):
        pfec_record(
            "x",
            [
                Measurement("cpu:0", EnergySource.RAPL, 1.0, 1.0),
                Measurement("cpu:0", EnergySource.ESTIMATE, 1.0, 1.0),
            ],
            1.0,
            PFECConfig(),
        )


def test_collect_from_run_outputs() -> None:
    loadtest_block = _record().to_dict()
    del loadtest_block["performance"]
    outputs = {
        "model_pool.json": {"models": []},
        "offline_eval.json": {
            "pfec": {"greenflow": _record().to_dict(), "equal": _record().to_dict()}
        },
        "loadtest.json": {"clicks": 42, "pfec": loadtest_block},
    }
    records = collect_pfec_records(outputs)
    assert [r.name for r in records] == ["loadtest", "offline_eval/greenflow", "offline_eval/equal"]
    assert records[0].performance == {"clicks": 42.0}


def test_collect_names_the_file_with_a_bad_block() -> None:
    block = _record().to_dict()
    del block["carbon_g"]
    with pytest.raises(ValueError, match=r"loadtest\.json.*carbon_g"):
        collect_pfec_records({"loadtest.json": {"pfec": block}})
    block = {**_record().to_dict(), "sources": {"cpu:0": "guess"}}
    with pytest.raises(ValueError, match="unknown source"):
        collect_pfec_records({"loadtest.json": {"pfec": block}})


def test_table() -> None:
    table = format_pfec_table([_record("offline_eval/greenflow"), _record("loadtest")])
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["run", "performance"]
    assert "PUE" in lines[0] and "CI g/kWh" in lines[0]
    assert len(lines) == 4
    assert "clicks=812" in lines[2]
    assert "estimate(dram:0) rapl(cpu:0)" in lines[2]
    assert "1.67" in lines[2] and "615" in lines[2]
    assert len({len(line.rstrip()) for line in lines[:2]}) >= 1
    assert format_pfec_table([]) == "no PFEC results found"
