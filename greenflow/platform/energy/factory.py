"""Pick the energy backends of this node, in a stated order, and say which ones we got.

Order:
  GPUs:        NVML (energy counter, else sampled power)          — or no GPU meter
  CPU package: RAPL ``energy_uj``                                  — else estimate
  DRAM:        RAPL dram zone (with the package)                   — else estimate

The choice is logged (a WARNING whenever a device falls back to the estimate, with the
reason) and is visible on the returned meter: ``meter.sources`` maps every device to
``nvml``, ``rapl`` or ``estimate``.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import pynvml

from greenflow.platform.energy.base import (
    BackendUnavailableError,
    Clock,
    CompositeMeter,
    EnergyMeter,
)
from greenflow.platform.energy.estimate import EstimateConfig, EstimateMeter
from greenflow.platform.energy.measurement import DeviceKind
from greenflow.platform.energy.nvml import NvmlGpuMeter
from greenflow.platform.energy.rapl import DEFAULT_POWERCAP_ROOT, RaplMeter

logger = logging.getLogger(__name__)


@functools.cache
def nvml_is_available() -> bool:
    """Whether NVML loads and sees at least one GPU. Cached: the answer is per process."""
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        logger.info("NVML not available: %s", err)
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    except pynvml.NVMLError as err:
        logger.info("NVML loaded but cannot count GPUs: %s", err)
        return False
    finally:
        pynvml.nvmlShutdown()


def make_gpu_meter(clock: Clock = time.monotonic) -> NvmlGpuMeter | None:
    """The NVML meter for this node's GPUs, or ``None`` (logged) when there is none."""
    if not nvml_is_available():
        return None
    try:
        meter = NvmlGpuMeter(clock=clock)
    except BackendUnavailableError as err:
        logger.warning("GPU energy not measured: %s", err)
        return None
    logger.info("energy backend for %s: nvml %s", ", ".join(meter.devices), meter.modes)
    return meter


def make_cpu_meter(
    *,
    powercap_root: Path = DEFAULT_POWERCAP_ROOT,
    estimate: EstimateConfig | None = None,
    include_dram: bool = True,
    clock: Clock = time.monotonic,
) -> EnergyMeter:
    """CPU (and DRAM) meter: RAPL where readable, the estimate for whatever is not."""
    try:
        rapl = RaplMeter(powercap_root, include_dram=include_dram, clock=clock)
    except BackendUnavailableError as err:
        meter = EstimateMeter(estimate, include_dram=include_dram, clock=clock)
        logger.warning(
            "energy backend for %s: estimate (TDP %.0f W × utilisation, DRAM %.1f W), because %s",
            ", ".join(meter.devices),
            meter.cpu_tdp_w,
            meter.dram_power_w,
            err,
        )
        return meter
    logger.info("energy backend for %s: rapl", ", ".join(rapl.devices))
    has_dram = any(d.startswith(DeviceKind.DRAM.value) for d in rapl.devices)
    if not include_dram or has_dram:
        return rapl
    dram = EstimateMeter(estimate, include_cpu=False, clock=clock)
    logger.warning(
        "energy backend for dram:0: estimate (%.1f W), because RAPL exposes no dram zone",
        dram.dram_power_w,
    )
    return CompositeMeter([rapl, dram], clock=clock)


def make_node_meter(
    *,
    powercap_root: Path = DEFAULT_POWERCAP_ROOT,
    estimate: EstimateConfig | None = None,
    include_gpus: bool = True,
    clock: Clock = time.monotonic,
) -> CompositeMeter:
    """Every device of this node: GPUs by NVML, then CPU/DRAM by RAPL or the estimate."""
    meters: list[EnergyMeter] = []
    if include_gpus and (gpu := make_gpu_meter(clock)) is not None:
        meters.append(gpu)
    meters.append(make_cpu_meter(powercap_root=powercap_root, estimate=estimate, clock=clock))
    return CompositeMeter(meters, clock=clock)
