"""The Serve app on a four-stage chain space (recall → prerank → rank → rerank): one
deployment per model of the space, and a request routed through four stages."""

from __future__ import annotations

import pytest

from greenflow.config import Config
from greenflow.platform.cascade import run_chain, scoring_model
from greenflow.platform.chains import Chain
from greenflow.platform.data.store import load_dataset, load_requests
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.models.pool import load_pool
from greenflow.serve_apps.app import AppArgs, deploy, teardown
from tests.serve_apps.conftest import call

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_recommend_routes_a_request_through_four_stages(
    four_stage_simulated: Config, serve_port: int
) -> None:
    config = four_stage_simulated
    args = AppArgs(run_dir=str(config.run_dir), app_name="four", window_s=1.0,
                   expected_rate_rps=20.0, stage_num_cpus=0.1, allocator_num_cpus=0.1)  # fmt: skip
    url = deploy(args, port=serve_port)
    try:
        row = next(load_requests(config.data_dir, "eval").itertuples())
        history = [int(i) for i in row.history]
        status, doc = call(f"{url}/recommend", {"user_id": int(row.user_id), "history": history})
    finally:
        teardown(args.app_name)
    assert status == 200, doc
    stages = doc["chain"]["stages"]
    assert [s["stage"] for s in stages] == ["recall", "prerank", "rank", "rerank"]
    assert [s["model"] for s in stages] == ["dssm", "youtube_dnn", "din", "dien"]
    # what the four stage deployments returned is the reference cascade of that chain
    pool = load_pool(config.run_dir)
    users = user_feature_table(load_dataset(config.data_dir).users, pool.features)
    ctx = make_context(users[[row.user_id]], pad_histories([history], pool.features.max_history))
    expected = run_chain({n: scoring_model(m) for n, m in pool.models.items()}, ctx, history,
                         Chain.parse(doc["chain"]["id"]), pool.features.num_items,
                         config.chains.exposed_k)  # fmt: skip
    assert doc["items"] == expected.tolist()
