"""The ``greenflow`` command. Thin: one module per command group parses its arguments
into typed configurations and calls one function of the layers below.

Every subcommand prints a human summary and writes machine-readable JSON under the run
directory (default ``runs/<dataset>/``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from greenflow.cli import data, demo, evaluate, pfec, serve, simulate, train, tune


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenflow",
        description="GreenFlow on Ray: per-request computation allocation for cascade "
        "recommenders (Lu et al., IJCAI 2023).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # the order of `greenflow --help`
    data.add_parser(sub)
    train.add_cascade_parser(sub)
    pfec.add_parser(sub)
    simulate.add_parser(sub)
    train.add_reward_parser(sub)
    tune.add_parser(sub)
    evaluate.add_parser(sub)
    serve.add_parsers(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:  # DataError is a ValueError
        print(f"greenflow: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["build_parser", "main"]
