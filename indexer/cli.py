"""Command-line entry point: ``python -m indexer {sample,build,query,synth-catalog,...}``.

Each sub-command lives in its own module, which exposes ``register(subparsers)``: it adds its
parser and sets ``func`` to a callable taking the parsed arguments and returning an exit code.
Adding a command means adding its module name to ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: list[str] = [
    "demo.archive",  # sample: the demo archive (simulators live outside the index code)
    "indexer.build",
    "indexer.index",
    "demo.synth",  # synth-catalog: a synthetic index for scale tests
    "indexer.hips",
    "indexer.ingest",  # watch: keep the index current while files arrive
]


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indexer",
        description="Build and query the Regio index of archived observations.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
