"""The summary of repeated online comparisons, by hand."""

from __future__ import annotations

import pytest

from greenflow.platform.documents import LatencyMs, LoadtestDoc
from greenflow.platform.online_repeats import format_repeats, repeats_summary

pytestmark = pytest.mark.usefixtures("no_ray")


def doc(clicks: float, p99: float = 50.0) -> LoadtestDoc:
    return LoadtestDoc(policy="x", budget_flops_per_s=1e9, windows=(), clicks=clicks,
                       over_budget_windows_pct=0.0, requests=10, errors=0,
                       latency_ms=LatencyMs(p50=20.0, p99=p99), utilisation_pct=90.0,
                       over_utilisation_pct=0.0, pfec={},
                       extra={"flops_per_request": 1e7})  # fmt: skip


def test_clicks_per_repeat_their_range_and_the_paired_wins() -> None:
    runs = [{"greenflow": doc(230), "equal": doc(214)},
            {"greenflow": doc(226), "equal": doc(228)},
            {"greenflow": doc(240), "equal": doc(220, p99=80.0)}]  # fmt: skip
    summary = repeats_summary(runs)
    s = summary.to_json()  # the "repeats" block of loadtest.json
    assert s["repeats"] == 3
    gf = s["policies"]["greenflow"]
    assert [r["clicks"] for r in gf["runs"]] == [230, 226, 240]
    assert gf["clicks_mean"] == pytest.approx(232.0)
    assert (gf["clicks_min"], gf["clicks_max"]) == (226, 240)
    assert s["policies"]["equal"]["runs"][2]["latency_p99_ms"] == 80.0
    assert s["greenflow_minus_equal_clicks"] == [16, -2, 20]
    assert s["greenflow_wins"] == 2  # the second repeat was lost
    text = format_repeats(summary)
    assert "230, 226, 240" in text and "greenflow won 2 of 3" in text


def test_other_policies_have_no_paired_wins_and_mismatched_repeats_are_refused() -> None:
    s = repeats_summary([{"fixed:a": doc(10)}, {"fixed:a": doc(12)}]).to_json()
    assert "greenflow_wins" not in s and s["policies"]["fixed:a"]["clicks_mean"] == 11
    with pytest.raises(ValueError, match="same policies"):
        repeats_summary([{"greenflow": doc(1), "equal": doc(1)}, {"greenflow": doc(1)}])
    with pytest.raises(ValueError, match="no repeats"):
        repeats_summary([])
