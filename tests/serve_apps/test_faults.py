"""Fault injection on a live app under load: the dual-price driver killed (serving goes on,
λ resumes from the checkpoint, windows stay within the guard's bound) or stalled past the
allocator's report timeout (no request counted twice), and a stage replica killed
(requests degrade, then recover once Serve has replaced it).

Each test prints a ``FAULTS <name>: {...}`` line with what it observed (``pytest -s``)."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.serve_apps.conftest import call
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.ray]

APP = "faults"
RPS = 15.0
STALL_S = 3.5  # a stalled driver: longer than the allocator's 2 s report timeout


@dataclass(frozen=True)
class Result:
    t: float  # Unix s the request was sent
    status: int  # 0: connection error or timeout
    doc: Any
    latency_s: float


def _send(url: str, i: int) -> Result:
    body = {"user_id": 1 + i % 80, "history": [(7 * i + j) % 50 + 1 for j in range(1 + i % 6)],
            "request_id": f"load-{i}"}  # fmt: skip
    t = time.time()
    try:
        status, doc = call(f"{url}/recommend", body, timeout=30)
    except (urllib.error.URLError, OSError) as err:  # refused, reset or timed out
        status, doc = 0, f"{type(err).__name__}: {err}"
    return Result(t, status, doc, time.time() - t)


class Load:
    """Open-loop load in the background: ``rps`` valid requests/s until ``stop`` (or max_s)."""

    def __init__(self, url: str, rps: float = RPS, max_s: float = 90.0) -> None:
        self.url, self.rps, self.max_s = url, rps, max_s
        self.results: list[Result] = []
        self._futures: list[Future[Result]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=48, thread_name_prefix="load")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        for i in range(int(self.max_s * self.rps)):
            delay = t0 + i / self.rps - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                break
            self._futures.append(self._pool.submit(_send, self.url, i))
        self.results = [f.result() for f in self._futures]  # each bounded by its 30 s timeout

    def done(self) -> list[Result]:
        """The answers so far, while the load runs."""
        return [f.result() for f in list(self._futures) if f.done()]

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._pool.shutdown(wait=False, cancel_futures=True)
        assert not self._thread.is_alive(), "load thread did not finish"

    def between(self, t0: float, t1: float = float("inf")) -> list[Result]:
        return [r for r in self.results if t0 <= r.t < t1]


def report(name: str, **numbers: Any) -> None:
    print(f"\nFAULTS {name}: " + json.dumps(numbers, default=str))


@pytest.fixture(scope="module")
def faults_app(serve_run, serve_port) -> Iterator[tuple[str, Any]]:
    from greenflow.serve_apps.app import AppArgs, deploy, teardown

    args = AppArgs(run_dir=str(serve_run.run_dir), app_name=APP, window_s=1.0,
                   expected_rate_rps=20, stage_num_cpus=0.1, allocator_num_cpus=0.1)  # fmt: skip
    url = deploy(args, port=serve_port)
    try:
        yield url, args
    finally:
        teardown(APP)


def _driver_state(timeout_s: float = 1.0) -> dict[str, Any] | None:
    import ray

    from greenflow.serve_apps.driver import NAMESPACE, driver_name

    try:
        handle = ray.get_actor(driver_name(APP), namespace=NAMESPACE)
        return ray.get(handle.state.remote(), timeout=timeout_s)
    except Exception:  # restarting: the call waits for it, or the name is not back yet
        return None


@dataclass(frozen=True)
class Accounting:
    """The driver's closed windows since the load began against what the load got."""

    rows: list[dict[str, Any]]  # /allocator/windows records
    counted: dict[float, int]  # requests per window in the driver's records
    answered: dict[float, int]  # 200 answers per window_start_s
    over: list[dict[str, Any]]  # windows past the predictive guard's bound

    @property
    def lost(self) -> int:
        return sum(self.answered.get(t, 0) - n for t, n in self.counted.items())


def accounting(
    url: str, args: Any, run_dir: Any, since: float, results: list[Result]
) -> Accounting:
    status, doc = call(f"{url}/allocator/windows?since={since}")
    assert status == 200, doc
    rows = doc["windows"]
    sim = run_dir.read_simulation()
    min_q = min(c.flops for c in sim.chains)
    q = {c.id: c.flops for c in sim.chains}
    answered: dict[float, int] = {}
    cheapest: dict[float, int] = {}  # answers served a cheapest chain
    unforeseen: dict[float, float] = {}  # FLOPs spent past the served chain's cost
    for r in results:
        if r.status == 200:
            t = round(r.doc["window_start_s"], 6)
            answered[t] = answered.get(t, 0) + 1
            cheapest[t] = cheapest.get(t, 0) + (q[r.doc["chain"]["id"]] == min_q)
            # a failed attempt's stages (a retried request): sunk after the guard admitted it
            extra = max(0.0, r.doc["flops"] - q[r.doc["chain"]["id"]])
            unforeseen[t] = unforeseen.get(t, 0.0) + extra
    # Predictive guard: a chain is admitted only if it fits under C (1 + ε), else a cheapest
    # chain is, so spend ≤ C (1 + ε) + (cheapest chains served) · min_j q_j. A window with
    # more requests than C / min_j q_j is over whatever the policy does. With pacing, such a
    # window's price already asks for the cheapest chain, so the guard changes no request
    # (guard_requests 0): the bound counts the cheapest chains served, not guard_requests.
    # Plus what failed attempts wasted (a stage failing midway costs the stages before it
    # on top of the chain the guard admitted).
    over = [w for w in rows if w["spend"] > w["budget"] * (1 + args.guard_tolerance)
            + cheapest.get(round(w["t"], 6), 0) * min_q + unforeseen.get(round(w["t"], 6), 0.0)
            + 1e-9 * w["budget"]]  # fmt: skip
    counted = {round(w["t"], 6): w["requests"] for w in rows}
    return Accounting(rows, counted, answered, over)


def test_driver_killed_under_load(faults_app, serve_run) -> None:
    import ray

    from greenflow.serve_apps.driver import NAMESPACE, driver_name

    url, args = faults_app
    ckpt = serve_run.run_dir.local_path / serve_run.run_dir.dual_price_checkpoint(APP)
    before = _driver_state(10.0)
    assert before is not None and before["restored"] is False
    load_start = time.time()
    with Load(url) as load:
        time.sleep(3.0)
        assert ckpt.is_file(), "no checkpoint after 3 s of 1 s windows"
        ray.kill(ray.get_actor(driver_name(APP), namespace=NAMESPACE), no_restart=False)
        t_kill = time.time()
        time.sleep(0.3)  # the process is gone: its last checkpoint is final
        doc = json.loads(ckpt.read_text())
        assert doc["saved_at_s"] < t_kill + 0.3
        seen_down = False

        def restarted() -> dict[str, Any] | None:
            nonlocal seen_down
            status, state = call(f"{url}/allocator/state", timeout=10)
            assert status == 200, state
            seen_down |= state["driver_alive"] is False
            now = _driver_state(0.5)
            return now if now is not None and now["pid"] != before["pid"] else None

        after = wait_for("driver restart", restarted, 60.0, period_s=0.05)
        t_back = time.time()
        wait_for("allocator sees the driver", lambda: call(f"{url}/allocator/state")[1][
            "driver_alive"], 30.0)  # fmt: skip
        time.sleep(2.5)  # serve on with the restarted driver; its windows close
        t_end = time.time()
    results = load.results
    failed = [r for r in results if r.status != 200]
    eta = doc["config"]["step_size_rel"] * doc["fit_price"]
    new_windows = after["windows_closed"] - len(doc["records"])
    acc = accounting(url, args, serve_run.run_dir, load_start - 1, results)
    kill_window = math.floor(t_kill / args.window_s) * args.window_s
    report("driver-kill", requests=len(results), non_200=len(failed),
           seen_driver_alive_false=seen_down, restart_s=round(t_back - t_kill, 2),
           price_at_kill=doc["dual_price"], price_after_restart=after["dual_price"],
           fit_price=doc["fit_price"], windows_closed_after_restore=new_windows,
           windows=len(acc.rows), window_requests=sum(acc.counted.values()),
           reports_lost_at_kill=acc.lost,
           max_utilisation=max(w["spend"] / w["budget"] for w in acc.rows),
           guard_requests=sum(w["guard_requests"] for w in acc.rows),
           max_latency_s=round(max(r.latency_s for r in results), 2))  # fmt: skip
    # Serving never stopped: every request of the whole run was answered 200.
    assert len(results) >= 0.7 * RPS * (t_end - load_start)
    assert not failed, failed[:5]
    # The driver came back restored from the checkpoint, λ where it stopped, not reset.
    assert after["restored"] is True
    if new_windows == 0:  # no window closed since the restore: λ exactly as checkpointed
        assert after["dual_price"] == pytest.approx(doc["dual_price"], rel=1e-9, abs=1e-15)
    else:  # one gradient step at most: |Δλ| ≤ η max(1, spend/C − 1), spend ≤ ~C
        assert abs(after["dual_price"] - doc["dual_price"]) <= 1.05 * eta + 1e-15
    # It kept the checkpointed window records.
    kept = {round(r["t_s"], 6) for r in doc["records"] if r["t_s"] >= load_start - 1}
    assert kept <= set(acc.counted)
    assert not acc.over, acc.over
    # Each answered request is counted exactly once in its window's record, the kill's
    # window included: replicas re-send what the dead driver held but had not
    # checkpointed, and the driver drops report ids it has seen (Ray's retries included).
    counted, answered = acc.counted, acc.answered
    assert all(n <= answered.get(t, 0) for t, n in counted.items()), (counted, answered)
    closed = [t for t in sorted(counted) if t < max(counted)]  # the last may be in flight
    assert kill_window in closed, (kill_window, closed)
    assert all(counted[t] == answered.get(t, 0) for t in closed), (counted, answered)
    state = call(f"{url}/allocator/state")[1]
    assert state["reports_dropped"] == 0


def test_driver_stalled_under_load(faults_app, serve_run) -> None:
    """The driver stops answering (SIGSTOP: a long pause, an overloaded node) for longer
    than the allocator's 2 s report timeout: serving goes on with the last λ, and once the
    driver answers again every request is counted exactly once, none twice."""
    url, args = faults_app
    before = _driver_state(10.0)
    assert before is not None
    load_start = time.time()
    with Load(url) as load:
        time.sleep(2.0)
        os.kill(before["pid"], signal.SIGSTOP)
        t_stop = time.time()
        try:
            time.sleep(STALL_S)
            status, state = call(f"{url}/allocator/state", timeout=10)
        finally:
            os.kill(before["pid"], signal.SIGCONT)
        t_cont = time.time()
        wait_for("allocator sees the driver", lambda: call(f"{url}/allocator/state")[1][
            "driver_alive"], 30.0)  # fmt: skip
        t_back = time.time()
        time.sleep(2.5)
    results = load.results
    failed = [r for r in results if r.status != 200]
    acc = accounting(url, args, serve_run.run_dir, load_start, results)
    after = _driver_state(10.0)
    report("driver-stall", requests=len(results), non_200=len(failed), stall_s=round(
        t_cont - t_stop, 2), driver_alive_during_stall=state["driver_alive"],
        reports_buffered_during_stall=state["reports_buffered"],
        back_after_s=round(t_back - t_cont, 2), windows=len(acc.rows),
        window_requests=sum(acc.counted.values()),
        answered_in_those_windows=sum(acc.answered.get(t, 0) for t in acc.counted),
        max_utilisation=max(w["spend"] / w["budget"] for w in acc.rows))  # fmt: skip
    assert not failed, failed[:5]
    assert status == 200 and state["driver_alive"] is False and state["reports_buffered"] > 0
    assert after is not None and after["pid"] == before["pid"]  # the same driver, not restarted
    assert not acc.over, acc.over
    counted, answered = acc.counted, acc.answered
    assert all(n <= answered.get(t, 0) for t, n in counted.items()), (counted, answered)
    # Nothing is lost either: all closed windows but the last (reports may be in flight).
    assert all(counted[t] == answered.get(t, 0) for t in sorted(counted)[:-1]), (counted, answered)


def _replicas(deployment: str) -> set[str]:
    import ray

    prefix = f"SERVE_REPLICA::{APP}#{deployment}#"
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(prefix)}  # fmt: skip


def test_stage_replica_killed_under_load(faults_app) -> None:
    import ray
    from ray import serve

    url, _ = faults_app
    (old,) = _replicas("stage-din")
    victim = ray.get_actor(old, namespace="serve")
    with Load(url) as load:
        time.sleep(2.0)
        t_kill = time.time()
        ray.kill(victim, no_restart=True)

        def replaced() -> bool:
            new = _replicas("stage-din") - {old}
            dep = serve.status().applications[APP].deployments["stage-din"]
            return bool(new) and dep.status == "HEALTHY"

        wait_for("a new stage-din replica", replaced, 60.0, period_s=0.2)
        t_replaced = time.time()

        def din_served() -> float | None:  # the load's own answers since the replacement
            ok = [r for r in load.done() if r.t >= t_replaced and r.status == 200
                  and "din@" in r.doc["chain"]["id"] and not r.doc["degraded"]]  # fmt: skip
            return min((r.t for r in ok), default=None)

        t_din = wait_for("a din chain served again", din_served, 60.0, period_s=0.1)
        time.sleep(1.0)
    results = load.results
    before = load.between(0, t_kill)
    outage = load.between(t_kill, t_din)
    after = load.between(t_din)
    non_200 = [r for r in results if r.status != 200]
    degraded = [r for r in outage if r.status == 200 and r.doc["degraded"]]
    din_before = sum("din@" in r.doc["chain"]["id"] for r in before if r.status == 200)
    report("stage-kill", requests=len(results), non_200=len(non_200),
           non_200_share=round(len(non_200) / len(results), 3), outage_requests=len(outage),
           outage_degraded=len(degraded), outage_served=sum(r.status == 200 for r in outage),
           din_chains_before_kill=f"{din_before}/{len(before)}",
           replaced_s=round(t_replaced - t_kill, 2), din_served_again_s=round(t_din - t_kill, 2),
           max_latency_s=round(max(r.latency_s for r in results), 2),
           after_non_200=sum(r.status != 200 for r in after))  # fmt: skip
    assert not non_200, non_200[:5]  # a failed din call falls back to a chain without it
    assert outage
    assert degraded or not din_before  # din chains were chosen: some fell back meanwhile
    assert all(r.status == 200 and not r.doc["degraded"] for r in after), after[:5]
