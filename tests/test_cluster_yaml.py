"""cluster.yaml passes the Ray autoscaler's own checks (ray-schema.json), offline."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


def load() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def check(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before touching the cloud: merge the provider defaults, then
    validate against ray-schema.json (unknown keys are errors) and the node-type rules."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_a_valid_ray_cluster_config() -> None:
    config = check(load())
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    assert config["max_workers"] >= 1 and config["idle_timeout_minutes"] > 0


@pytest.mark.parametrize(
    ("where", "typo"),
    [((), "max_worker"), (("available_node_types", "gpu_worker"), "min_worker")],
)
def test_a_typo_in_a_key_fails_validation(where: tuple[str, ...], typo: str) -> None:
    config = load()
    node = config
    for key in where:
        node = node[key]
    node[typo] = node.pop(typo + "s")
    with pytest.raises(jsonschema.ValidationError, match=typo):
        check(config)


def test_node_types_declare_resources_and_one_has_a_gpu() -> None:
    types = load()["available_node_types"]
    head = load()["head_node_type"]
    for name, node in types.items():
        assert {"CPU", "memory"} <= set(node["resources"]), name
        assert "InstanceType" in node["node_config"], name
    gpu = [n for n, node in types.items() if node["resources"].get("GPU", 0) >= 1]
    cpu_only = [n for n, node in types.items() if n != head and "GPU" not in node["resources"]]
    assert gpu and head not in gpu and cpu_only
    assert all(types[n].get("min_workers", 0) == 0 for n in gpu)  # GPUs scale to zero


def test_nodes_install_the_project_like_the_makefile_and_use_token_auth() -> None:
    config = load()
    torch = re.search(r"^TORCH_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert torch is not None
    setup = config["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if f"torch=={torch.group(1)}" in c)
    project_at = next(i for i, c in enumerate(setup) if "install --quiet -e ~/greenflow" in c)
    assert torch_at < project_at  # torch first, as in the Makefile
    assert config["file_mounts"]["~/greenflow"] == "."
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "export RAY_AUTH_MODE=token;" in start, key
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
