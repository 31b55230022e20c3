"""The builder's budget resolution, without Ray: defaults, watts and carbon with a schedule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from greenflow.serve_apps.app import AppArgs, resolve_budget

pytestmark = pytest.mark.usefixtures("no_ray")


def _run(tmp_path, joules_per_flop: float | None = 1e-9):
    if joules_per_flop is not None:
        (tmp_path / "pfec_calibration.json").write_text(
            json.dumps({"joules_per_flop": joules_per_flop, "source": "estimate"})
        )
    return str(tmp_path)


def test_default_budget_is_a_fraction_of_everyone_full(tmp_path) -> None:
    args = AppArgs(run_dir=_run(tmp_path), budget_fraction=0.5, expected_rate_rps=10.0)
    budget = resolve_budget(args, np.array([1e6, 4e6]))
    assert budget.kind == "flops" and budget.flops_per_s() == pytest.approx(0.5 * 4e6 * 10)


def test_power_budget_needs_a_calibration(tmp_path) -> None:
    args = AppArgs(run_dir=_run(tmp_path, None), budget_power_w=100.0)
    with pytest.raises(ValueError, match="pfec calibrate"):
        resolve_budget(args, np.array([1.0]))


def test_carbon_budget_follows_the_schedule(tmp_path) -> None:
    csv = tmp_path / "grid.csv"
    csv.write_text("time,g_per_kwh\n00:00,300\n12:00,600\n")
    args = AppArgs(run_dir=_run(tmp_path), budget_carbon_g_per_h=50.0,
                   carbon_schedule_csv=str(csv), pue=1.0)  # fmt: skip
    budget = resolve_budget(args, np.array([1.0]))
    import datetime as dt

    midnight = dt.datetime(2026, 3, 1).timestamp()
    assert budget.flops_per_s(midnight + 3600) == pytest.approx(
        2 * budget.flops_per_s(midnight + 13 * 3600)
    )


# simulation.json of a one-chain run (the contract keys, then what the app reads)
_ONE_CHAIN_SIMULATION = {
    "requests": 1, "chains": [{"id": "m@5", "flops": 10.0}], "num_chains": 1, "rows": 1,
    "wall_s": 1.0, "requests_per_s": 1.0, "simulation_flops": 10.0, "output": "samples",
    "config": {"chains": {"stages": [{"name": "rank", "models": ["din"], "item_scales": [5]}],
                          "exposed_k": 5}},
}  # fmt: skip


def test_placement_resources_reach_the_replicas_and_the_driver(tmp_path) -> None:
    from greenflow.serve_apps.app import build_app

    run = _run(tmp_path)
    (tmp_path / "simulation.json").write_text(json.dumps(_ONE_CHAIN_SIMULATION))
    app = build_app(AppArgs(run_dir=run, stage_resources={"model_node": 0.5},
                            allocator_resources={"head": 0.01},
                            driver_resources={"nearline": 0.01}))  # fmt: skip
    ingress = app._bound_deployment
    assert ingress.ray_actor_options["resources"] == {"head": 0.01}
    config, stages = ingress.init_args
    assert config.driver.resources == {"nearline": 0.01}
    (stage,) = stages.values()
    assert stage._bound_deployment.ray_actor_options["resources"] == {"model_node": 0.5}


def test_gpus_per_stage_come_from_the_chain_space(tmp_path) -> None:
    from greenflow.platform.chains import ChainSpace, StageSpace
    from greenflow.serve_apps.app import build_app, stage_gpus

    space = ChainSpace(tuple(StageSpace(n, (m,), (5,)) for n, m in
                             (("recall", "dssm"), ("rank", "din"), ("rerank", "dien"))), 5)  # fmt: skip
    run = _run(tmp_path)
    # default as ever: only the last stage's replicas get rank_num_gpus
    assert stage_gpus(AppArgs(run_dir=run, rank_num_gpus=0.5), space) == {
        "recall": 0.0, "rank": 0.0, "rerank": 0.5}  # fmt: skip
    args = AppArgs(run_dir=run, rank_num_gpus=0.5, stage_num_gpus={"rank": 0.25, "rerank": 1.0})
    assert stage_gpus(args, space) == {"recall": 0.0, "rank": 0.25, "rerank": 1.0}
    with pytest.raises(ValueError, match="not stages of the chain space"):
        stage_gpus(AppArgs(run_dir=run, stage_num_gpus={"prerank": 1.0}), space)
    with pytest.raises(ValueError, match="stage_num_gpus"):
        AppArgs(run_dir=run, stage_num_gpus={"rank": -1.0})
    # and they reach the replicas
    doc = {**_ONE_CHAIN_SIMULATION, "chains": [{"id": "dssm@5>din@5>dien@5", "flops": 10.0}],
           "config": {"chains": {"stages": [{"name": s.name, "models": list(s.models),
                                             "item_scales": [5]} for s in space.stages],
                                 "exposed_k": 5}}}  # fmt: skip
    (tmp_path / "simulation.json").write_text(json.dumps(doc))
    _, stages = build_app(args)._bound_deployment.init_args
    got = {m: h._bound_deployment.ray_actor_options["num_gpus"] for m, h in stages.items()}
    assert got == {"dssm": 0.0, "din": 0.25, "dien": 1.0}
    # and from the command line
    import argparse

    from greenflow.cli.serve import add_parsers, app_overrides

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    cli = parser.parse_args(["serve", "--stage-num-gpus", '{"rank": 0.25}'])
    assert app_overrides(cli) == {"stage_num_gpus": {"rank": 0.25}}


@pytest.mark.parametrize("bad", [{"node": 0.0}, {"node": -1.0}, {"": 1.0}])
def test_placement_resources_are_validated(tmp_path, bad) -> None:
    with pytest.raises(ValueError, match="stage_resources"):
        AppArgs(run_dir=_run(tmp_path), stage_resources=bad)


def test_the_tuned_lambda_update_is_what_is_served(tmp_path) -> None:
    from greenflow.platform.run_dir import RunDir
    from greenflow.serve_apps.app import tuned_step

    run = RunDir(tmp_path)
    assert tuned_step(run) == {}  # untuned: the builder's defaults (exact, 2 s)
    run.write_step_size_tuned(
        {"method": "gradient", "step_size_rel": 3.0, "window_s": 5.0, "smoothing": 0.2})  # fmt: skip
    assert tuned_step(run) == {
        "method": "gradient", "step_size_rel": 3.0, "window_s": 5.0, "smoothing": 0.2}  # fmt: skip


def test_no_pacing_reaches_the_allocator(tmp_path) -> None:
    """``greenflow serve --no-pacing`` → AppArgs.pacing → the allocator's config."""
    import argparse

    from greenflow.cli.serve import add_parsers, app_overrides
    from greenflow.serve_apps.app import build_app

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    assert "pacing" not in app_overrides(parser.parse_args(["serve"]))  # default: pacing on
    overrides = app_overrides(parser.parse_args(["serve", "--no-pacing"]))
    assert overrides == {"pacing": False}
    run = _run(tmp_path)
    (tmp_path / "simulation.json").write_text(json.dumps(_ONE_CHAIN_SIMULATION))
    for pacing in (True, False):
        app = build_app(AppArgs(run_dir=run, pacing=pacing))
        config, _ = app._bound_deployment.init_args
        assert config.pacing is pacing
