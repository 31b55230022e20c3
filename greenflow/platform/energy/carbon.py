"""PUE and grid carbon intensity: from device energy (J) to facility energy and gCO2eq.

DESIGN.md §2: EC = PUE · Σ_devices energy, CE = EC · CI. Defaults follow the GreenFlow
paper: PUE 1.67, CI 615 gCO2eq/kWh. Both are configuration and are printed with results.

A grid's intensity changes during the day, so a :class:`CarbonSchedule` can replace the
constant CI: a daily step function read from a CSV with header ``time,g_per_kwh``, where
``time`` is a wall-clock time of day ``HH:MM`` (or ``HH:MM:SS``) in the grid's local time
and each value holds until the next row. The day repeats: before the first row of a day
the last row of the previous day still holds. Example::

    time,g_per_kwh
    00:00,420
    07:30,610
    18:00,700
    22:00,480

Times passed to the schedule are seconds since local midnight (may exceed 86 400 for runs
that cross midnight; use :func:`seconds_since_midnight` to get one from a Unix time).
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from greenflow.errors import ConfigError, InputError
from greenflow.platform.energy.units import carbon_g as _carbon_g

DEFAULT_PUE = 1.67
DEFAULT_CARBON_INTENSITY_G_PER_KWH = 615.0
SECONDS_PER_DAY = 86_400.0


def seconds_since_midnight(epoch_s: float, tz: tzinfo | None = None) -> float:
    """Seconds since midnight of the day of Unix time ``epoch_s`` in ``tz`` (None: local)."""
    moment = datetime.fromtimestamp(epoch_s, tz)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return (moment - midnight).total_seconds()


def parse_time_of_day_s(text: str) -> float:
    """``"HH:MM"`` or ``"HH:MM:SS"`` → seconds since midnight."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"time {text!r} is not HH:MM or HH:MM:SS")
    hours, minutes, seconds = (int(p) for p in [*parts, "0"][:3])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"time {text!r} is out of range")
    return float(hours * 3600 + minutes * 60 + seconds)


@dataclass(frozen=True)
class CarbonSchedule:
    """Daily step function of grid carbon intensity (gCO2eq/kWh) over time of day (s)."""

    times_s: tuple[float, ...]  # seconds since midnight, strictly increasing, in [0, 86400)
    g_per_kwh: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.g_per_kwh):
            raise ValueError(
                f"a schedule needs >= 1 row and equal lengths, got {len(self.times_s)} "
                f"times and {len(self.g_per_kwh)} intensities"
            )
        if any(b <= a for a, b in zip(self.times_s, self.times_s[1:], strict=False)):
            raise ValueError(f"schedule times must be strictly increasing: {self.times_s}")
        if not (self.times_s[0] >= 0 and self.times_s[-1] < SECONDS_PER_DAY):
            raise ValueError(f"schedule times must lie in [0, 86400): {self.times_s}")
        if any(v < 0 or not math.isfinite(v) for v in self.g_per_kwh):
            raise ValueError(f"intensities must be finite and >= 0: {self.g_per_kwh}")

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[float, float]]) -> CarbonSchedule:
        """From ``(seconds since midnight, g/kWh)`` pairs in any order."""
        ordered = sorted(rows)
        return cls(tuple(t for t, _ in ordered), tuple(v for _, v in ordered))

    @classmethod
    def from_csv(cls, path: Path | str) -> CarbonSchedule:
        """Read a ``time,g_per_kwh`` CSV (time as HH:MM or HH:MM:SS, local to the grid)."""
        path = Path(path)
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = {"time", "g_per_kwh"} - set(reader.fieldnames or ())
            if missing:
                raise InputError(f"{path}: missing column(s) {sorted(missing)}")
            rows: list[tuple[float, float]] = []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append((parse_time_of_day_s(row["time"]), float(row["g_per_kwh"])))
                except (TypeError, ValueError) as err:
                    raise InputError(f"{path}:{line}: {err}") from err
        try:
            return cls.from_rows(rows)
        except ValueError as err:
            raise InputError(f"{path}: {err}") from err

    def _index(self, time_of_day_s: float) -> int:
        # -1 means "before the first row": the previous day's last row still holds.
        return bisect.bisect_right(self.times_s, time_of_day_s) - 1

    def intensity_g_per_kwh(self, t_s: float) -> float:
        """Intensity at ``t_s`` seconds since midnight (any day: taken modulo 24 h)."""
        return self.g_per_kwh[self._index(t_s % SECONDS_PER_DAY)]

    def mean_intensity_g_per_kwh(self, start_s: float, end_s: float) -> float:
        """Time-weighted mean intensity over [start_s, end_s] (s since midnight)."""
        if end_s < start_s:
            raise ValueError(f"end_s {end_s} < start_s {start_s}")
        if end_s == start_s:
            return self.intensity_g_per_kwh(start_s)
        weighted = 0.0
        t = start_s
        while t < end_s:
            day_start_s = math.floor(t / SECONDS_PER_DAY) * SECONDS_PER_DAY
            index = self._index(t - day_start_s)
            next_row = index + 1
            boundary_s = self.times_s[next_row] if next_row < len(self.times_s) else SECONDS_PER_DAY
            # nextafter: never stall on a boundary that float rounding puts at t itself
            segment_end_s = min(end_s, max(day_start_s + boundary_s, math.nextafter(t, math.inf)))
            weighted += self.g_per_kwh[index] * (segment_end_s - t)
            t = segment_end_s
        return weighted / (end_s - start_s)

    def carbon_g(self, energy_j: float, start_s: float, duration_s: float) -> float:
        """gCO2eq of ``energy_j`` drawn at constant power from ``start_s`` for ``duration_s``."""
        mean = self.mean_intensity_g_per_kwh(start_s, start_s + max(duration_s, 0.0))
        return _carbon_g(energy_j, mean)

    def to_dict(self) -> dict[str, Any]:
        return {"times_s": list(self.times_s), "g_per_kwh": list(self.g_per_kwh)}


@dataclass(frozen=True)
class PFECConfig:
    """Facility and grid constants that turn device energy into facility energy and carbon."""

    pue: float = DEFAULT_PUE
    carbon_intensity_g_per_kwh: float = DEFAULT_CARBON_INTENSITY_G_PER_KWH
    schedule: CarbonSchedule | None = None  # when set, replaces the constant intensity

    def __post_init__(self) -> None:
        if self.pue < 1.0:
            raise ConfigError(f"pue must be >= 1 (facility ≥ IT energy), got {self.pue}")
        if self.carbon_intensity_g_per_kwh < 0:
            raise ConfigError(
                f"carbon_intensity_g_per_kwh must be >= 0, got {self.carbon_intensity_g_per_kwh}"
            )

    def facility_energy_j(self, it_energy_j: float) -> float:
        """Energy at the facility meter (J): device energy × PUE."""
        return it_energy_j * self.pue

    def intensity_g_per_kwh(self, start_s: float | None = None, duration_s: float = 0.0) -> float:
        """Intensity in effect (gCO2eq/kWh): the schedule's mean over the window, if any."""
        if self.schedule is None or start_s is None:
            return self.carbon_intensity_g_per_kwh
        return self.schedule.mean_intensity_g_per_kwh(start_s, start_s + max(duration_s, 0.0))

    def carbon_g(
        self, it_energy_j: float, start_s: float | None = None, duration_s: float = 0.0
    ) -> float:
        """gCO2eq of ``it_energy_j`` of device energy, PUE included.

        With a schedule, pass the window (``start_s`` in seconds since local midnight,
        ``duration_s``); the energy is taken as drawn at constant power over it. Without a
        window, or without a schedule, the constant intensity applies.
        """
        intensity = self.intensity_g_per_kwh(start_s, duration_s)
        return _carbon_g(self.facility_energy_j(it_energy_j), intensity)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pue": self.pue,
            "carbon_intensity_g_per_kwh": self.carbon_intensity_g_per_kwh,
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
        }
