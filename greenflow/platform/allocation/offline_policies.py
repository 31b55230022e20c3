"""The methods of the offline evaluation, registered by name (DESIGN.md §2, the names of
``offline_eval.json``).

``OFFLINE_POLICIES`` maps a method family to its constructor: a function of
``PolicyInputs`` (what a method may look at, aligned on the evaluation requests) that
returns its named policies, one or several (``equal`` also gives ``equal-<rank model>``
for every rank model of the chains). A new baseline is a class with
``allocate(budget_flops) -> PolicyResult`` (``baselines.py`` or its own module) plus one
``register`` line here. numpy only, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from greenflow.platform.allocation.baselines import (
    CRASPolicy,
    DCAFPolicy,
    EqualPolicy,
    GreenFlowPolicy,
    OraclePolicy,
)
from greenflow.platform.chains import Chain
from greenflow.platform.evaluation import Policy
from greenflow.platform.registry import Registry


@dataclass(frozen=True)
class PolicyInputs:
    """What the offline methods may look at, aligned on the N evaluation requests."""

    chains: Sequence[Chain]
    q: np.ndarray  # (J,) FLOPs per request of each chain
    stage_cost: np.ndarray  # (J, S) FLOPs per request of each stage
    R: np.ndarray  # (N, J) true clicks (ORACLE's only)
    train_mean: np.ndarray  # (J,) mean true clicks on the reward (training) split
    Q: np.ndarray  # (N, J) the full reward model's estimates
    expected: np.ndarray | None = None  # (N, J) E[R] from a known click model (synthetic)

    @property
    def n_requests(self) -> int:
        return int(self.R.shape[0])

    def rank_models(self) -> list[str]:
        """The models of the last stage, sorted."""
        return sorted({c.actions[-1].model for c in self.chains})

    def best_rank_model(self) -> str:
        """The rank model with the best training clicks (CRAS's and plain EQUAL's one)."""
        return max(
            self.rank_models(), key=lambda m: self.train_mean[rank_model_mask(self.chains, m)].max()
        )


def rank_model_mask(chains: Sequence[Chain], model: str) -> np.ndarray:
    """(J,) bool: the chains whose last stage runs ``model``."""
    return np.array([c.actions[-1].model == model for c in chains])


PolicyFamily = Callable[[PolicyInputs], dict[str, Policy]]


def _greenflow(i: PolicyInputs) -> dict[str, Policy]:
    return {"greenflow": GreenFlowPolicy(i.Q, i.q)}


def _equal(i: PolicyInputs) -> dict[str, Policy]:
    policies: dict[str, Policy] = {"equal": EqualPolicy(i.train_mean, i.q, i.n_requests)}
    for m in i.rank_models():
        mask = rank_model_mask(i.chains, m)
        policies[f"equal-{m}"] = EqualPolicy(i.train_mean, i.q, i.n_requests, mask)
    return policies


def _cras(i: PolicyInputs) -> dict[str, Policy]:
    policies: dict[str, Policy] = {
        "cras": CRASPolicy(i.Q, i.stage_cost, i.chains, i.best_rank_model())
    }
    for m in i.rank_models():
        policies[f"cras-{m}"] = CRASPolicy(i.Q, i.stage_cost, i.chains, m)
    return policies


def _dcaf(i: PolicyInputs) -> dict[str, Policy]:
    # DCAF frees the scale the last stage scores (``feeding_stage``: k_2 on three stages)
    return {"dcaf": DCAFPolicy(i.Q, i.q, i.chains)}


def _oracle(i: PolicyInputs) -> dict[str, Policy]:
    policies: dict[str, Policy] = {"oracle": OraclePolicy(i.R, i.q)}
    if i.expected is not None:  # the true ceiling: the exact solve on E[R]
        policies["oracle-expected"] = OraclePolicy(i.expected, i.q)
    return policies


OFFLINE_POLICIES: Registry[PolicyFamily] = Registry("policy")
OFFLINE_POLICIES.register("greenflow", _greenflow)
OFFLINE_POLICIES.register("equal", _equal)
OFFLINE_POLICIES.register("cras", _cras)
OFFLINE_POLICIES.register("dcaf", _dcaf)
OFFLINE_POLICIES.register("oracle", _oracle)


def build_offline_policies(inputs: PolicyInputs) -> dict[str, Policy]:
    """Every registered method's policies, named as in offline_eval.json, in order."""
    policies: dict[str, Policy] = {}
    for _, family in OFFLINE_POLICIES.items():
        policies.update(family(inputs))
    return policies


__all__ = [
    "OFFLINE_POLICIES",
    "PolicyFamily",
    "PolicyInputs",
    "build_offline_policies",
    "rank_model_mask",
]
