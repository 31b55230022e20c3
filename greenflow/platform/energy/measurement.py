"""What an energy meter returns: one device's energy over one window, with its source."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from greenflow.platform.energy.units import Energy


class EnergySource(StrEnum):
    """Where an energy figure came from. Every figure carries one (STYLE.md rule 6)."""

    NVML = "nvml"  # NVIDIA driver: total-energy counter or sampled board power
    RAPL = "rapl"  # Intel/AMD RAPL counters read from /sys/class/powercap
    ESTIMATE = "estimate"  # TDP × utilisation (CPU) or W/GiB (DRAM): a model, not a reading


class DeviceKind(StrEnum):
    GPU = "gpu"
    CPU = "cpu"  # a CPU package (socket): cores + uncore
    DRAM = "dram"  # the memory attached to one package


def device_name(kind: DeviceKind, index: int) -> str:
    """The device label used everywhere (metrics tags, JSON): ``"gpu:0"``, ``"cpu:1"``."""
    return f"{kind.value}:{index}"


def device_kind(device: str) -> DeviceKind:
    """The kind of a device label made by :func:`device_name`."""
    return DeviceKind(device.partition(":")[0])


@dataclass(frozen=True)
class Measurement:
    """Energy one device drew over one window of ``duration_s`` seconds."""

    device: str  # e.g. "gpu:0", "cpu:0", "dram:0"
    source: EnergySource
    energy_j: float
    duration_s: float

    def __post_init__(self) -> None:
        if self.energy_j < 0:
            raise ValueError(f"{self.device}: energy_j must be >= 0, got {self.energy_j}")
        if self.duration_s < 0:
            raise ValueError(f"{self.device}: duration_s must be >= 0, got {self.duration_s}")

    @property
    def power_w(self) -> float:
        """Mean power over the window in W (0 for an empty window)."""
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def energy(self) -> Energy:
        return Energy(self.energy_j)

    @property
    def kind(self) -> DeviceKind:
        return device_kind(self.device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "source": self.source.value,
            "energy_j": self.energy_j,
            "duration_s": self.duration_s,
            "power_w": self.power_w,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        return cls(
            device=str(data["device"]),
            source=EnergySource(data["source"]),
            energy_j=float(data["energy_j"]),
            duration_s=float(data["duration_s"]),
        )


def total_energy_j(measurements: Iterable[Measurement]) -> float:
    """Sum of the measurements' energy in J (device level, before PUE)."""
    return sum(m.energy_j for m in measurements)


def attribute_cpu_energy_j(
    cpu_energy_j: float, process_cpu_s: float, node_busy_cpu_s: float
) -> float:
    """The share of a node's CPU energy (J) owed to one process, by CPU-time share.

    ``process_cpu_s`` is the process's user+system CPU seconds over the window and
    ``node_busy_cpu_s`` the non-idle CPU seconds of all cores of the node over the same
    window (see ``estimate.ProcessCpuShare``). Idle power is thereby spread over the busy
    processes, which is the usual convention (the idle machine exists to serve them). The
    share is clipped to [0, 1] because the two clocks are read at slightly different
    instants.
    """
    if node_busy_cpu_s <= 0:
        return 0.0
    share = min(max(process_cpu_s / node_busy_cpu_s, 0.0), 1.0)
    return cpu_energy_j * share
