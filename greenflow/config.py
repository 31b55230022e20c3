"""Typed configuration: frozen dataclasses, loaded once at the entry point, saved with results.

A YAML file may override any field; unknown keys are errors (no silent typos), values are
converted to the declared types, and nothing is ever evaluated. Example::

    requests:
      requests_per_user: 8
      fractions: {cascade_train: 0.4, validation: 0.1, reward: 0.3, eval: 0.2}
    pool:
      train: {epochs: 4}
    chains:
      exposed_k: 10
      stages:
        - {name: recall, models: [dssm], item_scales: [100, 400]}
        - {name: prerank, models: [youtube_dnn], item_scales: [20, 50]}
        - {name: rank, models: [din], item_scales: [10]}
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from greenflow.errors import ConfigError
from greenflow.platform.chains import ChainSpace, default_space
from greenflow.platform.data.requests import RequestConfig
from greenflow.platform.data.sources import DATA_SOURCES
from greenflow.platform.data.synthetic import SyntheticConfig
from greenflow.platform.models.pool import PoolConfig
from greenflow.platform.models.training import CascadeTrainConfig
from greenflow.platform.reward.model import RewardModelConfig
from greenflow.platform.reward.training import RewardTrainConfig
from greenflow.platform.run_dir import Location, RunDir

# Synthetic runs reach hundreds of thousands of events: the cascade trains on a seeded
# sample, which is what keeps `make bench-synthetic` (100k requests) under 30 minutes on 2
# cores; ML-100k's 39k events are all used.
_POOL_DEFAULTS: dict[str, PoolConfig] = {
    "synthetic": PoolConfig(train=CascadeTrainConfig(max_events=60_000)),
}


def default_cache_dir() -> Path:
    """Where downloads are cached: $GREENFLOW_CACHE, else $XDG_CACHE_HOME/greenflow."""
    if "GREENFLOW_CACHE" in os.environ:
        return Path(os.environ["GREENFLOW_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "greenflow"


@dataclass(frozen=True)
class Config:
    """Everything a pipeline run needs; one per run directory."""

    dataset: str = "movielens-100k"
    run_dir: RunDir = field(default_factory=lambda: RunDir("runs/movielens-100k"))
    cache_dir: Path = field(default_factory=default_cache_dir)
    requests: RequestConfig = field(default_factory=RequestConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    chains: ChainSpace = field(default_factory=default_space)
    reward: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    # Sizes of the reward model; each variant sets its own ablation switches.
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    # The synthetic source's generator (dataset synthetic only; `users` is derived from
    # --requests when that is given).
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        # a local path or URI given for the run directory is opened here, once
        object.__setattr__(self, "run_dir", RunDir.of(self.run_dir))
        DATA_SOURCES.get(self.dataset)  # a ConfigError naming the registered sources

    @property
    def data_dir(self) -> Location:
        return self.run_dir.data


def default_config(
    dataset: str = "movielens-100k", run_dir: RunDir | str | Path | None = None
) -> Config:
    """The defaults for a dataset: its registered request-log defaults (ML-100k gets a
    larger evaluation share), its pool defaults."""
    return Config(
        dataset=dataset,
        run_dir=RunDir.of(run_dir if run_dir is not None else Path("runs") / dataset),
        requests=DATA_SOURCES.get(dataset).requests,
        pool=_POOL_DEFAULTS.get(dataset, PoolConfig()),
    )


def load_config(
    path: Path | None, dataset: str, run_dir: RunDir | str | Path | None = None
) -> Config:
    """Defaults for ``dataset``, overridden by the YAML file at ``path`` if given."""
    base = default_config(dataset, run_dir)
    if path is None:
        return base
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    for key in ("dataset", "run_dir"):
        if key in data:
            raise ConfigError(f"{path}: {key!r} comes from the command line, not the config file")
    return _merge(base, data, where=str(path))


def _field_hints(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """Type hints of dataclass ``cls``'s fields; ConfigError naming any key it does not have."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(names)}")
    return typing.get_type_hints(cls)


def _merge(obj: Any, data: dict[str, Any], where: str) -> Any:
    """A copy of dataclass ``obj`` with fields replaced from ``data``, recursively."""
    hints = _field_hints(type(obj), data, where)
    changes = {k: _convert(getattr(obj, k), hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return _checked(where, dataclasses.replace, obj, **changes)


def _convert(current: Any, hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return _merge(current, value, where)
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list")
        (item_hint, *_) = typing.get_args(hint)
        item_default = current[0] if current else None
        return tuple(_convert_item(item_default, item_hint, v, f"{where}[{i}]")
                     for i, v in enumerate(value))  # fmt: skip
    return _convert_item(current, hint, value, where)


def _convert_item(current: Any, hint: Any, value: Any, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return _build(hint, value, where)
    if hint is Path or (isinstance(hint, types.UnionType) and Path in typing.get_args(hint)):
        return Path(value)
    for scalar in (bool, int, float, str):
        if hint is scalar:
            if scalar is float and isinstance(value, int) and not isinstance(value, bool):
                return float(value)
            if not isinstance(value, scalar) or (scalar is int and isinstance(value, bool)):
                raise ConfigError(f"{where}: expected {scalar.__name__}, got {value!r}")
            return value
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """A new ``cls`` from ``data`` (fields not given keep their defaults)."""
    hints = _field_hints(cls, data, where)
    return _checked(where, cls, **{k: _convert(None, hints[k], v, f"{where}.{k}")
                                   for k, v in data.items()})  # fmt: skip


def _checked(where: str, make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``make(*args, **kwargs)``, a dataclass built from the file: the ValueError of its
    validation becomes a ConfigError naming where in the file the values came from."""
    try:
        return make(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from err


def config_to_dict(config: Any) -> Any:
    """JSON-ready form of a config (paths as strings), saved with every result."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Path | Location):
        return str(config)
    return config
