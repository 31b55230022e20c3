"""Every contract document of DESIGN.md §5: lossless round trip, the contract's keys, and
a missing required key named in the error."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from greenflow.errors import InputError
from greenflow.platform.documents import (
    METHODS,
    BenchServingDoc,
    ChainCost,
    ChainCurvePoint,
    FieldRce,
    JsonDocument,
    LatencyMs,
    LoadtestDoc,
    MethodCurve,
    ModelEntry,
    ModelPoolDoc,
    OfflineEvalDoc,
    PolicyRepeats,
    RepeatsSummary,
    RewardModelDoc,
    RewardVariant,
    ServingSweep,
    SimulationDoc,
    Window,
)
from tests.platform.documents import samples

pytestmark = pytest.mark.usefixtures("no_ray")

CASES: dict[str, tuple[type[JsonDocument], Callable[[], dict[str, Any]]]] = {
    "model_pool": (ModelPoolDoc, samples.model_pool),
    "simulation": (SimulationDoc, samples.simulation),
    "reward_model": (RewardModelDoc, samples.reward_model),
    "offline_eval": (OfflineEvalDoc, samples.offline_eval),
    "offline_eval-synthetic": (OfflineEvalDoc, lambda: samples.offline_eval(expected=True)),
    "loadtest-one": (LoadtestDoc, lambda: samples.loadtest(several=False)),
    "loadtest-several": (LoadtestDoc, samples.loadtest),
    "loadtest-policy": (LoadtestDoc, lambda: samples.loadtest_policy("greenflow")),
    "bench_serving": (BenchServingDoc, samples.bench_serving),
}

# DESIGN.md §5, "Output files": (path of an object in the document, the keys it must have)
DESIGN_KEYS: dict[str, list[tuple[str, set[str]]]] = {
    "model_pool": [
        ("", {"dataset", "flops_convention", "models", "baselines", "horizon"}),
        (
            "models.0",
            {
                "name",
                "stage",
                "flops_per_item",
                "flops_per_request",
                "params",
                "val_auc",
                "val_hits_at_10",
                "val_ndcg_at_10",
                "weights",
                "sha256",
            },
        ),
        ("baselines.popularity", {"val_hits_at_10", "val_ndcg_at_10"}),
        ("baselines.item_knn", {"val_hits_at_10", "val_ndcg_at_10"}),
    ],
    "simulation": [
        (
            "",
            {
                "requests",
                "chains",
                "rows",
                "wall_s",
                "requests_per_s",
                "simulation_flops",
                "output",
            },
        )
    ],
    "reward_model": [
        ("", {"variants", "overhead_flops_ratio"}),
        ("variants.full", {"val_loss", "mae", "field_rce"}),
        ("variants.full.field_rce", {"chain", "activity"}),
    ],
    "offline_eval": [
        (
            "",
            {
                "budgets",
                "methods",
                "return_pct",
                "flops_saving_at_equal_clicks",
                "pfec",
                "horizon",
                "requests",
                "chain_curve",
            },
        ),
        ("methods.greenflow", {"clicks", "flops"}),
        ("chain_curve.0", {"chain", "flops", "clicks"}),
    ],
    "offline_eval-synthetic": [
        ("methods.oracle-expected", {"clicks", "flops", "expected_clicks"}),
        ("chain_curve.0", {"chain", "flops", "clicks", "expected_clicks"}),
    ],
    "loadtest-several": [
        (
            "",
            {
                "policy",
                "budget_flops_per_s",
                "windows",
                "over_budget_windows_pct",
                "clicks",
                "requests",
                "errors",
                "latency_ms",
                "utilisation_pct",
                "over_utilisation_pct",
                "pfec",
                "policies",
            },
        ),
        ("windows.0", {"t", "spend", "budget", "dual_price", "requests"}),
        ("latency_ms", {"p50", "p99"}),
        ("policies.equal", {"policy", "budget_flops_per_s", "windows", "clicks", "pfec"}),
    ],
    "bench_serving": [
        ("floor", {"p50_ms_c1", "p99_ms_c1", "max_rps"}),
        ("app", {"p50_ms_c1", "p99_ms_c1", "max_rps"}),
    ],
}


def _at(doc: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


@pytest.mark.parametrize("case", CASES)
def test_round_trip_is_lossless_in_keys_values_and_order(case: str) -> None:
    cls, make = CASES[case]
    d = make()
    doc = cls.from_json(copy.deepcopy(d))
    assert doc.to_json() == d
    assert json.dumps(doc.to_json(), indent=2) == json.dumps(d, indent=2)  # the same bytes
    assert cls.from_json(doc.to_json()) == doc


@pytest.mark.parametrize("case", DESIGN_KEYS)
def test_to_json_has_every_key_design_lists(case: str) -> None:
    cls, make = CASES[case]
    out = cls.from_json(make()).to_json()
    for path, keys in DESIGN_KEYS[case]:
        assert keys <= set(_at(out, path)), (path, keys - set(_at(out, path)))


def test_offline_eval_has_every_method_design_names() -> None:
    doc = OfflineEvalDoc.from_json(samples.offline_eval(expected=True))
    assert set(METHODS) | {"oracle-expected"} == set(doc.methods) == set(doc.return_pct)


# one nested row of each kind: its required keys are checked as the top level's
NESTED_ROWS: dict[str, list[tuple[str, type[JsonDocument]]]] = {
    "model_pool": [("models.1", ModelEntry)],
    "simulation": [("chains.0", ChainCost)],
    "reward_model": [("variants.plain", RewardVariant), ("variants.full.field_rce", FieldRce)],
    "offline_eval": [("methods.dcaf", MethodCurve), ("chain_curve.0", ChainCurvePoint)],
    "loadtest-several": [
        ("windows.1", Window),
        ("latency_ms", LatencyMs),
        ("policies.equal", LoadtestDoc),
        ("policies.equal.windows.0", Window),
        ("repeats", RepeatsSummary),
        ("repeats.policies.equal", PolicyRepeats),
    ],
    "bench_serving": [("floor", ServingSweep), ("app", ServingSweep)],
}


def _required_paths(case: str) -> list[str]:
    cls = CASES[case][0]
    paths = list(cls.required_keys())
    for at, row in NESTED_ROWS.get(case, []):
        paths += [f"{at}.{k}" for k in row.required_keys()]
    return paths


@pytest.mark.parametrize("case", CASES)
def test_a_missing_required_key_is_named(case: str) -> None:
    cls, make = CASES[case]
    for path in _required_paths(case):
        d = make()
        *parent, key = path.split(".")
        del _at(d, ".".join(parent))[key]
        with pytest.raises(InputError, match=f"missing required key.* '{key}'") as err:
            cls.from_json(d)
        assert cls.WHERE in str(err.value)  # the file is named too
