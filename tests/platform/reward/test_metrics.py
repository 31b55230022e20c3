"""Field-RCE (Pan et al. 2019) and the reward metrics, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.reward import (
    activity_bucket_edges,
    bucketize,
    field_rce,
    reward_metrics,
)

pytestmark = pytest.mark.usefixtures("no_ray")


def test_field_rce_by_hand() -> None:
    # field a: y = 1, 2, 3 (sum 6), y_hat = 2, 2, 1 (sum 5): |6 - 5| / 6 = 1/6, weight 3/5
    # field b: y = 4, 0 (sum 4),    y_hat = 1, 1 (sum 2):    |4 - 2| / 4 = 1/2, weight 2/5
    y = np.array([1, 2, 3, 4, 0])
    y_hat = np.array([2.0, 2.0, 1.0, 1.0, 1.0])
    z = np.array(["a", "a", "a", "b", "b"])
    result = field_rce(y, y_hat, z)
    assert result.value == pytest.approx(3 / 5 * 1 / 6 + 2 / 5 * 1 / 2)  # = 0.3
    assert (result.values_used, result.values_skipped) == (2, 0)


def test_errors_cancel_within_a_field_value_but_not_across() -> None:
    # Over- and under-prediction inside one value cancel (calibration of the total) ...
    assert field_rce([1, 3], [3, 1], [0, 0]).value == 0.0
    # ... but not across values: each value is off by 100% of its total.
    assert field_rce([1, 3], [2, 0], [0, 1]).value == pytest.approx(0.5 * 1 + 0.5 * 1)


def test_values_without_clicks_are_skipped_and_weights_renormalised() -> None:
    # value 0: y sum 2, y_hat sum 1 -> 1/2 (2 samples); value 1: no clicks -> skipped
    y = np.array([1, 1, 0, 0, 0])
    y_hat = np.array([0.5, 0.5, 0.3, 0.3, 0.3])
    result = field_rce(y, y_hat, np.array([0, 0, 1, 1, 1]))
    assert result.value == pytest.approx(0.5)  # weight 2/2, not 2/5
    assert (result.values_used, result.values_skipped) == (1, 1)
    with pytest.raises(ValueError, match="no field value"):
        field_rce([0, 0], [1, 1], [0, 1])
    with pytest.raises(ValueError, match="one length"):
        field_rce([0, 1], [1], [0, 1])


def test_activity_buckets_are_equal_count_quantiles() -> None:
    activity = np.arange(1, 101)  # 1..100
    edges = activity_bucket_edges(activity, 5)
    assert edges.tolist() == pytest.approx([20.8, 40.6, 60.4, 80.2])
    buckets = bucketize(activity, edges)
    assert np.bincount(buckets).tolist() == [20, 20, 20, 20, 20]
    # unseen values fall into the outer buckets; ties at an edge go to the lower bucket
    assert bucketize(np.array([0, 10_000, 20.8]), edges).tolist() == [0, 4, 0]
    # heavy ties merge edges instead of making empty buckets
    assert len(activity_bucket_edges(np.array([1, 1, 1, 1, 2]), 5)) <= 2


def test_reward_metrics_use_only_observed_pairs() -> None:
    target = np.array([[1.0, 2.0], [0.0, 4.0]])
    pred = np.array([[1.5, 2.0], [9.0, 3.0]])
    mask = np.array([[True, True], [False, True]])  # (1, 0) was not simulated
    m = reward_metrics(pred, target, mask, np.array([0, 1]))
    assert m["pairs"] == 3 and m["requests"] == 2
    assert m["mae"] == pytest.approx((0.5 + 0 + 1) / 3)
    # chain 0: |1 - 1.5| / 1 (1 pair); chain 1: |6 - 5| / 6 (2 pairs)
    assert m["field_rce"]["chain"] == pytest.approx(1 / 3 * 0.5 + 2 / 3 * 1 / 6)
    # activity bucket 0: |3 - 3.5| / 3 (2 pairs); bucket 1: |4 - 3| / 4 (1 pair)
    assert m["field_rce"]["activity"] == pytest.approx(2 / 3 * 0.5 / 3 + 1 / 3 * 0.25)


def test_uplift_correlation_measures_within_request_ranking() -> None:
    target = np.array([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0]])
    mask = np.ones_like(target, dtype=bool)
    buckets = np.array([0, 0])
    # right ranking inside each request, wrong request levels: still perfect uplift
    assert reward_metrics(target[::-1].copy(), target, mask, buckets)["uplift_corr"] == (
        pytest.approx(1.0)
    )
    flat = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    assert reward_metrics(target, flat, mask, buckets)["uplift_corr"] is None


def test_metrics_of_a_set_without_clicks_say_none_instead_of_failing() -> None:
    zeros = np.zeros((2, 3))
    m = reward_metrics(np.ones((2, 3)), zeros, np.ones((2, 3), bool), np.array([0, 1]))
    assert m["field_rce"] == {"chain": None, "activity": None}
    assert m["mae"] == 1.0
