"""`greenflow evaluate` end to end on a tiny run: real reward models, real calibration."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from greenflow.config import config_to_dict
from greenflow.platform.documents import OfflineEvalDoc
from greenflow.platform.energy import PFECConfig
from greenflow.platform.energy.pool_calibration import CalibrationConfig
from greenflow.platform.energy.report import collect_pfec_records
from greenflow.platform.offline_evaluation import (
    EvaluateConfig,
    action_subsets,
    format_headline,
    format_summary,
    run_evaluation,
)
from greenflow.platform.reward import RewardModelConfig
from greenflow.platform.reward.run import train_reward_variants
from greenflow.platform.reward.training import RewardTrainConfig
from greenflow.simulators.pfec_jobs import run_calibration

METHODS = {"greenflow", "equal", "equal-din", "equal-dien", "cras", "cras-din", "cras-dien",
           "dcaf", "oracle"}  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(reward_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(reward_run.run_dir.local_path, run_dir)
    config = dataclasses.replace(reward_run, run_dir=run_dir)
    train_reward_variants(config.run_dir, ["full", "plain"], RewardModelConfig(),
                          RewardTrainConfig(epochs=2, batch_size=16), log=lambda _: None)  # fmt: skip
    run_calibration(config.run_dir, CalibrationConfig(seconds=0.2, idle_seconds=0.0), PFECConfig(),
                    config.chains, log=lambda _: None)  # fmt: skip
    return config, run_evaluation(
        config.run_dir,
        EvaluateConfig(budgets=10),
        log=lambda _: None,
        config_record=config_to_dict(config),
    )


def test_offline_eval_json_has_the_contract_keys(evaluated) -> None:
    config, typed = evaluated
    assert isinstance(typed, OfflineEvalDoc)
    doc = typed.to_json()  # the file's keys, as the contract names them
    saved = json.loads((config.run_dir.local_path / "offline_eval.json").read_text())
    assert saved["budgets"] == doc["budgets"]
    budgets = np.array(doc["budgets"])
    full = doc["full_chain"]["flops"]
    # the 10 even points plus 5%-steps of the headline range [15%, 60%] of the full cost
    assert set(np.round(np.linspace(budgets[0], full, 10), 3)) <= set(np.round(budgets, 3))
    assert np.all(np.diff(budgets) > 0)
    in_headline = (budgets >= 0.15 * full - 1) & (budgets <= 0.6 * full + 1)
    assert in_headline.sum() >= 5
    points = len(budgets)
    assert set(doc["methods"]) == METHODS
    for name, m in doc["methods"].items():
        assert len(m["clicks"]) == len(m["flops"]) == points, name
        assert len(doc["return_pct"][name]) == points
        assert name in doc["flops_saving_at_equal_clicks"]
    assert set(doc["table4_reward_variants"]) == {"full", "plain"}
    assert {"all actions", "k1 only", "k2 only"} <= set(doc["table2_action_subsets"])
    for row in doc["table2_action_subsets"].values():
        assert row["feasible"] or row["flops"] > doc["table_budget_flops"]
    assert (config.run_dir.local_path / "offline_clicks.png").stat().st_size > 10_000
    assert (config.run_dir.local_path / "offline_dual_price.png").is_file()
    assert "greenflow" in format_summary(typed)
    assert saved["horizon"] == "all"  # the tiny synthetic run keeps the default horizon


def test_chain_curve_and_headline_with_bootstrap_intervals(evaluated) -> None:
    config, typed = evaluated
    doc = typed.to_json()
    curve = doc["chain_curve"]
    assert len(curve) > 1
    flops = [r["flops"] for r in curve]
    assert flops == sorted(flops) and curve[0]["pareto"]
    assert {"chain", "flops", "clicks", "pareto"} <= set(curve[0])
    front = [r["clicks"] for r in curve if r["pareto"]]
    assert front == sorted(front)  # the Pareto front only rises with cost
    head = doc["headline"]
    value = head["full_over_cheapest"]
    assert value["ci95"][0] <= value["ratio"] <= value["ci95"][1]
    full_row = max(curve, key=lambda r: r["flops"])
    cheap_row = curve[0]
    assert value["ratio"] == pytest.approx(full_row["clicks"] / cheap_row["clicks"], rel=1e-3)
    assert head["greenflow_vs_baselines"]
    for row in head["greenflow_vs_baselines"]:
        assert 0.15 - 1e-6 <= row["budget_fraction"] <= 0.6 + 1e-6
        assert row["best_baseline"] in {"equal", "cras", "dcaf"}
        assert row["vs_best"] == row["vs"][row["best_baseline"]]
        assert row["vs"]["oracle"]["ratio"] <= 1.0 + 1e-9  # nothing beats the true-reward solve
    assert (config.run_dir.local_path / "chain_curve.png").stat().st_size > 10_000
    assert "value of computation" in format_headline(typed)


def test_policies_stay_in_budget_and_under_the_oracle(evaluated) -> None:
    typed = evaluated[1]
    doc = typed.to_json()
    oracle = doc["methods"]["oracle"]["clicks"]
    for name, m in doc["methods"].items():
        for budget, flops, clicks, ok, o in zip(doc["budgets"], m["flops"], m["clicks"],
                                                m["feasible"], oracle, strict=True):  # fmt: skip
            if ok:
                assert flops <= budget * (1 + 1e-9), name
            assert clicks <= o + 1e-9 or not ok, name
    # at the top of the sweep everyone may take the full chain
    assert doc["methods"]["oracle"]["clicks"][-1] >= doc["full_chain"]["clicks"]


def test_pfec_rows_are_estimates_from_measured_joules_per_flop(evaluated) -> None:
    typed = evaluated[1]
    doc = typed.to_json()
    records = collect_pfec_records({"offline_eval.json": doc})
    assert {r.name for r in records} == {f"offline_eval/{m}" for m in METHODS}
    budget = doc["pfec_budget_flops"]
    for r in records:
        m = doc["methods"][r.name.split("/")[1]]
        assert r.flops == pytest.approx(np.interp(budget, doc["budgets"], m["flops"]))
        assert r.performance["clicks"] == pytest.approx(
            np.interp(budget, doc["budgets"], m["clicks"])
        )
        assert r.energy_j == pytest.approx(r.flops * doc["joules_per_flop"] * r.pue)
        assert r.carbon_g > 0 and set(r.sources.values()) <= {"estimate", "rapl", "nvml"}


@pytest.fixture(scope="module")
def evaluated_known(evaluated, tmp_path_factory):
    """``evaluated``'s run with an ``expected_reward`` column, as a synthetic run's samples
    carry: E[R] that rises with a chain's cost, differently per request."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    config, _ = evaluated
    run_dir = tmp_path_factory.mktemp("known") / "run"
    shutil.copytree(config.run_dir.local_path, run_dir)
    flops = {c["id"]: c["flops"] for c in json.loads((run_dir / "simulation.json").read_text())
             ["chains"]}  # fmt: skip
    cost = np.array(list(flops.values()))
    cost = cost / cost.max()
    rng = np.random.default_rng(0)
    for path in (run_dir / "samples").glob("*.parquet"):
        table = pq.read_table(path)
        expected = [
            (rng.random() * np.sqrt(cost[np.asarray(idx)]) + 0.1 * rng.random(len(idx))).tolist()
            for idx in table["chain_idx"].to_pylist()
        ]  # fmt: skip
        column = table.schema.get_field_index("expected_reward")  # null in a logged run
        assert table[column].null_count == len(table)
        table = table.set_column(
            column, "expected_reward", pa.array(expected, pa.list_(pa.float32()))
        )
        pq.write_table(table, path)
    known = dataclasses.replace(config, run_dir=run_dir)
    return known, run_evaluation(known.run_dir, EvaluateConfig(budgets=10), log=lambda _: None)


def test_known_click_model_adds_expected_clicks_and_the_true_ceiling(evaluated_known) -> None:
    typed = evaluated_known[1]
    doc = typed.to_json()
    assert set(doc["methods"]) == METHODS | {"oracle-expected"}
    ceiling = doc["methods"]["oracle-expected"]["expected_clicks"]
    for name, m in doc["methods"].items():
        assert len(m["expected_clicks"]) == len(doc["budgets"]), name
        for budget, flops, got, best in zip(doc["budgets"], m["flops"], m["expected_clicks"],
                                            ceiling, strict=True):  # fmt: skip
            if flops <= budget * (1 + 1e-9):  # within budget: nothing beats the exact solve
                assert got <= best + 1e-6, (name, budget)
    assert all("expected_clicks" in row for row in doc["chain_curve"])
    front = [r["expected_clicks"] for r in doc["chain_curve"] if r["pareto"]]
    assert front == sorted(front)
    head = doc["headline"]["expected"]
    assert head["greenflow_vs"] and head["full_over_cheapest"]["ratio"] > 1
    for row in head["greenflow_vs"]:
        assert 0.2 - 1e-6 <= row["budget_fraction"] <= 0.9 + 1e-6
        assert row["vs"]["oracle-expected"]["ratio"] <= 1 + 1e-9
    assert "oracle-expected" in format_headline(typed)


def test_logged_runs_have_no_expected_outputs(evaluated) -> None:
    typed = evaluated[1]
    doc = typed.to_json()
    assert "oracle-expected" not in doc["methods"] and "expected" not in doc["headline"]
    assert all("expected_clicks" not in m for m in doc["methods"].values())
    assert all("expected_clicks" not in row for row in doc["chain_curve"])


def test_table2_rows_are_named_from_the_chain_space() -> None:
    from greenflow.platform.chains import ChainSpace, StageSpace, default_space

    # recall → pre-rank → rank: the names offline_eval.json always had
    assert list(action_subsets(default_space()).items()) == [
        ("k1 only", {"k1"}), ("k2 only", {"k2"}), ("rank model only", {"m3"}),
        ("k1 + k2", {"k1", "k2"}), ("all actions", {"k1", "k2", "k3", "m1", "m2", "m3"}),
    ]  # fmt: skip
    four = ChainSpace(tuple(StageSpace(n, (f"m_{n}",), (10,))
                            for n in ("recall", "prerank", "rank", "rerank")))  # fmt: skip
    assert list(action_subsets(four)) == ["k1 only", "k2 only", "k3 only", "rerank model only",
                                          "k1 + k2 + k3", "all actions"]  # fmt: skip
