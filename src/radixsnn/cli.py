"""``radixsnn`` command line: a thin dispatcher over :mod:`radixsnn.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys

from radixsnn import __version__
from radixsnn.commands import COMMANDS
from radixsnn.errors import RadixSNNError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radixsnn",
        description="Radix-encoded spiking neural networks: convert, fine-tune, simulate and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"radixsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"radixsnn.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except RadixSNNError as exc:
        print(f"radixsnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radixsnn {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
