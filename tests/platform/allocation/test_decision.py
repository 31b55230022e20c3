from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from greenflow.platform.allocation import chain_flops, choose, chosen_rewards


def brute_choose(Q: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
    """The tie rule spelled out: highest Q − λq, then lowest cost, then lowest index."""
    qq = np.broadcast_to(q, Q.shape)
    out = []
    for i in range(Q.shape[0]):
        keys = [(-(Q[i, j] - lam * qq[i, j]), qq[i, j], j) for j in range(Q.shape[1])]
        out.append(min(keys)[2])
    return np.array(out)


def brute_cheapest(Q: np.ndarray, q: np.ndarray) -> np.ndarray:
    qq = np.broadcast_to(q, Q.shape)
    return np.array(
        [min((qq[i, j], -Q[i, j], j) for j in range(Q.shape[1]))[2] for i in range(Q.shape[0])]
    )


@st.composite
def small_instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    n = draw(st.integers(1, 6))
    J = draw(st.integers(1, 5))
    # Small integers make exact ties in Q, in cost and in Q − λq common.
    Q = draw(hnp.arrays(np.float64, (n, J), elements=st.integers(0, 4).map(float)))
    per_row = draw(st.booleans())
    q_shape = (n, J) if per_row else (J,)
    q = draw(hnp.arrays(np.float64, q_shape, elements=st.integers(0, 4).map(float)))
    lam = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0, math.inf]))
    return Q, q, lam


@settings(max_examples=120, deadline=None)
@given(small_instances())
def test_choose_follows_the_tie_rule(inst: tuple[np.ndarray, np.ndarray, float]) -> None:
    Q, q, lam = inst
    expected = brute_cheapest(Q, q) if math.isinf(lam) else brute_choose(Q, q, lam)
    np.testing.assert_array_equal(choose(Q, q, lam), expected)


def test_tie_at_a_breakpoint_goes_to_the_cheaper_chain() -> None:
    Q = np.array([[1.0, 0.0, 2.0]])
    q = np.array([2.0, 1.0, 3.0])  # chain 1 cheapest; slopes 1 and 1
    assert choose(Q, q, 1.0)[0] == 1
    assert choose(Q, q, 0.999)[0] == 2
    assert choose(Q, q, 0.0)[0] == 2


def test_equal_costs_break_by_higher_reward_then_lower_index() -> None:
    q = np.array([5.0, 1.0, 1.0, 1.0])
    Q = np.array([[0.0, 1.0, 3.0, 3.0], [0.0, 2.0, 1.0, 2.0]])
    np.testing.assert_array_equal(choose(Q, q, math.inf), [2, 1])
    np.testing.assert_array_equal(choose(Q, q, 10.0), [2, 1])


def test_zero_price_takes_the_best_reward_cheapest_first() -> None:
    Q = np.array([[1.0, 1.0, 0.5]])
    q = np.array([3.0, 2.0, 1.0])
    assert choose(Q, q, 0.0)[0] == 1


def test_blocked_pass_matches_the_plain_argmax_on_many_rows() -> None:
    rng = np.random.default_rng(0)
    n, J = 5_000, 32  # several blocks of 2,048 rows
    q = rng.permutation(np.geomspace(1e6, 1e9, J))
    Q = rng.random((n, 1)) * np.log1p(q / 1e6) + 0.1 * rng.random((n, J))
    for lam in (0.0, 1e-9, 1e-8, math.inf):
        # Continuous data: no ties, so the plain argmax is the reference.
        plain = np.full(n, np.argmin(q)) if math.isinf(lam) else np.argmax(Q - lam * q, axis=1)
        np.testing.assert_array_equal(choose(Q, q, lam), plain)


def test_chain_order_is_irrelevant() -> None:
    rng = np.random.default_rng(1)
    Q = rng.integers(0, 3, (50, 6)).astype(float)
    q = rng.integers(1, 4, 6).astype(float)
    perm = rng.permutation(6)
    for lam in (0.0, 0.5, 1.0, math.inf):
        base = choose(Q, q, lam)
        permuted = choose(Q[:, perm], q[perm], lam)
        # Permuting breaks index ties differently, but never the reward or cost chosen.
        np.testing.assert_array_equal(chosen_rewards(Q, base), chosen_rewards(Q[:, perm], permuted))
        np.testing.assert_array_equal(chain_flops(q, base), chain_flops(q[perm], permuted))


def test_per_request_costs() -> None:
    Q = np.array([[1.0, 2.0], [1.0, 2.0]])
    q = np.array([[1.0, 2.0], [1.0, 10.0]])
    np.testing.assert_array_equal(choose(Q, q, 0.5), [1, 0])
    np.testing.assert_array_equal(chain_flops(q, [1, 0]), [2.0, 1.0])


def test_empty_and_invalid_inputs() -> None:
    assert choose(np.empty((0, 3)), np.ones(3), 1.0).shape == (0,)
    with pytest.raises(ValueError, match="dual price"):
        choose(np.ones((2, 3)), np.ones(3), -1.0)
    with pytest.raises(ValueError, match="costs q"):
        choose(np.ones((2, 3)), np.ones(4), 1.0)
    with pytest.raises(ValueError, match="costs q"):
        choose(np.ones((2, 3)), -np.ones(3), 1.0)
    with pytest.raises(ValueError, match="finite"):
        choose(np.full((2, 3), np.nan), np.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"\(N, J\)"):
        choose(np.ones(3), np.ones(3), 1.0)
