"""NVML backend with pynvml mocked by autospec: counter, power fallback, error mapping."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from types import SimpleNamespace
from unittest.mock import patch

import pynvml
import pytest

from greenflow.platform.energy import (
    BackendUnavailableError,
    EnergyReadError,
    EnergySource,
    GpuEnergyMode,
    NvmlGpuMeter,
    nvml_is_available,
)

from .conftest import FakeClock

_FUNCTIONS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetPowerUsage",
)


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # __new__ picks the subclass, e.g. NVMLError_NotSupported


@pytest.fixture()
def nvml() -> Iterator[SimpleNamespace]:
    """pynvml's functions replaced by autospec mocks: 2 GPUs, handles "h0" and "h1"."""
    with ExitStack() as stack:
        mocks = {
            name: stack.enter_context(patch.object(pynvml, name, autospec=True))
            for name in _FUNCTIONS
        }
        ns = SimpleNamespace(**mocks)
        ns.nvmlDeviceGetCount.return_value = 2
        ns.nvmlDeviceGetHandleByIndex.side_effect = lambda index: f"h{index}"
        nvml_is_available.cache_clear()
        yield ns
        nvml_is_available.cache_clear()


def _per_handle(values: dict[str, list[object]]):
    """side_effect returning each handle's next value (or raising it, if an exception)."""
    iters = {h: iter(v) for h, v in values.items()}

    def effect(handle: str) -> object:
        value = next(iters[handle])
        if isinstance(value, BaseException):
            raise value
        return value

    return effect


def test_energy_counter_deltas(nvml: SimpleNamespace, clock: FakeClock) -> None:
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = _per_handle(
        {"h0": [1_000_000, 1_250_000, 1_300_000], "h1": [5_000, 5_000, 6_000]}
    )
    meter = NvmlGpuMeter(clock=clock)
    assert meter.modes == {
        "gpu:0": GpuEnergyMode.ENERGY_COUNTER,
        "gpu:1": GpuEnergyMode.ENERGY_COUNTER,
    }
    clock.advance(10.0)
    first = {m.device: m for m in meter.sample()}
    assert first["gpu:0"].energy_j == pytest.approx(250.0)  # 250 000 mJ
    assert first["gpu:0"].power_w == pytest.approx(25.0)
    assert first["gpu:0"].source is EnergySource.NVML
    assert first["gpu:1"].energy_j == 0.0
    clock.advance(1.0)
    second = {m.device: m for m in meter.sample()}
    assert second["gpu:0"].energy_j == pytest.approx(50.0)
    assert second["gpu:1"].energy_j == pytest.approx(1.0)
    nvml.nvmlDeviceGetPowerUsage.assert_not_called()  # the counter is preferred
    meter.close()
    meter.close()
    nvml.nvmlShutdown.assert_called_once_with()


def test_power_sampling_when_no_counter(
    nvml: SimpleNamespace, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    nvml.nvmlDeviceGetCount.return_value = 1
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
    nvml.nvmlDeviceGetPowerUsage.side_effect = [100_000, 200_000, 200_000]  # mW
    with caplog.at_level(logging.WARNING):
        meter = NvmlGpuMeter(clock=clock)
    assert meter.modes == {"gpu:0": GpuEnergyMode.POWER_SAMPLING}
    assert "integrating sampled power" in caplog.text
    clock.advance(2.0)
    (m,) = meter.sample()
    assert m.energy_j == pytest.approx(300.0)  # trapezoid: (100 W + 200 W) / 2 × 2 s
    assert m.source is EnergySource.NVML
    clock.advance(3.0)
    (m,) = meter.sample()
    assert m.energy_j == pytest.approx(600.0)


def test_mixed_gpus_and_gpu_without_readings_is_left_out(
    nvml: SimpleNamespace, clock: FakeClock
) -> None:
    nvml.nvmlDeviceGetCount.return_value = 3
    not_supported = _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = _per_handle(
        {"h0": [0, 1000], "h1": [not_supported], "h2": [not_supported]}
    )
    nvml.nvmlDeviceGetPowerUsage.side_effect = _per_handle(
        {"h1": [50_000, 50_000], "h2": [not_supported]}
    )
    meter = NvmlGpuMeter(clock=clock)
    assert meter.devices == ("gpu:0", "gpu:1")
    clock.advance(1.0)
    assert meter.read_energy_j() == pytest.approx({"gpu:0": 1.0, "gpu:1": 50.0})


def test_no_library_maps_to_backend_unavailable(nvml: SimpleNamespace) -> None:
    nvml.nvmlInit.side_effect = _err(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(BackendUnavailableError, match="NVML") as info:
        NvmlGpuMeter()
    assert isinstance(info.value.__cause__, pynvml.NVMLError_LibraryNotFound)
    assert nvml_is_available() is False


def test_no_usable_gpu_is_unavailable_and_shuts_nvml_down(nvml: SimpleNamespace) -> None:
    nvml.nvmlDeviceGetCount.return_value = 1
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
    nvml.nvmlDeviceGetPowerUsage.side_effect = _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
    with pytest.raises(BackendUnavailableError, match="no GPU with energy"):
        NvmlGpuMeter()
    nvml.nvmlShutdown.assert_called_once_with()


def test_failed_read_maps_to_energy_read_error(nvml: SimpleNamespace, clock: FakeClock) -> None:
    nvml.nvmlDeviceGetCount.return_value = 1
    nvml.nvmlDeviceGetTotalEnergyConsumption.side_effect = [0, _err(pynvml.NVML_ERROR_GPU_IS_LOST)]
    meter = NvmlGpuMeter(clock=clock)
    with pytest.raises(EnergyReadError, match="gpu:0"):
        meter.read_energy_j()


def test_nvml_is_available_is_cached(nvml: SimpleNamespace) -> None:
    assert nvml_is_available() is True
    assert nvml_is_available() is True
    nvml.nvmlInit.assert_called_once_with()
    nvml.nvmlShutdown.assert_called_once_with()


def test_autospec_rejects_wrong_calls(nvml: SimpleNamespace) -> None:
    # Guard on the guard: the mocks keep pynvml's signatures.
    with pytest.raises(TypeError):
        pynvml.nvmlDeviceGetTotalEnergyConsumption()  # type: ignore[call-arg]
