"""Computation budgets for serving: FLOPs per window from a FLOPs, power or carbon budget.

The allocator enforces a FLOPs budget C_t per window t (DESIGN.md §2). Operators often
think in other units, so a budget may be given as

* ``flops``: FLOPs per second of traffic;
* ``power``: facility watts (PUE included), turned into FLOPs through the measured joules
  per FLOP of ``greenflow pfec calibrate``: C = W · window_s / (PUE · J/FLOP);
* ``carbon``: gCO2eq per hour. The grid's carbon intensity (constant, or a daily
  schedule) turns grams into facility energy, so a dirtier hour gets fewer FLOPs:
  carbon-aware allocation, a goal beyond the paper.

Times are Unix seconds (the window start); a carbon schedule is read at the window's
local time of day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from greenflow.errors import ConfigError, InputError
from greenflow.platform.energy.carbon import PFECConfig, seconds_since_midnight
from greenflow.platform.energy.units import kwh_to_joules

BudgetKind = Literal["flops", "power", "carbon"]
BUDGET_UNITS: dict[str, str] = {"flops": "FLOPs/s", "power": "W", "carbon": "gCO2eq/h"}


@dataclass(frozen=True)
class ComputeBudget:
    """A serving budget in one of three units and the constants that convert it to FLOPs.

    value: FLOPs/s (``flops``), facility W (``power``) or gCO2eq/h (``carbon``).
    joules_per_flop: device J/FLOP; required for ``power`` and ``carbon``.
    """

    kind: BudgetKind
    value: float
    joules_per_flop: float | None = None
    pfec: PFECConfig = field(default_factory=PFECConfig)

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_UNITS:
            raise ConfigError(f"budget kind must be one of {list(BUDGET_UNITS)}, got {self.kind!r}")
        if not self.value > 0:
            raise ConfigError(f"budget must be > 0 {BUDGET_UNITS[self.kind]}, got {self.value}")
        if self.kind != "flops" and not (self.joules_per_flop and self.joules_per_flop > 0):
            raise InputError(
                f"a {self.kind} budget needs the measured joules per FLOP; "
                "run `greenflow pfec calibrate`"
            )

    def flops_per_s(self, at_epoch_s: float | None = None) -> float:
        """FLOPs per second allowed at Unix time ``at_epoch_s`` (None: now-independent part)."""
        if self.kind == "flops":
            return float(self.value)
        assert self.joules_per_flop is not None
        if self.kind == "power":
            facility_w = self.value
        else:
            local_s = None if at_epoch_s is None else seconds_since_midnight(at_epoch_s)
            intensity = self.pfec.intensity_g_per_kwh(local_s)
            if not intensity > 0:
                raise ConfigError("a carbon budget needs a carbon intensity > 0 gCO2eq/kWh")
            facility_w = kwh_to_joules(self.value / intensity) / 3600.0
        return facility_w / (self.pfec.pue * self.joules_per_flop)

    def window_flops(self, start_epoch_s: float, window_s: float) -> float:
        """C_t: the FLOPs of the window [start, start + window_s)."""
        return self.flops_per_s(start_epoch_s) * window_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "unit": BUDGET_UNITS[self.kind],
            "joules_per_flop": self.joules_per_flop,
            "pfec": self.pfec.to_dict(),
        }
