"""One Serve deployment per cascade model: recall DSSM (scoring the corpus through its
item-embedding index), pre-rank YouTube DNN, rank DIN, rank DIEN.

The deployment wraps ``platform.stage.StageScorer`` and adds only Serve concerns: dynamic
batching of concurrent requests (``batching.MicroBatcher``: no wait, a batch is what
queued while the last one ran; each request keeps its own candidates and k), FLOPs exported
as ``greenflow_flops{app, stage, model}`` (summed in the replica and sent every
``METRICS_FLUSH_S``: ``metrics.CounterBuffer``), and an optional
GPU per replica (``ray_actor_options={"num_gpus": …}``, used when CUDA is there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import torch
from ray import serve

from greenflow.platform.cascade import scoring_model
from greenflow.platform.models.pool import load_pool
from greenflow.platform.run_dir import RunDir
from greenflow.platform.stage import StageRequest, StageResult, StageScorer
from greenflow.ray_support.metrics import FLOPS, CounterBuffer, counter
from greenflow.serve_apps.batching import MicroBatcher

logger = logging.getLogger(__name__)

MAX_BATCH = 16
# Under load (the last batch held > 1 request) a batch waits this long for more: the model's
# per-batch cost is shared by more requests. A lone request never waits.
LINGER_S = 0.002
METRICS_FLUSH_S = 0.5  # how often the summed FLOPs go to Ray's metrics


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class StageModel:
    """Scores what a chain asks of one model: ``score_many(wire requests) -> wire results``
    (``StageRequest.to_wire`` in, ``StageResult.to_wire`` out: builtins, not dataclasses,
    on the Serve hop)."""

    def __init__(self, run_dir: str, model: str, app_name: str) -> None:
        # One intra-op thread per replica: replicas, not threads, are the unit of scale,
        # and several multi-threaded replicas on a small node only thrash.
        torch.set_num_threads(1)
        pool = load_pool(RunDir(run_dir))
        if model not in pool.models:
            raise KeyError(f"model {model!r} is not in the pool {sorted(pool.models)}")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model_name = model
        self.device = device
        self.scorer = StageScorer(
            scoring_model(pool.models[model]),
            pool.flops[model],
            pool.features.num_items,
            pool.features.max_history,
            device,
        )
        self._flops = CounterBuffer(counter(FLOPS), {"app": app_name, "model": model})
        self._flusher: asyncio.Task[None] | None = None
        self._batcher = MicroBatcher(self._score_batch, MAX_BATCH, LINGER_S)
        self.calls = 0  # Serve calls served (``score_many``)
        self.requests = 0  # stage requests scored in them

    def _score_batch(self, requests: list[StageRequest]) -> list[StageResult]:
        # The model runs on the replica's (user-code) event loop: a batch takes 1-10 ms on
        # one thread, and requests arriving meanwhile queue for the next batch all the same;
        # a worker thread only added a hop and contended for the GIL.
        start = time.perf_counter()
        results = self.scorer(requests)
        compute_ms = (time.perf_counter() - start) * 1e3  # for the per-hop latency breakdown
        return [dataclasses.replace(r, compute_ms=compute_ms, batch=len(requests)) for r in results]

    async def score_many(self, wires: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The stage requests of one Serve call (the allocator sends those of requests that
        travel together as one call; a lone request is a list of one); one result each, in
        order. They join the same model batch (up to ``MAX_BATCH``) as any calls queued
        beside them."""
        self.calls += 1
        parsed = [StageRequest.from_wire(w) for w in wires]
        # futures, not coroutines: gather wraps no task around each request
        results = await asyncio.gather(*(self._batcher.submit(request) for request, _ in parsed))
        for result, (_, stage) in zip(results, parsed, strict=True):
            self._count(result, stage)
        return [result.to_wire() for result in results]

    def _count(self, result: StageResult, stage: str) -> None:
        self.requests += 1
        self._flops.add(result.flops, stage=stage)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_metrics())

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            try:
                self._flops.flush()
            except Exception:  # the next flush sends what this one kept
                logger.exception("sending the FLOPs metric failed")

    def info(self) -> dict[str, Any]:
        """The model, its device, and the Serve calls and requests this replica served."""
        return {"model": self.model_name, "device": self.device, "calls": self.calls,
                "requests": self.requests}  # fmt: skip
