"""CPU package and DRAM energy through RAPL counters in ``/sys/class/powercap``.

Layout (Linux ``intel_rapl`` driver, also used for AMD Zen packages)::

    intel-rapl:0/        name = package-0   energy_uj  max_energy_range_uj
    intel-rapl:0:0/      name = core        (inside package-0: not counted)
    intel-rapl:0:1/      name = uncore      (inside package-0: not counted)
    intel-rapl:0:2/      name = dram        (beside the package: counted)
    intel-rapl:1/        name = psys        (whole platform: not counted)
    intel-rapl-mmio:0/   name = package-0   (same package via MMIO: not counted)

We count **package + dram** only: the package already contains its core and uncore
subdomains, and psys/mmio duplicate what the packages report.

Every zone is probed by really reading ``energy_uj``: since Linux 5.10 the file is
readable by root only (CVE-2020-8694), and in VMs and containers the directory is often
missing. ``energy_uj`` wraps to 0 after ``max_energy_range_uj``; one wrap between two
reads is undone, so read more often than the wrap period (range ÷ power: typically
minutes; the node meter reads every few seconds).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from greenflow.platform.energy.base import (
    BackendUnavailableError,
    Clock,
    EnergyReadError,
    SingleSourceMeter,
)
from greenflow.platform.energy.measurement import DeviceKind, EnergySource, device_name
from greenflow.platform.energy.units import microjoules_to_joules

logger = logging.getLogger(__name__)

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_DIR = re.compile(r"^intel-rapl:(\d+)$")
_SUBZONE_DIR = re.compile(r"^intel-rapl:(\d+):(\d+)$")


@dataclass(frozen=True)
class RaplZone:
    """One counted RAPL zone."""

    device: str  # "cpu:<package>" or "dram:<package>"
    path: Path  # the zone's directory
    max_energy_range_uj: int


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def discover_rapl_zones(
    root: Path = DEFAULT_POWERCAP_ROOT, include_dram: bool = True
) -> tuple[list[RaplZone], list[str]]:
    """Counted zones under ``root`` whose ``energy_uj`` really reads, and why others don't.

    Returns ``(zones, problems)``; ``problems`` holds one line per zone that should have
    been counted but could not be read (e.g. permission denied).
    """
    if not root.is_dir():
        return [], [f"{root} does not exist"]
    zones: list[RaplZone] = []
    problems: list[str] = []
    for entry in sorted(root.iterdir()):
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            continue  # the control-type dir "intel-rapl" and foreign zones have no name
        package = _PACKAGE_DIR.match(entry.name)
        zone = package or _SUBZONE_DIR.match(entry.name)
        if package and name.startswith("package"):
            device = device_name(DeviceKind.CPU, int(package.group(1)))
        elif zone and name == "dram" and include_dram:
            # Servers put dram beside the package's core/uncore subzones.
            device = device_name(DeviceKind.DRAM, int(zone.group(1)))
        else:
            continue  # core, uncore (inside package), psys, mmio: would double-count
        try:
            _read_int(entry / "energy_uj")
            max_range_uj = _read_int(entry / "max_energy_range_uj")
        except PermissionError as err:
            problems.append(
                f"{device} ({entry}): permission denied ({err.strerror}); energy_uj is "
                "root-only since Linux 5.10 — run as root or grant read access"
            )
            continue
        except (OSError, ValueError) as err:
            problems.append(f"{device} ({entry}): unreadable: {err}")
            continue
        zones.append(RaplZone(device=device, path=entry, max_energy_range_uj=max_range_uj))
    return zones, problems


class RaplMeter(SingleSourceMeter):
    """CPU package (and DRAM, where exposed) energy from RAPL ``energy_uj`` counters."""

    source = EnergySource.RAPL

    def __init__(
        self,
        root: Path = DEFAULT_POWERCAP_ROOT,
        include_dram: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        zones, problems = discover_rapl_zones(Path(root), include_dram=include_dram)
        for problem in problems:
            logger.warning("RAPL: %s", problem)
        if not any(z.device.startswith(DeviceKind.CPU.value) for z in zones):
            raise BackendUnavailableError(
                f"RAPL: no readable package zone under {root}: {'; '.join(problems) or 'none'}"
            )
        self.zones = tuple(zones)
        self._last_uj = {z.device: self._read_uj(z) for z in zones}
        self._total_uj = dict.fromkeys(self._last_uj, 0)
        self._start_window()

    @staticmethod
    def _read_uj(zone: RaplZone) -> int:
        try:
            return _read_int(zone.path / "energy_uj")
        except (OSError, ValueError) as err:
            raise EnergyReadError(f"RAPL: {zone.device}: {err}") from err

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(z.device for z in self.zones)

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        for zone in self.zones:
            now_uj = self._read_uj(zone)
            delta_uj = now_uj - self._last_uj[zone.device]
            if delta_uj < 0:  # the counter wrapped past max_energy_range_uj back to 0
                delta_uj += zone.max_energy_range_uj
            self._total_uj[zone.device] += delta_uj
            self._last_uj[zone.device] = now_uj
        return {d: microjoules_to_joules(uj) for d, uj in self._total_uj.items()}
