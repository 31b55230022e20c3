"""What every command module shares: the run options, the configuration, the log."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from greenflow.config import Config, load_config
from greenflow.errors import ConfigError, GreenflowError
from greenflow.platform.data.sources import DATA_SOURCES
from greenflow.platform.run_dir import RunDir

Log = Callable[[str], None]
T = TypeVar("T")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--dataset, --run-dir and --config, the options of every pipeline command."""
    parser.add_argument(
        "--dataset",
        choices=DATA_SOURCES.names(),
        default="movielens-100k",
        help="data source (default: the embedded movielens-100k)",
    )
    parser.add_argument(
        "--run-dir",
        type=RunDir,
        default=None,
        help="output directory: a local path or a filesystem URI such as s3://bucket/prefix "
        "(default: runs/<dataset>)",
    )
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file overriding configuration defaults")  # fmt: skip


def load(args: argparse.Namespace) -> Config:
    """The run's configuration: the dataset's defaults, the --config YAML, the run dir."""
    return load_config(args.config, args.dataset, args.run_dir)


def from_options(make: Callable[..., T], *args: Any, **options: Any) -> T:
    """``make(*args, **options)``: a typed configuration built from command-line options,
    whose validation's ValueError is a ConfigError (the user's to fix, not a bug)."""
    try:
        return make(*args, **options)
    except GreenflowError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


def log(message: str) -> None:
    print(message, flush=True)
