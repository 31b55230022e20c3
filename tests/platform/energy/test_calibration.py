"""Joules per FLOP with a fake clock, and once for real with the estimate meter."""

from __future__ import annotations

import pytest
import torch

from greenflow.platform.energy import (
    EnergySource,
    EstimateMeter,
    SingleSourceMeter,
    calibrate_joules_per_flop,
)

from .conftest import FakeClock


class BusyIdleMeter(SingleSourceMeter):
    """10 W idle, plus whatever energy the fake workload adds."""

    source = EnergySource.RAPL

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.start_s = clock()
        self.workload_j = 0.0

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cpu:0",)

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        return {"cpu:0": 10.0 * (now_s - self.start_s) + self.workload_j}


def test_joules_per_flop_with_fake_clock(clock: FakeClock) -> None:
    meter = BusyIdleMeter(clock)

    def workload() -> None:  # 0.25 s at +40 W over idle
        clock.advance(0.25)
        meter.workload_j += 40.0 * 0.25

    result = calibrate_joules_per_flop(workload, 1e9, meter, duration_s=1.0, clock=clock)
    cal = result["cpu:0"]
    assert (cal.calls, cal.flops, cal.duration_s) == (4, 4e9, 1.0)
    assert cal.energy_j == pytest.approx(50.0)  # 10 W × 1 s idle + 40 J work
    assert cal.joules_per_flop == pytest.approx(50.0 / 4e9)
    assert cal.source is EnergySource.RAPL
    assert cal.to_dict()["source"] == "rapl"

    marginal = calibrate_joules_per_flop(
        workload, 1e9, meter, duration_s=1.0, idle_s=2.0, clock=clock, sleep=clock.advance
    )["cpu:0"]
    assert marginal.idle_power_w == pytest.approx(10.0)
    assert marginal.joules_per_flop == pytest.approx(40.0 / 4e9)


def test_argument_checks(clock: FakeClock) -> None:
    meter = BusyIdleMeter(clock)
    with pytest.raises(ValueError, match="flops_per_call"):
        calibrate_joules_per_flop(lambda: None, 0.0, meter, clock=clock)
    with pytest.raises(ValueError, match="gpu:0"):
        calibrate_joules_per_flop(
            lambda: clock.advance(1.0), 1.0, meter, duration_s=1.0, devices=["gpu:0"], clock=clock
        )


def test_real_matmul_on_estimate_meter() -> None:
    a = torch.randn(256, 256)
    flops_per_call = 2 * 256**3  # one multiply-add = 2 FLOPs

    def workload() -> None:
        torch.mm(a, a)

    result = calibrate_joules_per_flop(
        workload, flops_per_call, EstimateMeter(include_dram=False), duration_s=0.2
    )
    cal = result["cpu:0"]
    assert cal.source is EnergySource.ESTIMATE
    assert cal.calls >= 1 and cal.joules_per_flop > 0.0
    assert cal.joules_per_flop < 1e-6  # any CPU of this century does better than 1 µJ/FLOP
