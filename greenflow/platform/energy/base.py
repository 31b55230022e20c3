"""The abstract energy meter and the project's energy exceptions (after ml-energy/zeus).

A meter covers a fixed set of devices (``"gpu:0"``, ``"cpu:0"``, ``"dram:0"``…) and
offers two views of the same data:

- :meth:`EnergyMeter.read_energy_j`: cumulative energy per device since the meter was
  created, in J, monotonic (counter wraparound already undone);
- :meth:`EnergyMeter.sample`: one :class:`Measurement` per device for the window since
  the previous ``sample()`` (the first window starts at creation).

Backends that only see power (NVML without an energy counter, the estimate) integrate it
each time they are read, so they should be read at a steady interval (the node meter does).

Vendor errors (``pynvml.NVMLError``, ``OSError`` from sysfs) never leave a backend: they are
mapped to :class:`BackendUnavailableError` (the backend cannot be used on this machine;
the factory then tries the next one) or :class:`EnergyReadError` (a backend that worked
stopped working).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from greenflow.platform.energy.measurement import EnergySource, Measurement

Clock = Callable[[], float]  # monotonic seconds; injected so tests can fake time


class EnergyError(RuntimeError):
    """Base of the energy package's errors."""


class BackendUnavailableError(EnergyError):
    """A backend cannot be used on this machine (no library, no device, no permission)."""


class EnergyReadError(EnergyError):
    """A backend that probed fine failed on a later read."""


class EnergyMeter(ABC):
    """Cumulative energy of a fixed set of devices."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._window_start_s = clock()
        self._window_start_energy_j: dict[str, float] = {}  # missing = 0 (creation)

    def _start_window(self) -> float:
        """Restart the first window now; backends call it once their zero is read.

        Returns the instant (s) so a power-integrating backend starts from the same one.
        """
        self._window_start_s = self._clock()
        return self._window_start_s

    @property
    @abstractmethod
    def devices(self) -> tuple[str, ...]:
        """Device labels this meter covers, e.g. ``("cpu:0", "dram:0")``."""

    @property
    @abstractmethod
    def sources(self) -> Mapping[str, EnergySource]:
        """Source of each device's figures."""

    @abstractmethod
    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        """Cumulative energy per device (J) up to ``now_s``, the instant of this read.

        One instant per read, taken by the caller, so that backends integrating power
        and the window's ``duration_s`` agree exactly.
        """

    def read_energy_j(self) -> dict[str, float]:
        """Energy per device since the meter was created, in J."""
        return self._read_energy_j(self._clock())

    def sample(self) -> list[Measurement]:
        """One measurement per device for the window since the previous call, in J and s."""
        now_s = self._clock()
        energy_j = self._read_energy_j(now_s)
        duration_s = max(now_s - self._window_start_s, 0.0)
        sources = self.sources
        out = [
            Measurement(
                device=device,
                source=sources[device],
                # Clamp: float noise can make a constant-power delta a hair negative.
                energy_j=max(total_j - self._window_start_energy_j.get(device, 0.0), 0.0),
                duration_s=duration_s,
            )
            for device, total_j in energy_j.items()
        ]
        self._window_start_s = now_s
        self._window_start_energy_j = energy_j
        return out

    def close(self) -> None:  # noqa: B027 - optional hook: sysfs and psutil hold nothing
        """Release vendor handles. Idempotent."""

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SingleSourceMeter(EnergyMeter):
    """A meter whose devices all share one source (every concrete backend)."""

    source: EnergySource

    @property
    def sources(self) -> Mapping[str, EnergySource]:
        return dict.fromkeys(self.devices, self.source)


class CompositeMeter(EnergyMeter):
    """Several meters read as one, e.g. NVML GPUs + RAPL CPU + estimated DRAM.

    Each device keeps the source of the meter that reads it, so a mixed node reports
    ``{"gpu:0": "nvml", "cpu:0": "rapl", "dram:0": "estimate"}`` rather than one label.
    """

    def __init__(self, meters: Sequence[EnergyMeter], clock: Clock = time.monotonic) -> None:
        devices = [d for m in meters for d in m.devices]
        if len(set(devices)) != len(devices):
            # Two meters on one device would count its energy twice.
            raise ValueError(f"meters overlap on devices: {devices}")
        self.meters = tuple(meters)
        super().__init__(clock)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(d for m in self.meters for d in m.devices)

    @property
    def sources(self) -> Mapping[str, EnergySource]:
        return {d: s for m in self.meters for d, s in m.sources.items()}

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        return {d: e for m in self.meters for d, e in m._read_energy_j(now_s).items()}

    def close(self) -> None:
        for meter in self.meters:
            meter.close()
