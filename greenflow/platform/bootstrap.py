"""Bootstrap confidence intervals over users for ratios of click totals.

An evaluation split of ~200 users is small: a headline such as "GreenFlow earns 1.08×
EQUAL's clicks" needs an interval. Requests of one user are correlated, so users (not
requests) are resampled with replacement, and the ratio of the two sums is recomputed on
each resample: the percentile interval of those ratios is the 95% interval (Efron &
Tibshirani, 1993). Both sums use the *same* resampled users (a paired bootstrap), so the
interval reflects the difference between the two methods, not each one's own spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPLICATES = 2000  # percentile intervals at 95% are stable to ~0.002 at this count


@dataclass(frozen=True)
class RatioCI:
    """Σ numerator / Σ denominator with a 95% bootstrap interval over users."""

    ratio: float
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"ratio": round(self.ratio, 4), "ci95": [round(self.low, 4), round(self.high, 4)]}


def user_totals(values: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct users, per-user sums of ``values`` (R,) or (R, C)) for requests of ``users``."""
    ids, index = np.unique(np.asarray(users), return_inverse=True)
    values = np.asarray(values, dtype=np.float64)
    totals = np.zeros((len(ids), *values.shape[1:]))
    np.add.at(totals, index, values)
    return ids, totals


def ratio_ci(
    numerator: np.ndarray,
    denominator: np.ndarray,
    users: np.ndarray,
    seed: int = 0,
    replicates: int = REPLICATES,
) -> RatioCI:
    """Σ numerator / Σ denominator over requests, with users resampled (module docstring)."""
    if not len(numerator) == len(denominator) == len(users):
        raise ValueError("numerator, denominator and users must have one entry per request")
    _, totals = user_totals(np.stack([numerator, denominator], axis=1), users)  # (U, 2)
    den = totals[:, 1].sum()
    ratio = float(totals[:, 0].sum() / den) if den else float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(totals), size=(replicates, len(totals)))  # (B, U)
    sums = totals[picks].sum(axis=1)  # (B, 2)
    valid = sums[:, 1] > 0
    ratios = sums[valid, 0] / sums[valid, 1]
    if not len(ratios):
        return RatioCI(ratio, float("nan"), float("nan"))
    low, high = np.percentile(ratios, [2.5, 97.5])
    return RatioCI(ratio, float(low), float(high))
