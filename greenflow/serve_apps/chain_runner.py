"""Routing one request through its chain's stage deployments: the allocator's hot path.

Each stage is one call to that model's deployment (``StageModel.score``), the candidates
of one stage the input of the next, each call under its own timeout.

(Tried and dropped: sending the recall call before the chain is chosen, with the largest
k — recall's FLOPs and its top-k order do not depend on k, so the items are the same. It
cut the recall wait by ~2.5 ms, but dispatching the call contends for the GIL with the
reward model in the same replica: allocation p50 1.6 -> 2.4 ms, p99 4.1 -> 6.8 ms, past
the 5 ms target of ``bench/serving.py`` (a), and end to end no better there.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ray.serve.handle import DeploymentHandle, DeploymentResponse

from greenflow.platform.chains import Chain
from greenflow.platform.serving import ResolvedRequest
from greenflow.platform.stage import StageRequest, StageResult

# Items, FLOPs, and per stage: the call's wall time and the model's batch time (ms), and
# the batch's size.
ChainOutcome = tuple[list[int], float, list[dict[str, float]]]


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

    def _call(self, model: str, req: ResolvedRequest, candidates: list[int] | None, k: int,
              stage: str) -> DeploymentResponse:  # fmt: skip
        request = StageRequest(req.user_feats.tolist(), req.history, candidates, k)
        return self.stages[model].score.remote(request.to_wire(stage))

    async def run(self, req: ResolvedRequest, chain: Chain) -> ChainOutcome:
        """Items (at most ``req.k``), FLOPs and per-stage timings of ``chain`` for ``req``;
        raises ``StageFailure``."""
        candidates: list[int] | None = None
        flops = 0.0
        timing: list[dict[str, float]] = []
        for stage, action in zip(self.stage_names, chain.actions, strict=True):
            start = time.perf_counter()
            call = self._call(action.model, req, candidates, action.k, stage)
            try:  # asyncio.timeout, not wait_for: no task per call
                async with asyncio.timeout(self.timeout_s):
                    result = StageResult.from_wire(await call)
            except Exception as err:
                call.cancel()
                raise StageFailure(action.model, err, flops) from err
            candidates, flops = result.items, flops + result.flops
            timing.append({"call": (time.perf_counter() - start) * 1e3,
                           "compute": result.compute_ms, "batch": result.batch})  # fmt: skip
        return (candidates or [])[: req.k], flops, timing
