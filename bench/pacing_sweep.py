"""In-window pacing's constant against utilisation μ and clicks, on the reward split.

``PACE_SIGMAS_BELOW`` (``platform/allocation/pacing.py``) is how many standard deviations
fewer late requests a replica plans for: higher spends more of each window, on its last
requests. This sweeps it through the step-size tune's own replay (``step_size_objective``:
the serving core on a fake clock over the *reward* split, never the evaluation split) at
the tuned settings of the run (or the defaults below), for a few base rates and traffic
seeds, and prints μ %, true clicks and guarded requests per setting; the clicks column is
the sum over the seeds.

    .venv/bin/python bench/pacing_sweep.py --run-dir runs/movielens-100k
"""

from __future__ import annotations

import argparse
from typing import Any

import greenflow.platform.allocation.pacing as pacing
from greenflow.platform.run_dir import RunDir
from greenflow.platform.traffic import TrafficProfile
from greenflow.tune_configs.step_size import StepSizeProblem, step_size_objective, tuning_inputs

# The tuned settings on ML-100k (session 6/7: gradient λ, η 2.58× the fitted λ, 5 s, 0.80)
DEFAULT_PARAMS: dict[str, Any] = {"method": "gradient", "step_size_rel": 2.58, "window_s": 5.0,
                                  "smoothing": 0.80}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=RunDir, default=RunDir("runs/movielens-100k"))
    parser.add_argument("--sigmas", default="0,0.5,1,1.5,2", help="values of the constant")
    parser.add_argument("--rates", default="8,20", help="base rates, req/s (3x spike)")
    parser.add_argument("--seeds", type=int, default=3, help="traffic seeds 0..N-1")
    parser.add_argument("--seconds", type=float, default=300.0, help="replay length (s)")
    args = parser.parse_args()
    Q, R, q = tuning_inputs(args.run_dir)
    tuned = args.run_dir.read_step_size_tuned()  # `greenflow tune step-size`'s best, if run
    params = {k: tuned[k] for k in DEFAULT_PARAMS} if tuned else DEFAULT_PARAMS
    print(f"{len(Q)} reward-split requests x {len(q)} chains; settings {params}")
    print(f"{'rate':>5} {'sigmas':>6} {'mu % (min-max)':>16} {'clicks (sum)':>13} {'guarded':>8}")
    default = pacing.PACE_SIGMAS_BELOW
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            for sigmas in (float(s) for s in args.sigmas.split(",")):
                pacing.PACE_SIGMAS_BELOW = sigmas
                runs = [
                    step_size_objective(params, Q, R, q, StepSizeProblem(traffic=TrafficProfile(
                        base_rate=rate, duration_s=args.seconds, spike_factor=3.0, seed=seed)))
                    for seed in range(args.seeds)
                ]  # fmt: skip
                mu = [r["utilisation_pct"] for r in runs]
                print(f"{rate:>5g} {sigmas:>6g} {min(mu):>7.1f}-{max(mu):<8.1f}"
                      f"{sum(r['clicks'] for r in runs):>13,.0f}"
                      f"{sum(r['guard_requests'] for r in runs):>9}")  # fmt: skip
    finally:
        pacing.PACE_SIGMAS_BELOW = default


if __name__ == "__main__":
    main()
