"""The allocator ingress: HTTP API, per-request chain choice, routing through the stages.

Per ``POST /recommend``: validate the body, build the request context, score every chain
with the reward model (batched over concurrent requests), choose j* = argmax (Q − λq) with
the locally cached λ (or the baseline's fixed chain), apply the predictive spend guard,
route through the chosen models' deployments (``chain_runner``), and answer items, chain, FLOPs and λ. The
samples (Q_i·, chosen chain, spend) go to the nearline driver in batches from a background
task, never on the request's critical path; λ is polled from the driver the same way. If
the driver is down the replica keeps serving with its last λ and keeps the reports until
it is back (bounded: the oldest are dropped and counted beyond ``MAX_BUFFERED``). With
several replicas the same poll brings this replica's share of the coming windows' budget,
which the driver sets from the replicas' traffic (``platform.allocation.nearline``).

A failed or timed-out stage degrades the request to the cheapest chain that avoids the
failed models (or retries the same chain when every chain needs one of them, so another
replica answers); only after ``MAX_CHAIN_ATTEMPTS`` tries does the client get a 503. Bad
input gets a 4xx with a message and never reaches a model. The core logic lives in ``platform.serving`` and
``platform.allocation.online``; this module is the Serve adapter.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations
# (``Request``) at runtime, through Serve's class-based view.
import asyncio
import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import ray
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from ray.util.metrics import Histogram

from greenflow.platform.allocation.arrival_plan import MAX_STEPS as MAX_PLAN_STEPS
from greenflow.platform.allocation.arrival_plan import ArrivalPlan
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.online import (
    Decision,
    OnlineAllocator,
    own_shares,
    window_start,
)
from greenflow.platform.run_dir import RunDir
from greenflow.platform.serving import (
    MAX_HISTORY_IDS,
    RequestError,
    ResolvedRequest,
    RewardScorer,
    UnknownUserError,
    load_serving_assets,
)
from greenflow.ray_support.metrics import (
    FLOPS,
    REQUEST_LATENCY_MS,
    REQUESTS,
    CounterBuffer,
    counter,
)
from greenflow.serve_apps.batching import MicroBatcher
from greenflow.serve_apps.chain_runner import ChainRunner, StageFailure
from greenflow.serve_apps.driver import DriverConfig, start_driver

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024  # a 10,000-item history is ~60 KiB of JSON
MAX_BUFFERED = 50_000  # driver reports kept while the driver is unreachable
POLL_S = 0.1  # λ poll and report flush period
IDLE_POLL_S = 1.0  # without traffic: a driver call this often, and after each window close
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
ID_MAX = 2**62  # larger ids cannot be int64 ids of this dataset: refused as 422

PositiveId = Annotated[int, Field(ge=1, le=ID_MAX, strict=True)]
# One served request for the driver: window start, Q_i·, chain, FLOPs spent, guarded.
ReportRow = tuple[float, np.ndarray, int, float, bool]
# One window's report in a sync: id, window start, Q (n, J), chains (n,), FLOPs spent, guarded.
Report = tuple[str, float, np.ndarray, np.ndarray, float, int]
MAX_PENDING_REPORTS = 10_000
# Chains tried per request when stages fail (a lost node takes a replica of every model
# on it, so the fallback chain's models may fail too before Serve routes around them).
MAX_CHAIN_ATTEMPTS = 3
# Under load (the last batch held > 1 request) the reward model's batch waits this long for
# more requests; one request at a time never waits (``batching.MicroBatcher``).
ALLOCATE_LINGER_S = 0.002


class RecommendBody(BaseModel):
    """``POST /recommend`` body (DESIGN.md §5); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: PositiveId
    history: list[PositiveId] | None = Field(default=None, max_length=MAX_HISTORY_IDS)
    k: Annotated[int, Field(ge=1, le=1000, strict=True)] | None = None
    activity: Annotated[int, Field(ge=0, le=ID_MAX, strict=True)] | None = None
    request_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class ForecastBody(BaseModel):
    """``PUT /allocator/forecast`` body: announced traffic as ``[unix_s, req/s]`` steps
    (``platform.allocation.arrival_plan``); an empty list clears it."""

    model_config = ConfigDict(extra="forbid")

    steps: list[tuple[float, float]] = Field(max_length=MAX_PLAN_STEPS)


@dataclass(frozen=True)
class AllocatorConfig:
    app_name: str
    run_dir: str
    policy: str  # "greenflow", "equal" or "fixed:<chain id>"
    budget: ComputeBudget
    window_s: float
    expected_rate_rps: float  # the traffic the budget was sized for (EQUAL's chain)
    guard_tolerance: float
    pacing: bool  # in-window pacing (platform/allocation/pacing.py)
    share: float  # static share of the window budget (1 / replicas); see _nearline_loop
    stage_timeout_s: float
    reward_variant: str
    driver: DriverConfig


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _validation_message(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        where = ".".join(str(p) for p in e.get("loc", ())) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


app = FastAPI(title="GreenFlow allocator", version="1")


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
@serve.ingress(app)
class Allocator:
    def __init__(self, config: AllocatorConfig, stages: dict[str, DeploymentHandle]) -> None:
        # One intra-op thread: the reward model on a small batch takes ~0.5 ms on one
        # thread and several times that when threads contend with the stage replicas.
        torch.set_num_threads(1)
        self.config = config
        self.stages = stages
        self.assets = load_serving_assets(RunDir(config.run_dir), config.reward_variant)
        self.scorer = RewardScorer(self.assets.reward)
        per_request = config.budget.flops_per_s(time.time()) / config.expected_rate_rps
        self.fixed = self.assets.policy_chain(config.policy, per_request)
        missing = {a.model for c in self.assets.chains for a in c.actions} - set(stages)
        if missing:
            raise KeyError(f"no stage deployment for model(s) {sorted(missing)}")
        self.driver = start_driver(config.driver)
        # The driver's warm start (λ* of the reward split) must finish before serving.
        ready = ray.get(self.driver.ready.remote(), timeout=300)
        self._replica_id = uuid.uuid4().hex[:12]
        self.online = OnlineAllocator(
            self.assets.q, config.budget, config.window_s, fixed_chain=self.fixed,
            share=config.share, replica_id=self._replica_id,
            guard_tolerance=config.guard_tolerance, initial_price=float(ready["dual_price"]),
            pacing=config.pacing,
        )  # fmt: skip
        self.stage_names = [s.name for s in self.assets.space.stages]
        self.chain_runner = ChainRunner(stages, self.stage_names, config.stage_timeout_s)
        self._buffer: deque[ReportRow] = deque()
        self._pending: list[Report] = []  # built, not yet acknowledged by the driver
        # the driver call under way and the reports it carries
        self._in_flight: tuple[asyncio.Future[dict[str, Any]], list[Report]] | None = None
        self._last_sync_s = 0.0  # Unix s of the last driver call
        # Acknowledged, but their window is not yet in a driver checkpoint on disk: re-sent
        # if the driver restarts (the new process lost them); ids make that idempotent.
        self._unconfirmed: dict[str, Report] = {}
        self._report_seq = 0
        self._driver_incarnation: str | None = None
        self.resent_reports = 0
        self.dropped_reports = 0
        self.driver_alive = True
        self.driver_error: str | None = None
        self.counts = {"requests": 0, "errors": 0, "degraded": 0, "rejected": 0}
        self._loop_task: asyncio.Task[None] | None = None
        tags = {"app": config.app_name}
        # The counters are summed here and sent with each poll (``metrics.CounterBuffer``);
        # the latency histogram is observed per request.
        self._requests = CounterBuffer(counter(REQUESTS), tags)
        self._latency = Histogram(REQUEST_LATENCY_MS.name, REQUEST_LATENCY_MS.description,
                                  LATENCY_BUCKETS_MS, REQUEST_LATENCY_MS.tag_keys)  # fmt: skip
        self._latency.set_default_tags(tags)
        self._flops = CounterBuffer(
            counter(FLOPS), {**tags, "stage": "allocator", "model": "reward"}
        )
        self._overhead_flops = self.assets.allocator_flops_per_request
        self._allocator = MicroBatcher(self._allocate, max_batch=32, linger_s=ALLOCATE_LINGER_S)

    # -- background: λ poll and report flush ---------------------------------------------
    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._nearline_loop())

    async def _nearline_loop(self) -> None:
        """Every ``POLL_S``: send the summed metrics; then, if there is something to say
        or to hear, one driver call (``sync``) with the reports that reads λ and this
        replica's budget shares.

        A replica without traffic calls only after a window closed (the new λ and shares
        are out) or once every ``IDLE_POLL_S``: an idle app no longer makes ten driver
        calls a second. The poll names the replica, so the driver counts it as alive even
        without traffic. The shares the driver publishes (keyed by window) are used with
        several replicas only: a single replica keeps its whole budget, whatever the driver
        remembers of a replica it replaced.
        """
        # the driver closes a window grace_s after it ends, at its next tick (<= POLL_S)
        close_lag_s = self.config.driver.grace_s + 2 * POLL_S
        while True:
            await asyncio.sleep(POLL_S)
            try:  # a metrics failure must not stop the λ poll
                self._requests.flush()
                self._flops.flush()
            except Exception:
                logger.exception("sending the allocator's metrics failed")
            now = time.time()
            closed = window_start(now - close_lag_s, self.config.window_s) != window_start(
                self._last_sync_s - close_lag_s, self.config.window_s
            )
            busy = self._buffer or self._pending or self._in_flight or not self.driver_alive
            if not (busy or closed or now - self._last_sync_s >= IDLE_POLL_S):
                continue
            try:
                state = await self._sync()
                self.online.set_price(float(state["dual_price"]))
                if self.config.share < 1.0:
                    self.online.set_shares(own_shares(state.get("shares", {}), self._replica_id))
                self.driver_alive, self.driver_error = True, None
            except Exception as err:  # driver down or slow: serve on with the last λ
                self.driver_alive = False
                self.driver_error = f"{type(err).__name__}: {err}"[:300]

    async def _sync(self) -> dict[str, Any]:
        """One ``driver.sync`` call with the buffered reports; the driver's state.

        One call is in flight at a time. It is awaited until the driver answers: Ray
        delivers it to a restarted driver (``max_task_retries=-1``), and a call not answered
        in 2 s raises here and is awaited again at the next poll. A call that failed has
        its reports sent again with the same ids, and the driver drops ids it has seen, so
        no request is counted twice.
        """
        if self._in_flight is None:
            self._pending.extend(self._build_reports())
            if len(self._pending) > MAX_PENDING_REPORTS:  # driver gone for long: bounded
                drop = len(self._pending) - MAX_PENDING_REPORTS
                self.dropped_reports += sum(len(r[3]) for r in self._pending[:drop])
                self._pending = self._pending[drop:]
            reports, self._pending = self._pending, []
            call = asyncio.ensure_future(self.driver.sync.remote(self._replica_id, reports))
            self._in_flight = (call, reports)
            self._last_sync_s = time.time()
        call, reports = self._in_flight
        # asyncio.wait never cancels: a call still unanswered is awaited again next time.
        await asyncio.wait([call], timeout=2.0)
        if not call.done():
            raise TimeoutError("dual-price driver has not answered a sync in 2 s")
        self._in_flight = None
        if call.cancelled() or call.exception() is not None:
            self._pending = reports + self._pending
            error = None if call.cancelled() else call.exception()
            raise error if isinstance(error, Exception) else RuntimeError("driver sync cancelled")
        state: dict[str, Any] = call.result()
        self._confirm(state["incarnation"], float(state["checkpointed_through_s"]))
        # Held by the driver process that answered: forgotten once it checkpoints them.
        self._unconfirmed.update((r[0], r) for r in reports)
        return state

    def _confirm(self, incarnation: str, checkpointed_through_s: float) -> None:
        """Forget reports a checkpoint holds; after a driver restart, re-send the rest."""
        if self._driver_incarnation not in (None, incarnation):
            resend = [r for r in self._unconfirmed.values() if r[1] > checkpointed_through_s]
            self._pending = resend + self._pending
            self.resent_reports += len(resend)
        self._driver_incarnation = incarnation
        self._unconfirmed = {
            k: r for k, r in self._unconfirmed.items() if r[1] > checkpointed_through_s
        }

    def _build_reports(self) -> list[Report]:
        """The buffered rows as one report per window, each with a fresh id."""
        by_window: dict[float, list[ReportRow]] = {}
        while self._buffer:
            row = self._buffer.popleft()
            by_window.setdefault(row[0], []).append(row)
        reports = []
        for start, part in by_window.items():
            self._report_seq += 1
            reports.append((
                f"{self._replica_id}:{self._report_seq}", start,
                np.stack([r[1] for r in part]), np.array([r[2] for r in part], dtype=np.int64),
                float(sum(r[3] for r in part)), int(sum(r[4] for r in part)),
            ))  # fmt: skip
        return reports

    def _record(self, decision: Decision, Q: np.ndarray, j: int, flops: float) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped_reports += 1
        self._buffer.append((decision.window_start_s, Q, j, flops, bool(decision.guarded[0])))

    # -- allocation ----------------------------------------------------------------------
    def _allocate(self, requests: list[ResolvedRequest]) -> list[tuple[np.ndarray, Decision]]:
        """Q and the decision of each request of a batch (``self._allocator``: what queued)."""
        if self.fixed is None:
            Q = self.scorer(requests)  # (B, J) in one pass: ~29k FLOPs per request
        else:  # a baseline needs no estimates: it costs what an app without allocator costs
            Q = np.zeros((len(requests), len(self.assets.q)))
        decision = self.online.decide(Q)
        return [
            (
                Q[i],
                Decision(
                    decision.choice[i : i + 1],
                    decision.guarded[i : i + 1],
                    decision.dual_price,
                    decision.window_start_s,
                ),
            )  # fmt: skip
            for i in range(len(requests))
        ]

    # -- HTTP ----------------------------------------------------------------------------
    @app.post("/recommend")
    async def recommend(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        self._ensure_loop()
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            self.counts["rejected"] += 1
            return _error(413, f"body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
        try:
            parsed = RecommendBody.model_validate_json(body)
        except ValidationError as err:
            self.counts["rejected"] += 1
            return _error(422, _validation_message(err))
        try:
            req = self.assets.resolve(parsed.user_id, parsed.history, parsed.k, parsed.activity)
        except RequestError as err:
            self.counts["rejected"] += 1
            return _error(404 if isinstance(err, UnknownUserError) else 422, str(err))
        request_id = parsed.request_id or uuid.uuid4().hex
        allocation_start = time.perf_counter()
        Q, decision = await self._allocator(req)
        allocation_ms = (time.perf_counter() - allocation_start) * 1e3
        j = int(decision.choice[0])
        predicted = float(self.assets.q[j])
        failed: set[str] = set()
        wasted = 0.0  # FLOPs of the stages that ran before a failed one: spent all the same
        for attempt in range(1, MAX_CHAIN_ATTEMPTS + 1):
            try:
                items, flops, stage_ms = await self.chain_runner.run(req, self.assets.chains[j])
                flops += wasted
                break
            except StageFailure as failure:
                failed.add(failure.model)
                wasted += failure.flops
                if attempt == 1:
                    self.counts["degraded"] += 1
                if attempt == MAX_CHAIN_ATTEMPTS:
                    self.counts["errors"] += 1
                    self.online.refund(predicted - wasted, decision.window_start_s)
                    return _error(503, f"{failure}; request {request_id} not served, retry later")
                j = self.assets.fallback_chain(failed, j)
        degraded = bool(failed)
        self.online.refund(predicted - flops, decision.window_start_s)  # what was spent
        self._record(decision, Q, j, flops)
        chain = self.assets.chains[j]
        self.counts["requests"] += 1
        self._requests.add(1.0, chain=chain.id)
        if self.fixed is None:  # the reward model's FLOPs
            self._flops.add(self._overhead_flops)
        latency_ms = (time.perf_counter() - start) * 1e3
        self._latency.observe(latency_ms)
        return JSONResponse(
            {
                "items": items,
                "chain": {
                    "id": chain.id,
                    "stages": [
                        {"stage": s, "model": a.model, "k": a.k}
                        for s, a in zip(self.stage_names, chain.actions, strict=True)
                    ],
                },
                "flops": flops,
                "dual_price": decision.dual_price,
                "request_id": request_id,
                "window_start_s": decision.window_start_s,
                "guarded": bool(decision.guarded[0]),
                "degraded": degraded,
                "estimated_clicks": float(Q[j]),
                "allocation_ms": allocation_ms,
                "stage_ms": stage_ms,  # per stage: the call's wall time and the model's
            }
        )

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        self._ensure_loop()
        return {"status": "ok", "policy": self.config.policy, "chains": len(self.assets.chains)}

    @app.get("/allocator/state")
    async def state(self) -> dict[str, Any]:
        self._ensure_loop()
        fixed = None if self.fixed is None else self.assets.chains[self.fixed].id
        return {
            "policy": self.config.policy,
            "fixed_chain": fixed,
            **self.online.state(),
            "budget": self.config.budget.to_dict(),
            "budget_flops_per_s": self.config.budget.flops_per_s(time.time()),
            # "share" (from the allocator): the open window's share; "static_share": 1/N
            "driver_alive": self.driver_alive,
            "driver_error": self.driver_error,
            "reports_buffered": len(self._buffer)
            + sum(len(r[3]) for r in self._pending)
            + sum(len(r[3]) for r in (self._in_flight or (None, []))[1]),
            "reports_unconfirmed": sum(len(r[3]) for r in self._unconfirmed.values()),
            "reports_resent": self.resent_reports,
            "reports_dropped": self.dropped_reports,
            **self.counts,
        }

    @app.put("/allocator/forecast")
    async def forecast(self, request: Request) -> JSONResponse:
        """Announce the coming traffic: the driver solves λ for each next window's planned
        arrivals (after a planned spike the price falls as the plan says traffic does)."""
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"body is {len(body)} bytes; at most {MAX_BODY_BYTES}")
        try:
            steps = ForecastBody.model_validate_json(body).steps
            if steps:
                ArrivalPlan.from_steps(steps)  # every rule of a plan, before the driver
        except ValidationError as err:
            return _error(422, _validation_message(err))
        except ValueError as err:
            return _error(422, str(err))
        try:
            done = await asyncio.wait_for(
                self.driver.set_arrival_plan.remote([list(s) for s in steps]), timeout=5.0
            )
        except Exception as err:
            return _error(503, f"dual-price driver unreachable: {type(err).__name__}")
        return JSONResponse(done)

    @app.get("/allocator/windows")
    async def windows(self, since: float = -1.0) -> JSONResponse:
        if not math.isfinite(since):
            return _error(422, "since must be a finite Unix time in seconds")
        try:
            rows = await asyncio.wait_for(self.driver.windows.remote(since), timeout=5.0)
        except Exception as err:
            return _error(503, f"dual-price driver unreachable: {type(err).__name__}")
        return JSONResponse({"windows": rows})
