"""The `tlpo` command line.

Each subcommand lives in its own module of this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable that takes
the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from pathlib import Path

from tlpo import __version__

# Subcommands in the order `tlpo --help` lists them, each with its module in this package
# and its one-line help. Only the module of the command being run is imported, because
# some of them pull in transformers, TRL and PEFT, which take seconds to import.
COMMANDS = {
    "demo": "train the embedded default model with TLPO and show confusion and skill before and after",
    "lcb": "score completions on the Language Confusion Benchmark",
    "detect": "find where texts stop being in their target language",
    "train": "fine-tune a model with TLPO on prompts tagged with their target language",
    "baseline": "train an SFT, DPO, ORPO or GRPO baseline on the same prompts as `tlpo train`",
    "bench": "compare TLPO with SFT, DPO, ORPO and GRPO on the embedded default model",
    "eval": "measure language consistency and capability, before and after fine-tuning",
    "organism": "build or evaluate the embedded default model",
}


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it without a traceback."""


def read_yaml_mapping(path: str | Path, fields_of: str) -> dict:
    """Read a YAML config file that maps `fields_of` field names to values.

    Raises `UserError` when the file is missing, is not valid YAML, or is not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"invalid YAML in {path}: {error}") from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a mapping of {fields_of} field names to values, got {type(values).__name__}")
    return _numbers_in_exponent_form(values)


# PyYAML follows YAML 1.1, which reads 1e-5 (no dot before the exponent) as a string.
_EXPONENT_FORM = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _numbers_in_exponent_form(value):
    """Return `value` with every string like "1e-5", in nested mappings and lists too, read as a float."""
    if isinstance(value, str) and _EXPONENT_FORM.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {key: _numbers_in_exponent_form(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_in_exponent_form(item) for item in value]
    return value


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser with `command` fully registered and the others as help-only stubs.

    With `command=None` every subcommand module is imported and registered.
    """
    parser = argparse.ArgumentParser(
        prog="tlpo",
        description="Measure and fix language confusion in multilingual LLMs with "
        "Token-Level Policy Optimization.",
    )
    parser.add_argument("--version", action="version", version=f"tlpo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"tlpo.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _requested_command(argv: list[str]) -> str | None:
    """Return the subcommand named in `argv`, or None when there is none to import."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # With no known command (`tlpo --help`, a typo) the stubs give the listing and the
    # error without importing any command module.
    parser = build_parser(_requested_command(argv) or "")
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
    except BrokenPipeError:
        # The reader of stdout (`| head`, say) has gone. Stop quietly as Unix tools do,
        # and point stdout at /dev/null so flushing it at exit raises no second error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
