"""Routing one request through its chain's stage deployments: the allocator's hot path.

Each stage is a call to that model's deployment, the candidates of one stage the input of
the next, each call under its own timeout. The stage calls of requests that travel
together — chosen in one allocator batch, so they reach each stage in the same event-loop
turn — go as one Serve call per model (``StageModel.score_many``, a ``CallBatcher`` per
model, no wait): a Serve hop costs the caller and the replica ~2-3 ms of CPU whatever it
carries, so under load the hops per request fall with the batch. A lone request makes one
call per stage as before. The items are the same either way: a stage scores each request
on its own candidates (``platform.stage``).

(Tried and dropped, twice: sending the recall call before the chain is chosen, with the
chains' largest k — recall's FLOPs and its top-k order do not depend on k, so the items
are the same. The recall wait fell by ~1.5-2.5 ms, but dispatching the call contends for
the GIL with the reward model in the same replica, and allocation rose by as much:
session 6, eager reward model, allocation p99 4.1 -> 6.8 ms; session 10, traced reward
model, allocation p50 1.9 -> 3.5 ms, sequential p50 over the floor 1.55x -> 1.50x, no
better than the runs' spread.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ray.serve.handle import DeploymentHandle, DeploymentResponse

from greenflow.platform.chains import Chain
from greenflow.platform.serving import ResolvedRequest
from greenflow.platform.stage import StageRequest, StageResult
from greenflow.serve_apps.batching import CallBatcher

# Items, FLOPs, and per stage: the call's wall time and the model's batch time (ms), and
# the batch's size.
ChainOutcome = tuple[list[int], float, list[dict[str, float]]]
Wire = dict[str, Any]  # a stage request or result on the Serve hop (``StageRequest.to_wire``)
HOP_MAX_BATCH = 16  # requests per stage call (the stage replicas' model batch, MAX_BATCH)


class StageFailure(RuntimeError):
    """A stage call failed or timed out; ``flops`` were spent by the stages before it."""

    def __init__(self, model: str, cause: BaseException, flops: float = 0.0) -> None:
        super().__init__(f"stage model {model!r} failed: {type(cause).__name__}: {cause}")
        self.model = model
        self.flops = flops


class ChainRunner:
    """Calls the stage deployments of a chain in turn; ``timeout_s`` per stage call."""

    def __init__(self, stages: dict[str, DeploymentHandle], stage_names: Sequence[str],
                 timeout_s: float) -> None:  # fmt: skip
        self.stages = stages
        self.stage_names = list(stage_names)
        self.timeout_s = timeout_s
        self._hops = {model: CallBatcher(self._caller(model), HOP_MAX_BATCH)
                      for model in stages}  # fmt: skip

    def _caller(self, model: str) -> Callable[[list[Wire]], Awaitable[list[Wire]]]:
        handle = self.stages[model]

        def call(wires: list[Wire]) -> Awaitable[list[Wire]]:
            """One Serve call with the stage requests of a batch, sent now; its answer
            awaited under the timeout."""
            return self._answer(handle.score_many.remote(wires))

        return call

    async def _answer(self, response: DeploymentResponse) -> list[Wire]:
        try:  # asyncio.timeout, not wait_for: no task per call
            async with asyncio.timeout(self.timeout_s):
                return await response
        except BaseException:
            response.cancel()
            raise

    async def run(self, req: ResolvedRequest, chain: Chain) -> ChainOutcome:
        """Items (at most ``req.k``), FLOPs and per-stage timings of ``chain`` for ``req``;
        raises ``StageFailure``."""
        candidates: list[int] | None = None
        flops = 0.0
        timing: list[dict[str, float]] = []
        user_feats = req.user_feats.tolist()
        for stage, action in zip(self.stage_names, chain.actions, strict=True):
            start = time.perf_counter()
            wire = StageRequest(user_feats, req.history, candidates, action.k).to_wire(stage)
            try:
                result = StageResult.from_wire(await self._hops[action.model](wire))
            except Exception as err:
                raise StageFailure(action.model, err, flops) from err
            candidates, flops = result.items, flops + result.flops
            timing.append({"call": (time.perf_counter() - start) * 1e3,
                           "compute": result.compute_ms, "batch": result.batch})  # fmt: skip
        return (candidates or [])[: req.k], flops, timing
