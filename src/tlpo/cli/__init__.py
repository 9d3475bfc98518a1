"""The `tlpo` command line.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable that takes
the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tlpo import __version__

# Modules of this package that define subcommands, in the order `tlpo --help` lists them.
COMMAND_MODULES = ["demo", "lcb", "detect", "baseline", "train", "bench", "organism", "eval"]


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlpo",
        description="Measure and fix language confusion in multilingual LLMs with "
        "Token-Level Policy Optimization.",
    )
    parser.add_argument("--version", action="version", version=f"tlpo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"tlpo.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except UserError as error:
        print(f"tlpo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlpo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
