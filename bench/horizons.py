"""Which ground-truth horizon? Head quality and the value of computation per horizon.

For the *same* requests of a prepared run (the split given, validation by default) and the
run's trained pool, the positives are re-cut with each horizon (``Horizon.cut`` on the
user's clicks at or after the request), and this prints, per horizon:

  positives     mean ground-truth clicks per request
  popularity, item-kNN, each model: hits@10 over the whole corpus minus the history
  cheapest, full: mean clicks per request of the cheapest and the most expensive chain
  full/cheap:   the value of computation (with a 95% bootstrap interval over users)

Reads the run (after ``greenflow simulate``: its chains); trains nothing (the pool was trained on whatever horizon the run has, but
its training samples do not depend on the horizon: only validation head quality and the
rewards do).

    .venv/bin/python bench/horizons.py --run-dir runs/movielens-100k [--split validation]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from greenflow.platform.bootstrap import ratio_ci
from greenflow.platform.cascade import run_chain, scoring_model
from greenflow.platform.chains import chain_costs
from greenflow.platform.data.requests import Horizon
from greenflow.platform.data.store import load_dataset, load_requests, load_user_splits
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.models.head_quality import head_quality, model_scorer
from greenflow.platform.models.item_stats import click_sequences, cosine_neighbours, popularity
from greenflow.platform.models.pool import load_pool
from greenflow.platform.models.reference_rankers import ItemKNNRanker, PopularityRanker
from greenflow.platform.reward.data import load_simulated_chains
from greenflow.platform.run_dir import RunDir

HORIZONS = ("all", "next:1", "next:5", "next:10", "window:86400")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=RunDir, default=RunDir("runs/movielens-100k"))
    parser.add_argument("--split", default="validation")
    parser.add_argument("--horizons", default=",".join(HORIZONS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    data_dir = args.run_dir.data
    dataset = load_dataset(data_dir)
    requests = load_requests(data_dir, args.split).sort_values("request_id")
    pool = load_pool(args.run_dir)
    features = pool.features
    inter = dataset.interactions
    clicks = inter[inter["label"] == 1].sort_values(["user_id", "ts", "item_id"], kind="stable")
    by_user = {int(u): (g["item_id"].to_numpy(), g["ts"].to_numpy())
               for u, g in clicks.groupby("user_id")}  # fmt: skip
    splits = load_user_splits(data_dir)
    train_users = np.array([u for u, s in splits.items() if s == "cascade_train"])
    sequences = click_sequences(inter, train_users)
    n = features.num_items
    rankers = {
        "popularity": PopularityRanker(popularity(sequences, n)),
        "item_knn": ItemKNNRanker(cosine_neighbours(sequences, n, min(1000, n))),
        **{name: model_scorer(e.model) for name, e in pool.entries.items()},
    }
    user_table = user_feature_table(dataset.users, features)
    histories = [list(h) for h in requests["history"]]
    user_feats = user_table[requests["user_id"].to_numpy()]
    padded = pad_histories(histories, features.max_history)

    # exposed items of the cheapest and the full chain, once (they do not depend on the horizon)
    simulated = load_simulated_chains(args.run_dir)
    chains, space = list(simulated.chains), simulated.space
    costs = chain_costs(chains, pool.flops, n)
    cheapest, full = chains[int(np.argmin(costs))], chains[int(np.argmax(costs))]
    exact = {name: scoring_model(e.model) for name, e in pool.entries.items()}
    exposed = {}
    for label, chain in (("cheapest", cheapest), ("full", full)):
        exposed[label] = [
            run_chain(exact, make_context(user_feats[i : i + 1], padded[i : i + 1]), histories[i],
                      chain, n, space.exposed_k)
            for i in range(len(requests))
        ]  # fmt: skip

    names = list(rankers)
    print(f"{len(requests)} {args.split} requests of {requests['user_id'].nunique()} users; "
          f"cheapest {cheapest.id}, full {full.id}")  # fmt: skip
    print(f"{'horizon':<13} {'positives':>9} " + " ".join(f"{m:>11}" for m in names)
          + f" {'cheapest':>9} {'full':>7} {'full/cheap (95% CI)':>22}")  # fmt: skip
    for text in args.horizons.split(","):
        horizon = Horizon.parse(text)
        positives = []
        for req in requests.itertuples():
            items, ts = by_user[int(req.user_id)]
            start = np.searchsorted(ts, req.ts, side="left")
            positives.append(horizon.cut(items[start:], ts[start:], int(req.ts)).tolist())
        hits = [head_quality(rankers[m], user_feats, padded, histories, positives).hits
                for m in names]  # fmt: skip
        reward = {label: np.array([np.isin(e, p).sum() for e, p in zip(rows, positives,
                                                                        strict=True)])
                  for label, rows in exposed.items()}  # fmt: skip
        value = ratio_ci(reward["full"], reward["cheapest"], requests["user_id"].to_numpy())
        print(
            f"{text:<13} {np.mean([len(p) for p in positives]):>9.1f} "
            + " ".join(f"{h:>11.3f}" for h in hits)
            + f" {reward['cheapest'].mean():>9.3f} {reward['full'].mean():>7.3f}"
            f" {value.ratio:>8.2f} ({value.low:.2f}-{value.high:.2f})"
        )


if __name__ == "__main__":
    main()
