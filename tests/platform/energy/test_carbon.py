"""PUE, constant and time-varying carbon intensity."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from greenflow.platform.energy import CarbonSchedule, PFECConfig, seconds_since_midnight

H = 3600.0
KWH_J = 3.6e6


def test_defaults_follow_the_paper() -> None:
    config = PFECConfig()
    assert (config.pue, config.carbon_intensity_g_per_kwh) == (1.67, 615.0)
    assert config.facility_energy_j(KWH_J) == pytest.approx(1.67 * KWH_J)
    assert config.carbon_g(KWH_J) == pytest.approx(1.67 * 615.0)
    with pytest.raises(ValueError, match="pue"):
        PFECConfig(pue=0.9)


def test_schedule_from_csv_hh_mm(tmp_path: Path) -> None:
    path = tmp_path / "grid.csv"
    path.write_text("time,g_per_kwh\n18:00,700\n00:00,400\n07:30:30,600\n")
    schedule = CarbonSchedule.from_csv(path)
    assert schedule.times_s == (0.0, 7 * H + 30 * 60 + 30, 18 * H)
    assert schedule.intensity_g_per_kwh(7 * H) == 400.0
    assert schedule.intensity_g_per_kwh(7 * H + 30 * 60 + 30) == 600.0  # boundary: new value
    assert schedule.intensity_g_per_kwh(23 * H) == 700.0
    assert schedule.intensity_g_per_kwh(24 * H + 1) == 400.0  # next day


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("when,g\n00:00,1\n", "missing column"),
        ("time,g_per_kwh\n25:00,1\n", ":2: time '25:00' is out of range"),
        ("time,g_per_kwh\nnoon,1\n", "not HH:MM"),
        ("time,g_per_kwh\n01:00,1\n01:00,2\n", "strictly increasing"),
        ("time,g_per_kwh\n01:00,-5\n", ">= 0"),
        ("time,g_per_kwh\n", ">= 1 row"),
    ],
)
def test_bad_csv_says_what_is_wrong(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "grid.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        CarbonSchedule.from_csv(path)


def test_before_first_row_the_previous_day_holds() -> None:
    schedule = CarbonSchedule.from_rows([(6 * H, 100.0), (18 * H, 500.0)])
    assert schedule.intensity_g_per_kwh(3 * H) == 500.0


def test_integration_across_changes() -> None:
    schedule = CarbonSchedule.from_rows([(0.0, 100.0), (12 * H, 300.0)])
    # 11:00–13:00: one hour at each value
    assert schedule.mean_intensity_g_per_kwh(11 * H, 13 * H) == pytest.approx(200.0)
    assert schedule.carbon_g(KWH_J, start_s=11 * H, duration_s=2 * H) == pytest.approx(200.0)
    # two whole days: the daily mean
    assert schedule.mean_intensity_g_per_kwh(5 * H, 53 * H) == pytest.approx(200.0)
    assert schedule.carbon_g(KWH_J, start_s=13 * H, duration_s=0.0) == pytest.approx(300.0)


def test_integration_across_midnight() -> None:
    schedule = CarbonSchedule.from_rows([(6 * H, 100.0), (18 * H, 500.0)])
    # 23:00 → 07:00 next day: 7 h at 500, then 1 h at 100
    mean = schedule.mean_intensity_g_per_kwh(23 * H, 31 * H)
    assert mean == pytest.approx((7 * 500 + 1 * 100) / 8)


def test_config_uses_schedule_only_for_a_placed_window() -> None:
    schedule = CarbonSchedule.from_rows([(0.0, 100.0), (12 * H, 300.0)])
    config = PFECConfig(pue=1.0, schedule=schedule)
    assert config.carbon_g(KWH_J) == pytest.approx(615.0)  # no window: the constant
    assert config.carbon_g(KWH_J, start_s=11 * H, duration_s=2 * H) == pytest.approx(200.0)
    assert config.to_dict()["schedule"]["g_per_kwh"] == [100.0, 300.0]


def test_seconds_since_midnight() -> None:
    epoch_s = 19_000 * 86_400 + 5 * H + 30  # 05:00:30 UTC
    assert seconds_since_midnight(epoch_s, UTC) == pytest.approx(5 * H + 30)
