"""How much can multi-stage allocation gain over one-stage allocation (DCAF) on a run?

GreenFlow chooses every stage's action per request; DCAF only the rank stage's item scale
k₂ (the rest fixed at the best prefix for the budget), with the *same* reward model. When
GreenFlow ≈ DCAF, is the reward model too weak to find the extra gain, or is there no
extra gain to find? This answers it by giving both allocators reward estimates that know
*more* than any honest model could — all fitted on the evaluation split itself:

  served         the run's reward model (trained on the reward split): the honest figure
  in-sample      the same reward model architecture trained on the evaluation requests
  chain x act.   each chain's mean true clicks per activity quartile of the eval requests
  chain mean     each chain's mean true clicks (no per-request information at all)

and prints GreenFlow's and DCAF's true clicks at 20..60% of the full cost. If even the
leaky estimates leave GreenFlow within a few percent of DCAF, the value of computation is
concentrated in k₂ and the extra freedom (k₁, rank model) has little to give on this data.

On a synthetic run (known click model) everything is scored on *expected* clicks, and
three rows bound what an allocator could reach:

  in-sample E[R] the reward model trained on the evaluation requests' expected rewards:
                 the best a model of the request's features can do (a fair ceiling)
  true E[R]      GreenFlow given the exact expected rewards (≈ oracle-expected)

    .venv/bin/python bench/allocation_headroom.py --run-dir runs/movielens-100k
    .venv/bin/python bench/allocation_headroom.py --run-dir runs/synthetic
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from greenflow.platform.allocation.baselines import DCAFPolicy, GreenFlowPolicy, OraclePolicy
from greenflow.platform.evaluation import sweep
from greenflow.platform.offline_evaluation import load_inputs
from greenflow.platform.reward.model import VARIANTS
from greenflow.platform.reward.run import fit_reward_model, load_training_data
from greenflow.platform.reward.training import RewardTrainConfig, predict
from greenflow.platform.run_dir import RunDir

FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=RunDir, default=RunDir("runs/movielens-100k"))
    args = parser.parse_args()
    inputs = load_inputs(args.run_dir)
    q = inputs.q
    R = inputs.R if inputs.expected is None else inputs.expected  # what the rows score
    budgets = np.array(FRACTIONS) * q.max() * len(R)

    train_config = RewardTrainConfig()
    data = load_training_data(args.run_dir, train_config)
    if data.eval is None:
        raise SystemExit("no evaluation samples: run `greenflow simulate --splits reward,eval`")
    leaky = dataclasses.replace(data, train=data.eval, val=data.eval)
    model, _ = fit_reward_model(leaky, VARIANTS["full"], train_config, log=lambda _: None)
    quartile = np.digitize(data.eval.activity, np.quantile(data.eval.activity, [0.25, 0.5, 0.75]))
    by_quartile = np.stack([R[quartile == k].mean(axis=0) for k in range(4)])[quartile]
    estimates = {
        "served": inputs.estimates["full"],
        "in-sample": predict(model, data.encoding, data.eval),
        "chain x act.": by_quartile,
        "chain mean": np.tile(R.mean(axis=0), (len(R), 1)),
    }
    if inputs.expected is not None:
        assert data.eval.expected is not None
        on_truth = dataclasses.replace(data.eval, reward=data.eval.expected)
        truth_fit = dataclasses.replace(data, train=on_truth, val=on_truth)
        model, _ = fit_reward_model(truth_fit, VARIANTS["full"], train_config, log=lambda _: None)
        estimates["in-sample E[R]"] = predict(model, data.encoding, data.eval)
        estimates["true E[R]"] = inputs.expected
    scored = "true" if inputs.expected is None else "expected"
    print(f"{len(R)} evaluation requests; {scored} clicks at a fraction of the full cost")
    print(f"{'estimates':<14} {'policy':<10}" + "".join(f"{f:>8.0%}" for f in FRACTIONS))
    oracle = sweep(OraclePolicy(R, q), R, q, budgets).clicks
    print(f"{'exact solve':<14} {'oracle':<10}" + "".join(f"{c:>8.0f}" for c in oracle))
    for name, Q in estimates.items():
        green = sweep(GreenFlowPolicy(Q, q), R, q, budgets).clicks
        dcaf = sweep(DCAFPolicy(Q, q, inputs.chains), R, q, budgets).clicks
        print(f"{name:<14} {'greenflow':<10}" + "".join(f"{c:>8.0f}" for c in green))
        print(f"{'':<14} {'dcaf':<10}" + "".join(f"{c:>8.0f}" for c in dcaf))
        print(
            f"{'':<14} {'ratio':<10}"
            + "".join(f"{a / b:>8.3f}" for a, b in zip(green, dcaf, strict=True))
        )


if __name__ == "__main__":
    main()
