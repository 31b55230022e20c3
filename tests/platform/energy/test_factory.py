"""Backend order: NVML for GPUs, RAPL for CPU/DRAM, else the estimate — and it says so."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import patch

import pynvml
import pytest

from greenflow.platform.energy import (
    EnergySource,
    EstimateMeter,
    make_cpu_meter,
    make_node_meter,
    nvml_is_available,
)

from .test_rapl import write_zone


@pytest.fixture()
def no_nvml() -> Iterator[None]:
    with patch.object(pynvml, "nvmlInit", autospec=True) as init:
        init.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        nvml_is_available.cache_clear()
        yield
        nvml_is_available.cache_clear()


@pytest.fixture()
def one_gpu() -> Iterator[None]:
    names = ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex")
    patches = [patch.object(pynvml, n, autospec=True) for n in names]
    energy = patch.object(pynvml, "nvmlDeviceGetTotalEnergyConsumption", autospec=True)
    mocks = [p.start() for p in patches]
    energy.start().return_value = 0
    mocks[2].return_value = 1
    nvml_is_available.cache_clear()
    yield
    nvml_is_available.cache_clear()
    energy.stop()
    for p in patches:
        p.stop()


def test_all_measured(tmp_path: Path, one_gpu: None) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    write_zone(tmp_path, "intel-rapl:0:0", "dram", 0)
    meter = make_node_meter(powercap_root=tmp_path)
    assert meter.sources == {
        "gpu:0": EnergySource.NVML,
        "cpu:0": EnergySource.RAPL,
        "dram:0": EnergySource.RAPL,
    }


def test_rapl_without_dram_estimates_dram_loudly(
    tmp_path: Path, no_nvml: None, caplog: pytest.LogCaptureFixture
) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    with caplog.at_level(logging.WARNING):
        meter = make_node_meter(powercap_root=tmp_path)
    assert meter.sources == {"cpu:0": EnergySource.RAPL, "dram:0": EnergySource.ESTIMATE}
    assert "dram:0: estimate" in caplog.text


def test_no_counters_falls_back_to_estimate_loudly(
    tmp_path: Path, no_nvml: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        meter = make_cpu_meter(powercap_root=tmp_path / "missing")
    assert isinstance(meter, EstimateMeter)
    assert set(meter.sources.values()) == {EnergySource.ESTIMATE}
    assert "estimate" in caplog.text and "RAPL" in caplog.text
    node = make_node_meter(powercap_root=tmp_path / "missing")
    assert node.devices == ("cpu:0", "dram:0")
