"""Algorithm 1's step-size search: the pure replay objective on synthetic data (no Ray),
and 2 real Tune trials on a tiny trained run."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from greenflow.platform.data.store import load_requests
from greenflow.platform.run_dir import STEP_SIZE_TUNED, RunDir
from greenflow.tune_configs.step_size import (
    StepSizeProblem,
    StepSizeTuneConfig,
    TrafficProfile,
    budget_flops_per_s,
    fitted_price,
    format_best,
    request_order,
    run_step_size_tune,
    search_space,
    step_size_objective,
    tuning_inputs,
)


def _synthetic(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q (n, 4) concave in cost, R a noisy version of it, q (4,) FLOPs."""
    rng = np.random.default_rng(seed)
    q = np.array([1.0, 2.0, 4.0, 8.0]) * 1e6
    scale = rng.uniform(0.5, 2.0, size=(n, 1))
    Q = scale * np.log1p(q / 1e6)[None, :]
    R = np.clip(Q + rng.normal(0.0, 0.1, size=Q.shape), 0.0, None)
    return Q, R, q


PROBLEM = StepSizeProblem(traffic=TrafficProfile(base_rate=10.0, duration_s=120.0, seed=2))
PARAMS = {"step_size_rel": 1.0, "window_s": 2.0, "smoothing": 0.3}


@pytest.mark.usefixtures("no_ray")
def test_traffic_has_a_three_times_spike_and_enough_windows() -> None:
    traffic = TrafficProfile(base_rate=20.0, duration_s=300.0, seed=1)
    t = traffic.arrivals()
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 300.0
    base = np.sum(t < 100) + np.sum(t >= 200)
    spike = np.sum((t >= 100) & (t < 200))
    assert spike / (base / 2) == pytest.approx(3.0, rel=0.1)
    assert np.array_equal(t, TrafficProfile(base_rate=20.0, duration_s=300.0, seed=1).arrivals())
    order = request_order(7, 20, seed=0)  # every request once per pass
    assert sorted(order[:7]) == list(range(7)) and sorted(order[7:14]) == list(range(7))
    assert traffic.duration_s / max(StepSizeTuneConfig().window_choices) >= 30


@pytest.mark.usefixtures("no_ray")
def test_objective_is_deterministic_and_reports_the_contract_keys() -> None:
    Q, R, q = _synthetic()
    a = step_size_objective(PARAMS, Q, R, q, PROBLEM)
    assert a == step_size_objective(PARAMS, Q, R, q, PROBLEM)
    assert {"score", "clicks", "over_budget_windows_pct", "mean_utilisation"} <= set(a)
    assert (
        a["windows"] == 61 and a["clicks"] > 0
    )  # 60 windows of 2 s, cut by the 0.7 s offset and a["score"] <= a["clicks"]
    assert a["step_size"] == pytest.approx(fitted_price(Q, q, PROBLEM)) and a["step_size"] > 0
    assert budget_flops_per_s(q, 10.0, 0.5) == pytest.approx(0.5 * 8e6 * 10.0)
    # another traffic seed is another replay
    other = StepSizeProblem(traffic=TrafficProfile(base_rate=10.0, duration_s=120.0, seed=3))
    assert step_size_objective(PARAMS, Q, R, q, other)["clicks"] != a["clicks"]


@pytest.mark.usefixtures("no_ray")
def test_the_spike_overspends_without_the_guard_and_the_score_pays_for_it() -> None:
    Q, R, q = _synthetic()
    frozen = {"step_size_rel": 1e-6, "window_s": 5.0, "smoothing": 0.0}  # λ barely moves
    # neither the guard nor pacing: λ alone meets the spike
    no_guard = StepSizeProblem(traffic=PROBLEM.traffic, guard_tolerance=math.inf, pacing=False)
    flat = StepSizeProblem(
        traffic=TrafficProfile(base_rate=10.0, duration_s=120.0, spike_factor=1.0, seed=2),
        guard_tolerance=math.inf,
        pacing=False,
    )
    spiky, steady = (step_size_objective(frozen, Q, R, q, p) for p in (no_guard, flat))
    assert spiky["over_budget_windows"] > steady["over_budget_windows"]
    assert spiky["max_utilisation"] > 2.0  # 3x the requests on the same budget
    # pacing alone re-prices the spike's windows from their arrivals: no window over
    paced = StepSizeProblem(traffic=PROBLEM.traffic, guard_tolerance=math.inf)
    assert step_size_objective(frozen, Q, R, q, paced)["over_budget_windows"] == 0
    penalty = spiky["clicks"] - spiky["score"]
    assert penalty == pytest.approx(
        PROBLEM.penalty * spiky["over_budget_windows"] * spiky["clicks"] / spiky["windows"]
    )
    # the guard holds spike windows near the budget: less utilisation, fewer clicks
    guarded = step_size_objective(frozen, Q, R, q, PROBLEM)
    assert guarded["max_utilisation"] < spiky["max_utilisation"]
    assert guarded["guard_requests"] > 0 and spiky["guard_requests"] == 0
    # a heavier penalty lowers the score of the same replay
    heavy = StepSizeProblem(
        traffic=PROBLEM.traffic, guard_tolerance=math.inf, penalty=3.0, pacing=False
    )
    assert step_size_objective(frozen, Q, R, q, heavy)["score"] < spiky["score"]


@pytest.mark.usefixtures("no_ray")
def test_search_space_samples_are_valid_objective_params() -> None:
    Q, R, q = _synthetic(n=60)
    config = StepSizeTuneConfig()
    params = {key: dom.sample() for key, dom in search_space(config).items()}
    assert params["window_s"] in config.window_choices and 0 <= params["smoothing"] <= 0.9
    assert 1e-2 <= params["step_size_rel"] <= 1e2 and params["method"] in ("exact", "gradient")
    assert np.isfinite(step_size_objective(params, Q, R, q, PROBLEM)["score"])
    exact = step_size_objective({**params, "method": "exact"}, Q, R, q, PROBLEM)
    assert exact["step_size"] is None and np.isfinite(exact["score"])
    with pytest.raises(ValueError, match="searcher"):
        StepSizeTuneConfig(searcher="grid")  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_two_trials_write_the_best_step_size_config(reward_run, tmp_path: Path) -> None:
    import dataclasses

    from greenflow.platform.reward import RewardModelConfig
    from greenflow.platform.reward.run import train_reward_variants
    from greenflow.platform.reward.training import RewardTrainConfig
    from greenflow.platform.simulation import ChainSampling
    from greenflow.simulators.simulate import SimulateConfig, run_simulation

    shutil.copytree(reward_run.run_dir.local_path, tmp_path / "run")
    run_dir = RunDir(tmp_path / "run")
    # the tune replays reward-split requests with every chain simulated
    run_simulation(dataclasses.replace(reward_run, run_dir=run_dir),
                   SimulateConfig(actors=1, num_cpus=0.5, sampling=ChainSampling(1.0)),
                   log=lambda _: None)  # fmt: skip
    train_reward_variants(run_dir, ["full"], RewardModelConfig(),
                          RewardTrainConfig(epochs=1, batch_size=16), log=lambda _: None)  # fmt: skip
    problem = StepSizeProblem(traffic=TrafficProfile(base_rate=5.0, duration_s=300.0))
    lines: list[str] = []
    doc = run_step_size_tune(
        run_dir, StepSizeTuneConfig(num_samples=2, seed=3), problem, lines.append
    )
    saved = json.loads((tmp_path / "run" / STEP_SIZE_TUNED).read_text())
    assert saved == doc and len(doc["trials"]) == 2 and doc["errors"] == 0
    for key in ("step_size", "window_s", "smoothing", "score", "clicks",
                "over_budget_windows_pct", "budget_flops_per_s", "traffic"):  # fmt: skip
        assert key in saved, key
    assert doc["score"] == max(t["score"] for t in doc["trials"])
    assert doc["traffic"]["spike_factor"] == 3.0 and doc["windows"] >= 30
    assert Path(doc["experiment_path"]).parent == tmp_path / "run" / "tune"
    assert sum("trial" in line for line in lines) >= 2
    assert "method" in format_best(doc) and doc["split"] == "reward"
    assert doc["requests_replayed"] == len(load_requests(run_dir.data, "reward"))


@pytest.mark.usefixtures("no_ray")
def test_the_tune_refuses_a_reward_split_with_sampled_chains(serve_run) -> None:
    with pytest.raises(ValueError, match="chain-fraction 1"):
        tuning_inputs(serve_run.run_dir)  # half of the chains per reward request
