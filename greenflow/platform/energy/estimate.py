"""Estimated CPU and DRAM energy, for machines where no counter is readable.

This is a model, not a measurement, and every figure it yields says ``estimate``:

- CPU: ``cpu_tdp_w × utilisation``, utilisation being the busy fraction of all logical
  CPUs between two reads (``psutil.cpu_times``: busy = total − idle − iowait). Default TDP
  is 12 W per physical core, the "unknown CPU" figure of Green Algorithms (Lannelongue et
  al., Adv. Sci. 2021); override ``cpu_tdp_w`` with the datasheet value of your CPU.
  Idle power is not modelled (0 W at 0% busy), so an idle node is under-estimated.
- DRAM: ``dram_w_per_gib × installed memory`` (GiB = 2**30 bytes), drawn whether used or
  not because DRAM refreshes all its rows; default 0.375 W/GiB, codecarbon's 3 W per 8 GB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from greenflow.platform.energy.base import Clock, SingleSourceMeter
from greenflow.platform.energy.measurement import DeviceKind, EnergySource, device_name
from greenflow.platform.energy.units import BYTES_PER_GIB

DEFAULT_CPU_TDP_W_PER_CORE = 12.0  # Green Algorithms' default for an unknown CPU
DEFAULT_DRAM_W_PER_GIB = 0.375  # codecarbon: 3 W per 8 GB

CpuTimes = Callable[[], Any]  # returns a psutil ``scputimes``-like named tuple


@dataclass(frozen=True)
class EstimateConfig:
    """Constants of the estimate. ``cpu_tdp_w=None``: 12 W × physical cores of this node."""

    cpu_tdp_w: float | None = None
    dram_w_per_gib: float = DEFAULT_DRAM_W_PER_GIB

    def __post_init__(self) -> None:
        if self.cpu_tdp_w is not None and self.cpu_tdp_w <= 0:
            raise ValueError(f"cpu_tdp_w must be > 0, got {self.cpu_tdp_w}")
        if self.dram_w_per_gib < 0:
            raise ValueError(f"dram_w_per_gib must be >= 0, got {self.dram_w_per_gib}")


def default_cpu_tdp_w() -> float:
    """12 W per physical core of this machine (logical count where that is unknown)."""
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count(logical=True) or 1
    return DEFAULT_CPU_TDP_W_PER_CORE * cores


def busy_and_total_cpu_s(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds summed over all CPUs from a ``psutil.cpu_times()`` tuple."""
    fields = times._asdict()
    total_s = sum(fields.values())
    # Linux counts guest time inside user/nice already; psutil's cpu_percent drops it too.
    total_s -= fields.get("guest", 0.0) + fields.get("guest_nice", 0.0)
    idle_s = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total_s - idle_s, total_s


class EstimateMeter(SingleSourceMeter):
    """CPU (``cpu:0``, the whole node) and DRAM (``dram:0``) energy from a power model."""

    source = EnergySource.ESTIMATE

    def __init__(
        self,
        config: EstimateConfig | None = None,
        *,
        include_cpu: bool = True,
        include_dram: bool = True,
        clock: Clock = time.monotonic,
        cpu_times: CpuTimes = psutil.cpu_times,
        memory_total_bytes: int | None = None,
    ) -> None:
        if not (include_cpu or include_dram):
            raise ValueError("an EstimateMeter needs at least one of CPU or DRAM")
        super().__init__(clock)
        config = config or EstimateConfig()
        self.config = config
        self.include_cpu, self.include_dram = include_cpu, include_dram
        self._cpu_times = cpu_times
        self.cpu_tdp_w = config.cpu_tdp_w if config.cpu_tdp_w is not None else default_cpu_tdp_w()
        if memory_total_bytes is None:
            memory_total_bytes = psutil.virtual_memory().total
        self.dram_power_w = config.dram_w_per_gib * memory_total_bytes / BYTES_PER_GIB
        self.cpu_utilisation = 0.0  # busy fraction over the last read window, 0..1
        self._last_busy_s, self._last_total_s = busy_and_total_cpu_s(cpu_times())
        self._last_time_s = self._start_window()
        self._cpu_energy_j = 0.0
        self._dram_energy_j = 0.0

    @property
    def devices(self) -> tuple[str, ...]:
        cpu = (device_name(DeviceKind.CPU, 0),) if self.include_cpu else ()
        dram = (device_name(DeviceKind.DRAM, 0),) if self.include_dram else ()
        return cpu + dram

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        duration_s = max(now_s - self._last_time_s, 0.0)
        busy_s, total_s = busy_and_total_cpu_s(self._cpu_times())
        total_delta_s = total_s - self._last_total_s
        if total_delta_s > 0:  # no tick elapsed: keep the previous utilisation
            busy_delta_s = busy_s - self._last_busy_s
            self.cpu_utilisation = min(max(busy_delta_s / total_delta_s, 0.0), 1.0)
        self._cpu_energy_j += self.cpu_tdp_w * self.cpu_utilisation * duration_s
        self._dram_energy_j += self.dram_power_w * duration_s
        self._last_time_s, self._last_busy_s, self._last_total_s = now_s, busy_s, total_s
        out: dict[str, float] = {}
        if self.include_cpu:
            out[device_name(DeviceKind.CPU, 0)] = self._cpu_energy_j
        if self.include_dram:
            out[device_name(DeviceKind.DRAM, 0)] = self._dram_energy_j
        return out


class ProcessCpuShare:
    """A process's share of the node's busy CPU time, window by window.

    Feed the two figures of :meth:`window` to ``measurement.attribute_cpu_energy_j`` to
    charge a process its part of the node's CPU energy (RAPL or estimate alike).
    """

    def __init__(self, pid: int | None = None, *, cpu_times: CpuTimes = psutil.cpu_times):
        self._process = psutil.Process(pid)
        self._cpu_times = cpu_times
        self._last_process_s = self._process_cpu_s()
        self._last_busy_s, _ = busy_and_total_cpu_s(cpu_times())

    def _process_cpu_s(self) -> float:
        times = self._process.cpu_times()
        return float(times.user + times.system)

    def window(self) -> tuple[float, float]:
        """(process CPU s, node busy CPU s) since the previous call (or construction)."""
        process_s = self._process_cpu_s()
        busy_s, _ = busy_and_total_cpu_s(self._cpu_times())
        out = (process_s - self._last_process_s, busy_s - self._last_busy_s)
        self._last_process_s, self._last_busy_s = process_s, busy_s
        return out
