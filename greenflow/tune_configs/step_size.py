"""``greenflow tune step-size``: Ray Tune search over Algorithm 1's λ update, η, window
and smoothing, on the serving core itself.

The objective (``step_size_objective``, pure, no Ray) replays the reward split's requests
(the reward model's training split: the evaluation split is never tuned on) through
``platform.allocation.replay.replay_serving`` — the allocator replica (``OnlineAllocator``:
cached λ, predictive guard with its reserve) and the nearline driver (``NearlineDriver``)
that the Serve app runs, on an injected clock — so what is tuned is what is served. Choices come from the reward model's Q̂, realised clicks from the
simulated true rewards R. Traffic (``TrafficProfile``): a seeded order of the requests (a
fresh permutation per pass, as many passes as needed) with arrival times of a Poisson
process whose rate is ``base_rate`` req/s, then ``spike_factor`` × that for the middle
segment (thirds of the timeline by default), then ``base_rate`` again, starting 0.7 s
into a wall-clock window as live traffic does.

Budget: ``budget_flops_per_s = budget_fraction × q.max() × base_rate`` (default fraction
0.5: half of serving everyone the full chain at the base rate); a window of ``window_s``
seconds gets ``budget_flops_per_s × window_s`` FLOPs, so during the spike the same
budget must cover three times the requests. The warm-start λ is fitted on a calibration
slice, the first ``calibration_fraction`` of the seeded order, at the same per-request
budget as the base rate (as the driver's warm start); the replay uses the other requests.

Score: total true clicks − penalty × (windows with spend > budget × 1.01) × (mean clicks
per window). Mean clicks per window × windows = total clicks, so the penalty is
``penalty × over-budget share × clicks`` and compares fairly across window lengths.

The λ update is searched (``method``: the exact re-solve each window, or gradient steps);
η relative to the fitted λ (``step_size_rel``), log-uniform in [0.01, 100]; the absolute η
(clicks/FLOP) is what the best file records as ``step_size`` (None for the exact
re-solve). Every trial reports once, so there is nothing for an early-stopping scheduler
to stop: trials run FIFO, proposed by Optuna's TPE (``searcher="random"``: Ray's
BasicVariantGenerator).

The best config goes to ``<run-dir>/tune/step_size_best.json``; ``greenflow serve`` loads
its ``method``, ``step_size_rel``, ``window_s`` and ``smoothing`` by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from ray import tune

from greenflow.errors import InputError
from greenflow.platform.allocation.adherence import budget_adherence
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.primal_dual import DualPriceController
from greenflow.platform.allocation.replay import ServingSettings, replay_serving
from greenflow.platform.reward.data import load_reward_data, load_simulated_chains
from greenflow.platform.reward.store import load_reward_model
from greenflow.platform.reward.training import predict
from greenflow.platform.run_dir import TUNE_DIR, RunDir
from greenflow.platform.traffic import (
    OVER_BUDGET_SLACK,
    TrafficProfile,
    budget_flops_per_s,
    request_order,
)
from greenflow.ray_support.cluster import connect
from greenflow.tune_configs.common import TrialProgress, fit_best, make_searcher

TUNING_SPLIT = "reward"  # the reward model's training split; never the evaluation split
WINDOW_CHOICES = (1.0, 2.0, 5.0, 10.0)  # seconds of simulated time

SearcherName = Literal["optuna", "random"]


@dataclass(frozen=True)
class StepSizeProblem:
    """What every trial shares: traffic, budget and scoring (the searched knobs are not)."""

    traffic: TrafficProfile = TrafficProfile()
    budget_fraction: float = 0.5
    calibration_fraction: float = 0.2
    penalty: float = 1.0  # mean window clicks lost per over-budget window
    guard_tolerance: float = 0.0  # the serving guard's ε (AppArgs.guard_tolerance)
    reserve_sigmas: float | None = 3.0  # the serving guard's reserve; None: none
    pacing: bool = True  # the replica's in-window pacing (platform/allocation/pacing.py)

    def __post_init__(self) -> None:
        if not self.budget_fraction > 0:
            raise ValueError(f"budget_fraction must be > 0, got {self.budget_fraction}")
        if not 0 < self.calibration_fraction < 1:
            raise ValueError("calibration_fraction must be in (0, 1)")


def calibration_split(n: int, problem: StepSizeProblem) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, replay rows) of the N requests, from a seeded permutation."""
    perm = np.random.default_rng(problem.traffic.seed).permutation(n)
    cut = max(1, int(round(problem.calibration_fraction * n)))
    if cut >= n:
        raise InputError(f"{n} request(s) leave none for the replay after calibration")
    return perm[:cut], perm[cut:]


def fitted_price(Q: np.ndarray, q: np.ndarray, problem: StepSizeProblem) -> float:
    """The warm-start λ (clicks/FLOP), the scale of η: fitted on the calibration slice at
    the base rate's per-request budget, as the driver's warm start."""
    cal, _ = calibration_split(Q.shape[0], problem)
    per_request = problem.budget_fraction * float(np.max(q))
    return DualPriceController().fit(Q[cal], q, per_request * cal.size).price()


def serving_settings(params: dict[str, Any], problem: StepSizeProblem) -> ServingSettings:
    """The serving core's settings for a trial's ``params`` (method, step_size_rel,
    window_s, smoothing) and the problem's guard."""
    return ServingSettings(
        window_s=float(params["window_s"]),
        method=params.get("method", "gradient"),
        step_size_rel=float(params["step_size_rel"]),
        smoothing=float(params["smoothing"]),
        guard_tolerance=problem.guard_tolerance,
        reserve_sigmas=problem.reserve_sigmas,
        pacing=problem.pacing,
    )


def step_size_objective(
    params: dict[str, Any],
    Q: np.ndarray,
    R: np.ndarray,
    q: np.ndarray,
    problem: StepSizeProblem = StepSizeProblem(),
) -> dict[str, float]:
    """Replay the traffic through the serving core (``replay_serving``: the allocator
    replica and the nearline driver the app runs) at ``params``; Q (N, J) estimated clicks
    decide, R (N, J) true clicks are counted."""
    Q = np.asarray(Q, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    settings = serving_settings(params, problem)
    lam0 = fitted_price(Q, q, problem)
    _, rows = calibration_split(Q.shape[0], problem)
    arrival = problem.traffic.arrivals()
    if not arrival.size:
        raise ValueError("the traffic profile produced no requests")
    served = rows[request_order(rows.size, arrival.size, problem.traffic.seed + 1)]
    per_s = budget_flops_per_s(q, problem.traffic.base_rate, problem.budget_fraction)
    result = replay_serving(Q[served], q, arrival, ComputeBudget("flops", per_s), settings,
                            lam0, clicks=R[served])  # fmt: skip
    windows = result.windows
    spend = np.array([w["spend"] for w in windows])
    budget = np.array([w["budget"] for w in windows])
    over = int(np.sum(spend > budget * OVER_BUDGET_SLACK))
    adherence = budget_adherence(spend, budget, [w["requests"] for w in windows]).to_json()
    clicks = float(result.clicks or 0.0)
    score = clicks - problem.penalty * over * (clicks / len(windows))
    gradient = settings.method == "gradient"
    return {
        "score": score,
        "clicks": clicks,
        "windows": len(windows),
        "over_budget_windows": over,
        "over_budget_windows_pct": 100.0 * over / len(windows),
        **{k: adherence[k] for k in ("utilisation_pct", "over_utilisation_pct")},
        "mean_utilisation": float(np.mean(spend / budget)),
        "max_utilisation": float(np.max(spend / budget)),
        "guard_requests": int(result.guarded.sum()),
        "requests": int(arrival.size),
        "fitted_dual_price": lam0,
        "step_size": settings.step_size_rel * lam0 if gradient else None,
        "final_dual_price": result.final_price,
    }


@dataclass(frozen=True)
class StepSizeTuneConfig:
    """How the search runs (the space itself is ``search_space``)."""

    num_samples: int = 8
    cpus_per_trial: float = 0.5
    searcher: SearcherName = "optuna"
    seed: int = 0
    window_choices: tuple[float, ...] = WINDOW_CHOICES

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.cpus_per_trial <= 0:
            raise ValueError("num_samples and cpus_per_trial must be positive")
        if self.searcher not in ("optuna", "random"):
            raise ValueError(f"unknown searcher {self.searcher!r}; use 'optuna' or 'random'")


def search_space(config: StepSizeTuneConfig) -> dict[str, Any]:
    """λ update (exact re-solve or gradient), η relative to the fitted λ, window length
    (s) and smoothing."""
    return {
        "method": tune.choice(["exact", "gradient"]),
        "step_size_rel": tune.loguniform(1e-2, 100.0),
        "window_s": tune.choice(list(config.window_choices)),
        "smoothing": tune.uniform(0.0, 0.9),
    }


def step_size_trainable(
    params: dict[str, Any],
    Q: np.ndarray,
    R: np.ndarray,
    q: np.ndarray,
    problem: StepSizeProblem,
) -> None:
    """One trial: the objective at ``params``, reported once."""
    tune.report(step_size_objective(params, Q, R, q, problem))


def _describe(trial: Any) -> str:
    r, c = trial.last_result or {}, trial.config
    return (
        f"score {r.get('score', float('nan')):.1f}, clicks {r.get('clicks', float('nan')):.1f}, "
        f"over budget {r.get('over_budget_windows_pct', float('nan')):.1f}% of windows "
        f"({_update(c)}, window {c['window_s']:g} s, smoothing {c['smoothing']:.2f})"
    )


def _update(params: dict[str, Any]) -> str:
    if params.get("method") == "exact":
        return "exact re-solve"
    return f"gradient, eta x{params['step_size_rel']:.3g} of fitted lambda"


def tuning_inputs(
    run_dir: RunDir, split: str = TUNING_SPLIT
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q̂ (N, J) of the reward model, true clicks R (N, J) and chain costs q (J,) of the
    ``split`` requests that have every chain simulated (the evaluation split is never
    tuned on). Raises ValueError when none has: simulate that split with
    ``--chain-fraction 1``."""
    chains = load_simulated_chains(run_dir)
    loaded = load_reward_model(run_dir, "full")
    data = load_reward_data(run_dir, split, loaded.features, len(chains.flops))
    complete = data.mask.all(axis=1)
    if not complete.any():
        raise InputError(f"no {split!r} request has every chain simulated; the step-size tune "
                         "needs them: `greenflow simulate --chain-fraction 1`")  # fmt: skip
    Q = predict(loaded.model, loaded.encoding, data)  # the model and rows loaded once
    return Q[complete], data.reward[complete].astype(np.float64), chains.flops


def run_step_size_tune(
    run_dir: RunDir,
    config: StepSizeTuneConfig,
    problem: StepSizeProblem = StepSizeProblem(),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the search on the connected (or a new local) cluster over the reward-split
    requests of ``run_dir``; writes and returns ``tune/step_size_best.json``."""
    Q, R, q = tuning_inputs(run_dir)  # once, on the driver
    connect()
    storage, storage_fs = run_dir.tune_storage()  # an absolute path, as Tune needs
    name = f"step-size-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment = run_dir.show(f"{TUNE_DIR}/{name}")
    per_s = budget_flops_per_s(q, problem.traffic.base_rate, problem.budget_fraction)
    log(
        f"tuning Algorithm 1 on {Q.shape[0]} {TUNING_SPLIT}-split request(s) x {Q.shape[1]} "
        f"chains: "
        f"{config.num_samples} trial(s), {config.cpus_per_trial} CPU each, "
        f"{config.searcher} searcher, budget {per_s / 1e9:.3g} GFLOP/s -> {experiment}"
    )
    trainable = tune.with_resources(
        tune.with_parameters(step_size_trainable, Q=Q, R=R, q=q, problem=problem),
        {"cpu": config.cpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(config),
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            num_samples=config.num_samples,
            search_alg=make_searcher(config.searcher, config.seed, config.num_samples),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            storage_filesystem=storage_fs,
            verbose=0,
            callbacks=[TrialProgress(config.num_samples, log, _describe)],
        ),
    )
    results, best, wall_s = fit_best(tuner, "score", "max", log, experiment)
    trials = []
    for result in results:
        if result.metrics is None or result.config is None:
            continue
        m = result.metrics
        trials.append(
            {
                "params": dict(result.config),
                "score": m.get("score"),
                "clicks": m.get("clicks"),
                "over_budget_windows_pct": m.get("over_budget_windows_pct"),
            }
        )
    trials.sort(key=lambda t: -float("inf") if t["score"] is None else -t["score"])
    m, params = best.metrics, dict(best.config)
    doc = {
        "step_size": m["step_size"],  # absolute η, clicks/FLOP (None: exact re-solve)
        "step_size_rel": params["step_size_rel"],  # η / fitted λ
        "window_s": params["window_s"],
        "smoothing": params["smoothing"],
        "method": params["method"],
        "score": m["score"],
        "clicks": m["clicks"],
        "over_budget_windows_pct": m["over_budget_windows_pct"],
        "mean_utilisation": m["mean_utilisation"],
        "max_utilisation": m["max_utilisation"],
        "windows": m["windows"],
        "requests": m["requests"],
        "guard_requests": m["guard_requests"],
        "fitted_dual_price": m["fitted_dual_price"],
        "budget_flops_per_s": per_s,
        "budget_fraction": problem.budget_fraction,
        "traffic": asdict(problem.traffic),
        "calibration_fraction": problem.calibration_fraction,
        "penalty": problem.penalty,
        "guard_tolerance": problem.guard_tolerance,
        "over_budget_slack": OVER_BUDGET_SLACK,
        "split": TUNING_SPLIT,
        "requests_replayed": int(Q.shape[0]),
        "num_samples": config.num_samples,
        "searcher": config.searcher,
        "cpus_per_trial": config.cpus_per_trial,
        "wall_s": round(wall_s, 1),
        "experiment_path": experiment,
        "trials": trials,
        "errors": len(results.errors),
    }
    run_dir.write_step_size_tuned(doc)
    return doc


def format_best(doc: dict[str, Any]) -> str:
    """The best config and its numbers, one per line."""
    return "\n".join(
        [
            f"best of {len(doc['trials'])} trial(s): score {doc['score']:.1f} "
            f"(clicks {doc['clicks']:.1f}, {doc['over_budget_windows_pct']:.1f}% of "
            f"{doc['windows']} windows over budget, mean utilisation "
            f"{doc['mean_utilisation']:.3f})",
            f"  method           {doc['method']}"
            + (
                ""
                if doc["step_size"] is None
                else f"; step_size {doc['step_size']:.3g} clicks/FLOP "
                f"({doc['step_size_rel']:.3g} x fitted lambda {doc['fitted_dual_price']:.3g})"
            ),
            f"  window_s         {doc['window_s']:g}",
            f"  smoothing        {doc['smoothing']:.3f}",
            f"  budget           {doc['budget_flops_per_s'] / 1e9:.3g} GFLOP/s "
            f"({doc['budget_fraction']:g} x full chain at {doc['traffic']['base_rate']:g} req/s)",
        ]
    )


__all__ = [
    "StepSizeProblem",
    "StepSizeTuneConfig",
    "TrafficProfile",
    "budget_flops_per_s",
    "calibration_split",
    "fitted_price",
    "format_best",
    "request_order",
    "run_step_size_tune",
    "search_space",
    "step_size_objective",
    "step_size_trainable",
    "tuning_inputs",
]
