"""The typed app builder: ``build_app(AppArgs) -> Application``, and deploy/teardown.

Used three ways, all with the same arguments:

    serve run greenflow.serve_apps.app:build_app run_dir=/abs/runs/movielens-100k policy=equal
    serve deploy greenflow/serve_apps/serve_config.yaml      # import_path + args
    greenflow serve --policy greenflow                        # ``deploy`` below

Composition (STYLE.md): one ``StageModel`` deployment per model of the chain space (with
its stage's resources: ``stage_gpus``), the ``Allocator`` ingress taking their handles, and
the dual-price driver actor the allocator starts (named after the app, detached,
restartable).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.context import _get_global_client

from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.chains import ChainSpace
from greenflow.platform.energy.carbon import CarbonSchedule, PFECConfig
from greenflow.platform.reward.data import load_simulated_chains
from greenflow.platform.run_dir import RunDir, is_portable
from greenflow.serve_apps.allocator import Allocator, AllocatorConfig
from greenflow.serve_apps.driver import DriverConfig, kill_driver
from greenflow.serve_apps.stage_model import StageModel

DEFAULT_WINDOW_S = 2.0


class AppArgs(BaseModel):
    """Arguments of ``build_app``; ``serve run … key=value`` and YAML ``args`` fill them."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str = Field(
        description="run directory with a trained pool and reward model: an absolute path or "
        "a filesystem URI (s3://bucket/prefix)"
    )
    app_name: str = Field("greenflow", pattern=r"^[A-Za-z0-9_-]+$")
    policy: str = Field("greenflow", description="greenflow | equal | fixed:<chain id>")
    # Budget: at most one of the three; none = budget_fraction of everyone-full at the rate.
    budget_flops_per_s: float | None = Field(None, gt=0)
    budget_power_w: float | None = Field(None, gt=0, description="facility W (PUE included)")
    budget_carbon_g_per_h: float | None = Field(None, gt=0)
    budget_fraction: float = Field(0.5, gt=0)
    expected_rate_rps: float = Field(10.0, gt=0, description="traffic the budget is sized for")
    pue: float = Field(1.67, ge=1)
    carbon_intensity_g_per_kwh: float = Field(615.0, gt=0)
    carbon_schedule_csv: str | None = Field(
        None, description="daily intensity CSV (time,g_per_kwh); replaces the constant"
    )
    window_s: float | None = Field(None, gt=0, description="default: tuned, else 2 s")
    step_method: Literal["gradient", "exact"] | None = Field(
        None, description="λ update; default: the tuned one, else the exact re-solve"
    )
    guard_tolerance: float = Field(0.0, ge=0)
    pacing: bool = Field(True, description="in-window pacing of λ (False: the nearline λ alone)")
    reward_variant: str = "full"
    allocator_replicas: int = Field(1, ge=1)
    stage_replicas: int = Field(1, ge=1)
    allocator_num_cpus: float = Field(0.25, gt=0)
    stage_num_cpus: float = Field(0.25, gt=0)
    rank_num_gpus: float = Field(0.0, ge=0, description="GPU per replica of the last stage")
    # GPU per replica by stage name of the chain space, e.g. {"rank": 0.25, "rerank": 0.5};
    # a stage not named gets rank_num_gpus if it is the last, else none.
    stage_num_gpus: dict[str, float] = Field(default_factory=dict)
    # Placement on a cluster: custom Ray resources (`ray start --resources='{"…": n}'`)
    # each replica or actor asks for, e.g. {"model_node": 0.01} to keep stage replicas on
    # the nodes that offer "model_node". Empty: anywhere with CPU.
    stage_resources: dict[str, float] = Field(default_factory=dict)
    allocator_resources: dict[str, float] = Field(default_factory=dict)
    driver_resources: dict[str, float] = Field(default_factory=dict)
    stage_timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _one_budget(self) -> AppArgs:
        given = [b for b in (self.budget_flops_per_s, self.budget_power_w,
                             self.budget_carbon_g_per_h) if b is not None]  # fmt: skip
        if len(given) > 1:
            raise ValueError(
                "give at most one of budget_flops_per_s, budget_power_w, budget_carbon_g_per_h"
            )
        negative = {k: v for k, v in self.stage_num_gpus.items() if not v >= 0}
        if negative:
            raise ValueError(f"stage_num_gpus: amounts must be >= 0, got {negative}")
        for name in ("stage_resources", "allocator_resources", "driver_resources"):
            bad = {k: v for k, v in getattr(self, name).items() if not (v > 0 and k)}
            if bad:
                raise ValueError(f"{name}: amounts must be > 0 and names non-empty, got {bad}")
        if not is_portable(self.run_dir):
            raise ValueError(
                f"run_dir must be absolute or a URI (replicas may run elsewhere): {self.run_dir}"
            )
        return self


def _joules_per_flop(run_dir: RunDir) -> float | None:
    calibration = run_dir.read_calibration()
    return None if calibration is None else float(calibration["joules_per_flop"])


def resolve_budget(args: AppArgs, q: np.ndarray) -> ComputeBudget:
    """The app's budget; the default is ``budget_fraction`` × everyone-full at the rate."""
    schedule = (
        None
        if args.carbon_schedule_csv is None
        else CarbonSchedule.from_csv(args.carbon_schedule_csv)
    )
    pfec = PFECConfig(args.pue, args.carbon_intensity_g_per_kwh, schedule)
    jpf = _joules_per_flop(RunDir(args.run_dir))
    if args.budget_power_w is not None:
        return ComputeBudget("power", args.budget_power_w, jpf, pfec)
    if args.budget_carbon_g_per_h is not None:
        return ComputeBudget("carbon", args.budget_carbon_g_per_h, jpf, pfec)
    value = (
        args.budget_flops_per_s or args.budget_fraction * float(q.max()) * args.expected_rate_rps
    )
    return ComputeBudget("flops", value, jpf, pfec)


def stage_gpus(args: AppArgs, space: ChainSpace) -> dict[str, float]:
    """GPU per replica of each stage's models, by stage name of ``space``: what
    ``stage_num_gpus`` says, else ``rank_num_gpus`` for the last stage and none before it."""
    names = [s.name for s in space.stages]
    unknown = sorted(set(args.stage_num_gpus) - set(names))
    if unknown:
        raise ValueError(f"stage_num_gpus names {unknown}, not stages of the chain space {names}")
    gpus = dict.fromkeys(names, 0.0) | {names[-1]: args.rank_num_gpus}
    return gpus | args.stage_num_gpus


def tuned_step(run_dir: RunDir) -> dict[str, Any]:
    """``method``, ``step_size_rel``, ``window_s`` and ``smoothing`` of ``greenflow tune
    step-size`` (what it tuned on the serving core is what is served)."""
    doc = run_dir.read_step_size_tuned()
    if doc is None:
        return {}
    tuned: dict[str, Any] = {
        k: float(doc[k]) for k in ("step_size_rel", "window_s", "smoothing") if k in doc
    }
    if doc.get("method") in ("exact", "gradient"):
        tuned["method"] = doc["method"]
    return tuned


def build_app(args: AppArgs | dict) -> Application:
    """Compose the app: stage deployments → allocator ingress (+ its driver actor)."""
    if not isinstance(args, AppArgs):
        args = AppArgs.model_validate(args)
    run_dir = RunDir(args.run_dir)
    chains = load_simulated_chains(run_dir)
    budget = resolve_budget(args, chains.flops)
    tuned = tuned_step(run_dir)
    window_s = args.window_s or tuned.get("window_s", DEFAULT_WINDOW_S)
    driver = DriverConfig(
        run_dir=run_dir.portable, app_name=args.app_name, deployment_id=uuid.uuid4().hex,
        budget=budget, window_s=window_s, expected_rate_rps=args.expected_rate_rps,
        step_size_rel=tuned.get("step_size_rel", 1.0),
        method=args.step_method or tuned.get("method", "exact"),
        smoothing=tuned.get("smoothing", 0.0), reward_variant=args.reward_variant,
        resources=dict(args.driver_resources),
    )  # fmt: skip
    config = AllocatorConfig(
        app_name=args.app_name, run_dir=run_dir.portable, policy=args.policy, budget=budget,
        window_s=window_s, expected_rate_rps=args.expected_rate_rps,
        guard_tolerance=args.guard_tolerance, pacing=args.pacing,
        share=1.0 / args.allocator_replicas,
        stage_timeout_s=args.stage_timeout_s, reward_variant=args.reward_variant, driver=driver,
    )  # fmt: skip
    gpus = stage_gpus(args, chains.space)
    stages = {}
    for stage in chains.space.stages:
        for model in stage.models:
            stages[model] = StageModel.options(
                name=f"stage-{model}",
                num_replicas=args.stage_replicas,
                ray_actor_options={
                    "num_cpus": args.stage_num_cpus,
                    "num_gpus": gpus[stage.name],
                    "resources": dict(args.stage_resources),
                },
            ).bind(run_dir.portable, model, args.app_name)
    return Allocator.options(
        num_replicas=args.allocator_replicas,
        ray_actor_options={
            "num_cpus": args.allocator_num_cpus,
            "resources": dict(args.allocator_resources),
        },
    ).bind(config, stages)


def wait_healthy(url: str, timeout_s: float = 120.0) -> dict:
    """Poll ``GET {url}/healthz`` until it answers 200; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                return json.loads(resp.read())
        except Exception as err:  # not up yet
            last = err
            time.sleep(0.5)
    raise TimeoutError(f"{url}/healthz not healthy after {timeout_s:.0f} s: {last}")


def deploy(
    args: AppArgs, host: str = "127.0.0.1", port: int = 8000, timeout_s: float = 300.0
) -> str:
    """Start Serve's HTTP proxy on host:port (once per cluster), run the app, wait for health.

    Returns the app's base URL. If Serve already runs on the cluster, its proxy keeps its
    own host and port (Serve cannot move it) and the URL says so. Needs ``ray.init`` first.
    """
    serve.start(http_options={"host": host, "port": port})
    # What the proxy really listens on (Serve 2.60 has no public getter for it).
    http = _get_global_client().http_config
    host, port = http.host, http.port
    prefix = "/" if args.app_name == "greenflow" else f"/{args.app_name}"
    # Access logs of every replica would flood the terminal of `greenflow serve`/`loadtest`;
    # warnings and errors still reach it, and the full logs stay in the Ray session logs.
    quiet = {"enable_access_log": False, "log_level": "WARNING"}
    serve.run(build_app(args), name=args.app_name, route_prefix=prefix, logging_config=quiet)
    url = f"http://{host}:{port}" + ("" if prefix == "/" else prefix)
    wait_healthy(url, timeout_s)
    return url


def teardown(app_name: str) -> None:
    """Delete the app and its driver actor (the driver is detached: it outlives the app)."""
    serve.delete(app_name)
    kill_driver(app_name)
