"""Real Ray clusters of several nodes on 127.0.0.1, as users start them (`ray start`).

Ray tests multi-node behaviour on one host the same way: one `ray start --head` plus
`ray start --address=…` per worker, each a real raylet with its own resources, so a worker
"node" can be killed like a lost machine. Everything here is private to the test that
starts it:

- token authentication on, with the token in the cluster's own file (never ~/.ray);
- its own temp dir (never /tmp/ray, which a bare ``ray.init()`` would join) and ports;
- every process of a node carries a marker environment variable, so a node is killed by
  SIGKILL-ing exactly its processes and teardown never touches another cluster (``ray
  stop`` would kill every Ray process of the user on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `ray` and `greenflow` live here
MARKER = "GREENFLOW_TEST_RAY_HEAD"
START_TIMEOUT_S = 120
RESULT = "RESULT "  # the prefix of a driver's result line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(token_path: Path, marker: str) -> dict[str, str]:
    """The environment of a node and of the CLI clients: token auth on, the token from our
    own file, no inherited cluster address, the venv first on PATH (so a job's entrypoint
    finds `greenflow`, as in an activated venv), and the marker our teardown looks for."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"}}  # fmt: skip
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        **{MARKER: marker},
    )
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def kill_marked(marker: str, *, prefix: bool = False) -> int:
    """SIGKILL every process whose marker equals ``marker`` (or starts with it, ``prefix``);
    returns how many were killed."""
    killed = 0
    for _ in range(3):
        victims = []
        for proc in psutil.process_iter():
            try:
                value = proc.environ().get(MARKER)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if (
                proc.pid != os.getpid()
                and value is not None
                and (value.startswith(marker) if prefix else value == marker)
            ):
                victims.append(proc)
        if not victims:
            break
        for proc in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=10)
        killed += len(victims)
    return killed


class LocalCluster:
    """A head and any number of named worker nodes; use as a context manager."""

    def __init__(self, head_cpus: float = 1, dashboard: bool = False) -> None:
        # short: the nodes' Unix socket paths live under it (108-byte limit)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="gfc", dir="/tmp"))
        self.token_path = self.temp_dir / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.marker = uuid.uuid4().hex
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.head_cpus, self.dashboard = head_cpus, dashboard
        self.workers: dict[str, str] = {}  # name -> marker of its processes
        self.started: set[str] = set()  # every worker name ever started, killed ones too

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, marker: str | None = None) -> dict[str, str]:
        """A client's environment (or node ``marker``'s): token auth, RAY_ADDRESS set."""
        env = cluster_env(self.token_path, marker or f"{self.marker}-client")
        env["RAY_ADDRESS"] = self.address
        return env

    def _node_args(self, resources: dict[str, float]) -> list[str]:
        return ["--node-ip-address=127.0.0.1", f"--resources={json.dumps(resources)}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}", "--disable-usage-stats"]  # fmt: skip

    def start_head(self) -> None:
        env = cluster_env(self.token_path, f"{self.marker}-head")
        args = [str(BIN / "ray"), "start", "--head", f"--port={self.gcs_port}",
                f"--num-cpus={self.head_cpus}", f"--temp-dir={self.temp_dir / 'ray'}",
                f"--ray-client-server-port={free_port()}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--include-dashboard={'true' if self.dashboard else 'false'}",
                *self._node_args({"head": 1})]  # fmt: skip
        started = run(args, env, timeout=START_TIMEOUT_S)
        if started.returncode != 0:
            raise RuntimeError(f"ray start --head failed:\n{started.stdout}{started.stderr}")

    def add_worker(
        self, name: str, num_cpus: float = 1, resources: dict[str, float] | None = None
    ) -> None:
        """Start worker node ``name`` with custom resource ``{name: 1}`` (to steer placement)
        plus ``resources`` (e.g. a resource several workers share)."""
        marker = f"{self.marker}-{name}-{uuid.uuid4().hex[:6]}"
        args = [str(BIN / "ray"), "start", f"--address={self.address}",
                f"--num-cpus={num_cpus}", *self._node_args({name: 1, **(resources or {})})]  # fmt: skip
        started = run(args, cluster_env(self.token_path, marker), timeout=START_TIMEOUT_S)
        if started.returncode != 0:
            raise RuntimeError(
                f"ray start (worker {name}) failed:\n{started.stdout}{started.stderr}"
            )
        self.workers[name] = marker
        self.started.add(name)

    def node_ids(self) -> dict[str, str]:
        """Alive nodes: node id -> the name of the node (``head`` or a worker's name), read
        from each node's own custom resource through the dashboard's state API."""
        rows = self.state("nodes", {"state": "ALIVE"})
        names = {"head", *self.started}
        return {r["node_id"]: next((k for k in r["resources_total"] if k in names), "?")
                for r in rows}  # fmt: skip

    def state(self, resource: str, filters: dict[str, str] | None = None) -> list[dict]:
        """Rows of the state API (``/api/v0/<resource>``, e.g. actors, nodes) with
        ``key=value`` filters; needs ``dashboard=True``."""
        query = [("limit", "10000"), ("detail", "true")]
        for key, value in (filters or {}).items():
            query += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        request = urllib.request.Request(
            f"{self.dashboard_address}/api/v0/{resource}?{urllib.parse.urlencode(query)}",
            headers={"Authorization": f"Bearer {self.token_path.read_text().strip()}"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())["data"]["result"]["result"]

    def kill_worker(self, name: str) -> int:
        """SIGKILL every process of worker node ``name``, as a lost machine; returns how many."""
        return kill_marked(self.workers.pop(name))

    def driver(self, code: str, timeout: float = 120) -> dict:
        """Run ``code`` in a new Python driver connected to the cluster; it must print one
        line ``RESULT <json object>`` (Ray may print its own lines around it), returned."""
        out = run([sys.executable, "-c", code], self.env(), timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"driver failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        (line,) = [x for x in out.stdout.splitlines() if x.startswith(RESULT)]
        return json.loads(line.removeprefix(RESULT))

    def shutdown(self) -> None:
        kill_marked(self.marker, prefix=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            self.start_head()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
