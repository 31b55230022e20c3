"""PFEC results: build the ``"pfec"`` block of a run's JSON, and print the PFEC table.

A ``"pfec"`` block (in ``offline_eval.json``, ``loadtest.json``, …) is either one record
or a mapping ``name → record`` (e.g. one per method). A record::

    {"performance": {"clicks": 812.0}, "flops": 3.1e12, "it_energy_j": 950.0,
     "energy_j": 1586.5, "carbon_g": 271.0, "pue": 1.67,
     "carbon_intensity_g_per_kwh": 615.0, "duration_s": 60.0,
     "sources": {"cpu:0": "rapl", "dram:0": "estimate"},
     "energy_by_device_j": {"cpu:0": 900.0, "dram:0": 50.0}}

``energy_j`` is facility energy (PUE included, DESIGN.md §2's EC); ``it_energy_j`` what the
devices drew. ``greenflow pfec report`` reads a run directory's JSON files and hands them
to :func:`collect_pfec_records` and :func:`format_pfec_table`; both are pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from greenflow.errors import InputError
from greenflow.platform.energy.carbon import PFECConfig
from greenflow.platform.energy.measurement import EnergySource, Measurement
from greenflow.platform.energy.units import joules_to_kwh

_REQUIRED = ("flops", "energy_j", "carbon_g", "pue", "carbon_intensity_g_per_kwh", "sources")


@dataclass(frozen=True)
class PFECRecord:
    """Performance, FLOPs, Energy, Carbon of one run (or one method of a run)."""

    name: str
    performance: Mapping[str, float]
    flops: float
    it_energy_j: float  # what the devices drew
    energy_j: float  # facility energy: it_energy_j × pue
    carbon_g: float
    pue: float
    carbon_intensity_g_per_kwh: float  # the intensity applied (mean, with a schedule)
    sources: Mapping[str, str]  # device → "nvml" | "rapl" | "estimate"
    duration_s: float = 0.0
    energy_by_device_j: Mapping[str, float] = field(default_factory=dict)

    @property
    def energy_kwh(self) -> float:
        return joules_to_kwh(self.energy_j)

    @property
    def it_joules_per_flop(self) -> float:
        """Device energy per FLOP (J); NaN when no FLOPs were counted."""
        return self.it_energy_j / self.flops if self.flops > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "performance": dict(self.performance),
            "flops": self.flops,
            "it_energy_j": self.it_energy_j,
            "energy_j": self.energy_j,
            "energy_kwh": self.energy_kwh,
            "carbon_g": self.carbon_g,
            "pue": self.pue,
            "carbon_intensity_g_per_kwh": self.carbon_intensity_g_per_kwh,
            "duration_s": self.duration_s,
            "sources": dict(self.sources),
            "energy_by_device_j": dict(self.energy_by_device_j),
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> PFECRecord:
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise InputError(f"PFEC record {name!r} lacks key(s) {missing}")
        pue = float(data["pue"])
        energy_j = float(data["energy_j"])
        sources = {str(d): str(s) for d, s in data["sources"].items()}
        unknown = {s for s in sources.values()} - {s.value for s in EnergySource}
        if unknown:
            raise InputError(f"PFEC record {name!r} has unknown source(s) {sorted(unknown)}")
        return cls(
            name=name,
            performance={k: float(v) for k, v in data.get("performance", {}).items()},
            flops=float(data["flops"]),
            it_energy_j=float(data.get("it_energy_j", energy_j / pue)),
            energy_j=energy_j,
            carbon_g=float(data["carbon_g"]),
            pue=pue,
            carbon_intensity_g_per_kwh=float(data["carbon_intensity_g_per_kwh"]),
            sources=sources,
            duration_s=float(data.get("duration_s", 0.0)),
            energy_by_device_j={k: float(v) for k, v in data.get("energy_by_device_j", {}).items()},
        )


def pfec_record(
    name: str,
    measurements: Iterable[Measurement],
    flops: float,
    config: PFECConfig,
    *,
    performance: Mapping[str, float] | None = None,
    start_s: float | None = None,
) -> PFECRecord:
    """Aggregate a run's measurements (any number of windows per device) into a record.

    ``start_s`` (seconds since local midnight) places the run on the carbon schedule, if
    the config has one; the run's energy is then spread evenly over its duration.
    """
    energy_by_device_j: dict[str, float] = defaultdict(float)
    duration_by_device_s: dict[str, float] = defaultdict(float)
    sources: dict[str, str] = {}
    for m in measurements:
        energy_by_device_j[m.device] += m.energy_j
        duration_by_device_s[m.device] += m.duration_s
        previous = sources.setdefault(m.device, m.source.value)
        if previous != m.source.value:
            # One device, two sources: its total would silently mix a model and a reading.
            raise ValueError(f"{m.device} measured by both {previous} and {m.source.value}")
    it_energy_j = sum(energy_by_device_j.values())
    duration_s = max(duration_by_device_s.values(), default=0.0)
    return PFECRecord(
        name=name,
        performance=dict(performance or {}),
        flops=float(flops),
        it_energy_j=it_energy_j,
        energy_j=config.facility_energy_j(it_energy_j),
        carbon_g=config.carbon_g(it_energy_j, start_s, duration_s),
        pue=config.pue,
        carbon_intensity_g_per_kwh=config.intensity_g_per_kwh(start_s, duration_s),
        sources=sources,
        duration_s=duration_s,
        energy_by_device_j=dict(energy_by_device_j),
    )


ESTIMATE_BASIS = "estimate: FLOPs x measured joules per FLOP (pfec_calibration.json) x PUE"


def estimated_pfec(
    performance: Mapping[str, float],
    flops: float,
    calibration: Mapping[str, Any],
    config: PFECConfig,
) -> dict[str, Any]:
    """A PFEC record (as stored in the JSON outputs) *estimated* from a FLOPs count.

    ``calibration`` is ``pfec_calibration.json``: IT energy = FLOPs × its joules per FLOP,
    and the record carries the calibration's source(s) and says it is an estimate.
    """
    it_energy_j = flops * float(calibration["joules_per_flop"])
    return {
        "performance": dict(performance),
        "flops": flops,
        "it_energy_j": it_energy_j,
        "energy_j": config.facility_energy_j(it_energy_j),
        "carbon_g": config.carbon_g(it_energy_j, None, 0.0),
        "pue": config.pue,
        "carbon_intensity_g_per_kwh": config.carbon_intensity_g_per_kwh,
        "sources": dict(calibration.get("sources", {calibration["device"]: calibration["source"]})),
        "basis": ESTIMATE_BASIS,
    }


def collect_pfec_records(outputs: Mapping[str, Mapping[str, Any]]) -> list[PFECRecord]:
    """Records from a run's parsed JSON outputs, keyed by file name (``"loadtest.json"``).

    Files without a ``"pfec"`` key are skipped (``model_pool.json`` has none). A block of
    several records yields one per entry, named ``"<file stem>/<entry>"``. When a record
    has no ``performance`` and its file has a top-level ``clicks``, that is used.
    """
    records: list[PFECRecord] = []
    for file_name in sorted(outputs):
        data = outputs[file_name]
        block = data.get("pfec")
        if block is None:
            continue
        stem = PurePath(file_name).stem
        if not isinstance(block, Mapping):
            raise InputError(f"{file_name}: 'pfec' must be an object, got {type(block).__name__}")
        if "energy_j" in block:
            entries: list[tuple[str, Mapping[str, Any]]] = [(stem, block)]
        elif block and all(isinstance(v, Mapping) for v in block.values()):
            entries = [(f"{stem}/{key}", value) for key, value in block.items()]
        else:
            raise InputError(f"{file_name}: 'pfec' is neither a record nor name → record")
        for name, entry in entries:
            if "performance" not in entry and isinstance(data.get("clicks"), int | float):
                entry = {**entry, "performance": {"clicks": data["clicks"]}}
            try:
                records.append(PFECRecord.from_dict(name, entry))
            except ValueError as err:
                raise InputError(f"{file_name}: {err}") from err
    return records


def _sources_text(sources: Mapping[str, str]) -> str:
    by_source: dict[str, list[str]] = defaultdict(list)
    for device, source in sorted(sources.items()):
        by_source[source].append(device)
    return " ".join(f"{s}({','.join(ds)})" for s, ds in sorted(by_source.items())) or "-"


def _performance_text(performance: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.6g}" for k, v in performance.items()) or "-"


def format_pfec_table(records: Sequence[PFECRecord]) -> str:
    """The PFEC table as fixed-width text, one row per record, PUE and CI on every row."""
    if not records:
        return "no PFEC results found"
    header = (
        "run",
        "performance",
        "FLOPs",
        "IT energy J",
        "energy J",
        "energy kWh",
        "carbon gCO2eq",
        "IT J/GFLOP",
        "PUE",
        "CI g/kWh",
        "sources",
    )
    rows = [
        (
            r.name,
            _performance_text(r.performance),
            f"{r.flops:.4g}",
            f"{r.it_energy_j:.4g}",
            f"{r.energy_j:.4g}",
            f"{r.energy_kwh:.4g}",
            f"{r.carbon_g:.4g}",
            f"{r.it_joules_per_flop * 1e9:.4g}",
            f"{r.pue:g}",
            f"{r.carbon_intensity_g_per_kwh:.4g}",
            _sources_text(r.sources),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = set(range(2, 10))  # right-align the numbers

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
