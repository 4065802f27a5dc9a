"""``radixsnn`` command line: one module per sub-command, each ``register(subparsers)`` adding its parser
with ``func`` set to a callable taking the parsed args. Commands parse, call the library and print;
every :class:`~radixsnn.errors.RadixSNNError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import sys

from radixsnn.errors import ConfigError, RadixSNNError
from radixsnn.version import __version__

# Order here is the order in ``radixsnn --help``.
COMMANDS = [
    "convert",
    "evaluate",
    "export",
    "train",
    "finetune",
    "demo",
    "rmse",
    "rate",
    "sweep",
    "search",
    "ops",
    "report",
    "reproduce",
]


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``radixsnn COMMAND: error: ...``, exit code 2
    (the full usage stays in ``--help``)."""

    def error(self, message: str):
        # "argument --lr: must be positive, got '-1'" -> "--lr must be positive, got '-1'" (as library errors read)
        message = re.sub(r"^argument ([^/:\s]+)(/\S+)?: ", r"\1 ", " ".join(message.split()))
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="radixsnn",
        description="Radix-encoded spiking neural networks: convert, fine-tune, simulate and evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"radixsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"radixsnn.cli.{name}").register(sub)
    return parser


def usage_error(argv: list[str]) -> str | None:
    """What parsing ``argv`` as a ``radixsnn`` command line would refuse, as one line (``None``: it parses)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                return err.getvalue().strip().split(": error: ", 1)[-1]
    return None


def option_flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``{argument name: its flag}`` of a sub-command's options (``"time_steps": "--time-steps"``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return {a.dest: max(a.option_strings, key=len) for a in action.choices[command]._actions if a.option_strings}
    return {}


def error_message(exc: RadixSNNError, flags: dict[str, str]) -> str:
    """The one-line message of a library error: a :class:`ConfigError` about an argument the command has
    as an option names that option's flag (``lr`` -> ``--lr``)."""
    if isinstance(exc, ConfigError) and exc.argument in flags:
        return " ".join(f"{flags[exc.argument]} {exc.problem}".split())
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = args.func(args)
    except RadixSNNError as exc:
        print(f"radixsnn {args.command}: error: {error_message(exc, option_flags(parser, args.command))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"radixsnn {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
