"""``greenflow data fetch`` and ``greenflow data prepare``."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config
from greenflow.errors import ConfigError

if TYPE_CHECKING:
    from greenflow.platform.data.synthetic import SyntheticConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="fetch or prepare a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download the embedded MovieLens-100k into the cache")
    common.add_run_options(fetch)
    fetch.set_defaults(func=_fetch_command)
    prep = data_sub.add_parser(
        "prepare", help="write canonical Parquet tables and the request log under <run-dir>/data"
    )
    common.add_run_options(prep)
    prep.add_argument(
        "--path",
        type=Path,
        action="append",
        help="ali-ccp: a preprocessed CSV file (repeat for train and test)",
    )
    prep.add_argument(
        "--users",
        type=int,
        default=None,
        help="synthetic: number of users (default: the config's, 10,000)",
    )
    prep.add_argument("--items", type=int, default=None,
                      help="synthetic: number of items (default: the config's)")  # fmt: skip
    prep.add_argument(
        "--requests",
        type=int,
        default=None,
        help="synthetic: target number of requests (derives --users)",
    )
    prep.add_argument("--seed", type=int, default=None,
                      help="synthetic: random seed (default: the config's, 0)")  # fmt: skip
    prep.set_defaults(func=_prepare_command)


def fetch(config: Config, log: Log = common.log) -> None:
    """Download MovieLens-100k into the cache."""
    from greenflow.platform.data.sources import fetch_movielens

    if config.dataset != "movielens-100k":
        raise ConfigError(f"{config.dataset} is not downloaded: use `greenflow data prepare`")
    folder = fetch_movielens(config.cache_dir)
    log(f"movielens-100k files in {folder}")


def synthetic_config(
    config: Config,
    users: int | None = None,
    items: int | None = None,
    seed: int | None = None,
    requests: int | None = None,
) -> SyntheticConfig | None:
    """The generator of a synthetic run (None for other datasets): the config's, with the
    sizes and seed given; ``requests`` derives the number of users."""
    from greenflow.platform.data import synthetic

    if config.dataset != "synthetic":
        return None
    given = {k: v for k, v in (("users", users), ("items", items), ("seed", seed))
             if v is not None}  # fmt: skip
    synth = common.from_options(dataclasses.replace, config.synthetic, **given)
    if requests is not None:
        overrides = {k: v for k, v in dataclasses.asdict(synth).items() if k != "users"}
        synth = synthetic.config_for_requests(
            requests, config.requests.requests_per_user, config.requests.min_history,
            **overrides)  # fmt: skip
    return synth


def prepare(
    config: Config,
    paths: Sequence[Path] = (),
    synth: SyntheticConfig | None = None,
    log: Log = common.log,
) -> None:
    """Write the canonical tables and request log under the run's data directory."""
    from greenflow.platform.data.sources import prepare as prepare_source

    t0 = time.perf_counter()
    meta = prepare_source(config.dataset, config.data_dir, config.cache_dir, config.requests,
                          paths, synth)  # fmt: skip
    log(f"prepared {config.dataset} in {time.perf_counter() - t0:.1f} s -> {config.data_dir}")
    log(f"  users {meta['users']:,}  items {meta['items']:,}  interactions "
        f"{meta['interactions']:,}  clicks {meta['clicks']:,}  requests {meta['requests']:,}")  # fmt: skip
    log(
        "  requests per split: "
        + ", ".join(f"{k} {v:,}" for k, v in meta["requests_per_split"].items())
    )


def _fetch_command(args: argparse.Namespace) -> None:
    fetch(common.load(args))


def _prepare_command(args: argparse.Namespace) -> None:
    config = common.load(args)
    synth = synthetic_config(config, args.users, args.items, args.seed, args.requests)
    prepare(config, args.path or (), synth)
