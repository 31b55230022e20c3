"""``offline_eval.json`` (``greenflow evaluate``, DESIGN.md §5): every allocation method's
clicks against the FLOPs budget, the chain curve, the headline ratios and PFEC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from greenflow.platform.documents.base import JsonDocument, floats, named, rows

METHODS = ("greenflow", "equal", "equal-din", "equal-dien", "cras", "cras-din", "cras-dien",
           "dcaf", "oracle")  # fmt: skip
"""The methods every offline evaluation has (synthetic runs add ``oracle-expected``)."""


@dataclass(frozen=True)
class MethodCurve(JsonDocument):
    """One method swept over ``budgets`` (``methods[name]``): one value per budget."""

    clicks: tuple[float, ...]  # true clicks of the evaluation requests
    flops: tuple[float, ...]  # FLOPs the method spent (≤ the budget when feasible)
    dual_price: tuple[float, ...] | None = None  # λ* (clicks per FLOP)
    feasible: tuple[bool, ...] | None = None
    expected_clicks: tuple[float, ...] | None = None  # E[clicks]: synthetic runs only

    WHERE = "offline_eval.json: methods[]"
    OPTIONAL = frozenset({"dual_price", "feasible", "expected_clicks"})
    DECODE = {k: floats for k in ("clicks", "flops", "dual_price", "feasible", "expected_clicks")}


@dataclass(frozen=True)
class ChainCurvePoint(JsonDocument):
    """One chain's mean clicks per request against its cost (a row of ``chain_curve``)."""

    chain: str  # the chain's id
    flops: float  # FLOPs per request
    clicks: float  # mean true clicks per evaluation request
    pareto: bool | None = None  # on the Pareto front of (flops, clicks)
    expected_clicks: float | None = None  # mean E[clicks]: synthetic runs only

    WHERE = "offline_eval.json: chain_curve[]"
    OPTIONAL = frozenset({"pareto", "expected_clicks"})


@dataclass(frozen=True)
class OfflineEvalDoc(JsonDocument):
    """``offline_eval.json``: the budget sweep. Budgets are total FLOPs over the
    ``requests`` evaluation requests; clicks count the ``horizon``'s ground truth."""

    budgets: tuple[float, ...]  # FLOPs
    methods: dict[str, MethodCurve]
    return_pct: dict[str, list[float]]  # clicks as % of the oracle's, per budget
    flops_saving_at_equal_clicks: dict[str, float | None]  # fraction; None: never equal
    pfec: dict[str, Any]  # method -> PFEC record (estimated joules, grams) at a budget
    horizon: str
    requests: int
    chain_curve: tuple[ChainCurvePoint, ...]
    full_chain: dict[str, Any] | None = None  # {"id", "clicks", "flops"} of the costliest
    headline: dict[str, Any] | None = None  # ratios with 95% bootstrap intervals

    WHERE = "offline_eval.json"
    ORDER = ("budgets", "methods", "return_pct", "flops_saving_at_equal_clicks",
             "full_chain", "requests", "horizon", "chain_curve", "headline",
             "table_budget_flops", "table2_action_subsets", "table3_rank_models",
             "table4_reward_variants", "pfec", "pfec_budget_flops", "joules_per_flop",
             "config")  # fmt: skip
    OPTIONAL = frozenset({"full_chain", "headline"})
    DECODE = {"budgets": floats, "methods": named(MethodCurve),
              "chain_curve": rows(ChainCurvePoint)}  # fmt: skip

    @property
    def expected(self) -> bool:
        """Whether clicks are also known in expectation (a synthetic run)."""
        return self.methods["greenflow"].expected_clicks is not None


__all__ = ["METHODS", "ChainCurvePoint", "MethodCurve", "OfflineEvalDoc"]
