"""What every command module shares: the run options, the configuration, the log."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from greenflow.config import DATASETS, Config, load_config

Log = Callable[[str], None]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--dataset, --run-dir and --config, the options of every pipeline command."""
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="movielens-100k",
        help="data source (default: the embedded movielens-100k)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="output directory (default: runs/<dataset>)"
    )
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML file overriding configuration defaults")  # fmt: skip


def load(args: argparse.Namespace) -> Config:
    """The run's configuration: the dataset's defaults, the --config YAML, the run dir."""
    return load_config(args.config, args.dataset, args.run_dir)


def log(message: str) -> None:
    print(message, flush=True)
