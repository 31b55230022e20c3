"""Serving stages chained request by request expose exactly what ``run_chain`` exposes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenflow.platform.cascade import run_chain, scoring_model
from greenflow.platform.chains import generate_chains
from greenflow.platform.data.store import load_dataset, load_requests
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.models.pool import load_pool
from greenflow.platform.stage import StageRequest, StageResult, StageScorer

pytestmark = pytest.mark.usefixtures("no_ray")


def test_batched_stages_match_the_reference_cascade(tiny_run) -> None:
    pool = load_pool(tiny_run.run_dir)
    n, max_hist = pool.features.num_items, pool.features.max_history
    models = {name: scoring_model(m) for name, m in pool.models.items()}
    scorers = {name: StageScorer(m, pool.flops[name], n, max_hist) for name, m in models.items()}
    users = user_feature_table(load_dataset(tiny_run.data_dir).users, pool.features)
    requests = load_requests(tiny_run.data_dir, "eval").head(12)
    chains = generate_chains(tiny_run.chains)
    rng = np.random.default_rng(0)
    picks = [chains[i] for i in rng.integers(0, len(chains), len(requests))]
    # one request per row, each with its own chain, run stage by stage as one batch per stage
    histories = [list(h) for h in requests["history"]]
    feats = [users[u] for u in requests["user_id"]]
    candidates: list[list[int] | None] = [None] * len(requests)
    flops = np.zeros(len(requests))
    for s in range(len(tiny_run.chains.stages)):
        for model in {c.actions[s].model for c in picks}:
            rows = [i for i, c in enumerate(picks) if c.actions[s].model == model]
            batch = [StageRequest(feats[i], histories[i], candidates[i], picks[i].actions[s].k)
                     for i in rows]  # fmt: skip
            for i, result in zip(rows, scorers[model](batch), strict=True):
                candidates[i], flops[i] = result.items, flops[i] + result.flops
    for i, chain in enumerate(picks):
        ctx = make_context(users[[requests["user_id"].iloc[i]]],
                           pad_histories([histories[i]], max_hist))  # fmt: skip
        expected = run_chain(models, ctx, histories[i], chain, n, tiny_run.chains.exposed_k)
        assert candidates[i][: tiny_run.chains.exposed_k] == expected.tolist(), chain.id
        assert flops[i] == pytest.approx(
            sum(pool.flops[a.model].cost(n if s == 0 else chain.actions[s - 1].k)
                for s, a in enumerate(chain.actions))
        )  # fmt: skip


def test_stage_request_refuses_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be"):
        StageRequest([0], [], None, 0)


def test_scoring_in_item_chunks_changes_no_result(tiny_run) -> None:
    """``CascadeModel.item_chunk`` bounds memory only: any chunking serves the same items."""
    pool = load_pool(tiny_run.run_dir)
    n, max_hist = pool.features.num_items, pool.features.max_history
    users = user_feature_table(load_dataset(tiny_run.data_dir).users, pool.features)
    requests = load_requests(tiny_run.data_dir, "eval").head(6)
    batch = [StageRequest(users[u], list(h), None, 20)
             for u, h in zip(requests["user_id"], requests["history"], strict=True)]  # fmt: skip
    for name, model in pool.models.items():
        scorer = StageScorer(scoring_model(model), pool.flops[name], n, max_hist)
        whole = scorer(batch)
        scorer._traced = None  # the eager path, which chunks
        assert scorer(batch) == whole, name
        scorer.model.item_chunk = 7  # an instance attribute over the class's
        assert scorer(batch) == whole, name


def test_traceable_models_score_as_one_exact_trace(tiny_run) -> None:
    pool = load_pool(tiny_run.run_dir)
    n, max_hist = pool.features.num_items, pool.features.max_history
    traced = {name: StageScorer(scoring_model(m), pool.flops[name], n, max_hist)._traced
              for name, m in pool.models.items()}  # fmt: skip
    assert {name for name, t in traced.items() if t is not None} == {"dssm", "youtube_dnn"}
    assert all(isinstance(traced[name], torch.jit.ScriptModule) for name in ("dssm", "youtube_dnn"))


def test_stage_calls_travel_as_builtins_and_round_trip() -> None:
    """The Serve hop's wire format: msgpack-able builtins (Ray pickles anything else)."""
    import msgpack

    request = StageRequest([3, 1], [5, 9, 2], [7, 8], 2)
    wire = request.to_wire("prerank")
    assert msgpack.unpackb(msgpack.packb(wire)) == wire
    assert StageRequest.from_wire(wire) == (request, "prerank")
    recall = StageRequest([3, 1], [5], None, 4)
    assert StageRequest.from_wire(recall.to_wire("recall")) == (recall, "recall")
    result = StageResult([8, 7], 1234.0, compute_ms=0.5, batch=3)
    assert msgpack.unpackb(msgpack.packb(result.to_wire())) == result.to_wire()
    assert StageResult.from_wire(result.to_wire()) == result
