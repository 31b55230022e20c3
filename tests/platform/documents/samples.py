"""Hand-written documents with the keys the producers write today (values small but of
the right types), one function per contract file of DESIGN.md §5."""

from __future__ import annotations

from typing import Any

PFEC = {
    "performance": {"clicks": 84.0},
    "flops": 2.5e10,
    "it_energy_j": 11.8,
    "energy_j": 19.7,
    "carbon_g": 0.0034,
    "pue": 1.67,
    "carbon_intensity_g_per_kwh": 615.0,
    "sources": {"cpu:0": "estimate"},
    "basis": "estimate: FLOPs x J/FLOP x PUE",
}
CONFIG = {"dataset": "movielens-100k", "chains": {"stages": [], "exposed_k": 10}}


def model_row(name: str, stage: str) -> dict[str, Any]:
    return {
        "name": name,
        "stage": stage,
        "paper": "Covington et al. 2016",
        "flops_per_item": 4096.0,
        "flops_per_request": 120000.0,
        "params": 53761,
        "val_auc": 0.8123,
        "val_hits_at_10": 0.071,
        "val_ndcg_at_10": 0.0349,
        "weights": f"models/{name}.pt",
        "sha256": "ab" * 32,
        "config": {"embed_dim": 32, "hidden": 64, "out_dim": 32},
        "train": {
            "stage_index": 0,
            "negatives": "corpus",
            "val_auc_stage_pairs": 0.83,
            "epochs_run": 3,
            "best_epoch": 2,
            "wall_s": 1.5,
            "curve": [0.6, 0.5],
        },
    }


def model_pool() -> dict[str, Any]:
    head = {"val_hits_at_10": 0.05, "val_ndcg_at_10": 0.021}
    return {
        "dataset": "movielens-100k",
        "flops_convention": "a multiply-add is 2 FLOPs",
        "features": {
            "user": {"age": 7},
            "item": {"genre": 19},
            "num_items": 1682,
            "max_history": 50,
        },
        "models": [model_row("dssm", "retrieval"), model_row("din", "ranking")],
        "baselines": {"popularity": dict(head), "item_knn": dict(head)},
        "head_k": 10,
        "head_requests": 251,
        "horizon": "next:5",
        "train_wall_s": 42.0,
        "config": CONFIG,
    }


def simulation() -> dict[str, Any]:
    return {
        "requests": 2792,
        "chains": [
            {"id": "dssm@50>youtube_dnn@10>din@10", "flops": 3114517.0},
            {"id": "dssm@800>youtube_dnn@100>din@10", "flops": 45177557.0},
        ],
        "num_chains": 2,
        "rows": 2792,
        "chain_rewards": 5584,
        "malformed": [{"request_id": 7, "error": "empty history"}],
        "wall_s": 23.67,
        "requests_per_s": 117.9,
        "simulation_flops": 2.36e11,
        "reference_flops": 1.75e12,
        "output": "/tmp/run/samples",
        "layout": "one row per request: chain_idx (list) and reward (list), see SAMPLE_SCHEMA",
        "requests_per_split": {"reward": 1669, "eval": 1123},
        "pfec": {**PFEC, "scope": "the driver's node"},
        "actors": 2,
        "batch_size": 32,
        "chain_fraction": 1.0,
        "horizon": "next:5",
        "expected_rewards": False,
        "config": CONFIG,
    }


def _metrics() -> dict[str, Any]:
    return {
        "loss": 0.97,
        "poisson_loss": 0.97,
        "mse": 0.96,
        "mae": 0.78,
        "rmse": 0.98,
        "field_rce": {"chain": 0.14, "activity": 0.63},
        "field_rce_values_skipped": {"chain": 0, "activity": 0},
        "uplift_corr": 0.08,
        "mean_pred": 0.63,
        "mean_target": 0.74,
        "pairs": 9538,
        "requests": 251,
    }


def reward_variant() -> dict[str, Any]:
    return {
        "val_loss": 0.95,
        "mae": 0.77,
        "field_rce": {"chain": 0.12, "activity": None},
        "val": _metrics(),
        "eval": None,
        "params": 120001,
        "flops_per_request": 29005,
        "overhead_flops_ratio": 0.00064,
        "epochs_run": 4,
        "best_epoch": 3,
        "train_wall_s": 12.5,
        "weights": "reward/full.pt",
        "sha256": "cd" * 32,
        "model_config": {"state_dim": 16, "bases": ["relu"], "recursive": True},
        "train_config": {"epochs": 4, "loss": "poisson"},
        "tuned_from": None,
        "curve": [{"epoch": 1, "train_loss": 1.0, "epoch_val_loss": 0.99, "val_loss": 0.99}],
        "trained_at": "2026-11-27T19:41:00",
    }


def reward_model() -> dict[str, Any]:
    return {
        "variants": {"full": reward_variant(), "plain": reward_variant()},
        "horizon": "next:5",
        "overhead_flops_ratio": 0.000642022,
        "overhead_flops_per_request": 29005,
        "default_chain": {"id": "dssm@800>youtube_dnn@100>din@10", "flops": 45177557.0},
        "loss": "poisson",
        "field_rce_rule": "Field-RCE = sum_z (|D_z|/|D|) |sum(y - y_hat)| / sum y",
        "activity_bucket_edges": [7.0, 18.0, 34.0, 77.0],
        "data": {"train_requests": 1418, "val_requests": 251, "eval_requests": 1123},
        "baselines": {"chain_mean": {"val": _metrics(), "eval": _metrics()}},
        "dataset": "movielens-100k",
    }


def offline_eval(expected: bool = False) -> dict[str, Any]:
    methods = [
        "greenflow",
        "equal",
        "equal-dien",
        "equal-din",
        "cras",
        "cras-dien",
        "cras-din",
        "dcaf",
        "oracle",
    ] + (["oracle-expected"] if expected else [])
    more = {"expected_clicks": [60.5, 80.25]} if expected else {}
    point = {"expected_clicks": 0.19} if expected else {}
    ratio = {"ratio": 1.49, "ci95": [1.35, 1.65]}
    return {
        "budgets": [3.5e9, 5.07e10],
        "methods": {
            m: {
                "clicks": [61.0, 805.0],
                "flops": [3.4e9, 5.0e10],
                "dual_price": [1e-8, 0.0],
                "feasible": [True, True],
                **more,
            }
            for m in methods
        },
        "return_pct": {m: [60.1, 98.0] for m in methods},
        "flops_saving_at_equal_clicks": {m: (0.25 if m != "equal" else None) for m in methods},
        "full_chain": {"id": "dssm@800>youtube_dnn@100>din@10", "clicks": 805.0, "flops": 5.07e10},
        "requests": 1123,
        "horizon": "next:5",
        "chain_curve": [
            {
                "chain": "dssm@50>youtube_dnn@10>dien@10",
                "flops": 3114517.0,
                "clicks": 0.48,
                "pareto": True,
                **point,
            }
        ],
        "headline": {"full_over_cheapest": ratio, "greenflow_vs_baselines": [], "users": 42},
        "table_budget_flops": 2.5e10,
        "table2_action_subsets": {
            "k1 only": {"clicks": 778.0, "flops": 2.7e10, "feasible": False, "chains": 4}
        },
        "table3_rank_models": {"both": {"clicks": 800.0, "flops": 2.5e10, "feasible": True}},
        "table4_reward_variants": {"full": {"clicks": 800.0, "flops": 2.5e10, "feasible": True}},
        "pfec": {m: PFEC for m in methods},
        "pfec_budget_flops": 2.5e10,
        "joules_per_flop": 4.7e-10,
        "config": CONFIG,
    }


def window(t: float) -> dict[str, Any]:
    return {
        "t": t,
        "t_epoch": 1795834285.0 + t,
        "spend": 1.4e8,
        "budget": 1.1e9,
        "dual_price": 3.2e-09,
        "requests": 8,
        "guard_requests": 0,
        "overspend": 0.0,
        "spend_flops_per_s": None if t < 0 else 2.8e7,
        "requests_per_s": 1.6,
        "utilisation": 0.125,
        "over_budget": False,
        "partial": t < 0,
        "phase": "steady",
    }


def loadtest_policy(policy: str) -> dict[str, Any]:
    return {
        "policy": policy,
        "budget_flops_per_s": 2.2e8,
        "windows": [window(-4.3), window(0.7)],
        "window_s": 5.0,
        "over_budget_windows_pct": 0.0,
        "over_budget_windows": 0,
        "windows_counted": 1,
        "over_budget_slack": 1.05,
        "utilisation_pct": 12.5,
        "over_utilisation_pct": 0.0,
        "clicks": 84.0,
        "requests": 100,
        "sent": 100,
        "ok": 99,
        "errors": 1,
        "errors_by_status": {"503": 1},
        "error_examples": {"503": ["busy"]},
        "dropped_client": 0,
        "flops": 3.5e9,
        "flops_per_request": 3.5e7,
        "clicks_per_request": 0.85,
        "throughput_rps": 9.9,
        "latency_ms": {"p50": 69.0, "p90": 168.0, "p99": 263.4, "mean": 86.8, "max": 280.8},
        "send_lag_ms": {"p50": 0.4, "max": 3.0},
        "guard_requests": 0,
        "server_guard_requests": 0,
        "degraded": 0,
        "chains": {"dssm@50>youtube_dnn@10>din@10": 99},
        "pfec": PFEC,
        "profile": {"duration_s": 10.0, "base_rate": 10.0},
        "duration_s": 10.2,
        "start_epoch_s": 1795834289.3,
        "state": {"policy": policy},
        "client": {"url": "http://127.0.0.1:8000", "k": 10},
        "fetch_errors": [],
    }


def repeats() -> dict[str, Any]:
    run = {
        "clicks": 84.0,
        "flops_per_request": 3.5e7,
        "utilisation_pct": 12.5,
        "over_budget_windows_pct": 0.0,
        "errors": 1,
        "latency_p99_ms": 263.4,
    }
    each = {"runs": [run, run], "clicks_mean": 84.0, "clicks_min": 84.0, "clicks_max": 84.0}
    return {
        "repeats": 2,
        "policies": {"greenflow": each, "equal": dict(each)},
        "greenflow_minus_equal_clicks": [0.0, 0.0],
        "greenflow_wins": 0,
    }


def loadtest(several: bool = True) -> dict[str, Any]:
    """``loadtest.json``: one policy's keys, or several with ``policies`` and ``repeats``."""
    docs = {p: loadtest_policy(p) for p in (("greenflow", "equal") if several else ("equal",))}
    out = {**next(iter(docs.values())), "policies": docs, "horizon": "next:5"}
    if several:
        out["pfec"] = {p: d["pfec"] for p, d in docs.items()}
        out["repeats"] = repeats()
    return out


def bench_serving() -> dict[str, Any]:
    sweep = {
        "p50_ms_c1": 17.0,
        "p99_ms_c1": 27.8,
        "rps_c1": 56.5,
        "p50_ms_c4": 52.6,
        "p99_ms_c4": 82.4,
        "rps_c4": 74.3,
        "max_rps": 74.3,
    }
    return {
        "allocation_ms": {"p50": 2.0, "p99": 3.9},
        "greenflow_latency_ms": {"p50": 40.2, "p99": 64.6},
        "fixed_latency_ms": {"p50": 40.1, "p99": 58.5, "chain": "dssm@800>din@10"},
        "allocator_flops_per_request": 29005.0,
        "throughput_rps_at_equal_budget": {"greenflow": 57.3, "equal": 60.5},
        "floor": sweep,
        "app": {**sweep, "max_rps": 56.7},
        "ratios": {"p50_c1_app_over_floor": 2.5, "targets": {"p50_c1_app_over_floor": "<= 1.5"}},
    }
