"""A four-stage cascade (recall → prerank → rank → rerank, ``FOUR_STAGE_SPACE``) through the
Ray Data simulation job and the offline evaluation."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from greenflow.config import Config
from greenflow.platform.cascade import reward, run_chain, scoring_model
from greenflow.platform.chains import generate_chains
from greenflow.platform.data.store import load_dataset, load_requests
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.models.pool import load_pool
from greenflow.platform.offline_evaluation import EvaluateConfig, run_evaluation

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_the_job_simulates_every_four_stage_chain(four_stage_simulated: Config) -> None:
    config = four_stage_simulated
    doc = config.run_dir.read_simulation()
    chains = generate_chains(config.chains)
    assert doc.num_chains == len(chains) == 8 and not doc.malformed
    assert [c.id for c in doc.chains] == [c.id for c in chains]
    assert all(len(c.actions) == 4 for c in chains)
    requests = load_requests(config.data_dir)
    simulated = requests[requests["split"].isin(["reward", "eval"])]
    assert doc.rows == len(simulated)
    # the samples are the reference cascade's rewards, four stages deep
    samples = config.run_dir.read_samples().to_pandas().set_index("request_id")
    pool = load_pool(config.run_dir)
    models = {n: scoring_model(m) for n, m in pool.models.items()}
    users = user_feature_table(load_dataset(config.data_dir).users, pool.features)
    for row in simulated.head(6).itertuples():
        ctx = make_context(users[[row.user_id]], pad_histories([row.history], 10))
        ref = [reward(run_chain(models, ctx, row.history, c, pool.features.num_items,
                                config.chains.exposed_k), row.positives) for c in chains]  # fmt: skip
        assert list(samples.loc[row.request_id, "reward"]) == ref


def test_offline_evaluation_names_its_tables_from_the_space(
    four_stage_simulated: Config, tmp_path: Path
) -> None:
    shutil.copytree(four_stage_simulated.run_dir.local_path, tmp_path / "run")
    config = dataclasses.replace(four_stage_simulated, run_dir=tmp_path / "run")
    doc = run_evaluation(config.run_dir, EvaluateConfig(budgets=5), log=lambda _: None).to_json()
    assert {"greenflow", "equal", "equal-dien", "cras", "cras-dien", "dcaf", "oracle"} <= set(
        doc["methods"]
    )
    assert list(doc["table2_action_subsets"]) == [
        "k1 only", "k2 only", "k3 only", "rerank model only", "k1 + k2 + k3", "all actions",
    ]  # fmt: skip
    assert doc["table2_action_subsets"]["all actions"]["chains"] == 8
    assert doc["table2_action_subsets"]["k3 only"]["chains"] == 2  # din@5 or din@10
    assert set(doc["table3_rank_models"]) == {"dien", "both"}
    for name, curve in doc["methods"].items():
        oracle = doc["methods"]["oracle"]["clicks"]
        assert all(c <= o + 1e-9 for c, o in zip(curve["clicks"], oracle, strict=True)), name
