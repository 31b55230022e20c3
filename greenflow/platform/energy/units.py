"""Energy, power and carbon units, after codecarbon's ``core/units.py``.

Internally everything is SI: joules, watts, seconds, grams of CO2-equivalent. Vendor
counters arrive in other units (NVML mJ and mW, RAPL µJ) and grid carbon intensity is
quoted per kWh; the conversions live here, once, so that no module multiplies by a bare
1000 or 3.6e6.
"""

from __future__ import annotations

from dataclasses import dataclass

J_PER_KWH = 3.6e6  # 1 kWh = 1000 W × 3600 s
J_PER_MJ = 1e-3  # one millijoule, in joules
J_PER_UJ = 1e-6  # one microjoule, in joules
W_PER_MW = 1e-3  # one milliwatt, in watts
BYTES_PER_GIB = 1024**3


def joules_to_kwh(energy_j: float) -> float:
    """Energy in J → kWh."""
    return energy_j / J_PER_KWH


def kwh_to_joules(energy_kwh: float) -> float:
    """Energy in kWh → J."""
    return energy_kwh * J_PER_KWH


def millijoules_to_joules(energy_mj: float) -> float:
    """Energy in mJ (NVML's total-energy counter) → J."""
    return energy_mj * J_PER_MJ


def microjoules_to_joules(energy_uj: float) -> float:
    """Energy in µJ (RAPL's ``energy_uj``) → J."""
    return energy_uj * J_PER_UJ


def milliwatts_to_watts(power_mw: float) -> float:
    """Power in mW (NVML's power usage) → W."""
    return power_mw * W_PER_MW


def carbon_g(energy_j: float, intensity_g_per_kwh: float) -> float:
    """Emissions in gCO2eq of ``energy_j`` joules drawn at ``intensity_g_per_kwh``."""
    return joules_to_kwh(energy_j) * intensity_g_per_kwh


@dataclass(frozen=True, order=True)
class Energy:
    """An amount of energy. Build it with ``Energy(joules=…)`` or ``Energy.from_kwh(…)``."""

    joules: float

    @classmethod
    def from_kwh(cls, energy_kwh: float) -> Energy:
        return cls(kwh_to_joules(energy_kwh))

    @property
    def kwh(self) -> float:
        return joules_to_kwh(self.joules)

    def __add__(self, other: Energy) -> Energy:
        if not isinstance(other, Energy):
            return NotImplemented
        return Energy(self.joules + other.joules)

    def __sub__(self, other: Energy) -> Energy:
        if not isinstance(other, Energy):
            return NotImplemented
        return Energy(self.joules - other.joules)

    def __mul__(self, factor: float) -> Energy:
        # Scaling by a dimensionless factor (PUE, a CPU-time share) keeps the unit.
        return Energy(self.joules * factor)

    __rmul__ = __mul__

    def over(self, duration_s: float) -> Power:
        """Mean power of this energy spread over ``duration_s`` seconds."""
        if duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        return Power(self.joules / duration_s)

    def carbon_g(self, intensity_g_per_kwh: float) -> float:
        """Emissions in gCO2eq at a grid intensity in gCO2eq/kWh."""
        return carbon_g(self.joules, intensity_g_per_kwh)


@dataclass(frozen=True, order=True)
class Power:
    """A power draw. ``Power(watts=…)``."""

    watts: float

    def for_duration(self, duration_s: float) -> Energy:
        """Energy drawn at this power for ``duration_s`` seconds."""
        return Energy(self.watts * duration_s)
