"""The registered offline methods: their names and order (offline_eval.json's), and each
one the baseline class it names."""

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
from greenflow.platform.allocation.offline_policies import (
    OFFLINE_POLICIES,
    PolicyInputs,
    build_offline_policies,
)
from greenflow.platform.chains import ChainSpace, StageSpace, generate_chains, stage_costs
from greenflow.platform.models.flops import ModelFlops

pytestmark = pytest.mark.usefixtures("no_ray")

SPACE = ChainSpace(
    (
        StageSpace("recall", ("r",), (20, 40)),
        StageSpace("prerank", ("p",), (10, 20)),
        StageSpace("rank", ("a", "b"), (10,)),
    ),
    exposed_k=10,
)
CHAINS = generate_chains(SPACE)
FLOPS = {"r": ModelFlops(10, 1), "p": ModelFlops(10, 50), "a": ModelFlops(100, 400),
         "b": ModelFlops(300, 500)}  # fmt: skip


def _inputs(expected: bool) -> PolicyInputs:
    rng = np.random.default_rng(0)
    stage = stage_costs(CHAINS, FLOPS, 500)
    R = rng.integers(0, 3, (20, len(CHAINS))).astype(float)
    # rank model "b" has the better training clicks: CRAS and plain EQUAL use it
    train_mean = np.array([1.0 + (c.actions[-1].model == "b") for c in CHAINS])
    return PolicyInputs(CHAINS, stage.sum(1), stage, R, train_mean, R + 0.1,
                        R * 0.5 if expected else None)  # fmt: skip


def test_methods_in_offline_eval_order() -> None:
    assert OFFLINE_POLICIES.names() == ("greenflow", "equal", "cras", "dcaf", "oracle")
    policies = build_offline_policies(_inputs(expected=False))
    assert list(policies) == ["greenflow", "equal", "equal-a", "equal-b", "cras", "cras-a",
                              "cras-b", "dcaf", "oracle"]  # fmt: skip
    assert "oracle-expected" in build_offline_policies(_inputs(expected=True))


def test_each_name_is_its_baseline() -> None:
    inputs = _inputs(expected=True)
    policies = build_offline_policies(inputs)
    kinds = {"greenflow": GreenFlowPolicy, "equal": EqualPolicy, "equal-a": EqualPolicy,
             "cras": CRASPolicy, "cras-b": CRASPolicy, "dcaf": DCAFPolicy,
             "oracle": OraclePolicy, "oracle-expected": OraclePolicy}  # fmt: skip
    for name, kind in kinds.items():
        assert type(policies[name]) is kind, name
    assert inputs.best_rank_model() == "b"
    budget = float(inputs.q.min() * inputs.n_requests * 2)
    same = CRASPolicy(inputs.Q, inputs.stage_cost, CHAINS, "b").allocate(budget).choice
    np.testing.assert_array_equal(policies["cras"].allocate(budget).choice, same)
    only_a = policies["equal-a"].allocate(float(inputs.q.max() * inputs.n_requests)).choice
    assert all(CHAINS[j].actions[-1].model == "a" for j in only_a)
