from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.allocation.baselines import (
    CRASPolicy,
    DCAFPolicy,
    EqualPolicy,
    GreenFlowPolicy,
    OraclePolicy,
)
from greenflow.platform.chains import ChainSpace, StageSpace, generate_chains, stage_costs
from greenflow.platform.evaluation import (
    budget_grid,
    flops_saving_at_equal_clicks,
    mean_reward_per_chain,
    return_pct,
    sweep,
)
from greenflow.platform.models.flops import ModelFlops

SPACE = ChainSpace(
    (
        StageSpace("recall", ("r",), (20, 40, 80)),
        StageSpace("prerank", ("p",), (10, 20)),
        StageSpace("rank", ("a", "b"), (10,)),
    ),
    exposed_k=10,
)
CHAINS = generate_chains(SPACE)
FLOPS = {
    "r": ModelFlops(10, 1),
    "p": ModelFlops(10, 50),
    "a": ModelFlops(100, 400),
    "b": ModelFlops(300, 500),
}
STAGE = stage_costs(CHAINS, FLOPS, 500)
Q_COST = STAGE.sum(1)


def instance(seed: int = 0, n: int = 300):
    """Heterogeneous users: value grows with cost at user-specific rates."""
    rng = np.random.default_rng(seed)
    slope = rng.gamma(0.7, 1.0, size=(n, 1))
    level = np.log1p(Q_COST / Q_COST.min())[None, :]
    R = rng.poisson(slope * level)
    Q = slope * level + rng.normal(0, 0.05, size=R.shape)
    return Q, R


def test_stage_costs_sum_to_chain_costs() -> None:
    from greenflow.platform.chains import chain_costs

    np.testing.assert_allclose(STAGE.sum(1), chain_costs(CHAINS, FLOPS, 500))


def test_every_policy_respects_the_budget_when_feasible() -> None:
    Q, R = instance()
    n = len(Q)
    policies = {
        "greenflow": GreenFlowPolicy(Q, Q_COST),
        "oracle": OraclePolicy(R, Q_COST),
        "equal": EqualPolicy(R.mean(0), Q_COST, n),
        "dcaf": DCAFPolicy(Q, Q_COST, CHAINS),
        "cras": CRASPolicy(Q, STAGE, CHAINS, "a"),
    }
    for budget in budget_grid(Q_COST, n, 7)[1:]:
        for name, policy in policies.items():
            result = policy.allocate(budget)
            spent = Q_COST[result.choice].sum()
            if result.feasible:
                assert spent <= budget * (1 + 1e-9), name


def test_oracle_is_the_ceiling_and_greenflow_beats_equal() -> None:
    Q, R = instance(1)
    n = len(Q)
    budgets = budget_grid(Q_COST, n, 9)
    oracle = sweep(OraclePolicy(R, Q_COST), R, Q_COST, budgets)
    green = sweep(GreenFlowPolicy(Q, Q_COST), R, Q_COST, budgets)
    equal = sweep(EqualPolicy(R.mean(0), Q_COST, n), R, Q_COST, budgets)
    for o, g, e in zip(oracle.clicks, green.clicks, equal.clicks, strict=True):
        assert o >= g - 1e-9 and o >= e - 1e-9
    # in the middle of the range per-request allocation wins clearly
    assert sum(green.clicks[2:7]) > sum(equal.clicks[2:7])
    assert all(p <= 100.0 + 1e-9 for p in return_pct(green, oracle))


def test_equal_picks_the_best_fixed_chain_that_fits() -> None:
    mean = np.arange(len(CHAINS), dtype=float)
    policy = EqualPolicy(mean, Q_COST, 10)
    budget = np.sort(Q_COST)[3] * 10
    choice = policy.allocate(budget).choice
    fitting = np.flatnonzero(budget >= Q_COST * 10)
    assert (choice == fitting[np.argmax(mean[fitting])]).all()
    assert not policy.allocate(Q_COST.min() * 10 * 0.5).feasible


def test_dcaf_varies_only_the_free_stage() -> None:
    Q, _ = instance(2)
    result = DCAFPolicy(Q, Q_COST, CHAINS, free_stage=1).allocate(Q_COST.mean() * len(Q))
    prefixes = {(CHAINS[j].actions[0].k, CHAINS[j].actions[2].model) for j in result.choice}
    assert len(prefixes) == 1


def test_cras_spends_within_a_middle_budget() -> None:
    # regression: k_s's cost is paid by stage s + 1; charging stage s (constant for recall)
    # made CRAS pick the full chain at every budget
    Q, _ = instance(4)
    budget = 0.5 * (Q_COST.min() + Q_COST.max()) * len(Q)
    result = CRASPolicy(Q, STAGE, CHAINS, "a").allocate(budget)
    assert result.feasible
    assert Q_COST[result.choice].sum() <= budget * (1 + 1e-9)
    assert len(set(result.choice.tolist())) > 1  # per-request scales, not one chain


def test_cras_uses_one_rank_model_and_valid_chains() -> None:
    Q, _ = instance(3)
    result = CRASPolicy(Q, STAGE, CHAINS, "b").allocate(Q_COST.mean() * len(Q))
    assert {CHAINS[j].actions[2].model for j in result.choice} == {"b"}
    with pytest.raises(ValueError, match="rank model"):
        CRASPolicy(Q, STAGE, CHAINS, "zzz")


def test_flops_saving_and_mean_reward() -> None:
    from greenflow.platform.evaluation import Curve

    curve = Curve(budgets=[10.0, 20.0, 40.0], clicks=[5.0, 9.0, 10.0])
    assert flops_saving_at_equal_clicks(curve, full_clicks=9.0, full_flops=40.0) == pytest.approx(
        0.5
    )
    assert flops_saving_at_equal_clicks(curve, full_clicks=11.0, full_flops=40.0) is None
    mean = mean_reward_per_chain(
        [np.array([0, 2]), np.array([2])], [np.array([1, 3]), np.array([5])], 3
    )
    np.testing.assert_allclose(mean, [1.0, 0.0, 4.0])


def test_chain_curve_is_mean_clicks_by_cost_with_its_pareto_front() -> None:
    from greenflow.platform.evaluation import chain_curve

    R = np.array([[1, 0, 2, 2], [0, 1, 2, 0]], dtype=float)  # 2 requests x 4 chains
    q = np.array([3.0, 1.0, 5.0, 4.0])
    rows = chain_curve(["a", "b", "c", "d"], q, R)
    assert [r["chain"] for r in rows] == ["b", "a", "d", "c"]  # cheapest first
    assert [r["clicks"] for r in rows] == [0.5, 0.5, 1.0, 2.0]
    assert [r["pareto"] for r in rows] == [True, False, True, True]  # "a" adds no clicks


def test_allocated_stages_come_from_the_chain_space() -> None:
    # three stages: DCAF frees k_2 (what rank scores), CRAS allocates k_1 and k_2
    Q, _ = instance(5)
    assert DCAFPolicy(Q, Q_COST, CHAINS).free_stage == 1
    assert CRASPolicy(Q, STAGE, CHAINS, "a").stages == (0, 1)
    # four stages: DCAF frees k_3 (what the last stage scores), CRAS k_1, k_2 and k_3
    four = generate_chains(ChainSpace((*SPACE.stages[:2], StageSpace("rank", ("x",), (10, 20)),
                                       StageSpace("rerank", ("a",), (10,))), exposed_k=10))  # fmt: skip
    flops = {**FLOPS, "x": ModelFlops(50, 100)}
    stage = stage_costs(four, flops, 500)
    Q4 = np.random.default_rng(0).random((20, len(four))) + np.log1p(stage.sum(1))
    dcaf = DCAFPolicy(Q4, stage.sum(1), four)
    assert dcaf.free_stage == 2
    for group in dcaf.groups:  # every action held but k_3
        held = {tuple((a.model, None if s == 2 else a.k) for s, a in enumerate(four[j].actions))
                for j in group}  # fmt: skip
        assert len(held) == 1
    cras = CRASPolicy(Q4, stage, four, "a")
    assert cras.stages == (0, 1, 2)
    choice = cras.allocate(0.5 * stage.sum(1).max() * len(Q4)).choice
    assert all(0 <= j < len(four) for j in choice)
