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

    .venv/bin/python bench/allocation_headroom.py --run-dir runs/movielens-100k
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from greenflow.platform.allocation.baselines import DCAFPolicy, GreenFlowPolicy
from greenflow.platform.evaluation import sweep
from greenflow.platform.reward.model import VARIANTS
from greenflow.platform.reward.run import fit_reward_model, load_training_data
from greenflow.platform.reward.training import RewardTrainConfig, predict
from greenflow.simulators.evaluate import load_inputs

FRACTIONS = (0.2, 0.3, 0.4, 0.5, 0.6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/movielens-100k"))
    args = parser.parse_args()
    inputs = load_inputs(args.run_dir)
    R, q = inputs.R, inputs.q
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
    print(f"{len(R)} evaluation requests; true clicks at a fraction of the full cost")
    print(f"{'estimates':<13} {'policy':<10}" + "".join(f"{f:>8.0%}" for f in FRACTIONS))
    for name, Q in estimates.items():
        green = sweep(GreenFlowPolicy(Q, q), R, q, budgets).clicks
        dcaf = sweep(DCAFPolicy(Q, q, inputs.chains, free_stage=1), R, q, budgets).clicks
        print(f"{name:<13} {'greenflow':<10}" + "".join(f"{c:>8.0f}" for c in green))
        print(f"{'':<13} {'dcaf':<10}" + "".join(f"{c:>8.0f}" for c in dcaf))
        print(
            f"{'':<13} {'ratio':<10}"
            + "".join(f"{a / b:>8.3f}" for a, b in zip(green, dcaf, strict=True))
        )


if __name__ == "__main__":
    main()
