"""Estimate backend: the model on fake CPU times, and a real run on this machine."""

from __future__ import annotations

import time
from collections import namedtuple

import psutil
import pytest

from greenflow.platform.energy import (
    DEFAULT_DRAM_W_PER_GIB,
    EnergySource,
    EstimateConfig,
    EstimateMeter,
    ProcessCpuShare,
    attribute_cpu_energy_j,
)
from greenflow.platform.energy.units import BYTES_PER_GIB

from .conftest import FakeClock

CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")


class FakeCpuTimes:
    """psutil.cpu_times() whose counters the test advances."""

    def __init__(self) -> None:
        self.busy_s = 0.0
        self.idle_s = 0.0
        self.guest_s = 0.0

    def __call__(self) -> CpuTimes:
        # guest time is also inside user, as on Linux
        return CpuTimes(self.busy_s + self.guest_s, 0, 0, self.idle_s, 0, 0, 0, 0, self.guest_s, 0)

    def advance(self, busy_s: float, idle_s: float, guest_s: float = 0.0) -> None:
        self.busy_s += busy_s
        self.idle_s += idle_s
        self.guest_s += guest_s


def test_tdp_times_utilisation_and_dram_per_gib(clock: FakeClock) -> None:
    cpu = FakeCpuTimes()
    meter = EstimateMeter(
        EstimateConfig(cpu_tdp_w=100.0),
        clock=clock,
        cpu_times=cpu,
        memory_total_bytes=16 * BYTES_PER_GIB,
    )
    assert meter.dram_power_w == pytest.approx(16 * DEFAULT_DRAM_W_PER_GIB)
    clock.advance(2.0)
    cpu.advance(busy_s=2.0, idle_s=1.0, guest_s=1.0)  # 2 CPUs × 2 s; guest not double-counted
    samples = {m.device: m for m in meter.sample()}
    assert meter.cpu_utilisation == pytest.approx(0.75)
    assert samples["cpu:0"].energy_j == pytest.approx(100.0 * 0.75 * 2.0)
    assert samples["dram:0"].energy_j == pytest.approx(6.0 * 2.0)
    assert {m.source for m in samples.values()} == {EnergySource.ESTIMATE}
    # No scheduler tick between reads: the last utilisation carries on.
    clock.advance(1.0)
    samples = {m.device: m for m in meter.sample()}
    assert samples["cpu:0"].power_w == pytest.approx(75.0)


def test_dram_only_and_config_checks(clock: FakeClock) -> None:
    meter = EstimateMeter(include_cpu=False, clock=clock, memory_total_bytes=BYTES_PER_GIB)
    assert meter.devices == ("dram:0",)
    with pytest.raises(ValueError):
        EstimateMeter(include_cpu=False, include_dram=False)
    with pytest.raises(ValueError, match="cpu_tdp_w"):
        EstimateConfig(cpu_tdp_w=0.0)


def _burn_cpu(duration_s: float) -> None:
    end = time.perf_counter() + duration_s
    x = 0
    while time.perf_counter() < end:
        x += 1


def test_real_run_on_this_machine() -> None:
    """No fakes: psutil and the monotonic clock of this machine."""
    meter = EstimateMeter()
    _burn_cpu(0.3)
    samples = {m.device: m for m in meter.sample()}
    cpu, dram = samples["cpu:0"], samples["dram:0"]
    assert cpu.source is EnergySource.ESTIMATE and dram.source is EnergySource.ESTIMATE
    assert cpu.duration_s >= 0.3
    assert 0.0 < meter.cpu_utilisation <= 1.0
    assert 0.0 < cpu.power_w <= meter.cpu_tdp_w + 1e-9
    gib = psutil.virtual_memory().total / BYTES_PER_GIB
    assert dram.power_w == pytest.approx(DEFAULT_DRAM_W_PER_GIB * gib, rel=1e-6)


def test_process_cpu_share_real() -> None:
    share = ProcessCpuShare()
    _burn_cpu(0.2)
    process_s, node_busy_s = share.window()
    assert process_s > 0.05
    assert node_busy_s > 0.0
    assert 0.0 < attribute_cpu_energy_j(10.0, process_s, node_busy_s) <= 10.0
