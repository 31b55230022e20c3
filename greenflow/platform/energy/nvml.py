"""NVIDIA GPU energy through NVML (``nvidia-ml-py``, module ``pynvml``).

Per GPU, in this order:

1. the total-energy counter, ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver
   was loaded; Volta and newer). Deltas of it are exact whatever the read interval;
2. otherwise board power, ``nvmlDeviceGetPowerUsage`` (mW), integrated with the trapezoid
   rule between reads. NVML averages power over about one second, so read at least that
   often; a spike between two reads far apart is smoothed away.

A GPU offering neither is left out with a warning; no GPU left means the backend is
unavailable.

Per-process attribution: NVML reports energy for the whole board only. We attribute a
GPU's energy to the Ray worker that holds it: Ray hands whole GPUs to one worker unless
fractional ``num_gpus`` is asked for. When several processes share a GPU, the split is
*not* measured here; ``nvmlDeviceGetProcessUtilization`` gives per-process SM samples
that could weight it, but it is sampled, often needs privileges, and is absent under MIG,
so we report the board's energy with device ``gpu:<index>`` and leave sharing explicit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import pynvml

from greenflow.platform.energy.base import (
    BackendUnavailableError,
    Clock,
    EnergyError,
    EnergyReadError,
    SingleSourceMeter,
)
from greenflow.platform.energy.measurement import DeviceKind, EnergySource, device_name
from greenflow.platform.energy.units import millijoules_to_joules, milliwatts_to_watts

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that say "this machine has no usable NVML", as opposed to a failed read.
_UNAVAILABLE = (
    pynvml.NVMLError_LibraryNotFound,
    pynvml.NVMLError_DriverNotLoaded,
    pynvml.NVMLError_NoPermission,
    pynvml.NVMLError_FunctionNotFound,
    pynvml.NVMLError_NotSupported,
    pynvml.NVMLError_GpuNotFound,
)


def map_nvml_error(err: pynvml.NVMLError, what: str) -> EnergyError:
    """The project's exception for a vendor error raised while doing ``what``."""
    if isinstance(err, _UNAVAILABLE):
        return BackendUnavailableError(f"NVML: {what}: {err}")
    return EnergyReadError(f"NVML: {what}: {err}")


def nvml_call(fn: Callable[..., T], *args: object, what: str) -> T:
    """Call a pynvml function, mapping ``NVMLError`` to the project's exceptions."""
    try:
        return fn(*args)
    except pynvml.NVMLError as err:
        raise map_nvml_error(err, what) from err


class GpuEnergyMode(StrEnum):
    ENERGY_COUNTER = "energy_counter"  # nvmlDeviceGetTotalEnergyConsumption deltas
    POWER_SAMPLING = "power_sampling"  # nvmlDeviceGetPowerUsage integrated over time


@dataclass
class _GpuState:
    handle: object
    mode: GpuEnergyMode
    start_mj: float = 0.0  # counter mode: the counter at meter creation
    last_power_w: float = 0.0  # sampling mode: power at the previous read
    last_time_s: float = 0.0
    energy_j: float = 0.0  # sampling mode: integrated so far


class NvmlGpuMeter(SingleSourceMeter):
    """Energy of NVIDIA GPUs through NVML. Raises ``BackendUnavailableError`` if none."""

    source = EnergySource.NVML

    def __init__(
        self, gpu_indices: Sequence[int] | None = None, clock: Clock = time.monotonic
    ) -> None:
        super().__init__(clock)
        nvml_call(pynvml.nvmlInit, what="nvmlInit")
        self._open = True
        try:
            self._gpus = self._probe(gpu_indices)
        except BaseException:
            self.close()
            raise
        now_s = self._start_window()
        for gpu in self._gpus.values():
            gpu.last_time_s = now_s

    def _probe(self, gpu_indices: Sequence[int] | None) -> dict[str, _GpuState]:
        count = nvml_call(pynvml.nvmlDeviceGetCount, what="nvmlDeviceGetCount")
        indices = range(count) if gpu_indices is None else gpu_indices
        gpus: dict[str, _GpuState] = {}
        skipped: list[str] = []
        for index in indices:
            device = device_name(DeviceKind.GPU, index)
            handle = nvml_call(pynvml.nvmlDeviceGetHandleByIndex, index, what=f"handle of {device}")
            try:
                start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                gpus[device] = _GpuState(handle, GpuEnergyMode.ENERGY_COUNTER, start_mj=start_mj)
                continue
            except pynvml.NVMLError as err:
                counter_err = err  # pre-Volta or a vGPU: fall back to power
            try:
                power_mw = pynvml.nvmlDeviceGetPowerUsage(handle)
            except pynvml.NVMLError as err:
                skipped.append(f"{device}: no energy counter ({counter_err}), no power ({err})")
                continue
            logger.warning(
                "%s has no NVML energy counter (%s); integrating sampled power instead",
                device,
                counter_err,
            )
            gpus[device] = _GpuState(
                handle,
                GpuEnergyMode.POWER_SAMPLING,
                last_power_w=milliwatts_to_watts(power_mw),
            )
        for reason in skipped:
            logger.warning("NVML: leaving out %s", reason)
        if not gpus:
            raise BackendUnavailableError(
                f"NVML: no GPU with energy or power readings ({count} found; {skipped})"
            )
        return gpus

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self._gpus)

    @property
    def modes(self) -> dict[str, GpuEnergyMode]:
        """How each GPU's energy is obtained."""
        return {device: gpu.mode for device, gpu in self._gpus.items()}

    def _read_energy_j(self, now_s: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for device, gpu in self._gpus.items():
            if gpu.mode is GpuEnergyMode.ENERGY_COUNTER:
                now_mj = nvml_call(
                    pynvml.nvmlDeviceGetTotalEnergyConsumption, gpu.handle, what=device
                )
                out[device] = millijoules_to_joules(now_mj - gpu.start_mj)
            else:
                power_w = milliwatts_to_watts(
                    nvml_call(pynvml.nvmlDeviceGetPowerUsage, gpu.handle, what=device)
                )
                gpu.energy_j += 0.5 * (gpu.last_power_w + power_w) * (now_s - gpu.last_time_s)
                gpu.last_power_w, gpu.last_time_s = power_w, now_s
                out[device] = gpu.energy_j
        return out

    def close(self) -> None:
        if getattr(self, "_open", False):
            self._open = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as err:  # shutting down must not mask the real error
                logger.debug("nvmlShutdown failed: %s", err)
