from __future__ import annotations

import math

import pytest

from greenflow.platform.allocation.adherence import budget_adherence


def test_mu_and_nu_by_hand() -> None:
    # budgets 10 each; spends 5 (half), 10 (exact), 12 (+20%), 10.05 (+0.5%: within slack)
    a = budget_adherence([5.0, 10.0, 12.0, 10.05], [10.0] * 4)
    assert a.windows == 4
    assert a.utilisation_pct == pytest.approx(100 * (0.5 + 1 + 1 + 1) / 4)
    assert a.over_utilisation_pct == pytest.approx(100 * (0 + 0 + 0.2 + 0.005) / 4)
    assert a.over_budget_windows_pct == pytest.approx(25.0)  # only the +20% window


def test_windows_without_traffic_or_budget_do_not_count() -> None:
    a = budget_adherence([0.0, 8.0, 3.0], [10.0, 10.0, 0.0], requests=[0, 4, 2])
    assert a.windows == 1 and a.utilisation_pct == pytest.approx(80.0)
    assert a.over_utilisation_pct == 0.0


def test_extremes_and_empty() -> None:
    never = budget_adherence([0.0, 0.0], [5.0, 5.0])
    assert never.utilisation_pct == 0.0 and never.over_utilisation_pct == 0.0
    double = budget_adherence([10.0, 20.0], [5.0, 10.0])
    assert (double.utilisation_pct, double.over_utilisation_pct) == (100.0, 100.0)
    assert double.over_budget_windows_pct == 100.0
    empty = budget_adherence([], [])
    assert empty.windows == 0 and math.isnan(empty.utilisation_pct)
    assert empty.to_json()["utilisation_pct"] is None
    with pytest.raises(ValueError, match="shape"):
        budget_adherence([1.0], [1.0, 2.0])
