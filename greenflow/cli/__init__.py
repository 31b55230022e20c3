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
from greenflow.errors import GreenflowError


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


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix: the project's own errors (GreenflowError: a
    bad option or configuration, an unusable input), a missing input (FileNotFoundError:
    "run `greenflow …` first"), an option pydantic rejects (the Serve app's AppArgs).
    Anything else is a bug and keeps its traceback."""
    if isinstance(exc, GreenflowError | FileNotFoundError):
        return True
    pydantic = sys.modules.get("pydantic")  # loaded by whoever validated, if anyone did
    return pydantic is not None and isinstance(exc, pydantic.ValidationError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 with one line on stderr for a user error (as for
    argparse's own errors). Every other exception propagates with its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"greenflow: error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["build_parser", "is_user_error", "main"]
