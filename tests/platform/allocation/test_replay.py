"""Algorithm 1 replayed with the serving core (``replay_serving``): convergence on a
stationary stream, the guard through a spike, determinism, empty windows, and that it is
exactly the replica + driver pair the app runs."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.allocation import solve_exact
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.replay import (
    EPOCH_S,
    ServingSettings,
    replay_serving,
)

pytestmark = pytest.mark.usefixtures("no_ray")

J = 8
Q_FLOPS = np.random.default_rng(0).permutation(np.geomspace(1e6, 1e8, J))
RATE_PER_S = 200  # requests per 1 s window in steady traffic
BUDGET = ComputeBudget("flops", 0.25 * RATE_PER_S * Q_FLOPS.max())  # binding, FLOPs/s


def rewards(n: int, seed: int) -> np.ndarray:
    """Clicks that grow concavely with cost at request-specific rates."""
    rng = np.random.default_rng(seed)
    return rng.gamma(0.7, 1.0, (n, 1)) * np.log1p(Q_FLOPS / 1e6) + rng.normal(0, 0.1, (n, J))


def stream(rates_per_s: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced arrivals (seconds from the stream's start), second w carrying
    rates_per_s[w] requests."""
    arrival = np.concatenate([w + np.arange(r) / r for w, r in enumerate(rates_per_s)])
    return rewards(arrival.size, seed), arrival


def reference_price(seed: int = 99) -> float:
    """λ* of a large stationary sample at the per-request budget."""
    n = 20_000
    return solve_exact(rewards(n, seed), Q_FLOPS, BUDGET.flops_per_s() * n / RATE_PER_S).dual_price


@pytest.mark.parametrize("method", ["gradient", "exact"])
def test_converges_near_the_optimal_price_on_a_stationary_stream(method: str) -> None:
    lam_star = reference_price()
    Q, arrival = stream([RATE_PER_S] * 40)
    settings = ServingSettings(window_s=1.0, method=method, step_size_rel=0.5, smoothing=0.2)
    result = replay_serving(Q, Q_FLOPS, arrival, BUDGET, settings, fit_price=0.5 * lam_star)
    late = result.windows[20:-1]  # settled, full windows
    prices = np.array([w["dual_price"] for w in late])
    assert abs(prices.mean() / lam_star - 1) < 0.1
    utilisation = np.array([w["spend"] / w["budget"] for w in late])
    assert 0.9 < utilisation.mean() <= 1.0  # the guard's reserve keeps a little back
    assert utilisation.max() <= 1.0 + 1e-9


def test_guard_holds_the_budget_through_a_threefold_spike() -> None:
    lam_star = reference_price()
    rates = [RATE_PER_S] * 10 + [3 * RATE_PER_S] * 3 + [RATE_PER_S] * 7
    Q, arrival = stream(rates, seed=1)
    settings = ServingSettings(window_s=1.0, method="exact", pacing=False)  # the guard alone
    result = replay_serving(Q, Q_FLOPS, arrival, BUDGET, settings, fit_price=lam_star)
    by_t = {round(w["t"] - EPOCH_S, 1): w for w in result.windows}
    spike = [w for t, w in by_t.items() if 10 <= t + 0.7 < 13]  # windows inside the spike
    for w in result.windows:
        # the predictive guard: spend ≤ C + guard_requests × cheapest chain
        assert w["spend"] <= w["budget"] + w["guard_requests"] * Q_FLOPS.min() + 1e-6
    assert spike and all(w["guard_requests"] > 0 for w in spike)  # priced for base traffic
    assert int(result.guarded.sum()) == sum(w["guard_requests"] for w in result.windows)
    assert sum(w["requests"] for w in result.windows) == arrival.size


def test_replay_is_deterministic_and_records_empty_windows() -> None:
    Q, arrival = stream([RATE_PER_S, 0, 0, RATE_PER_S, 2 * RATE_PER_S], seed=2)
    settings = ServingSettings(window_s=1.0, method="gradient", smoothing=0.5)
    clicks = np.round(Q)
    aligned = {"clicks": clicks, "epoch_s": 1_800_000_000.0}  # windows = the stream's seconds
    first = replay_serving(Q, Q_FLOPS, arrival, BUDGET, settings, 1e-9, **aligned)
    second = replay_serving(Q, Q_FLOPS, arrival, BUDGET, settings, 1e-9, **aligned)
    assert first.windows == second.windows
    np.testing.assert_array_equal(first.choice, second.choice)
    assert first.flops == pytest.approx(float(Q_FLOPS[first.choice].sum()))
    assert first.clicks == pytest.approx(float(clicks[np.arange(len(Q)), first.choice].sum()))
    # every window from the first arrival's to the last arrival's, empty ones too
    starts = [w["t"] for w in first.windows]
    assert np.allclose(np.diff(starts), 1.0)
    assert [w["requests"] for w in first.windows] == [RATE_PER_S, 0, 0, RATE_PER_S, 2 * RATE_PER_S]
    assert first.windows[1]["spend"] == first.windows[2]["spend"] == 0
    # an empty window carries no information: λ is kept across it
    assert first.windows[1]["dual_price"] == first.windows[2]["dual_price"]
    assert set(first.windows[0]) >= {"t", "spend", "budget", "dual_price", "requests"}


def test_a_fixed_chain_is_served_through_the_same_guard() -> None:
    Q, arrival = stream([RATE_PER_S] * 5, seed=3)
    dearest = int(np.argmax(Q_FLOPS))
    result = replay_serving(Q, Q_FLOPS, arrival, BUDGET, ServingSettings(window_s=1.0), 0.0,
                            fixed_chain=dearest)  # fmt: skip
    assert result.guarded.any()  # everyone at the dearest chain cannot fit the budget
    assert (result.choice[~result.guarded] == dearest).all()
    assert (Q_FLOPS[result.choice[result.guarded]] < Q_FLOPS[dearest]).all()


def test_bad_streams_are_refused() -> None:
    Q = rewards(3, 0)
    settings = ServingSettings(window_s=1.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        replay_serving(Q, Q_FLOPS, np.array([0.0, 2.0, 1.0]), BUDGET, settings, 0.0)
    with pytest.raises(ValueError, match="no requests"):
        replay_serving(Q[:0], Q_FLOPS, np.array([]), BUDGET, settings, 0.0)
    with pytest.raises(ValueError, match="clicks"):
        replay_serving(Q, Q_FLOPS, np.arange(3.0), BUDGET, settings, 0.0, clicks=Q[:2])
