"""Quality metrics of the reward model (DESIGN.md §2, "Metrics"): MAE and Field-RCE.

Field-RCE (Pan et al., "Field-aware Calibration: A Simple and Empirically Strong Method
for Reliable Probabilistic Predictions", 2019) measures calibration per value z of a
field: the relative error of the *summed* prediction in each field value, averaged with
the field value's share of the samples as weight:

    Field-RCE = Σ_z (|D_z| / |D|) · |Σ_{D_z} (y − ŷ)| / Σ_{D_z} y

It is what an allocator needs: the dual price trades summed clicks against summed
FLOPs, so a model whose totals are off for some chains, or for some kind of user,
steers the budget to the wrong requests even when its per-sample error looks fine.

Rule for empty values: a value z with Σ_{D_z} y = 0 (no clicks at all) has no relative
error. It is skipped and the weights are renormalised over the values kept (|D| is then
the number of samples in kept values), so the result is still a weighted mean of
relative errors; the number skipped is returned beside it. Samples here are (request,
chain) pairs, y in clicks, ŷ in estimated clicks.

Activity buckets: "activity" (the user's interactions before the request) is heavy
tailed, so the field is its quantile bucket. Edges are the inner quantiles of the
*training* requests' activity (equal-count buckets, 5 by default; duplicate edges from
ties are merged, so there may be fewer), and every split is bucketed with those edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FieldRCE:
    """Field-RCE of one field (a fraction: 0.1 = totals off by 10% on average)."""

    value: float
    values_used: int  # field values with Σ y > 0
    values_skipped: int  # field values with Σ y = 0 (no relative error defined)


def field_rce(y: np.ndarray, y_hat: np.ndarray, field: np.ndarray) -> FieldRCE:
    """Field-RCE of predictions ``y_hat`` for targets ``y`` grouped by ``field`` (all (n,)).

    ``field`` holds any hashable-as-numpy values (chain index, bucket index). Raises
    ValueError on mismatched shapes, an empty input, or when every value has Σ y = 0.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    y_hat = np.asarray(y_hat, dtype=np.float64).ravel()
    field = np.asarray(field).ravel()
    if not len(y) == len(y_hat) == len(field):
        raise ValueError(
            f"y {len(y)}, y_hat {len(y_hat)} and field {len(field)} must have one length"
        )
    if len(y) == 0:
        raise ValueError("Field-RCE of no samples")
    values, group = np.unique(field, return_inverse=True)
    count = np.bincount(group, minlength=len(values)).astype(np.float64)  # |D_z|
    total = np.bincount(group, weights=y, minlength=len(values))  # Σ y
    error = np.bincount(group, weights=y - y_hat, minlength=len(values))  # Σ (y − ŷ)
    keep = total > 0
    if not keep.any():
        raise ValueError("Field-RCE undefined: no field value has any positive target")
    weight = count[keep] / count[keep].sum()
    value = float(np.sum(weight * np.abs(error[keep]) / total[keep]))
    return FieldRCE(value, int(keep.sum()), int((~keep).sum()))


def _field_rce_or_none(y: np.ndarray, y_hat: np.ndarray, field: np.ndarray) -> FieldRCE | None:
    return field_rce(y, y_hat, field) if len(y) and (y > 0).any() else None


def activity_bucket_edges(activity: np.ndarray, buckets: int = 5) -> np.ndarray:
    """Inner edges (≤ buckets − 1, increasing) of equal-count activity buckets.

    Computed on training requests; ``bucketize`` maps any activity to 0..len(edges).
    """
    if buckets < 1:
        raise ValueError(f"need at least one bucket, got {buckets}")
    activity = np.asarray(activity, dtype=np.float64)
    if len(activity) == 0:
        raise ValueError("activity buckets need at least one training request")
    inner = np.quantile(activity, np.arange(1, buckets) / buckets)
    return np.unique(inner)


def bucketize(activity: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index (n,) int64: bucket b holds edges[b-1] < activity ≤ edges[b]."""
    return np.searchsorted(np.asarray(edges), np.asarray(activity), side="left").astype(np.int64)


def reward_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, activity_bucket: np.ndarray
) -> dict[str, object]:
    """MAE, Field-RCE over chain and activity bucket, and calibration totals.

    ``pred`` and ``target`` (N, J) in clicks, ``mask`` (N, J) the observed (request,
    chain) pairs, ``activity_bucket`` (N,) per request. Also ``uplift_corr``: the
    correlation of Q and R after removing each request's mean over its observed chains,
    i.e. how well the model ranks chains *within* a request, which is the allocator's
    real question (None when rewards are flat within every request: undefined).
    """
    if not pred.shape == target.shape == mask.shape or pred.ndim != 2:
        raise ValueError(
            f"pred {pred.shape}, target {target.shape} and mask {mask.shape} must be one (N, J)"
        )
    if activity_bucket.shape != (pred.shape[0],):
        raise ValueError(f"activity_bucket {activity_bucket.shape} must be ({pred.shape[0]},)")
    rows, cols = np.nonzero(mask)
    y, y_hat = target[rows, cols].astype(np.float64), pred[rows, cols].astype(np.float64)
    # A set without a single click has no relative error: None, not a crash after training.
    chain_rce = _field_rce_or_none(y, y_hat, cols)
    activity_rce = _field_rce_or_none(y, y_hat, activity_bucket[rows])
    # Within-request centring: subtract each request's mean over its observed chains.
    n_obs = np.maximum(mask.sum(1, keepdims=True), 1)
    pred_c = np.where(mask, pred - (pred * mask).sum(1, keepdims=True) / n_obs, 0.0)
    target_c = np.where(mask, target - (target * mask).sum(1, keepdims=True) / n_obs, 0.0)
    a, b = pred_c[rows, cols], target_c[rows, cols]
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return {
        "mae": float(np.mean(np.abs(y - y_hat))),
        "rmse": float(np.sqrt(np.mean((y - y_hat) ** 2))),
        "field_rce": {
            "chain": chain_rce and chain_rce.value,
            "activity": activity_rce and activity_rce.value,
        },
        "field_rce_values_skipped": {
            "chain": chain_rce and chain_rce.values_skipped,
            "activity": activity_rce and activity_rce.values_skipped,
        },
        "uplift_corr": float((a * b).sum() / denom) if denom > 0 else None,
        "mean_pred": float(y_hat.mean()),
        "mean_target": float(y.mean()),
        "pairs": len(y),
        "requests": int(pred.shape[0]),
    }
