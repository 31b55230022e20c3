"""PFEC energy accounting: meters (NVML, RAPL, estimate), carbon, J/FLOP, the PFEC table.

No Ray here (DESIGN.md §4); the per-node Ray meter is ``greenflow.simulators.node_meter``.
Nothing touches hardware at import time: NVML is initialised and sysfs read only when a
meter is built (see ``factory``).
"""

from greenflow.platform.energy.base import (
    BackendUnavailableError,
    Clock,
    CompositeMeter,
    EnergyError,
    EnergyMeter,
    EnergyReadError,
    SingleSourceMeter,
)
from greenflow.platform.energy.calibration import JoulesPerFlop, calibrate_joules_per_flop
from greenflow.platform.energy.carbon import (
    DEFAULT_CARBON_INTENSITY_G_PER_KWH,
    DEFAULT_PUE,
    CarbonSchedule,
    PFECConfig,
    seconds_since_midnight,
)
from greenflow.platform.energy.estimate import (
    DEFAULT_CPU_TDP_W_PER_CORE,
    DEFAULT_DRAM_W_PER_GIB,
    EstimateConfig,
    EstimateMeter,
    ProcessCpuShare,
)
from greenflow.platform.energy.factory import (
    make_cpu_meter,
    make_gpu_meter,
    make_node_meter,
    nvml_is_available,
)
from greenflow.platform.energy.measurement import (
    DeviceKind,
    EnergySource,
    Measurement,
    attribute_cpu_energy_j,
    device_name,
    total_energy_j,
)
from greenflow.platform.energy.nvml import GpuEnergyMode, NvmlGpuMeter
from greenflow.platform.energy.rapl import DEFAULT_POWERCAP_ROOT, RaplMeter, discover_rapl_zones
from greenflow.platform.energy.report import (
    PFECRecord,
    collect_pfec_records,
    format_pfec_table,
    pfec_record,
)
from greenflow.platform.energy.units import (
    Energy,
    Power,
    carbon_g,
    joules_to_kwh,
    kwh_to_joules,
)

__all__ = [
    "DEFAULT_CARBON_INTENSITY_G_PER_KWH",
    "DEFAULT_CPU_TDP_W_PER_CORE",
    "DEFAULT_DRAM_W_PER_GIB",
    "DEFAULT_POWERCAP_ROOT",
    "DEFAULT_PUE",
    "BackendUnavailableError",
    "CarbonSchedule",
    "Clock",
    "CompositeMeter",
    "DeviceKind",
    "Energy",
    "EnergyError",
    "EnergyMeter",
    "EnergyReadError",
    "EnergySource",
    "EstimateConfig",
    "EstimateMeter",
    "GpuEnergyMode",
    "JoulesPerFlop",
    "Measurement",
    "NvmlGpuMeter",
    "PFECConfig",
    "PFECRecord",
    "Power",
    "ProcessCpuShare",
    "RaplMeter",
    "SingleSourceMeter",
    "attribute_cpu_energy_j",
    "calibrate_joules_per_flop",
    "carbon_g",
    "collect_pfec_records",
    "device_name",
    "discover_rapl_zones",
    "format_pfec_table",
    "joules_to_kwh",
    "kwh_to_joules",
    "make_cpu_meter",
    "make_gpu_meter",
    "make_node_meter",
    "nvml_is_available",
    "pfec_record",
    "seconds_since_midnight",
    "total_energy_j",
]
