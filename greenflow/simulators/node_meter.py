"""One energy meter per Ray node, exporting PFEC metrics to Prometheus via Ray.

Why per node and not per worker: RAPL and NVML report whole packages and whole GPUs, so
N workers on one node each reading them would count the node's energy N times. Instead
``start_node_meters()`` places one small named actor on every alive node
(``NodeAffinitySchedulingStrategy``, 0.01 CPU). Each samples its node's meter
(``greenflow.platform.energy.make_node_meter``: NVML → RAPL → estimate) every
``interval_s`` and exports:

- ``greenflow_energy_joules`` (counter; node, device, source): device energy, PUE excluded,
  so that ``source`` still describes the figure;
- ``greenflow_power_watts`` (gauge; node, device, source): mean power of the last window;
- ``greenflow_carbon_grams`` (counter; node, device, source): gCO2eq, PUE and grid
  intensity (constant or scheduled) included.

Ray prefixes them: Prometheus sees ``ray_greenflow_energy_joules_total``,
``ray_greenflow_power_watts``, ``ray_greenflow_carbon_grams_total``. Jobs and Serve apps
count their work with ``greenflow.ray_support.metrics.FlopsMetric`` →
``ray_greenflow_flops_total`` (app, stage, model). The names, tags and help texts are
declared once, in ``greenflow.ray_support.metrics``.

Overhead: the sampling thread sleeps on an ``Event`` between reads; one read is a few
sysfs/psutil/NVML calls (well under a millisecond), so at the default 5 s interval the
sampling costs ≪ 1% of a core. :meth:`NodeMeter.stats` reports the measured figures.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.metrics import Gauge
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from greenflow.platform.energy import (
    DEFAULT_POWERCAP_ROOT,
    EnergyError,
    EstimateConfig,
    PFECConfig,
    make_node_meter,
    seconds_since_midnight,
)
from greenflow.ray_support.metrics import CARBON_GRAMS, ENERGY_JOULES, POWER_WATTS, counter

logger = logging.getLogger(__name__)

NAMESPACE = "greenflow"  # fixed, so that every job finds the meters another job started
ACTOR_NAME_PREFIX = "greenflow-node-meter-"
METER_NUM_CPUS = 0.01
DEFAULT_INTERVAL_S = 5.0


def meter_actor_name(node_id: str) -> str:
    """The named actor of one node's meter."""
    return f"{ACTOR_NAME_PREFIX}{node_id}"


@dataclass(frozen=True)
class NodeMeterConfig:
    """How a node meter samples and what it converts energy to carbon with."""

    interval_s: float = DEFAULT_INTERVAL_S
    pfec: PFECConfig = PFECConfig()
    estimate: EstimateConfig = EstimateConfig()
    powercap_root: str = str(DEFAULT_POWERCAP_ROOT)

    def __post_init__(self) -> None:
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {self.interval_s}")


@ray.remote(num_cpus=METER_NUM_CPUS, max_restarts=-1)
class NodeMeter:
    """Samples this node's energy every ``interval_s`` and exports it as Ray metrics."""

    def __init__(self, node_id: str, config: NodeMeterConfig) -> None:
        self.node_id = node_id
        self.config = config
        self._meter = make_node_meter(
            powercap_root=Path(config.powercap_root), estimate=config.estimate
        )
        self._energy = counter(ENERGY_JOULES)
        self._power = Gauge(
            POWER_WATTS.name, description=POWER_WATTS.description, tag_keys=POWER_WATTS.tag_keys
        )
        self._carbon = counter(CARBON_GRAMS)
        self._lock = threading.Lock()
        self._energy_j: dict[str, float] = dict.fromkeys(self._meter.devices, 0.0)
        self._carbon_g = 0.0
        self._samples = 0
        self._errors = 0
        self._sampling_cpu_s = 0.0
        self._window_start_epoch_s = time.time()
        self._start_wall_s = time.monotonic()
        self._start_process_cpu_s = time.process_time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="greenflow-node-meter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval_s):
            cpu_start_s = time.thread_time()
            self._sample_once()
            with self._lock:
                self._sampling_cpu_s += time.thread_time() - cpu_start_s

    def _sample_once(self) -> None:
        window_start_epoch_s, self._window_start_epoch_s = self._window_start_epoch_s, time.time()
        try:
            measurements = self._meter.sample()
        except EnergyError as err:  # a counter gone away: keep the loop, say so
            logger.warning("node %s: energy read failed: %s", self.node_id, err)
            with self._lock:
                self._errors += 1
            return
        start_s = seconds_since_midnight(window_start_epoch_s)
        for m in measurements:
            tags = {"node": self.node_id, "device": m.device, "source": m.source.value}
            carbon_g = self.config.pfec.carbon_g(m.energy_j, start_s, m.duration_s)
            self._power.set(m.power_w, tags=tags)
            # Ray counters refuse increments <= 0 (an idle CPU under the estimate is 0 J).
            if m.energy_j > 0:
                self._energy.inc(m.energy_j, tags=tags)
            if carbon_g > 0:
                self._carbon.inc(carbon_g, tags=tags)
            with self._lock:
                self._energy_j[m.device] += m.energy_j
                self._carbon_g += carbon_g
        with self._lock:
            self._samples += 1

    def ready(self) -> str:
        """The node id, once the meter runs."""
        return self.node_id

    def stats(self) -> dict[str, Any]:
        """Totals and the meter's own cost: CPU seconds per wall second (1.0 = a core)."""
        wall_s = time.monotonic() - self._start_wall_s
        process_cpu_s = time.process_time() - self._start_process_cpu_s
        with self._lock:
            return {
                "node": self.node_id,  # the node tag of every series this meter exports
                "runs_on": ray.get_runtime_context().get_node_id(),  # where it really is
                "interval_s": self.config.interval_s,
                "sources": {d: s.value for d, s in self._meter.sources.items()},
                "samples": self._samples,
                "errors": self._errors,
                "energy_j": dict(self._energy_j),
                "carbon_g": self._carbon_g,
                "wall_s": wall_s,
                # the sampling thread alone: the cost this meter adds
                "sampling_cpu_s": self._sampling_cpu_s,
                "sampling_cpu_fraction": self._sampling_cpu_s / wall_s if wall_s > 0 else 0.0,
                # the whole actor process, Ray's core-worker threads included
                "process_cpu_s": process_cpu_s,
                "process_cpu_fraction": process_cpu_s / wall_s if wall_s > 0 else 0.0,
            }

    def stop(self) -> None:
        """Stop sampling and release NVML. The actor itself is killed by the caller."""
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self.config.interval_s))
        self._meter.close()


SUPERVISOR_NAME = "greenflow-node-meter-supervisor"
DEFAULT_WATCH_S = 10.0


@ray.remote(num_cpus=0, max_restarts=-1)
class NodeMeterSupervisor:
    """Starts a meter on every node that joins the cluster: every ``watch_s`` seconds it
    runs :func:`start_node_meters` (idempotent) with the cluster's meter config."""

    def __init__(self, config: NodeMeterConfig, watch_s: float) -> None:
        self.config, self.watch_s = config, watch_s
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="greenflow-meter-watch",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.watch_s):
            try:
                _start_meters(self.config, detached=True, timeout_s=self.watch_s)
                self.rounds += 1
            except (ray.exceptions.RayError, TimeoutError) as err:  # a node mid-join or mid-death
                logger.warning("node meter watch: %s", err)

    def watched_rounds(self) -> int:
        return self.rounds

    def stop(self) -> None:
        self._stop.set()


def start_node_meters(
    interval_s: float = DEFAULT_INTERVAL_S,
    config: NodeMeterConfig | None = None,
    *,
    detached: bool = True,
    timeout_s: float = 60.0,
    watch_s: float | None = None,
) -> dict[str, ActorHandle]:
    """Start (or find) one meter on every alive node; returns node id → actor handle.

    Idempotent: a node whose meter already runs keeps it, with its original config.
    ``detached`` meters outlive the calling job, which is what a cluster-wide meter wants;
    stop them with :func:`stop_node_meters`. With ``watch_s`` (detached only), a detached
    supervisor also starts a meter on every node that joins later, checking every
    ``watch_s`` seconds. Needs ``ray.init()`` done by the caller.
    """
    config = config or NodeMeterConfig(interval_s=interval_s)
    handles = _start_meters(config, detached=detached, timeout_s=timeout_s)
    if watch_s is not None:
        if not detached:
            raise ValueError("watch_s needs detached meters (the supervisor outlives the job)")
        NodeMeterSupervisor.options(name=SUPERVISOR_NAME, namespace=NAMESPACE,
                                    get_if_exists=True, lifetime="detached",
                                    ).remote(config, watch_s)  # fmt: skip
    return handles


def _start_meters(
    config: NodeMeterConfig, *, detached: bool, timeout_s: float
) -> dict[str, ActorHandle]:
    """One meter on every alive node (found if it runs, else started); waits until all run."""
    handles: dict[str, ActorHandle] = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        node_id = node["NodeID"]
        # A node without CPU resources (a head started with num_cpus=0) still gets a meter.
        num_cpus = METER_NUM_CPUS if node["Resources"].get("CPU", 0.0) >= METER_NUM_CPUS else 0
        handles[node_id] = NodeMeter.options(
            name=meter_actor_name(node_id),
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached" if detached else None,
            num_cpus=num_cpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(node_id, config)
    ray.get([h.ready.remote() for h in handles.values()], timeout=timeout_s)
    logger.info("greenflow node meters running on %d node(s)", len(handles))
    return handles


def _alive_node_ids() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def _meter_handles() -> dict[str, ActorHandle]:
    handles: dict[str, ActorHandle] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if actor["namespace"] == NAMESPACE and name.startswith(ACTOR_NAME_PREFIX):
            try:
                handles[name.removeprefix(ACTOR_NAME_PREFIX)] = ray.get_actor(name, NAMESPACE)
            except ValueError:
                continue  # died between listing and lookup
    return handles


def node_meter_stats(timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """Every running meter's :meth:`NodeMeter.stats`, by node id. Only meters that answer
    within ``timeout_s`` are listed: a node that just died (its meter gone with it) may
    still be listed alive for a few seconds, and must not stop the others' figures."""
    alive = _alive_node_ids()
    refs = {k: h.stats.remote() for k, h in _meter_handles().items() if k in alive}
    ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    out: dict[str, dict[str, Any]] = {}
    for node_id, ref in refs.items():
        try:
            out[node_id] = ray.get(ref, timeout=0)
        except (ray.exceptions.RayError, TimeoutError) as err:
            logger.warning("node meter %s did not answer: %s", node_id, err)
    return out


def stop_node_meters(timeout_s: float = 30.0) -> int:
    """Stop the supervisor, if any, then stop and kill every node meter of the cluster;
    returns how many meters were stopped."""
    try:
        supervisor = ray.get_actor(SUPERVISOR_NAME, NAMESPACE)
    except ValueError:
        supervisor = None
    if supervisor is not None:
        with contextlib.suppress(ray.exceptions.RayError, TimeoutError):
            ray.get(supervisor.stop.remote(), timeout=timeout_s)
        ray.kill(supervisor)
    alive = _alive_node_ids()
    handles = {}
    for node_id, handle in _meter_handles().items():
        if node_id in alive:
            handles[node_id] = handle
        else:
            ray.kill(handle)  # its node is gone: nothing to stop, only the name to free
    try:
        ray.get([h.stop.remote() for h in handles.values()], timeout=timeout_s)
    except (ray.exceptions.RayError, TimeoutError) as err:  # kill them regardless
        logger.warning("node meters did not stop cleanly: %s", err)
    for handle in handles.values():
        ray.kill(handle)
    return len(handles)
