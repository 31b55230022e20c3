"""Online allocation replayed on a fake clock: guards and λ updates compared over many windows.

The serving core (``OnlineAllocator`` + ``NearlineDriver``, exactly what the Serve replicas
and the driver actor run, through ``platform.allocation.replay.replay_serving``, as the
step-size tune) is driven request by request on an injected clock, over the
evaluation requests of a run with Poisson arrivals (base rate, a 3x spike in the middle
third). No Ray, no HTTP: the decisions and the windows are the same, the timing is ideal
(λ polled every 0.1 s, windows closed 0.2 s after they end), and the clicks are the TRUE
clicks of the chains served (the simulated R_ij). Variants:

  paper-guard       reactive guard (cheapest chain only past C (1 + 5%)), gradient λ
                    with the step size of the tune's best gradient trial
                    (`greenflow tune step-size`), no pacing
  predictive        guard acting on predicted spend, no reserve, exact λ re-solve, no
                    pacing
  unpaced           predictive + reserve for the expected arrivals (mean + 3 sd), exact λ,
                    no pacing (the serving default before in-window pacing)
  serving           unpaced + in-window pacing (``platform/allocation/pacing.py``)
                    — the serving default
  serving-gradient  the serving default with gradient λ (that trial's step size)
  serving-forecast  the serving default, λ solved for the next window's *forecast*
                    arrivals (the traffic profile's expected count) instead of the last
                    window's count
  equal             the best fixed chain for the budget, serving guard
  tuned             what `greenflow serve` loads: the tune's λ update, window, η and
                    smoothing (only when the run has been tuned)

"after spike μ" is the utilisation of the two windows that start after the spike ends:
the under-spend a λ solved for the last (spike) window's traffic causes.

    .venv/bin/python bench/online_replay.py --run-dir runs/movielens-100k [--seconds 600]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import numpy as np

from greenflow.platform.allocation.adherence import budget_adherence
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.primal_dual import DualPriceController
from greenflow.platform.allocation.replay import EPOCH_S, ServingSettings, replay_serving
from greenflow.platform.offline_evaluation import load_inputs
from greenflow.platform.reward.store import predict_rewards
from greenflow.platform.run_dir import BENCH_ONLINE_REPLAY, RunDir
from greenflow.platform.serving import load_serving_assets
from greenflow.platform.traffic import TrafficProfile, request_order

SLACK = 1.01  # a window is over budget when spend > C × this

# name -> its settings of the serving core beside the defaults (λ update, guard)
VARIANTS = {
    "paper-guard": dict(method="gradient", reserve_sigmas=None, guard_tolerance=0.05,
                        predictive=False, pacing=False),
    "predictive": dict(method="exact", reserve_sigmas=None, pacing=False),
    "unpaced": dict(method="exact", pacing=False),
    "serving": dict(method="exact"),
    "serving-gradient": dict(method="gradient"),
    "serving-forecast": dict(method="exact"),
    "equal": dict(method="exact"),
}  # fmt: skip


def gradient_knobs(tuned: dict[str, Any]) -> dict[str, float]:
    """η (× the warm-start λ) and smoothing of the tune's best *gradient* trial (its best
    trial may be an exact re-solve, whose η means nothing); 1 and 0 when untuned."""
    trials = [t["params"] for t in tuned.get("trials", []) if t["params"].get("method",
              "gradient") == "gradient" and t["score"] is not None]  # fmt: skip
    best = trials[0] if trials else {}  # the tune sorts its trials by score, best first
    return {"step_size_rel": float(best.get("step_size_rel", 1.0)),
            "smoothing": float(best.get("smoothing", 0.0))}  # fmt: skip


def run_variant(name: str, settings: ServingSettings, Q: np.ndarray, R: np.ndarray,
                q: np.ndarray, arrivals: np.ndarray, rows: np.ndarray, budget: ComputeBudget,
                fit_price: float, fixed: int | None,
                profile: TrafficProfile | None = None) -> dict[str, Any]:  # fmt: skip
    window_s = settings.window_s
    forecast = profile.expected_arrivals if name == "serving-forecast" and profile else None
    result = replay_serving(Q[rows], q, arrivals, budget, settings, fit_price, clicks=R[rows],
                            fixed_chain=fixed, arrivals_forecast=forecast)  # fmt: skip
    # full windows only: from the replay's start to one window before its last arrival
    windows = [w for w in result.windows
               if EPOCH_S <= w["t"] < EPOCH_S + arrivals[-1] - window_s]  # fmt: skip
    util = np.array([w["spend"] / w["budget"] for w in windows])
    spike_end = EPOCH_S + (profile.spike_interval_s()[1] if profile else np.inf)
    after = [w["spend"] / w["budget"] for w in windows
             if spike_end <= w["t"] < spike_end + 2 * window_s]  # fmt: skip
    adherence = budget_adherence([w["spend"] for w in windows], [w["budget"] for w in windows],
                                 [w["requests"] for w in windows])  # fmt: skip
    return {
        "clicks": result.clicks,
        "flops_per_request": result.flops / len(rows),
        "windows": len(windows),
        "over_budget_windows_pct": 100.0 * float((util > SLACK).mean()),
        "utilisation_pct": adherence.utilisation_pct,
        "over_utilisation_pct": adherence.over_utilisation_pct,
        "max_utilisation": float(util.max()),
        "after_spike_utilisation_pct": 100.0 * float(np.mean(after)) if after else None,
        "mean_utilisation": float(util.mean()),
        "guard_requests": int(sum(w["guard_requests"] for w in windows)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=RunDir, default=RunDir("runs/movielens-100k"))
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--base-rate", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reserve-sigmas", type=float, default=3.0, help="serving guard reserve")
    args = parser.parse_args()
    inputs = load_inputs(args.run_dir)
    Q, R, q = inputs.estimates["full"], inputs.R, inputs.q
    assets = load_serving_assets(args.run_dir)
    assert np.allclose(assets.q, q), "chain costs differ between simulation and reward model"
    profile = TrafficProfile(base_rate=args.base_rate, duration_s=args.seconds, seed=args.seed)
    arrivals = profile.arrivals()
    rows = request_order(len(Q), len(arrivals), args.seed)
    per_request = 0.5 * float(q.max())
    budget = ComputeBudget("flops", per_request * args.base_rate)
    tuned = args.run_dir.read_step_size_tuned() or {}
    Q_train = predict_rewards(args.run_dir, "full", "reward")
    fit = DualPriceController().fit(Q_train, q, per_request * len(Q_train)).price()
    results = {}
    base = ServingSettings(window_s=args.window_s, reserve_sigmas=args.reserve_sigmas)
    variants = {name: dataclasses.replace(base, **knobs) for name, knobs in VARIANTS.items()}
    for name, settings in variants.items():
        if settings.method == "gradient":
            variants[name] = dataclasses.replace(settings, **gradient_knobs(tuned))
    if tuned:  # what `greenflow serve` loads: the tune's λ update, window, η and smoothing
        variants["tuned"] = dataclasses.replace(
            base, method=tuned["method"], window_s=float(tuned["window_s"]),
            step_size_rel=float(tuned["step_size_rel"]), smoothing=float(tuned["smoothing"]),
        )  # fmt: skip
    for name, settings in variants.items():
        fixed = assets.policy_chain("equal", per_request) if name == "equal" else None
        results[name] = run_variant(name, settings, Q, R, q, arrivals, rows, budget, fit,
                                    fixed, profile)  # fmt: skip
    print(f"{len(arrivals):,} requests over {args.seconds:.0f} s ({args.base_rate:g} req/s, 3x "
          f"spike in the middle third), {args.window_s:g} s windows, budget "
          f"{budget.flops_per_s():.3g} FLOPs/s; clicks are true clicks")  # fmt: skip
    head = (f"{'variant':<18}{'clicks':>8}{'FLOPs/req':>11}{'windows':>8}{'over >1%':>10}"
            f"{'μ %':>8}{'ν %':>7}{'max util':>10}{'guarded':>9}{'after spike μ %':>17}")  # fmt: skip
    print(head + "\n" + "-" * len(head))
    for name, r in results.items():
        print(f"{name:<18}{r['clicks']:>8.0f}{r['flops_per_request']:>11.3g}{r['windows']:>8d}"
              f"{r['over_budget_windows_pct']:>9.1f}%{r['utilisation_pct']:>8.2f}"
              f"{r['over_utilisation_pct']:>7.2f}{r['max_utilisation']:>10.3f}"
              f"{r['guard_requests']:>9d}{r['after_spike_utilisation_pct'] or 0:>17.1f}")  # fmt: skip
    args.run_dir.write_bench_online_replay(results)
    print(f"-> {args.run_dir.show(BENCH_ONLINE_REPLAY)}")


if __name__ == "__main__":
    main()
