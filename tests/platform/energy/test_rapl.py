"""RAPL backend on powercap trees the tests write: layout, wraparound, permission denied."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from greenflow.platform.energy import (
    BackendUnavailableError,
    EnergyReadError,
    EnergySource,
    RaplMeter,
    discover_rapl_zones,
)
from greenflow.platform.energy import rapl as rapl_module

MAX_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def write_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = root / zone
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_energy(root: Path, zone: str, energy_uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{energy_uj}\n")


def deny_read(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` unreadable, as energy_uj is for non-root users since Linux 5.10."""
    path.chmod(0)
    if os.geteuid() == 0:
        # root bypasses file modes, so emulate the kernel's check for this test.
        real_read_int = rapl_module._read_int

        def read_int(p: Path) -> int:
            if stat.S_IMODE(p.stat().st_mode) & 0o444 == 0:
                raise PermissionError(13, "Permission denied", str(p))
            return real_read_int(p)

        monkeypatch.setattr(rapl_module, "_read_int", read_int)


@pytest.fixture()
def server(tmp_path: Path) -> Path:
    """One socket with core/uncore/dram subzones, a psys zone and an MMIO duplicate."""
    write_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    write_zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    write_zone(tmp_path, "intel-rapl:0:1", "uncore", 100_000)
    write_zone(tmp_path, "intel-rapl:0:2", "dram", 2_000_000, max_uj=65_712_999_613)
    write_zone(tmp_path, "intel-rapl:1", "psys", 9_000_000)
    write_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 7_000_000)
    (tmp_path / "intel-rapl").mkdir()  # the control-type directory, no name file
    return tmp_path


def test_counts_package_and_dram_only(server: Path, clock) -> None:
    meter = RaplMeter(server, clock=clock)
    assert meter.devices == ("cpu:0", "dram:0")
    set_energy(server, "intel-rapl:0", 6_000_000)  # +5 J
    set_energy(server, "intel-rapl:0:0", 4_500_000)  # core +4 J: inside the package
    set_energy(server, "intel-rapl:0:1", 600_000)  # uncore +0.5 J: inside the package
    set_energy(server, "intel-rapl:0:2", 3_000_000)  # dram +1 J
    set_energy(server, "intel-rapl:1", 19_000_000)  # psys +10 J: the whole platform
    clock.advance(2.0)
    samples = {m.device: m for m in meter.sample()}
    assert samples["cpu:0"].energy_j == pytest.approx(5.0)
    assert samples["cpu:0"].power_w == pytest.approx(2.5)
    assert samples["dram:0"].energy_j == pytest.approx(1.0)
    assert {m.source for m in samples.values()} == {EnergySource.RAPL}


def test_wraparound_uses_max_energy_range(tmp_path: Path, clock) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 900_000, max_uj=1_000_000)
    meter = RaplMeter(tmp_path, clock=clock)
    set_energy(tmp_path, "intel-rapl:0", 100_000)  # wrapped: 900k → 1M → 0 → 100k
    assert meter.read_energy_j() == pytest.approx({"cpu:0": 0.2})
    set_energy(tmp_path, "intel-rapl:0", 300_000)
    assert meter.read_energy_j() == pytest.approx({"cpu:0": 0.4})


def test_two_sockets(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    write_zone(tmp_path, "intel-rapl:1", "package-1", 0)
    write_zone(tmp_path, "intel-rapl:1:0", "dram", 0)
    zones, problems = discover_rapl_zones(tmp_path)
    assert [z.device for z in zones] == ["cpu:0", "cpu:1", "dram:1"]
    assert problems == []
    assert [z.device for z in discover_rapl_zones(tmp_path, include_dram=False)[0]] == [
        "cpu:0",
        "cpu:1",
    ]


def test_permission_denied_package_makes_backend_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = write_zone(tmp_path, "intel-rapl:0", "package-0", 1_000)
    deny_read(zone / "energy_uj", monkeypatch)
    with pytest.raises(BackendUnavailableError, match="permission denied"):
        RaplMeter(tmp_path)


def test_permission_denied_dram_is_left_out_loudly(
    server: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    deny_read(server / "intel-rapl:0:2" / "energy_uj", monkeypatch)
    meter = RaplMeter(server)
    assert meter.devices == ("cpu:0",)
    assert "dram:0" in caplog.text and "permission denied" in caplog.text


def test_missing_powercap_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        RaplMeter(tmp_path / "nope")


def test_garbage_counter_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("n/a\n")
    zones, problems = discover_rapl_zones(tmp_path)
    assert zones == [] and "unreadable" in problems[0]


def test_counter_vanishing_after_probe_is_a_read_error(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    meter = RaplMeter(tmp_path)
    (tmp_path / "intel-rapl:0" / "energy_uj").unlink()
    with pytest.raises(EnergyReadError, match="cpu:0"):
        meter.read_energy_j()
