"""The nearline dual-price driver: a named, detached, restartable Ray actor.

It wraps ``platform.allocation.nearline.NearlineDriver`` and adds what only a long-lived
actor can: a background thread that closes windows on the wall clock, Ray metrics (λ,
window budget and spend), and a checkpoint file, so that Ray's restart of a crashed driver
(``max_restarts=-1``) resumes with the λ and the window records it had. Allocators keep
serving with their last λ while it is down and resend their reports when it is back.

Warm start: λ* of the reward split's estimated rewards at the per-request budget (the
exact solve), the step size the tuned multiple of it (``tune/step_size_best.json``'s
``step_size_rel``; 1 when untuned), so one tuning transfers across budgets.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import ray
from ray.util.metrics import Gauge

from greenflow.platform.allocation.arrival_plan import ArrivalPlan
from greenflow.platform.allocation.budget import ComputeBudget
from greenflow.platform.allocation.nearline import NearlineDriver, nearline_controller
from greenflow.platform.allocation.online import window_start
from greenflow.platform.allocation.primal_dual import DualPriceController
from greenflow.platform.reward.data import load_simulated_chains
from greenflow.platform.reward.store import predict_rewards
from greenflow.platform.run_dir import RunDir
from greenflow.ray_support.metrics import DUAL_PRICE, WINDOW_BUDGET_FLOPS, WINDOW_SPEND_FLOPS

logger = logging.getLogger(__name__)

NAMESPACE = "greenflow"
DRIVER_NUM_CPUS = 0.05


def driver_name(app_name: str) -> str:
    return f"greenflow-dual-price-{app_name}"


@dataclass(frozen=True)
class DriverConfig:
    """Everything the driver needs; ``deployment_id`` ties a checkpoint to one deployment."""

    run_dir: str
    app_name: str
    deployment_id: str
    budget: ComputeBudget
    window_s: float
    expected_rate_rps: float  # the traffic the budget was sized for, for the warm start
    step_size_rel: float = 1.0  # η as a multiple of the warm-start λ
    method: Literal["gradient", "exact"] = "gradient"
    smoothing: float = 0.0
    grace_s: float = 0.2
    reward_variant: str = "full"
    warm_start: bool = True
    # custom Ray resources the actor asks for (placement); Ray restarts it, after a lost
    # node, on any node that offers them, so give more than one node these resources
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)


def warm_start_price(config: DriverConfig, q: np.ndarray) -> float:
    """λ* (clicks/FLOP) of the reward split at the budget per expected request."""
    Q = predict_rewards(config.run, config.reward_variant, "reward")
    per_request = config.budget.flops_per_s(time.time()) / config.expected_rate_rps
    if per_request >= q.max():
        return 0.0  # the budget buys everyone the full chain: no price on computation
    controller = DualPriceController().fit(Q, q, per_request * len(Q))
    return controller.price()


class DualPriceDriver:
    """Ray actor class (decorated in ``start_driver``); one per Serve app."""

    def __init__(self, config: DriverConfig) -> None:
        self.config = config
        chains = load_simulated_chains(config.run)
        self.q = chains.flops
        self._lock = threading.Lock()
        self.restored = False
        self.syncs = 0  # allocator polls answered (``sync``) by this process
        # A new id per process: replicas that see it change re-send what the dead process
        # held but had not checkpointed (reports are idempotent by id).
        self.incarnation = uuid.uuid4().hex
        doc = config.run.read_dual_price(config.app_name)
        if doc is not None and doc.get("deployment_id") == config.deployment_id:
            price = float(doc["dual_price"])
            fit_price = float(doc.get("fit_price", price))
        else:
            doc = None
            fit_price = warm_start_price(config, self.q) if config.warm_start else 0.0
            price = fit_price
        controller = nearline_controller(
            config.method, config.step_size_rel, config.smoothing, fit_price, price
        )
        self.fit_price = fit_price
        self.core = NearlineDriver(controller, self.q, config.budget, config.window_s,
                                   grace_s=config.grace_s)  # fmt: skip
        self.arrival_plan: ArrivalPlan | None = None
        if doc is not None:
            self.core.restore(doc)
            self.restored = True
            if doc.get("arrival_plan"):
                self._use_plan(ArrivalPlan.from_steps(doc["arrival_plan"]))
        # Windows up to here are in a checkpoint on disk: replicas may forget their reports.
        self.checkpointed_through_s = float(doc["last_closed_s"]) if doc else -math.inf
        tags = {"app": config.app_name}
        self._gauges = {
            "price": Gauge(DUAL_PRICE.name, DUAL_PRICE.description, DUAL_PRICE.tag_keys),
            "budget": Gauge(WINDOW_BUDGET_FLOPS.name, WINDOW_BUDGET_FLOPS.description,
                            WINDOW_BUDGET_FLOPS.tag_keys),
            "spend": Gauge(WINDOW_SPEND_FLOPS.name, WINDOW_SPEND_FLOPS.description,
                           WINDOW_SPEND_FLOPS.tag_keys),
        }  # fmt: skip
        for gauge in self._gauges.values():
            gauge.set_default_tags(tags)
        self._gauge_values: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dual-price", daemon=True)
        self._thread.start()

    # -- background: close windows, export, checkpoint ---------------------------------------
    def _loop(self) -> None:
        period = min(0.1, self.config.window_s / 8)
        while not self._stop.wait(period):
            try:
                with self._lock:
                    closed = self.core.tick()
                    price = self.core.price()
                    now_start = window_start(self.core.clock(), self.config.window_s)
                    budget = self.core.window_budget_flops(now_start)
                    doc = self._checkpoint_doc() if closed else None
                self._set_gauge("price", price)
                self._set_gauge("budget", budget)
                if doc is not None:
                    self._gauges["spend"].set(closed[-1].spend_flops)
                    self._write_checkpoint(doc)
                    self.checkpointed_through_s = float(doc["last_closed_s"])
            except Exception:  # keep the loop alive; the error is in the actor's log
                logger.exception("dual-price driver tick failed")

    def _set_gauge(self, name: str, value: float) -> None:
        """Set a gauge when its value changed: a Ray metric call costs ~0.15 ms, and an
        idle driver ticks ten times a second with λ and the budget unchanged."""
        if self._gauge_values.get(name) != value:
            self._gauges[name].set(value)
            self._gauge_values[name] = value

    def _use_plan(self, plan: ArrivalPlan | None) -> None:
        self.arrival_plan = plan
        self.core.arrivals_forecast = None if plan is None else plan.expected_arrivals

    def _checkpoint_doc(self) -> dict[str, Any]:
        return {
            **self.core.checkpoint(),
            "arrival_plan": None if self.arrival_plan is None else self.arrival_plan.steps(),
            "deployment_id": self.config.deployment_id,
            "fit_price": self.fit_price,
            "config": {**asdict(self.config), "budget": self.config.budget.to_dict()},
        }

    def _write_checkpoint(self, doc: dict[str, Any]) -> None:
        # atomic: a crash never leaves half a checkpoint
        self.config.run.write_dual_price(self.config.app_name, doc)

    # -- actor methods -------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        return {"restored": self.restored, "pid": os.getpid(), "dual_price": self.core.price()}

    def sync(self, replica_id: str, reports: list[tuple[Any, ...]]) -> dict[str, Any]:
        """An allocator replica's poll: its ``reports`` (each ``(report_id, window_start_s,
        Q, choice, spend_flops, guard_requests)``, as ``NearlineDriver.report`` takes them),
        then the ``state`` it reads. One call a poll instead of a report call and a state
        call: every actor call costs both processes CPU. Reports are idempotent by id, so a
        sync that failed or timed out is sent again with the same ones."""
        with self._lock:
            self.syncs += 1
            for report_id, start, Q, choice, spend_flops, guard_requests in reports:
                self.core.report(start, Q, choice, spend_flops, guard_requests, report_id,
                                 replica_id)  # fmt: skip
            return self._state(replica_id)

    def state(self, replica_id: str | None = None) -> dict[str, Any]:
        """λ, the open window, the published budget shares (``"shares"``: window start ->
        replica id -> fraction) and the checkpoint's progress; ``replica_id``: the polling
        allocator replica, counted as alive for the shared budget."""
        with self._lock:
            return self._state(replica_id)

    def _state(self, replica_id: str | None) -> dict[str, Any]:
        if replica_id is not None:
            self.core.heartbeat(replica_id)
        plan = self.arrival_plan
        return {
            **self.core.state(),
            "restored": self.restored,
            "fit_price": self.fit_price,
            "pid": os.getpid(),
            "incarnation": self.incarnation,
            "checkpointed_through_s": self.checkpointed_through_s,
            "syncs": self.syncs,
            "arrival_plan_steps": 0 if plan is None else len(plan.times_s),
        }

    def set_arrival_plan(self, steps: list[list[float]] | None) -> dict[str, Any]:
        """Announce traffic (``[[unix_s, rps], ...]``; None or [] clears it): λ is then
        solved for each next window's planned arrivals. Raises ValueError on a bad plan."""
        plan = ArrivalPlan.from_steps(steps) if steps else None
        with self._lock:
            self._use_plan(plan)  # checkpointed with the next closed window
        return {"steps": 0 if plan is None else len(plan.times_s)}

    def windows(self, since_s: float = -math.inf) -> list[dict[str, Any]]:
        with self._lock:
            return self.core.windows(since_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            self._write_checkpoint(self._checkpoint_doc())


def start_driver(config: DriverConfig) -> Any:
    """The app's driver actor: created if absent (named, detached, restartable), else found."""
    actor_cls = ray.remote(DualPriceDriver)
    return actor_cls.options(
        name=driver_name(config.app_name),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=DRIVER_NUM_CPUS,
        resources=dict(config.resources),
        max_concurrency=4,  # reports, state polls and window queries never queue behind each other
    ).remote(config)


def kill_driver(app_name: str) -> bool:
    """Stop and remove an app's driver (no restart); False when there was none."""
    try:
        handle = ray.get_actor(driver_name(app_name), namespace=NAMESPACE)
    except ValueError:
        return False
    try:
        ray.get(handle.stop.remote(), timeout=10)
    except Exception as err:  # a dying driver still gets killed below
        logger.warning("driver %s did not stop cleanly: %s", app_name, err)
    ray.kill(handle, no_restart=True)
    return True
