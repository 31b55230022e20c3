"""Joules per FLOP of a device, measured by running a workload for a fixed time.

Runs ``workload()`` back to back for ``duration_s`` (on the injected clock), reads the
meter over that window, and divides each device's energy by the FLOPs counted
(``calls × flops_per_call``). With ``idle_s > 0`` the devices' idle power is measured
first and subtracted, giving the *marginal* cost of a FLOP rather than the average one
that carries the idle machine. The figure is only as good as the meter: its ``source``
(``nvml``/``rapl``/``estimate``) travels with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from typing import Any

from greenflow.platform.energy.base import Clock, EnergyMeter
from greenflow.platform.energy.measurement import EnergySource


@dataclass(frozen=True)
class JoulesPerFlop:
    """Energy cost of one FLOP on one device, with how it was obtained."""

    device: str
    source: EnergySource
    joules_per_flop: float
    energy_j: float  # attributed to the workload (idle already subtracted when asked)
    flops: float
    calls: int
    duration_s: float
    idle_power_w: float  # subtracted baseline; 0 when none was measured

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": self.source.value}


def calibrate_joules_per_flop(
    workload: Callable[[], None],
    flops_per_call: float,
    meter: EnergyMeter,
    *,
    duration_s: float = 2.0,
    idle_s: float = 0.0,
    devices: Collection[str] | None = None,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, JoulesPerFlop]:
    """J/FLOP per device of ``meter`` (only ``devices`` if given) while ``workload`` runs.

    ``clock`` must be the meter's clock, so both time the same window.
    """
    if flops_per_call <= 0:
        raise ValueError(f"flops_per_call must be > 0, got {flops_per_call}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if idle_s < 0:
        raise ValueError(f"idle_s must be >= 0, got {idle_s}")

    idle_power_w: dict[str, float] = {}
    if idle_s > 0:
        meter.sample()  # start a fresh window
        sleep(idle_s)
        idle_power_w = {m.device: m.power_w for m in meter.sample()}

    meter.sample()  # start the workload window
    start_s = clock()
    calls = 0
    while calls == 0 or clock() - start_s < duration_s:
        workload()
        calls += 1
    window = meter.sample()

    flops = calls * flops_per_call
    out: dict[str, JoulesPerFlop] = {}
    for m in window:
        if devices is not None and m.device not in devices:
            continue
        baseline_w = idle_power_w.get(m.device, 0.0)
        energy_j = max(m.energy_j - baseline_w * m.duration_s, 0.0)
        out[m.device] = JoulesPerFlop(
            device=m.device,
            source=m.source,
            joules_per_flop=energy_j / flops,
            energy_j=energy_j,
            flops=flops,
            calls=calls,
            duration_s=m.duration_s,
            idle_power_w=baseline_w,
        )
    if devices is not None and (missing := set(devices) - set(out)):
        raise ValueError(f"meter has no device(s) {sorted(missing)}; it has {meter.devices}")
    return out
