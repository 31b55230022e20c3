"""Routing one request through its chain's stage deployments: the allocator's hot path.

Each stage is one call to that model's deployment (``StageModel.score``), the candidates
of one stage the input of the next. The first stage scores the whole corpus whatever k it
passes on (its FLOPs do not depend on k), and its top k of a chain are the first k of its
top ``max k`` (the order — score descending, ties to the smaller id — is total). So when
every chain starts with the same model, its call goes out *before* the chain is chosen,
with the largest k, and overlaps the allocation; the chain then takes its first k items.
The items served are the same as a call made after the choice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ray.serve.handle import DeploymentHandle, DeploymentResponse

from greenflow.platform.chains import Chain
from greenflow.platform.serving import ResolvedRequest
from greenflow.platform.stage import StageRequest, StageResult

# Items, FLOPs, and per stage: the time the request waited on the call and the model's
# batch time (ms), and the batch's size.
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
                 chains: Sequence[Chain], timeout_s: float) -> None:  # fmt: skip
        self.stages = stages
        self.stage_names = list(stage_names)
        self.timeout_s = timeout_s
        first_models = {c.actions[0].model for c in chains}
        # The model every chain starts with, if one is: its call can go out early.
        self.early_model = first_models.pop() if len(first_models) == 1 else None
        self.early_k = max(c.actions[0].k for c in chains)

    def _call(self, model: str, req: ResolvedRequest, candidates: list[int] | None, k: int,
              stage: str) -> DeploymentResponse:  # fmt: skip
        request = StageRequest(req.user_feats.tolist(), req.history, candidates, k)
        return self.stages[model].score.remote(request, stage)

    def start_first_stage(self, req: ResolvedRequest) -> DeploymentResponse | None:
        """The first stage's call with the largest k of any chain, sent before the chain is
        chosen; None unless every chain starts with the same model. Pass it to ``run``."""
        if self.early_model is None:
            return None
        return self._call(self.early_model, req, None, self.early_k, self.stage_names[0])

    async def run(self, req: ResolvedRequest, chain: Chain,
                  early: DeploymentResponse | None = None) -> ChainOutcome:  # fmt: skip
        """Items (at most ``req.k``), FLOPs and per-stage timings of ``chain`` for ``req``.

        ``early`` (from ``start_first_stage``) stands for the first stage's call; it is
        cancelled if the chain starts with another model. Raises ``StageFailure``.
        """
        if early is not None and chain.actions[0].model != self.early_model:
            early.cancel()
            early = None
        candidates: list[int] | None = None
        flops = 0.0
        timing: list[dict[str, float]] = []
        for s, (stage, action) in enumerate(zip(self.stage_names, chain.actions, strict=True)):
            start = time.perf_counter()
            if s == 0 and early is not None:
                call = early
            else:
                call = self._call(action.model, req, candidates, action.k, stage)
            try:  # asyncio.timeout, not wait_for: no task per call
                async with asyncio.timeout(self.timeout_s):
                    result: StageResult = await call
            except Exception as err:
                call.cancel()
                raise StageFailure(action.model, err, flops) from err
            candidates, flops = result.items[: action.k], flops + result.flops
            timing.append({"call": (time.perf_counter() - start) * 1e3,
                           "compute": result.compute_ms, "batch": result.batch})  # fmt: skip
        return (candidates or [])[: req.k], flops, timing
