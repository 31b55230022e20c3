"""Offline evaluation of allocation policies on requests with known rewards (DESIGN.md §2).

Every policy chooses a chain per evaluation request at each budget; it is then charged the
*true* clicks R_ij and costs q_j of what it chose (Eq. 13). Return% compares a policy's
clicks with ORACLE's at the same budget. The FLOPs saving at equal clicks is
1 − C_min / C_full, where C_full is the cost of serving every request the most expensive
("full") chain and C_min the least swept budget at which the policy's clicks reach the
clicks of that full service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from greenflow.platform.allocation.baselines import PolicyResult


class Policy(Protocol):
    def allocate(self, budget_flops: float) -> PolicyResult: ...


@dataclass
class Curve:
    """One policy's realised outcome along a budget sweep."""

    budgets: list[float]  # total FLOPs allowed
    clicks: list[float] = field(default_factory=list)  # Σ_i R_{i, choice_i}
    flops: list[float] = field(default_factory=list)  # Σ_i q_{choice_i}
    dual_price: list[float] = field(default_factory=list)  # clicks per FLOP, NaN if none
    feasible: list[bool] = field(default_factory=list)
    choices: list[np.ndarray] = field(default_factory=list)  # (N,) chain per request, per budget
    # Σ_i E[R_{i, choice_i}] when the click model is known (synthetic), else empty
    expected_clicks: list[float] = field(default_factory=list)


def budget_grid(q: np.ndarray, n_requests: int, points: int) -> np.ndarray:
    """``points`` budgets from everyone-cheapest to everyone-most-expensive (total FLOPs)."""
    if points < 2:
        raise ValueError("a sweep needs at least 2 budgets")
    return np.linspace(q.min() * n_requests, q.max() * n_requests, points)


def sweep(
    policy: Policy,
    R: np.ndarray,
    q: np.ndarray,
    budgets: np.ndarray,
    expected: np.ndarray | None = None,
) -> Curve:
    """Run ``policy`` at every budget and charge it the true rewards and costs (and, with
    ``expected`` (N, J), the expected rewards of its choices)."""
    rows = np.arange(R.shape[0])
    curve = Curve(budgets=[float(b) for b in budgets])
    for budget in budgets:
        result = policy.allocate(float(budget))
        if expected is not None:
            curve.expected_clicks.append(float(expected[rows, result.choice].sum()))
        curve.clicks.append(float(R[rows, result.choice].sum()))
        curve.flops.append(float(q[result.choice].sum()))
        curve.dual_price.append(float(result.dual_price))
        curve.feasible.append(bool(result.feasible))
        curve.choices.append(np.asarray(result.choice))
    return curve


def return_pct(curve: Curve, oracle: Curve) -> list[float]:
    """Clicks as a percentage of ORACLE's clicks at the same budgets."""
    return [
        100.0 * c / o if o > 0 else float("nan")
        for c, o in zip(curve.clicks, oracle.clicks, strict=True)
    ]


def flops_saving_at_equal_clicks(
    curve: Curve, full_clicks: float, full_flops: float
) -> float | None:
    """1 − C_min / C_full; None when the policy never reaches the full chain's clicks."""
    for budget, clicks in zip(curve.budgets, curve.clicks, strict=True):
        if clicks >= full_clicks - 1e-9:
            return 1.0 - budget / full_flops
    return None


def at_budget(curve: Curve, budget: float) -> tuple[float, float]:
    """(clicks, FLOPs spent) at ``budget`` by linear interpolation along the sweep."""
    return (
        float(np.interp(budget, curve.budgets, curve.clicks)),
        float(np.interp(budget, curve.budgets, curve.flops)),
    )


def mean_reward_per_chain(
    chain_idx: list[np.ndarray], rewards: list[np.ndarray], n_chains: int
) -> np.ndarray:
    """Mean true reward of each chain over training rows that kept it (sampled chains ok)."""
    total = np.zeros(n_chains)
    count = np.zeros(n_chains)
    for idx, rew in zip(chain_idx, rewards, strict=True):
        np.add.at(total, idx, rew)
        np.add.at(count, idx, 1)
    return np.divide(total, count, out=np.zeros(n_chains), where=count > 0)


def evaluate_policies(
    policies: Mapping[str, Policy],
    R: np.ndarray,
    q: np.ndarray,
    budgets: np.ndarray,
    expected: np.ndarray | None = None,
) -> dict[str, Curve]:
    """The sweep for every policy, in the order given."""
    return {name: sweep(policy, R, q, budgets, expected) for name, policy in policies.items()}


def chain_curve(
    chain_ids: list[str], q: np.ndarray, R: np.ndarray, expected: np.ndarray | None = None
) -> list[dict[str, object]]:
    """The value of computation: every chain's cost (FLOPs per request) and mean clicks per
    request when everyone gets it, cheapest first; ``pareto`` marks the chains that earn
    more than every cheaper chain (the front an allocator can mix between). With
    ``expected`` (N, J) rows add ``expected_clicks``, and the front is the expected one."""
    clicks = R.mean(axis=0)
    value = expected.mean(axis=0) if expected is not None else clicks
    order = np.lexsort((-value, q))  # cheapest first; equal cost: more value first
    best = -np.inf
    rows: list[dict[str, object]] = []
    for j in order:
        on_front = bool(value[j] > best)
        best = max(best, float(value[j]))
        row: dict[str, object] = {"chain": chain_ids[j], "flops": float(q[j]),
                                  "clicks": float(clicks[j]), "pareto": on_front}  # fmt: skip
        if expected is not None:
            row["expected_clicks"] = float(value[j])
        rows.append(row)
    return rows
