from __future__ import annotations

import subprocess
import sys

import pytest

from greenflow.platform.energy import (
    CompositeMeter,
    EnergySource,
    Measurement,
    SingleSourceMeter,
    attribute_cpu_energy_j,
    total_energy_j,
)
from greenflow.platform.energy.units import (
    Energy,
    Power,
    carbon_g,
    joules_to_kwh,
    kwh_to_joules,
    microjoules_to_joules,
    millijoules_to_joules,
    milliwatts_to_watts,
)

from .conftest import FakeClock


def test_conversions() -> None:
    assert joules_to_kwh(3.6e6) == pytest.approx(1.0)
    assert kwh_to_joules(2.0) == pytest.approx(7.2e6)
    assert millijoules_to_joules(1500) == pytest.approx(1.5)
    assert microjoules_to_joules(2_500_000) == pytest.approx(2.5)
    assert milliwatts_to_watts(250_000) == pytest.approx(250.0)
    assert carbon_g(3.6e6, 615.0) == pytest.approx(615.0)


def test_value_types_keep_units_apart() -> None:
    e = Energy.from_kwh(1.0) + Energy(joules=3.6e6)
    assert e.kwh == pytest.approx(2.0)
    assert (e * 0.5).joules == pytest.approx(3.6e6)
    assert e.over(7200.0) == Power(watts=1000.0)
    assert Power(watts=10.0).for_duration(3.0) == Energy(joules=30.0)
    assert Energy(3.6e6).carbon_g(100.0) == pytest.approx(100.0)
    with pytest.raises(TypeError):
        _ = e + 1.0  # type: ignore[operator]


def test_measurement_fields_and_round_trip() -> None:
    m = Measurement(device="gpu:0", source=EnergySource.NVML, energy_j=300.0, duration_s=2.0)
    assert m.power_w == pytest.approx(150.0)
    assert m.kind.value == "gpu"
    assert m.to_dict() == {
        "device": "gpu:0",
        "source": "nvml",
        "energy_j": 300.0,
        "duration_s": 2.0,
        "power_w": 150.0,
    }
    assert Measurement.from_dict(m.to_dict()) == m
    assert Measurement("cpu:0", EnergySource.RAPL, 0.0, 0.0).power_w == 0.0
    with pytest.raises(ValueError, match="energy_j"):
        Measurement("cpu:0", EnergySource.RAPL, -1.0, 1.0)
    assert total_energy_j([m, m]) == pytest.approx(600.0)


def test_cpu_time_attribution_clips_share() -> None:
    assert attribute_cpu_energy_j(100.0, process_cpu_s=1.0, node_busy_cpu_s=4.0) == 25.0
    assert attribute_cpu_energy_j(100.0, process_cpu_s=5.0, node_busy_cpu_s=4.0) == 100.0
    assert attribute_cpu_energy_j(100.0, process_cpu_s=1.0, node_busy_cpu_s=0.0) == 0.0


class _ConstantPowerMeter(SingleSourceMeter):
    source = EnergySource.ESTIMATE

    def __init__(self, device: str, power_w: float, clock: FakeClock) -> None:
        super().__init__(clock)
        self._device, self._power_w, self._start_s = device, power_w, clock()

    @property
    def devices(self) -> tuple[str, ...]:
        return (self._device,)

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        return {self._device: self._power_w * (now_s - self._start_s)}


def test_sample_windows_and_composite(clock: FakeClock) -> None:
    meter = CompositeMeter(
        [_ConstantPowerMeter("cpu:0", 20.0, clock), _ConstantPowerMeter("dram:0", 5.0, clock)],
        clock=clock,
    )
    clock.advance(2.0)
    first = {m.device: m for m in meter.sample()}
    clock.advance(1.0)
    second = {m.device: m for m in meter.sample()}
    assert first["cpu:0"].energy_j == pytest.approx(40.0)
    assert first["cpu:0"].duration_s == pytest.approx(2.0)
    assert second["cpu:0"].energy_j == pytest.approx(20.0)  # only the new window
    assert second["dram:0"].power_w == pytest.approx(5.0)
    assert meter.sources == {"cpu:0": EnergySource.ESTIMATE, "dram:0": EnergySource.ESTIMATE}
    with pytest.raises(ValueError, match="overlap"):
        CompositeMeter([_ConstantPowerMeter("cpu:0", 1, clock)] * 2, clock=clock)


def test_energy_package_does_not_import_ray() -> None:
    code = "import sys, greenflow.platform.energy; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
