from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.bootstrap import ratio_ci, user_totals


def test_user_totals_sum_requests_per_user() -> None:
    ids, totals = user_totals(np.array([1.0, 2.0, 3.0, 4.0]), np.array([7, 5, 7, 5]))
    assert ids.tolist() == [5, 7] and totals.tolist() == [6.0, 4.0]


def test_ratio_is_the_ratio_of_sums_and_inside_its_interval() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(200), 5)
    base = rng.poisson(1.0, len(users)).astype(float)
    better = base + rng.binomial(1, 0.3, len(users))
    ci = ratio_ci(better, base, users)
    assert ci.ratio == pytest.approx(better.sum() / base.sum())
    assert ci.low < ci.ratio < ci.high
    assert ci.low > 1.0  # a 30%-of-requests +1 gain is clearly real with 1,000 requests
    assert ratio_ci(better, base, users) == ci  # seeded


def test_interval_is_wider_when_requests_of_a_user_move_together() -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 100)
    clustered_users = np.repeat(np.arange(20), 5)  # 20 users of 5 identical requests
    numerator = np.repeat(2.0 + noise[:20], 5)
    denominator = np.full(100, 2.0)
    wide = ratio_ci(numerator, denominator, clustered_users)
    narrow = ratio_ci(numerator, denominator, np.arange(100))  # as if independent
    assert wide.high - wide.low > 1.5 * (narrow.high - narrow.low)


def test_identical_methods_give_a_degenerate_interval_at_one() -> None:
    values = np.arange(1.0, 11.0)
    ci = ratio_ci(values, values, np.arange(10))
    assert (ci.ratio, ci.low, ci.high) == (1.0, 1.0, 1.0)
    assert ci.to_json() == {"ratio": 1.0, "ci95": [1.0, 1.0]}
