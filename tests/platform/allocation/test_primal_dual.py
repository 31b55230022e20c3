from __future__ import annotations

import math

import numpy as np
import pytest

from greenflow.platform.allocation import DualPriceController, SpendGuard, solve_exact

J = 8
Q_FLOPS = np.random.default_rng(0).permutation(np.geomspace(1e6, 1e8, J))


def rewards(n: int, seed: int) -> np.ndarray:
    """Clicks that grow concavely with cost at request-specific rates."""
    rng = np.random.default_rng(seed)
    return rng.gamma(0.7, 1.0, (n, 1)) * np.log1p(Q_FLOPS / 1e6) + rng.normal(0, 0.1, (n, J))


def test_spend_guard_switches_to_the_cheapest_chain_after_the_limit() -> None:
    q = np.array([4.0, 1.0])
    Q = np.tile([5.0, 1.0], (5, 1))  # everyone prefers the dear chain at λ = 0
    guard = SpendGuard(budget_flops=10.0, tolerance=0.1)  # limit 11 FLOPs
    np.testing.assert_array_equal(guard.serve(Q[:2], q, 0.0), [0, 0])
    np.testing.assert_array_equal(guard.serve(Q[2:], q, 0.0), [0, 1, 1])  # 12 > 11 after 3
    assert guard.spend_flops == 14.0 and guard.overspend_flops == 4.0
    assert guard.requests == 5 and guard.guard_requests == 2


def test_controller_update_rules() -> None:
    Q = rewards(400, 6)
    budget = 0.2 * 400 * Q_FLOPS.max()
    lam_star = solve_exact(Q, Q_FLOPS, budget).dual_price
    exact = DualPriceController(method="exact", smoothing=0.25, initial_price=0.0)
    assert exact.update(Q, Q_FLOPS, budget) == pytest.approx(0.75 * lam_star)
    # One gradient step from λ = 0: spend exceeds the budget, so λ rises by η × excess.
    spend = float(Q_FLOPS[Q.argmax(axis=1)].sum())
    grad = DualPriceController(step_size=1e-8)
    assert grad.update(Q, Q_FLOPS, budget) == pytest.approx(1e-8 * (spend - budget) / budget)
    assert grad.n_updates_ == 1
    # Projection: a large budget drives λ to 0, never below.
    assert DualPriceController(step_size=1.0, initial_price=1e-9).update(Q, Q_FLOPS, 1e30) == 0
    # An empty window carries no information.
    kept = DualPriceController(step_size=1.0, initial_price=3e-9)
    assert kept.update(np.empty((0, J)), Q_FLOPS, budget) == 3e-9
    # Many steps with η from fit() reach λ* on the same samples.
    fitted = DualPriceController(n_steps=200).fit(Q, Q_FLOPS, budget)
    fitted.dual_price_ = 0.0
    assert fitted.update(Q, Q_FLOPS, budget) == pytest.approx(lam_star, rel=0.05)


def test_controller_rejects_bad_parameters() -> None:
    Q = rewards(5, 0)
    with pytest.raises(ValueError, match="fit"):
        DualPriceController().update(Q, Q_FLOPS, 1e9)
    with pytest.raises(ValueError, match="smoothing"):
        DualPriceController(smoothing=1.0).update(Q, Q_FLOPS, 1e9)
    with pytest.raises(ValueError, match="method"):
        DualPriceController(method="newton").update(Q, Q_FLOPS, 1e9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget"):
        DualPriceController(step_size=1.0).update(Q, Q_FLOPS, 0.0)
    assert math.isclose(DualPriceController(initial_price=1e-9).price(), 1e-9)
