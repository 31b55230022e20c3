"""J/FLOP of each model of a tiny untrained pool under a meter of known power."""

from __future__ import annotations

import pytest

from greenflow.errors import ConfigError
from greenflow.platform.chains import ChainSpace, StageSpace, default_space
from greenflow.platform.energy import EnergySource, PFECConfig, SingleSourceMeter
from greenflow.platform.energy.pool_calibration import (
    CalibrationConfig,
    calibrate_pool,
    calibration_items,
)
from greenflow.platform.models.pool import ModelPool


class TickingClock:
    """Moves 0.05 s each time it is read, so a timed loop ends without real waiting."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += 0.05
        return self.now_s

    def advance(self, duration_s: float) -> None:
        self.now_s += duration_s


class ConstantMeter(SingleSourceMeter):
    """cpu:0 at 20 W and dram:0 at 2 W, whatever runs."""

    source = EnergySource.RAPL

    def __init__(self, clock: TickingClock) -> None:
        super().__init__(clock)
        self.start_s = clock()

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cpu:0", "dram:0")

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        t = now_s - self.start_s
        return {"cpu:0": 20.0 * t, "dram:0": 2.0 * t}


def test_calibration_charges_cpu_energy_to_counted_flops(tiny_pool: ModelPool) -> None:
    clock = TickingClock()
    config = CalibrationConfig(seconds=0.2, idle_seconds=0.0, batch_size=4, models=("dssm", "din"))
    doc = calibrate_pool(tiny_pool, ConstantMeter(clock), config, PFECConfig(), default_space(),
                         clock=clock, log=lambda _: None)  # fmt: skip
    assert list(doc["per_model"]) == ["dssm", "din"]
    assert (doc["device"], doc["source"]) == ("cpu:0", "rapl")
    for name, row in doc["per_model"].items():
        # recall scores the whole corpus; rank prerank's second-largest k (default space: 50)
        n = 30 if name == "dssm" else 50
        assert (row["items_per_request"], row["stage"]) == (n, tiny_pool.entries[name].stage)
        flops_per_call = 4 * tiny_pool.flops[name].cost(n)  # B × (per request + per item × n)
        assert row["flops"] == pytest.approx(row["calls"] * flops_per_call)
        assert row["energy_j"] == pytest.approx(20.0 * row["duration_s"])  # cpu only, not dram
        assert row["joules_per_flop"] == pytest.approx(row["energy_j"] / row["flops"])
        assert row["per_device"]["dram:0"]["energy_j"] == pytest.approx(2.0 * row["duration_s"])
    total_flops = sum(r["flops"] for r in doc["per_model"].values())
    total_j = sum(r["energy_j"] for r in doc["per_model"].values())
    assert doc["joules_per_flop"] == pytest.approx(total_j / total_flops)
    assert doc["facility_joules_per_flop"] == pytest.approx(1.67 * doc["joules_per_flop"])

    # With an idle baseline, a constant draw is all idle: nothing is charged to the work.
    idle = calibrate_pool(
        tiny_pool,
        ConstantMeter(clock),
        CalibrationConfig(seconds=0.2, idle_seconds=2.0, batch_size=4, models=("din",)),
        PFECConfig(),
        default_space(),
        clock=clock,
        sleep=clock.advance,
        log=lambda _: None,
    )["per_model"]["din"]
    assert idle["idle_power_w"] == pytest.approx(20.0)
    assert idle["energy_j"] == pytest.approx(0.0, abs=1e-9)


def test_item_counts_come_from_the_chain_space() -> None:
    # the default space gives the counts calibration always used: corpus, 400, 50
    assert calibration_items(default_space(), 1682) == {"recall": 1682, "prerank": 400,
                                                        "rank": 50}  # fmt: skip
    four = ChainSpace((StageSpace("a", ("dssm",), (40, 80, 160)),
                       StageSpace("b", ("youtube_dnn",), (20,)),
                       StageSpace("c", ("din",), (5, 10)), StageSpace("d", ("dien",), (5,))),
                      exposed_k=5)  # fmt: skip
    assert calibration_items(four, 30) == {"a": 30, "b": 80, "c": 20, "d": 5}


def test_a_model_of_a_stage_outside_the_space_is_refused(tiny_pool: ModelPool) -> None:
    other = ChainSpace((StageSpace("first", ("dssm",), (10,)),), exposed_k=5)
    with pytest.raises(ConfigError, match="not stages of the chain space"):
        calibrate_pool(tiny_pool, ConstantMeter(TickingClock()), CalibrationConfig(models=("din",)),
                       PFECConfig(), other, log=lambda _: None)  # fmt: skip
