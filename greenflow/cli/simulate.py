"""``greenflow simulate``: the Ray Data job of reward samples."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config
from greenflow.platform.run_dir import SIMULATION

if TYPE_CHECKING:
    from greenflow.simulators.simulate import SimulateConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    simulate = sub.add_parser(
        "simulate", help="Ray Data job: reward samples for every chain of every request"
    )
    common.add_run_options(simulate)
    simulate.add_argument("--actors", type=int, default=2, help="actor pool size (default 2)")
    simulate.add_argument("--batch-size", type=int, default=32, help="requests per batch")
    simulate.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per actor")
    simulate.add_argument(
        "--num-gpus", type=float, default=0.0, help="GPUs per actor (> 0 runs the models on CUDA)"
    )
    simulate.add_argument(
        "--splits",
        default="reward,eval",
        help="comma-separated request splits to simulate (default reward,eval)",
    )
    simulate.add_argument(
        "--chain-fraction",
        type=float,
        default=1.0,
        help="keep this random fraction of chains per reward-split request "
        "(the paper's data-sparsity setting); eval keeps all",
    )
    simulate.add_argument("--seed", type=int, default=0, help="seed of the chain sampling")  # fmt: skip
    simulate.set_defaults(func=_command)


def run(config: Config, sim: SimulateConfig, log: Log = common.log) -> None:
    """Simulate every chain of every request of the configured splits; print the totals."""
    from greenflow.simulators.simulate import run_simulation

    doc = run_simulation(config, sim, log)
    reference_flops, malformed = doc.reference_flops or 0.0, doc.malformed or ()
    log(
        f"simulated {doc.requests:,} requests x {doc.num_chains} chains in {doc.wall_s:.1f} s "
        f"({doc.requests_per_s:.1f} requests/s) -> {doc.output}"
    )
    log(
        f"  simulation spent {doc.simulation_flops / 1e9:,.1f} GFLOPs; one chain at a time "
        f"would have spent {reference_flops / 1e9:,.1f} GFLOPs "
        f"({reference_flops / max(doc.simulation_flops, 1.0):.1f}x more)"
    )
    for bad in malformed[:20]:
        log(f"  malformed request {bad['request_id']}: {bad['error']}")
    if malformed:
        log(
            f"  {len(malformed)} malformed request(s) reported in {config.run_dir.show(SIMULATION)}"
        )


def _command(args: argparse.Namespace) -> None:
    from greenflow.platform.simulation import ChainSampling
    from greenflow.simulators.simulate import SimulateConfig

    config = common.load(args)
    sim = common.from_options(
        SimulateConfig,
        actors=args.actors,
        batch_size=args.batch_size,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        splits=tuple(args.splits.split(",")),
        sampling=common.from_options(ChainSampling, fraction=args.chain_fraction, seed=args.seed),
    )
    run(config, sim)
