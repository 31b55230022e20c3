"""A real Serve app on the session's Ray cluster, over a tiny run with a trained reward model."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from greenflow.config import Config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(
    url: str, body: Any = None, raw: bytes | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a GET (no body) or POST to ``url``."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode()
        try:
            return err.code, json.loads(text)
        except ValueError:
            return err.code, text


@pytest.fixture(scope="session")
def serve_port(ray_cluster: None) -> Iterator[int]:
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        serve.shutdown()


@pytest.fixture(scope="session")
def app_url(serve_run: Config, serve_port: int) -> Iterator[str]:
    """The GreenFlow app (1 s windows) at http://127.0.0.1:<port>."""
    from greenflow.serve_apps.app import AppArgs, deploy, teardown

    args = AppArgs(run_dir=str(serve_run.run_dir), window_s=1.0, expected_rate_rps=20.0,
                   stage_num_cpus=0.2, allocator_num_cpus=0.2)  # fmt: skip
    url = deploy(args, port=serve_port)
    try:
        yield url
    finally:
        teardown(args.app_name)
